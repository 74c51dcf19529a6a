"""The FLAME layer against smplx's FLAME (same model file), its contour convention, fast paths and gradients."""
from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from onflame import safepickle
from onflame.flame import FLAME, FlameParams, load_landmark_embedding, load_model
from onflame.flame import lbs

from conftest import FLAME_FIX

smplx = pytest.importorskip("smplx")

# smplx casts every model array to float32 before building its buffers (even with dtype=float64) and adds
# 1e-8 to axis-angle vectors, so agreement is at the 1e-8 m level, well inside these tolerances.
TOL = {torch.float64: 1e-6, torch.float32: 1e-5}


@pytest.fixture(scope="module")
def smplx_dir(tmp_path_factory, flame_plain_pkl):
    """The folder smplx's FLAME reads: FLAME_NEUTRAL.pkl, flame_static_embedding.pkl, flame_dynamic_embedding.npy."""
    d = tmp_path_factory.mktemp("smplx_flame")
    os.symlink(flame_plain_pkl, d / "FLAME_NEUTRAL.pkl")
    shutil.copy(FLAME_FIX / "flame_static_embedding.pkl", d)
    mica = safepickle.load_npy_object(FLAME_FIX / "landmark_embedding.npy")
    dyn = {"lmk_face_idx": mica["dynamic_lmk_faces_idx"].numpy().astype(np.int64),
           "lmk_b_coords": mica["dynamic_lmk_bary_coords"].numpy().astype(np.float64)}
    np.save(d / "flame_dynamic_embedding.npy", np.array(dyn, dtype=object), allow_pickle=True)
    return d


@pytest.fixture(scope="module")
def model(flame_plain_pkl):
    """The same model file, with the same two embeddings smplx uses (FLAME's static 51, MICA's contour)."""
    emb = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl", FLAME_FIX / "landmark_embedding.npy")
    return load_model(flame_plain_pkl, landmarks=emb)


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["float64", "float32"])
def pair(request, smplx_dir, model):
    dtype = request.param
    ref = smplx.FLAME(str(smplx_dir), num_betas=300, num_expression_coeffs=100, use_face_contour=True, dtype=dtype,
                      create_betas=False, create_expression=False, create_global_orient=False,
                      create_neck_pose=False, create_jaw_pose=False, create_leye_pose=False,
                      create_reye_pose=False, create_transl=False)
    return FLAME(model, dtype=dtype, contour_joint=0, convention="flame"), ref, dtype


def random_inputs(B: int, seed: int, dtype=torch.float64):
    """Shape, expression (unit normal), pose (radians, 0.3 rad spread) and translation (metres, 0.1 m)."""
    g = torch.Generator().manual_seed(seed)
    shape = torch.randn(B, 300, generator=g, dtype=dtype)
    expression = torch.randn(B, 100, generator=g, dtype=dtype)
    pose = 0.3 * torch.randn(B, 15, generator=g, dtype=dtype)
    trans = 0.1 * torch.randn(B, 3, generator=g, dtype=dtype)
    return shape, expression, pose, trans


def smplx_forward(ref, shape, expression, pose, trans):
    """smplx's FLAME takes the 15-vector pose joint by joint."""
    return ref(betas=shape, expression=expression, global_orient=pose[:, :3], neck_pose=pose[:, 3:6],
               jaw_pose=pose[:, 6:9], leye_pose=pose[:, 9:12], reye_pose=pose[:, 12:15], transl=trans)


def assert_close(a, b, tol, what):
    err = (a - b).abs().max().item()
    assert err <= tol, f"{what}: max difference {err:.3g} m > {tol:g} m"


