"""Each source reader against its release's published facts, not against onflame's own constants.

Every scan here is written by hand in the format, unit and axes the release publishes (the table
:data:`FACTS`, with where each fact comes from), from FLAME's mean head (``head_template.obj``: metres,
+y up, the face towards +z). Read back through the source (``find_scans`` then ``load``) it must be that
head again, in metres and FLAME's axes: a reader with a wrong unit is off by a factor of ten or more, one
with a wrong rotation puts the face centimetres away, and both fail here. The synthetic releases
(tests/test_sources_roundtrip.py) cannot catch that: they are written with the readers' own constants.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import trimesh
from conftest import FLAME_FIX

from onflame.mesh import read_mesh
from onflame.sources import get_source


def _rotation(axis: str, degrees: float) -> np.ndarray:
    """A right-handed rotation about a coordinate axis, written out here (not the readers' helper)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


#: MICA's LYHM instance (datasets/creation/instances/lyhm.py) turns each scan by -45° about X, then -45°
#: about Y, to face +z: so a released LYHM scan is FLAME's axes turned back by the inverse.
LYHM_TO_FLAME = _rotation("y", -45.0) @ _rotation("x", -45.0)

#: source -> (file in the release, format, millimetres per file unit, rotation from FLAME's axes to the
#: file's). Units: every release here publishes millimetres (3dMD for BU-3DFE, Florence, Stirling/ESRC,
#: D3DFACS and LYHM; Di3D for BP4D+; FRGC's .abs header "pixels (flag X Y Z)" in mm of the Minolta Vivid
#: 910) except FaceWarehouse, which states none (two scales tried below).
FACTS = {
    "BU3DFE": ("F0001/F0001_NE00WH_RAW.wrl", "wrl", 1.0, np.eye(3)),
    "FLORENCE": ("subject_01/Model/frontal1/vrml/110920150452.wrl", "wrl", 1.0, np.eye(3)),
    "STIRLING": ("scans/F/F1001_N.obj", "obj", 1.0, np.eye(3)),
    "D3DFACS": ("scans/Adrian.obj", "obj", 1.0, np.eye(3)),
    "BP4D": ("scans/F001.obj", "obj", 1.0, np.eye(3)),
    "LYHM": ("00001/scan/130925161618.obj", "obj", 1.0, LYHM_TO_FLAME.T),
    "FACEWAREHOUSE": ("FaceWarehouse_Data_0/Tester_1/TrainingPose/pose_0.obj", "obj", 10.0, np.eye(3)),
}


@pytest.fixture(scope="module")
def head() -> trimesh.Trimesh:
    mesh = read_mesh(FLAME_FIX / "head_template.obj")
    return trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)


def _write_obj(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")


def _write_wrl(path: Path, v: np.ndarray, f: np.ndarray) -> None:
    """VRML 2.0 as 3dMD writes it: one Shape with an IndexedFaceSet, coordinates in the file's unit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    points = ",\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in v)
    index = ",\n".join(f"{a}, {b}, {c}, -1" for a, b, c in f)
    path.write_text("#VRML V2.0 utf8\nTransform { children [ Shape { geometry IndexedFaceSet {\n"
                    f"coord Coordinate {{ point [\n{points}\n] }}\ncoordIndex [\n{index}\n] }} }} ] }}\n")


def _write(kind: str, path: Path, v: np.ndarray, f: np.ndarray) -> None:
    {"obj": _write_obj, "wrl": _write_wrl}[kind](path, v, f)


@pytest.mark.parametrize("name", sorted(FACTS))
def test_a_scan_in_the_releases_unit_and_axes_reads_as_the_head_in_metres(name, head, tmp_path):
    rel, kind, mm_per_unit, to_file = FACTS[name]
    _write(kind, tmp_path / rel, head.vertices @ to_file.T * 1000.0 / mm_per_unit, head.faces)
    items = get_source(name).find_scans(tmp_path)
    assert [it.scan_path for it in items] == [tmp_path / rel]
    mesh = items[0].load()
    assert mesh.meta["units"] == "m"
    # the same vertices, in metres and FLAME's axes: the file's six decimals are the only difference
    np.testing.assert_allclose(mesh.vertices, head.vertices, atol=1e-6 * mm_per_unit / 1000.0 + 1e-9)


def test_facewarehouse_states_no_unit_and_either_scale_is_found(head, tmp_path):
    rel = FACTS["FACEWAREHOUSE"][0]
    for unit, mm_per_unit in (("mm", 1.0), ("cm", 10.0)):
        folder = tmp_path / unit
        _write_obj(folder / rel, head.vertices * 1000.0 / mm_per_unit, head.faces)
        mesh = get_source("FACEWAREHOUSE").find_scans(folder)[0].load()
        assert mesh.meta["units_read"] == unit
        np.testing.assert_allclose(mesh.vertices, head.vertices, atol=1e-5)


def _range_image(head: trimesh.Trimesh, rows: int, cols: int, depth_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The head as a scanner at +z sees it: per pixel (flag, X, Y, Z) in millimetres, rows top to bottom
    (+y first), columns left to right (+x), Z toward the scanner and ``depth_mm`` behind it."""
    lo, hi = head.vertices.min(0), head.vertices.max(0)
    xs, ys = np.linspace(lo[0], hi[0], cols), np.linspace(hi[1], lo[1], rows)
    gx, gy = np.meshgrid(xs, ys)
    origins = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, hi[2] + 1.0)], -1)
    hits, ray, _ = head.ray.intersects_location(origins, np.tile([0.0, 0.0, -1.0], (len(origins), 1)))
    z = np.full(gx.size, -np.inf)
    np.maximum.at(z, ray, hits[:, 2])  # the first surface each ray meets
    flag = np.isfinite(z).reshape(gx.shape)
    xyz = np.stack([gx, gy, z.reshape(gx.shape)], -1) * 1000.0 - [0.0, 0.0, depth_mm]
    xyz[~flag] = -999999.0
    return flag, xyz


def test_frgc_range_image_in_millimetres_facing_the_scanner(head, tmp_path):
    """FRGC v2.0's .abs: a header of rows and columns, then the flags and the X, Y, Z rows of every pixel,
    in millimetres (the Minolta's camera frame: +y up, the face looking at the scanner)."""
    rows, cols, depth = 60, 80, 1200.0
    flag, xyz = _range_image(head, rows, cols, depth)
    text = [f"{rows} rows", f"{cols} columns", "pixels (flag X Y Z):", " ".join(str(int(b)) for b in flag.ravel())]
    text += [" ".join(f"{x:.3f}" for x in xyz[..., k].ravel()) for k in range(3)]
    path = tmp_path / "nd1" / "Fall2003range" / "02463d546.abs.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    item = get_source("FRGC").find_scans(tmp_path)[0]
    mesh = item.load()
    assert mesh.meta["units_read"] == "mm" and mesh.n_vertices > 0.5 * flag.sum()
    # every point lies on the head's surface once the scanner's distance is taken back (metres)
    points = mesh.vertices + [0.0, 0.0, depth / 1000.0]
    distance = np.abs(trimesh.proximity.signed_distance(head, points))
    assert np.median(distance) < 5e-4 and np.percentile(distance, 95) < 2e-3
    # and the nose, the point nearest the scanner, is FLAME's nose: at the front, in the middle
    tip = points[points[:, 2].argmax()]
    assert np.linalg.norm(tip - head.vertices[head.vertices[:, 2].argmax()]) < 0.01
