"""Synthetic raw releases: write -> find -> read -> FLAME's frame and metres gives back the generating head."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh
from conftest import MICA_LISTS
from scipy.spatial import cKDTree

from onflame.dataset.image_paths import read_image_paths
from onflame.mesh.facewarehouse import read_land
from onflame.sources import SOURCES, get_source
from onflame.synthetic.raw_releases import MICA_FACTS, write_raw_release


def _surface_distance_mm(points_m: np.ndarray, vertices_m: np.ndarray, faces: np.ndarray) -> np.ndarray:
    # in millimetres: trimesh's point-triangle tolerance is absolute and too coarse for sub-mm triangles in metres
    tm = trimesh.Trimesh(vertices_m * 1000.0, faces, process=False)
    return trimesh.proximity.closest_point(tm, points_m * 1000.0)[1]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_round_trip(name, tmp_path, flame_model):
    release = write_raw_release(name, tmp_path / name, flame_model, n_actors=2, seed=3)
    items = get_source(name).find_scans(release.root)
    facts = MICA_FACTS[name][:2]
    assert [(it.actor, it.stem) for it in items] == sorted((a, s) for a, s, _ in facts)
    listing = MICA_LISTS / f"{name}.npy"
    mica = read_image_paths(listing) if listing.is_file() else None
    for it in items:
        truth = release.scan(it.actor)
        assert it.scan_path == truth.path
        if mica is not None:
            assert mica[it.actor][1] == it.params_relpath  # output names are MICA's
        assert len(it.photos) >= 2 and all(p.is_file() for p in it.photos)

        mesh = it.load(require_texture=True)
        assert mesh.meta["units"] == "m" and mesh.n_vertices > 1500
        d = _surface_distance_mm(mesh.vertices, truth.truth, truth.faces)
        assert d.max() < 1.0, f"{it.name}: scan point {d.max():.3f} mm off the generating surface"
        # and the scan covers the face: every landmark has scan points near it
        near = cKDTree(mesh.vertices).query(truth.landmarks)[0]
        assert np.median(near) < 0.003 and near.max() < 0.008, f"{it.name}: face not covered"
        if it.texture_expected:
            assert mesh.texture is not None and mesh.texture.is_file() and mesh.uv is not None


def test_round_trip_can_fail_without_the_source_transform(tmp_path, flame_model):
    """LYHM scans are turned; read without the rotation (or in the wrong unit) they miss the head by centimetres."""
    release = write_raw_release("LYHM", tmp_path, flame_model, n_actors=1, seed=5)
    item = get_source("LYHM").find_scans(tmp_path)[0]
    raw = item.read()
    truth = release.scans[0]
    unturned = raw.transformed(scale=0.001)
    assert np.median(_surface_distance_mm(unturned.vertices, truth.truth, truth.faces)) > 10.0
    assert _surface_distance_mm(item.to_flame_frame(raw).vertices, truth.truth, truth.faces).max() < 1.0


def test_facewarehouse_release_details(tmp_path, flame_model):
    write_raw_release("FACEWAREHOUSE", tmp_path, flame_model, n_actors=1, seed=1)
    item = get_source("FACEWAREHOUSE").find_scans(tmp_path)[0]
    raw = item.read()
    assert raw.meta == {} and raw.n_vertices != 5023 and raw.n_vertices != 11510  # a topology of its own
    assert item.to_flame_frame(raw).meta["units_read"] == "cm"  # unit not stated: detected from size
    land = read_land(item.landmarks_path)
    from PIL import Image

    w, h = Image.open(item.scan_path.with_suffix(".png")).size
    assert land.image_points.shape == (51, 2)
    assert (land.image_points >= 0).all()
    assert (land.image_points[:, 0] < w).all() and (land.image_points[:, 1] < h).all()


def test_frgc_release_excludes_spring2003(tmp_path, flame_model):
    write_raw_release("FRGC", tmp_path, flame_model, n_actors=1, seed=2)
    assert any(tmp_path.rglob("Spring2003range/*.abs.gz"))
    items = get_source("FRGC").find_scans(tmp_path)
    assert [it.name for it in items] == ["02463/02463d546"]


def test_same_seed_same_files(tmp_path, flame_model):
    a = write_raw_release("STIRLING", tmp_path / "a", flame_model, n_actors=1, seed=7)
    b = write_raw_release("STIRLING", tmp_path / "b", flame_model, n_actors=1, seed=7)
    assert a.scans[0].path.read_bytes() == b.scans[0].path.read_bytes()
    with pytest.raises(ValueError):
        write_raw_release("STIRLING", tmp_path / "c", flame_model, n_actors=4)


def test_bad_files_in_a_release(tmp_path, flame_model):
    """A missing texture, a truncated range image, a corrupt VRML file: one-line InputError naming the file."""
    import json

    from onflame.errors import InputError

    write_raw_release("BP4D", tmp_path / "bp", flame_model, n_actors=1)
    item = get_source("BP4D").find_scans(tmp_path / "bp")[0]
    json.dumps(item.as_dict())
    item.scan_path.with_suffix(".jpg").unlink()
    assert item.read().texture is None  # the reader goes on without it ...
    with pytest.raises(InputError, match="texture image not found") as ei:  # ... a build that needs it does not
        item.load(require_texture=True)
    assert str(ei.value).startswith(str(item.scan_path))

    write_raw_release("FRGC", tmp_path / "frgc", flame_model, n_actors=1)
    item = get_source("FRGC").find_scans(tmp_path / "frgc")[0]
    import gzip

    text = gzip.decompress(item.scan_path.read_bytes())
    item.scan_path.write_bytes(gzip.compress(text[: len(text) * 3 // 4]))
    with pytest.raises(InputError, match="truncated") as ei:
        item.load()
    assert str(ei.value).startswith(str(item.scan_path)) and "\n" not in str(ei.value)

    write_raw_release("BU3DFE", tmp_path / "bu", flame_model, n_actors=1)
    item = get_source("BU3DFE").find_scans(tmp_path / "bu")[0]
    text = item.scan_path.read_text()
    item.scan_path.write_text(text[: len(text) // 2])
    with pytest.raises(InputError, match="never closed|file ends") as ei:
        item.load()
    assert str(ei.value).startswith(str(item.scan_path))