POSES = {
    "random": lambda B, g, dt: 0.3 * torch.randn(B, 15, generator=g, dtype=dt),
    "large": lambda B, g, dt: (torch.rand(B, 15, generator=g, dtype=dt) * 2 - 1) * torch.tensor(
        [math.pi, math.pi, math.pi, 1.2, 1.2, 1.2, 0.8, 0.3, 0.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=dt),
    "neck_yaw": lambda B, g, dt: torch.nn.functional.pad(torch.linspace(-1.2, 1.2, B, dtype=dt)[:, None], (4, 10)),
    "zero": lambda B, g, dt: torch.zeros(B, 15, dtype=dt),
    "root_only": lambda B, g, dt: torch.nn.functional.pad(torch.randn(B, 3, generator=g, dtype=dt), (0, 12)),
}


@pytest.mark.parametrize("case", list(POSES))
@pytest.mark.parametrize("B,seed", [(1, 0), (7, 1), (32, 2)])
def test_matches_smplx(pair, case, B, seed):
    ours, ref, dtype = pair
    shape, expression, _, trans = random_inputs(B, seed, dtype)
    pose = POSES[case](B, torch.Generator().manual_seed(seed + 100), dtype)
    with torch.no_grad():
        a = ours(shape, expression, pose, trans)
        b = smplx_forward(ref, shape, expression, pose, trans)
    tol = TOL[dtype]
    assert a.vertices.shape == (B, 5023, 3) and a.vertices.dtype == dtype
    assert_close(a.vertices, b.vertices, tol, "vertices")
    assert_close(a.joints, b.joints[:, :5], tol, "joints")
    assert_close(a.landmarks, b.joints[:, 5:56], tol, "51 static landmarks")
    assert_close(a.contour, b.joints[:, 56:73], tol, "17 contour landmarks")


def test_matches_smplx_with_gradients(pair):
    """Same values on the autograd path (which never takes the rigid shortcut), and the same gradients."""
    ours, ref, dtype = pair
    inputs = [x.requires_grad_(True) for x in random_inputs(4, 5, dtype)]
    a = ours(*inputs)
    (a.vertices.square().sum() + a.landmarks.sum() + a.contour.sum()).backward()
    ga = [x.grad.clone() for x in inputs]
    inputs = [x.detach().requires_grad_(True) for x in inputs]
    b = smplx_forward(ref, *inputs)
    (b.vertices.square().sum() + b.joints[:, 5:73].sum()).backward()
    assert_close(a.vertices, b.vertices, TOL[dtype], "vertices")
    for x, y, name in zip(ga, [x.grad for x in inputs], ("shape", "expression", "pose", "trans")):
        scale = y.abs().max().item()
        assert (x - y).abs().max().item() <= 1e-4 * scale, name


def test_contour_follows_neck_times_global_by_default(model, smplx_dir):
    """contour_joint=1 (MICA, DECA): the contour row is chosen from the yaw of R_global @ R_neck."""
    B = 81
    g = torch.Generator().manual_seed(3)
    pose = torch.zeros(B, 15, dtype=torch.float64)
    pose[:, 0:3] = 0.05 * torch.randn(B, 3, generator=g, dtype=torch.float64)
    pose[:, 3:6] = 0.1 * torch.randn(B, 3, generator=g, dtype=torch.float64)
    pose[:, 4] = torch.linspace(-0.9, 0.9, B, dtype=torch.float64)  # neck yaw from -52 to +52 degrees
    shape = 0.5 * torch.randn(B, 300, generator=g, dtype=torch.float64)
    flame = FLAME(model, dtype=torch.float64)
    assert flame.neck_chain == [1, 0]
    with torch.no_grad():
        out = flame(shape, pose=pose)

    # independent: scipy composes the rotations and gives the yaw as the middle extrinsic x-y-z angle
    R = (Rotation.from_rotvec(pose[:, 0:3].numpy()) * Rotation.from_rotvec(pose[:, 3:6].numpy()))
    yaw_deg = np.degrees(R.as_euler("xyz")[:, 1])
    emb = model.landmarks.dynamic
    rows = []
    for b in range(B):
        y = int(np.round(-yaw_deg[b]))
        row = min(y, 39) if y >= 0 else min(39 - y, 78)  # rows 0..39: 0..39 degrees; rows 40..78: -1..-39
        rows.append(row)
        pts = type(emb)(emb.face_idx[row], emb.bary[row])
        expect = pts.locate(out.vertices[b].numpy(), model.faces)
        assert np.allclose(out.contour[b].numpy(), expect, atol=1e-12), b
    assert len(set(rows)) > 40 and 39 in rows and 78 in rows  # the sweep reaches both ends of the table

    # the root-only choice (smplx's) picks other rows for the same heads
    with torch.no_grad():
        root_rows = FLAME(model, dtype=torch.float64, contour_joint=0).contour_row(
            lbs.axis_angle_to_matrix(pose.view(B, 5, 3)), B)
    assert (root_rows.numpy() != np.array(rows)).sum() > B // 2

    # and smplx itself agrees once its neck chain is the neck's: [neck, root]
    ref = smplx.FLAME(str(smplx_dir), num_betas=300, num_expression_coeffs=100, use_face_contour=True,
                      dtype=torch.float64, create_betas=False, create_expression=False,
                      create_global_orient=False, create_neck_pose=False, create_jaw_pose=False,
                      create_leye_pose=False, create_reye_pose=False, create_transl=False)
    ref.neck_kin_chain = torch.tensor([1, 0])
    with torch.no_grad():
        z = torch.zeros(B, 100, dtype=torch.float64)
        b = smplx_forward(ref, shape, z, pose, torch.zeros(B, 3, dtype=torch.float64))
    assert_close(out.contour, b.joints[:, 56:73], 1e-6, "contour with the neck chain")


def test_mica_six_vector_pose_equals_fifteen_with_neck_and_eyes_at_rest(flame_model):
    flame = FLAME(flame_model, dtype=torch.float64)
    shape, expression, pose, trans = random_inputs(5, 7)
    pose6 = torch.cat([pose[:, :3], pose[:, 6:9]], 1)
    pose15 = torch.zeros_like(pose)
    pose15[:, :3], pose15[:, 6:9] = pose[:, :3], pose[:, 6:9]
    with torch.no_grad():
        a, b = flame(shape, expression, pose6, trans), flame(shape, expression, pose15, trans)
    for name in ("vertices", "joints", "landmarks", "landmarks68", "contour"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    # the pose as (B, 5, 3) is the same as (B, 15)
    with torch.no_grad():
        c = flame(shape, expression, pose15.view(5, 5, 3), trans)
    assert torch.equal(c.vertices, b.vertices)


@pytest.mark.parametrize("case", ["root_only", "zero"])
def test_fast_paths_equal_full_skinning(flame_model, monkeypatch, case):
    flame = FLAME(flame_model, dtype=torch.float64)
    shape, expression, pose, trans = random_inputs(6, 8)
    pose[:, 3:] = 0
    if case == "zero":
        pose[:] = 0
    full = flame(shape, expression, pose.clone().requires_grad_(True), trans)  # autograd: always full skinning
    calls = []
    real = lbs.blend_transforms
    monkeypatch.setattr(lbs, "blend_transforms", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        fast = flame(shape, expression, pose, trans)
    assert not calls  # the shortcut was taken
    for name in ("vertices", "joints", "landmarks", "landmarks68", "contour"):
        assert_close(getattr(fast, name), getattr(full, name).detach(), 1e-12, name)
    with torch.no_grad():  # any rotated non-root joint takes the full path
        pose[:, 7] = 1e-3
        flame(shape, expression, pose, trans)
    assert calls


def test_no_fast_path_when_weights_do_not_sum_to_one(flame_model, monkeypatch):
    import dataclasses

    m = dataclasses.replace(flame_model, weights=flame_model.weights * 1.01)
    flame = FLAME(m, dtype=torch.float64)
    assert not flame.rigid_ok
    calls = []
    real = lbs.blend_transforms
    monkeypatch.setattr(lbs, "blend_transforms", lambda *a: calls.append(1) or real(*a))
    pose = torch.zeros(1, 15, dtype=torch.float64)
    pose[0, 1] = 0.5
    with torch.no_grad():
        out = flame(pose=pose)
    assert calls
    # skinning with weights w * 1.01 and a rigid head is 1.01 * (R v + t): check against that directly
    R = torch.as_tensor(Rotation.from_rotvec([0, 0.5, 0]).as_matrix())
    J0 = torch.as_tensor(flame_model.J_regressor[0] @ flame_model.v_template)
    v = torch.as_tensor(flame_model.v_template)
    expect = 1.01 * ((v - J0) @ R.T + J0)
    assert_close(out.vertices[0], expect, 1e-12, "vertices")


def test_vertex_chunks_do_not_change_results(flame_model, monkeypatch):
    """On the CPU vertices are built in chunks; many small (ragged) chunks give the same values and gradients."""
    import onflame.flame.layer as layer_module

    flame = FLAME(flame_model, dtype=torch.float64)
    results = []
    for numbers in (1 << 40, 12 * 3 * 700):  # one chunk; chunks of 700 vertices (the last one 123)
        monkeypatch.setattr(layer_module, "_CHUNK_NUMBERS", numbers)
        inputs = [x.requires_grad_(True) for x in random_inputs(3, 14)]
        out = flame(*inputs)
        (out.vertices.square().sum() + out.contour.sum()).backward()
        results.append((out.vertices.detach(), [x.grad for x in inputs]))
    (v1, g1), (v2, g2) = results
    assert_close(v1, v2, 1e-15, "vertices")
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_rest_pose_is_the_template(flame_model):
    flame = FLAME(flame_model, dtype=torch.float64)
    with torch.no_grad():
        out = flame()
    assert out.vertices.shape == (1, 5023, 3)
    assert np.allclose(out.vertices[0].numpy(), flame_model.v_template, atol=1e-15)
    assert np.allclose(out.joints[0].numpy(), flame_model.J_regressor @ flame_model.v_template, atol=1e-15)
    t = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    with torch.no_grad():
        moved = flame(trans=t, pose=torch.zeros(1, 6, dtype=torch.float64))
    assert_close(moved.vertices - t, out.vertices, 1e-15, "translation")
    assert_close(moved.contour - t, out.contour, 1e-12, "contour")


def _gradcheck_fn(flame, vertex_idx):
    def fn(shape, expression, pose, trans):
        out = flame(shape, expression, pose, trans)
        return torch.cat([out.vertices[:, vertex_idx], out.joints, out.landmarks, out.contour], 1)
    return fn


@pytest.mark.parametrize("at", ["random", "zero"])
def test_gradcheck(flame_model, at):
    """Analytic gradients equal finite differences for every input, also exactly at the zero pose."""
    flame = FLAME(flame_model, n_shape=6, n_expression=4, dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    B = 2
    shape = torch.randn(B, 6, generator=g, dtype=torch.float64)
    expression = torch.randn(B, 4, generator=g, dtype=torch.float64)
    pose = 0.4 * torch.randn(B, 15, generator=g, dtype=torch.float64) if at == "random" else torch.zeros(B, 15, dtype=torch.float64)
    trans = 0.1 * torch.randn(B, 3, generator=g, dtype=torch.float64)
    # a few vertices bound to each joint (root, neck, jaw, eyes) and blends of them
    w = flame_model.weights
    idx = torch.as_tensor(np.unique(np.concatenate([np.argsort(-w[:, j])[:3] for j in range(5)] + [np.arange(0, 5023, 700)])))
    inputs = tuple(x.requires_grad_(True) for x in (shape, expression, pose, trans))
    # fast mode compares random projections u·J·v (analytic vs numerical) instead of the full Jacobian
    assert torch.autograd.gradcheck(_gradcheck_fn(flame, idx), inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)
    # gradients reach every input
    out = _gradcheck_fn(flame, idx)(*inputs)
    grads = torch.autograd.grad(out.square().sum() + out.sum(), inputs)
    for gr, name in zip(grads, ("shape", "expression", "pose", "trans")):
        assert torch.isfinite(gr).all() and (gr.abs() > 0).any(), name


@pytest.mark.parametrize("case", ["root_only", "zero"])
def test_gradcheck_on_the_fast_paths(flame_model, case):
    """A pose that needs no gradient takes the rigid / no-skinning shortcut; shape, expression and
    translation gradients must still be exact there."""
    flame = FLAME(flame_model, n_shape=5, n_expression=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(12)
    pose = torch.zeros(2, 15, dtype=torch.float64)
    if case == "root_only":
        pose[:, :3] = torch.randn(2, 3, generator=g, dtype=torch.float64)
    idx = torch.arange(0, 5023, 300)
    inputs = tuple(torch.randn(2, n, generator=g, dtype=torch.float64).requires_grad_(True) for n in (5, 3, 3))

    def fn(shape, expression, trans):
        return _gradcheck_fn(flame, idx)(shape, expression, pose, trans)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_apply_transforms_second_derivatives():
    g = torch.Generator().manual_seed(13)
    for n in (4, 1):  # per-vertex transforms and one shared (rigid) transform
        T = torch.randn(n, 3, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
        v = torch.randn(4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
        off = torch.randn(3, 2, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lbs.apply_transforms, (T, v, off))
        assert torch.autograd.gradgradcheck(lbs.apply_transforms, (T, v, off))
        # and the value is T[:, :, :3] v + T[:, :, 3] + offset, written out per vertex and batch item
        out = lbs.apply_transforms(T, v, off)
        for i in range(4):
            for b in range(2):
                Ti = T[min(i, n - 1), :, :, b]
                assert torch.allclose(out[i, :, b], Ti[:, :3] @ v[i, :, b] + Ti[:, 3] + off[:, b])


def test_axis_angle_to_matrix_against_scipy():
    g = torch.Generator().manual_seed(4)
    aa = torch.cat([torch.randn(50, 3, generator=g, dtype=torch.float64) * 2,
                    torch.randn(6, 3, generator=g, dtype=torch.float64) * torch.tensor([1e-2, 1e-3, 1e-4, 1e-5, 1e-9, 0.0],
                                                                                       dtype=torch.float64)[:, None]])
    expect = Rotation.from_rotvec(aa.numpy()).as_matrix()
    assert np.abs(lbs.axis_angle_to_matrix(aa).numpy() - expect).max() < 1e-14
    # float32 keeps full precision at small angles: the 1 - cos θ term is computed without cancellation
    got32 = lbs.axis_angle_to_matrix(aa.float()).double().numpy()
    assert np.abs(got32 - expect).max() < 1e-6
    small32 = aa[50:].float()
    theta = small32.double().norm(dim=1).numpy()
    expect = Rotation.from_rotvec(small32.double().numpy()).as_matrix()
    got = lbs.axis_angle_to_matrix(small32).double().numpy()
    off = ~np.eye(3, dtype=bool)  # off-diagonal entries are O(θ) and carry the small-angle terms
    err = np.abs(got - expect)[:, off].max(1)
    assert np.all(err <= 1e-6 * theta), err / np.maximum(theta, 1e-300)
    assert np.array_equal(got[-1], np.eye(3))  # θ = 0 exactly


def test_flame_params_input(flame_model):
    flame = FLAME(flame_model, dtype=torch.float64)
    shape, expression, pose, trans = random_inputs(1, 9)
    p = FlameParams(shape[0].numpy(), expression[0].numpy(), pose[0].numpy(), trans[0].numpy())
    with torch.no_grad():
        a, b = flame(p), flame(shape, expression, pose, trans)
    assert a.vertices.dtype == torch.float64 and torch.equal(a.vertices, b.vertices)
    batch = FlameParams(shape.numpy().repeat(3, 0), expression.numpy().repeat(3, 0), pose.numpy().repeat(3, 0),
                        trans.numpy().repeat(3, 0))
    with torch.no_grad():
        c = flame(batch)
    assert c.vertices.shape == (3, 5023, 3)
    assert torch.allclose(c.vertices[2], b.vertices[0], atol=1e-12, rtol=0)


def test_double_and_input_dtypes(flame_model):
    f32 = FLAME(flame_model)
    f64 = FLAME(flame_model).double()
    assert f64.dtype == torch.float64 and f64.blend_basis.dtype == torch.float64 and f64.faces.dtype == torch.long
    shape, expression, pose, trans = random_inputs(3, 10, torch.float32)
    with torch.no_grad():
        a = f64(shape, expression, pose, trans)  # float32 inputs to a float64 layer
        b = f32(shape, expression, pose, trans)
        c = FLAME(flame_model, dtype=torch.float64)(shape.double(), expression.double(), pose.double(), trans.double())
    assert a.vertices.dtype == torch.float64 and b.vertices.dtype == torch.float32
    assert_close(a.vertices, b.vertices.double(), 1e-5, "float64 vs float32")
    assert_close(a.vertices, c.vertices, 1e-6, ".double() of float32 buffers vs float64 buffers")


def test_fewer_coefficients_and_bad_inputs(flame_model):
    flame = FLAME(flame_model, n_shape=100, n_expression=50, dtype=torch.float64)
    full = FLAME(flame_model, dtype=torch.float64)
    shape = torch.randn(2, 100, dtype=torch.float64)
    with torch.no_grad():
        a = flame(shape, torch.zeros(2, 50, dtype=torch.float64))
        b = full(torch.nn.functional.pad(shape, (0, 200)))  # the missing coefficients are zeros
        c = full(shape[:, :20])
    assert torch.allclose(a.vertices, b.vertices, atol=1e-12, rtol=0)
    assert c.vertices.shape == (2, 5023, 3)
    with pytest.raises(ValueError, match="shape has 300"):
        flame(torch.zeros(1, 300))
    with pytest.raises(ValueError, match="pose has 7"):
        flame(pose=torch.zeros(1, 7))


def test_vertices_are_contiguous_and_landmarks_on_them(flame_model):
    flame = FLAME(flame_model, dtype=torch.float64)
    shape, expression, pose, trans = random_inputs(2, 12)
    with torch.no_grad():
        out = flame(shape, expression, pose, trans)
    assert out.vertices.is_contiguous()
    pts = flame_model.landmarks.full68
    expect = np.stack([pts.locate(v, flame_model.faces) for v in out.vertices.numpy()])
    assert np.allclose(out.landmarks68.numpy(), expect, atol=1e-12)
    assert torch.allclose(out.landmarks68[:, 17:], out.landmarks, atol=1e-6)  # iBUG-68 = contour + inner 51


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(flame_model):
    cpu = FLAME(flame_model)
    gpu = FLAME(flame_model).cuda()
    inputs = random_inputs(8, 13, torch.float32)
    with torch.no_grad():
        a = cpu(*inputs)
        b = gpu(*(x.cuda() for x in inputs))
    assert b.vertices.device.type == "cuda"
    for name in ("vertices", "joints", "landmarks", "landmarks68", "contour"):
        assert_close(getattr(b, name).cpu(), getattr(a, name), 1e-5, name)
    x = [t.cuda().requires_grad_(True) for t in inputs]
    gpu(*x).vertices.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in x)
