"""Registration's FLAME without torch: the numpy evaluation against the torch layer, its Jacobian against
finite differences, and an ``onflame register`` that never imports torch."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import torch

from onflame.flame import FLAME, FlameParams
from onflame.flame.numpy_flame import NumpyFlame, axis_angle_to_matrix
from onflame.flame import lbs
from onflame.mesh import write_ply
from onflame.registration.fit import _prior_vector
from onflame.registration.gauss_newton import FitState, Linearization, make_layer, stage_columns
from onflame.synthetic.scans import simulate_scan

from conftest import FLAME_FIX


def _random_state(rng: np.random.Generator, scale: float = 1.0) -> FitState:
    return FitState(rng.normal(0, 2, 300), rng.normal(0, 2, 100), rng.normal(0, 0.3 * scale, 15), rng.normal(0, 0.05, 3))


def test_numpy_flame_matches_the_torch_layer_to_a_micrometre(flame_model):
    """Same vertices as the float64 torch layer for random heads, poses (neck, jaw and eyes turned) and
    translations. The numpy one sums blendshapes in float32: measured 1.5e-8 m apart."""
    torch_flame = FLAME(flame_model, dtype=torch.float64)
    ours = NumpyFlame.from_model(flame_model)
    rng = np.random.default_rng(0)
    for _ in range(4):
        st = _random_state(rng)
        with torch.no_grad():
            ref = torch_flame(FlameParams(st.shape, st.expression, st.pose, st.trans)).vertices[0].numpy()
        got = ours.vertices(st.shape, st.expression, st.pose, st.trans)
        assert np.abs(got - ref).max() < 1e-6
        with torch.no_grad():
            joints = torch_flame(torch.as_tensor(st.shape)[None], torch.as_tensor(st.expression)[None]).joints[0, 0].numpy()
        assert np.abs(ours.root(st.shape, st.expression) - joints).max() < 1e-9


def test_rodrigues_matches_the_torch_one_near_and_far_from_zero():
    aa = np.array([[0.0, 0.0, 0.0], [1e-6, -2e-6, 0.0], [0.3, -1.2, 0.5], [np.pi - 1e-3, 0.0, 0.0]])
    ref = lbs.axis_angle_to_matrix(torch.as_tensor(aa)).numpy()
    assert np.abs(axis_angle_to_matrix(aa) - ref).max() < 1e-12


def test_jacobian_rows_match_finite_differences_of_the_vertices(flame_model):
    """∂v/∂θ of the fit's linearisation (float32 rows) against central differences of the numpy FLAME,
    for coefficient, rotation and translation columns: within 0.02% of each column's size (the rows are
    float32: measured up to 0.006%, on the 300th identity column). Vertices are affine in the coefficients, so their step can be large
    (the blendshapes' float32 sums would swamp a small one)."""
    flame = make_layer(flame_model)
    rng = np.random.default_rng(1)
    st = _random_state(rng, scale=0.5)
    prior = _prior_vector(flame, flame.n_shape, 1.0, 1.0, 0.0)
    lin = Linearization(flame, st, stage_columns(flame, prior))
    idx = rng.choice(flame.n_vertices, 200, replace=False)
    direction = rng.normal(size=(200, 3))
    rows = lin.rows(idx, direction)
    theta = st.theta
    for col in (0, 5, 299, 300, 350, 400, 403, 406, 409, 411):  # identity, expression, global/neck/jaw, translation
        step = np.zeros_like(theta)
        step[col] = 0.1 if col < 400 else 1e-6
        plus, minus = st.with_theta(theta + step), st.with_theta(theta - step)
        dv = (flame.vertices(plus.shape, plus.expression, plus.pose, plus.trans)
              - flame.vertices(minus.shape, minus.expression, minus.pose, minus.trans))[idx] / (2 * step[col])
        expected = (dv * direction).sum(1)
        assert np.abs(rows[:, col] - expected).max() < 2e-4 * np.abs(expected).max(), col


def test_onflame_register_never_imports_torch(tmp_path, flame_pkl, flame_model):
    """A user's FLAME folder (the model with MICA's embedding, whose dynamic contour is pickled torch
    tensors, and FLAME's masks): from the second run on, ``onflame register`` reads the embedding's
    pickle-free copy and registers with numpy alone; importing torch costs ~0.7 s of every call."""
    folder = tmp_path / "flame"
    folder.mkdir()
    shutil.copy(flame_pkl, folder / "generic_model.pkl")
    for name in ("landmark_embedding.npy", "FLAME_masks.pkl"):
        shutil.copy(FLAME_FIX / name, folder / name)
    truth = flame_model.v_template
    eyes = np.concatenate([flame_model.masks["left_eyeball"], flame_model.masks["right_eyeball"]])
    sim = simulate_scan(truth, flame_model.faces, flame_model.landmarks.static51.locate(truth, flame_model.faces),
                        eyes, seed=3)
    write_ply(tmp_path / "scan.ply", sim.scan)
    np.save(tmp_path / "scan_lmk.npy", sim.landmarks)
    code = ("import sys\nfrom onflame.cli import main\n"
            f"code = main(['register', {str(tmp_path / 'scan.ply')!r}, '--model', {str(folder / 'generic_model.pkl')!r}, "
            f"'--landmarks', {str(tmp_path / 'scan_lmk.npy')!r}, '--out', {str(tmp_path / 'out')!r}])\n"
            "print('torch' in sys.modules, code)")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[1].stdout.splitlines()[-1] == "False 0", runs[1].stdout + runs[1].stderr


def test_one_or_two_threads_register_the_same_bytes(flame_model, monkeypatch):
    """Registration's second thread only runs fixed groups of work at the same time (the normal equations'
    row groups, nearest-point queries): one thread or two give the same bytes, as a build run with 1 or N
    workers must."""
    from onflame.registration import register

    eyes = np.concatenate([flame_model.masks["left_eyeball"], flame_model.masks["right_eyeball"]])
    truth = flame_model.v_template
    sim = simulate_scan(truth, flame_model.faces, flame_model.landmarks.static51.locate(truth, flame_model.faces),
                        eyes, seed=8)
    meshes = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("ONFLAME_THREADS", threads)
        reg = register(sim.scan, flame_model, landmarks=sim.landmarks)
        meshes[threads] = (reg.mesh.vertices, reg.params.shape, reg.quality.numbers["scan_to_mesh_median_mm"])
    assert np.array_equal(meshes["1"][0], meshes["2"][0]) and np.array_equal(meshes["1"][1], meshes["2"][1])
    assert meshes["1"][2] == meshes["2"][2]


def test_landmark_embedding_is_read_back_from_its_pickle_free_copy(tmp_path):
    """MICA's embedding, read once from the file (torch tensors inside) and then from the copy beside it:
    the same conventions, points and jaw contour, each still named after the file."""
    from onflame.flame import load_landmark_embedding

    shutil.copy(FLAME_FIX / "landmark_embedding.npy", tmp_path / "landmark_embedding.npy")
    first = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    assert (tmp_path / ".landmark_embedding.npy.onflame.npz").is_file()
    again = load_landmark_embedding(tmp_path / "landmark_embedding.npy")
    assert set(again.conventions) == set(first.conventions) == {"mica51", "mica68"}
    for name, pts in first.conventions.items():
        assert again.conventions[name].same_as(pts)
    assert np.array_equal(again.dynamic.face_idx, first.dynamic.face_idx)
    assert np.array_equal(again.dynamic.bary, first.dynamic.bary)
    assert again.origins == first.origins and set(again.origins.values()) == {str(tmp_path / "landmark_embedding.npy")}
