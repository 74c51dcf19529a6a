"""OBJ as scan releases write it (broken material lines, Windows texture paths, quads), PLY, FaceWarehouse ``.land``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onflame.errors import InputError
from onflame.mesh import Mesh, read_mesh
from onflame.mesh.facewarehouse import Landmarks, landmarks_3d, read_land

SQUARE = "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"


def _image(path: Path) -> Path:
    Image.new("RGB", (4, 4), (1, 2, 3)).save(path)
    return path


def test_stirling_style_broken_material_lines(tmp_path):
    _image(tmp_path / "F1001_N.bmp")
    (tmp_path / "F1001_N.mtl").write_text("newmtl\nKa 1 1 1\nnewmtl two words here\nmap_Kd F1001_N.bmp\n")
    obj = tmp_path / "F1001_N.obj"
    obj.write_text("usemtl before_any_library\nmtllib F1001_N.mtl\nusemtl F1001_N.bmp_0\n" + SQUARE
                   + "f 1/1 2/2 3/3\nusemtl\nf 1/1 3/3 4/4\n")
    m = read_mesh(obj)
    assert m.texture == tmp_path / "F1001_N.bmp"
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(m.face_uv, [[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize("map_line, image", [
    ("map_Kd C:\\Users\\scan\\Desktop\\tex.bmp", "tex.bmp"),    # capture machine's absolute path
    ("map_Kd -s 1 1 1 tex.bmp", "tex.bmp"),                    # options before the name
    ("map_Kd my texture.bmp", "my texture.bmp"),               # a name with a space
    ("map_kd TEX.BMP", "tex.bmp"),                             # lower-case keyword, name case differs
])
def test_texture_names_as_releases_write_them(tmp_path, map_line, image):
    _image(tmp_path / image)
    (tmp_path / "s.mtl").write_text(f"newmtl m\n{map_line}\n")
    obj = tmp_path / "s.obj"
    obj.write_text("mtllib s.mtl\n" + SQUARE + "f 1/1 2/2 3/3 4/4\n")
    m = read_mesh(obj)
    assert m.texture == tmp_path / image
    assert m.n_faces == 2  # the quad is split in two


def test_missing_texture_is_tolerated_by_the_reader(tmp_path):
    (tmp_path / "s.mtl").write_text("newmtl m\nmap_Kd gone.bmp\n")
    obj = tmp_path / "s.obj"
    obj.write_text("mtllib s.mtl\n" + SQUARE + "f 1/1 2/2 3/3\n")
    assert read_mesh(obj).texture is None  # ScanItem.read(require_texture=True) turns this into an error


def test_obj_bad_input(tmp_path):
    obj = tmp_path / "bad.obj"
    obj.write_text(SQUARE + "f 1 2 9\n")
    with pytest.raises(InputError, match="out of range") as ei:
        read_mesh(obj)
    assert str(ei.value).startswith(str(obj))
    obj.write_text("v 0 0 zero\nf 1 1 1\n")
    with pytest.raises(InputError, match="malformed OBJ"):
        read_mesh(obj)


def test_ply_binary_colours_polygons_and_round_trip(tmp_path):
    """Binary PLY as scanners write it: big-endian or little, colours as uchar, faces named
    ``vertex_index``, quads (fan-split like OBJ's) and a round trip through :func:`write_ply`."""
    import plyfile

    from onflame.mesh import Mesh, write_ply

    xyz = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 0, 0]], float)
    vertex = np.array([(*p, 10 * k, 20, 255) for k, p in enumerate(xyz)],
                      dtype=[("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    face = np.empty(2, dtype=[("vertex_index", object)])
    face["vertex_index"] = [np.array([0, 1, 2, 3], np.int32), np.array([1, 4, 2], np.int32)]
    ply = tmp_path / "quads.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"), plyfile.PlyElement.describe(face, "face")],
                    byte_order=">").write(str(ply))
    m = read_mesh(ply)
    np.testing.assert_allclose(m.vertices, xyz)
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    np.testing.assert_allclose(m.colors[:, 0], np.arange(5) * 10 / 255)
    np.testing.assert_allclose(m.colors[:, 2], 1.0)
    write_ply(tmp_path / "out.ply", m)
    back = read_mesh(tmp_path / "out.ply")
    np.testing.assert_array_equal(back.vertices, m.vertices)
    np.testing.assert_array_equal(back.faces, m.faces)
    np.testing.assert_allclose(back.colors, m.colors, atol=0.5 / 255)
    write_ply(tmp_path / "plain.ply", Mesh(xyz, m.faces))
    assert read_mesh(tmp_path / "plain.ply").colors is None
    write_ply(tmp_path / "bad.ply", Mesh(xyz[:3], m.faces))  # faces name vertices 3 and 4 of 3
    with pytest.raises(InputError, match="out of range") as ei:
        read_mesh(tmp_path / "bad.ply")
    assert str(ei.value).startswith(str(tmp_path / "bad.ply"))


def test_ply(tmp_path):
    ply = tmp_path / "s.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
                   "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
                   "0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n")
    m = read_mesh(ply)
    np.testing.assert_allclose(m.vertices, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3]])
    ply.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nend_header\n0\n")
    with pytest.raises(InputError, match="PLY vertices lack y, z") as ei:
        read_mesh(ply)
    assert str(ei.value).startswith(str(ply))
    ply.write_bytes(b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n")
    with pytest.raises(InputError, match="no 'vertex' element"):
        read_mesh(ply)


# --- FaceWarehouse .land -----------------------------------------------------------------------------------

def test_land_image_points(tmp_path):
    p = tmp_path / "pose_0.land"
    p.write_text("3\n100.5 200.25\n101 202\n99 198\n")
    lm = read_land(p)
    np.testing.assert_allclose(lm.image_points, [[100.5, 200.25], [101, 202], [99, 198]])
    assert lm.vertex_ids is None and lm.points is None and len(lm) == 3
    with pytest.raises(InputError, match="camera"):
        landmarks_3d(lm, Mesh(np.zeros((3, 3)), np.zeros((0, 3))))


def test_land_vertex_ids_and_points(tmp_path):
    mesh = Mesh(np.arange(30, dtype=float).reshape(10, 3), np.zeros((0, 3)))
    p = tmp_path / "ids.land"
    p.write_text("2\n7\n3\n")
    np.testing.assert_allclose(landmarks_3d(read_land(p), mesh), [[21, 22, 23], [9, 10, 11]])
    p.write_text("2\n7\n30\n")
    with pytest.raises(InputError, match="out of range"):
        landmarks_3d(read_land(p), mesh)
    p.write_text("1\n0.1 0.2 0.3\n")
    np.testing.assert_allclose(landmarks_3d(read_land(p), mesh), [[0.1, 0.2, 0.3]])
    assert isinstance(read_land(p), Landmarks)


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("74\n1 2\n3 4\n", "truncated"),
    ("x y\n1 2\n", "count"),
    ("2\n1 2\n3 4 5\n", "same on every line"),
    ("1\n1 2 3 4\n", "same on every line"),
    ("1\nnan 2\n", "NaN"),
    ("1\n1.5\n", "vertex indices"),
])
def test_land_bad_input(tmp_path, text, words):
    p = tmp_path / "bad.land"
    p.write_text(text)
    with pytest.raises(InputError, match=words) as ei:
        read_land(p)
    assert str(ei.value).startswith(str(p))
    with pytest.raises(InputError, match="is a folder"):
        read_land(tmp_path)
