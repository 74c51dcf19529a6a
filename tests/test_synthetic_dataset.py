"""The synthetic MICA dataset tree (onflame.synthetic.dataset)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import MICA_LISTS
from onflame.flame import FLAME, read_params
from onflame.mesh import read_mesh
from onflame.safepickle import load_npy_object
from onflame.synthetic.dataset import MICA_ACTORS, SUBSETS, make_mica_dataset
from onflame.synthetic.head import make_head_model

#: One (actor, npz path relative to FLAME_parameters/) per subset, as in MICA's image lists.
KNOWN = {"BU3DFE": ("F0001", "F0001/F0001_NE00WH_RAW.npz"), "FRGC": ("02463", "02463/02463d546.npz"),
         "STIRLING": ("F1001", "F1001/F1001_N.npz"), "LYHM": ("00001", "00001/130925161618.npz"),
         "FLORENCE": ("subject_01", "subject_01/110920150452.npz"),
         "FACEWAREHOUSE": ("Tester_1", "Tester_1/pose_0.npz"),
         "BP4D": ("F001", "F001/F001.npz"), "D3DFACS": ("Adrian", "Adrian/Adrian.npz")}


@pytest.fixture(scope="module")
def head():
    return make_head_model(0)


@pytest.fixture(scope="module")
def tree(head, tmp_path_factory):
    root = tmp_path_factory.mktemp("mica")
    return root, make_mica_dataset(root, head, actors_per_subset=2, seed=0)


def test_tree_layout_and_names(tree):
    root, summary = tree
    assert SUBSETS == ("BP4D", "BU3DFE", "D3DFACS", "FACEWAREHOUSE", "FLORENCE", "FRGC", "LYHM", "STIRLING")
    expected = set()
    for subset, (actor, npz) in KNOWN.items():
        assert MICA_ACTORS[subset][0] == (actor, npz.split("/")[1][:-4])
        for a, stem in MICA_ACTORS[subset][:2]:
            expected.add(f"{subset}/FLAME_parameters/{a}/{stem}.npz")
            expected.add(f"{subset}/registrations/{a}/{stem}.obj")
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert found == expected
    assert summary["files_written"] == 32 and summary["files_skipped"] == 0
    assert summary["subsets"]["FRGC"]["actors"] == ["02463", "04319"]


@pytest.mark.skipif(not MICA_LISTS.is_dir(), reason="MICA's image lists (../shared) not found")
def test_actor_table_matches_micas_lists():
    for subset, pairs in MICA_ACTORS.items():
        lists = load_npy_object(MICA_LISTS / f"{subset}.npy")
        for actor, stem in pairs:
            assert lists[actor][1] == f"{actor}/{stem}.npz", (subset, actor)


def test_parameter_files_are_micas_format(tree):
    root, _ = tree
    files = sorted(root.glob("*/FLAME_parameters/*/*.npz"))
    assert len(files) == 16
    for path in files:
        with np.load(path, allow_pickle=False) as z:
            assert {k: z[k].shape for k in z.files} == {"betas": (400,), "pose": (15,), "trans": (3,)}
        p = read_params(path)
        assert np.abs(p.shape).max() < 5 and np.abs(p.expression).max() < 4
        assert 0.0 <= p.pose[6] <= 0.15 and np.all(p.pose[[0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14]] == 0)
    shapes = np.stack([read_params(p).shape for p in files])
    assert np.linalg.matrix_rank(shapes) == len(files)  # every actor is a different person


def test_registrations_are_the_flame_meshes_of_the_parameters(tree, head):
    root, _ = tree
    layer = FLAME(head)  # float32, built independently of the writer's float64 layer
    for npz in sorted(root.glob("*/FLAME_parameters/*/*.npz")):
        subset, _, actor, name = npz.relative_to(root).parts
        mesh = read_mesh(root / subset / "registrations" / actor / name.replace(".npz", ".obj"))
        with torch.no_grad():
            expected = layer(read_params(npz)).vertices[0].numpy()
        np.testing.assert_array_equal(mesh.faces, head.faces)
        np.testing.assert_allclose(mesh.vertices, expected, atol=1e-5)
        assert np.abs(mesh.vertices - head.v_template).max() > 1e-3  # not just the mean head


def test_rerun_resumes(head, tmp_path):
    first = make_mica_dataset(tmp_path, head, actors_per_subset=1, subsets=["FRGC", "LYHM"])
    assert first["files_written"] == 4
    again = make_mica_dataset(tmp_path, head, actors_per_subset=1, subsets=["FRGC", "LYHM"])
    assert again["files_written"] == 0 and again["files_skipped"] == 4
    obj = tmp_path / "FRGC" / "registrations" / "02463" / "02463d546.obj"
    before = obj.read_bytes()
    obj.unlink()
    third = make_mica_dataset(tmp_path, head, actors_per_subset=1, subsets=["FRGC", "LYHM"])
    assert third["files_written"] == 1 and obj.read_bytes() == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_existing_parameters_drive_the_missing_mesh(head, tmp_path):
    make_mica_dataset(tmp_path, head, actors_per_subset=1, subsets=["STIRLING"])
    npz = tmp_path / "STIRLING" / "FLAME_parameters" / "F1001" / "F1001_N.npz"
    obj = tmp_path / "STIRLING" / "registrations" / "F1001" / "F1001_N.obj"
    p = read_params(npz)
    p.shape[:] = 0.0
    p.expression[:] = 0.0
    p.pose[:] = 0.0
    p.save(npz)
    obj.unlink()
    make_mica_dataset(tmp_path, head, actors_per_subset=1, subsets=["STIRLING"])
    np.testing.assert_allclose(read_mesh(obj).vertices, head.v_template, atol=1e-6)  # the file's (zero) params


def test_parameters_depend_only_on_seed_subset_and_actor(head, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_mica_dataset(a, head, actors_per_subset=2, seed=3, subsets=["LYHM"])
    make_mica_dataset(b, head, actors_per_subset=1, seed=3, subsets=["FRGC", "LYHM"])
    make_mica_dataset(c, head, actors_per_subset=1, seed=4, subsets=["LYHM"])
    rel = "LYHM/FLAME_parameters/00001/130925161618.npz"
    np.testing.assert_array_equal(read_params(a / rel).betas, read_params(b / rel).betas)
    assert not np.array_equal(read_params(a / rel).betas, read_params(c / rel).betas)


@pytest.mark.parametrize("kwargs", [{"subsets": ["NOPE"]}, {"actors_per_subset": 0}, {"actors_per_subset": 11}])
def test_bad_arguments(head, tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_mica_dataset(tmp_path, head, **kwargs)
    assert not any(tmp_path.iterdir())
