"""FRGC range-image reader: small hand-written grids with known triangulations, and broken files."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onflame.errors import InputError
from onflame.mesh import read_mesh
from onflame.mesh.frgc_abs import abs_stem, read_abs


def _abs_text(flags: np.ndarray, xyz: np.ndarray) -> str:
    R, C = flags.shape
    xyz = np.where(flags.reshape(-1, 1) > 0, xyz.reshape(-1, 3), -999999.0)
    lines = [f"{R} rows", f"{C} columns", "pixels (flag X Y Z):", " ".join(str(int(f)) for f in flags.ravel())]
    lines += [" ".join(f"{x:.6f}" for x in xyz[:, k]) for k in range(3)]
    return "\n".join(lines) + "\n"


def _grid(R=3, C=4, z=None):
    """Points at X = column, Y = -row (mm), Z = 0 unless given: a flat sheet facing +z."""
    rows, cols = np.mgrid[0:R, 0:C]
    xyz = np.stack([cols, -rows, np.zeros((R, C)) if z is None else z], -1).astype(float)
    return np.ones((R, C), int), xyz


def _write(tmp_path: Path, flags, xyz, name="04200d74.abs") -> Path:
    p = tmp_path / name
    text = _abs_text(flags, xyz)
    p.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    return p


def test_triangulation_around_a_missing_pixel(tmp_path):
    flags, xyz = _grid()
    flags[1, 1] = 0
    m = read_abs(_write(tmp_path, flags, xyz), photo=False)
    # 2 full cells -> 4 triangles; the 4 cells touching the hole keep one triangle each
    assert m.n_faces == 8
    assert m.n_vertices == 11
    np.testing.assert_array_equal(m.meta["pixel_index"], [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11])
    assert m.meta["grid_shape"] == (3, 4)
    v = m.vertices[m.faces]
    normal_z = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    np.testing.assert_allclose(normal_z, 0.5 * 2)  # every triangle has area 1/2 and faces +z (the scanner)
    assert m.uv is None and m.texture is None


def test_long_edges_at_depth_jumps_are_dropped(tmp_path):
    z = np.zeros((4, 5))
    z[2, 2] = 80.0  # a spike 80 mm off the 1 mm grid: a depth jump
    flags, xyz = _grid(4, 5, z)
    m = read_abs(_write(tmp_path, flags, xyz), photo=False)
    assert m.vertices[:, 2].max() == 0.0  # the spike joins no triangle, so it is gone
    assert m.n_vertices == 19
    # 12 cells x 2 triangles, minus the 6 triangles that touch the centre pixel (2, 2)
    assert m.n_faces == 24 - 6
    kept = read_abs(_write(tmp_path, flags, xyz, "spike.abs"), photo=False, max_edge=1000.0)
    assert kept.n_faces == 24


@pytest.mark.parametrize("photo_size", [(4, 3), (8, 6)])
def test_photo_beside_the_file_gives_uv(tmp_path, photo_size):
    flags, xyz = _grid()
    p = _write(tmp_path, flags, xyz, "02463d546.abs.gz")
    Image.new("RGB", photo_size, (10, 20, 30)).save(tmp_path / "02463d546.ppm")
    m = read_mesh(p)
    assert m.texture == tmp_path / "02463d546.ppm"
    assert m.meta["photo_size"] == photo_size
    # uv are pixel centres of the R x C grid, normalised, v up: the same for a photo of any size
    np.testing.assert_allclose(m.uv[0], [0.5 / 4, 1 - 0.5 / 3])
    np.testing.assert_allclose(m.uv[-1], [3.5 / 4, 1 - 2.5 / 3])
    np.testing.assert_array_equal(m.face_uv, m.faces)
    np.testing.assert_allclose(m.vertices[5], [1, -1, 0])  # pixel (1, 1), in millimetres as stored


def test_abs_stem():
    assert abs_stem("a/02463d546.abs.gz") == "02463d546"
    assert abs_stem("04200d74.abs") == "04200d74"


def _err(path: Path, **kw) -> str:
    with pytest.raises(InputError) as ei:
        read_abs(path, **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_truncated_and_malformed(tmp_path):
    flags, xyz = _grid()
    text = _abs_text(flags, xyz)
    p = tmp_path / "cut.abs"
    p.write_text(text.rsplit("\n", 2)[0] + "\n")  # the Z line is missing
    msg = _err(p)
    assert msg.startswith(str(p)) and "truncated" in msg and "found 36" in msg
    p.write_text(text.replace("3 rows", "three rows"))
    assert "not an FRGC range image" in _err(p)
    p.write_text(text.replace(" 2.000000", " 2.0x0", 1))
    assert "not a number" in _err(p)
    p.write_bytes(gzip.compress(text.encode())[:30])
    assert "gzip" in _err(p)


def test_all_invalid(tmp_path):
    flags, xyz = _grid()
    p = _write(tmp_path, flags * 0, xyz)
    assert "no valid point" in _err(p)


def test_missing_or_corrupt_photo(tmp_path):
    flags, xyz = _grid()
    p = _write(tmp_path, flags, xyz)
    missing = tmp_path / "other.ppm"
    msg = _err(p, photo=missing)
    assert msg.startswith(str(missing)) and "no such file" in msg
    ppm = tmp_path / "04200d74.ppm"
    ppm.write_bytes(b"P6\n4 3\n255\n" + bytes(10))  # header says 4x3 RGB, data stops short
    msg = _err(p, photo=ppm)  # a photo the caller names must decode
    assert msg.startswith(str(ppm)) and "cannot read image" in msg
    # the photo found beside the scan is treated like any texture that does not decode: read on without it
    mesh = read_abs(p)
    assert mesh.texture is None and mesh.uv is None
    assert mesh.meta["texture_problem"][0] == str(ppm) and "cannot read image" in mesh.meta["texture_problem"][1]
