"""VRML 2.0 reader: hand-written files with known geometry, and broken ones."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from onflame.errors import InputError
from onflame.mesh import read_mesh
from onflame.mesh.wrl import read_wrl

TWO_SHAPES = """#VRML V2.0 utf8
# two pods, as a 3dMD export
Transform {
  translation 10 0 0   # shifts the first shape only
  children [
    Shape {
      appearance Appearance {
        texture ImageTexture { url [ "C:\\\\capture\\\\left.bmp" ] }
        material Material { diffuseColor 0.8 0.8 0.8 }
      }
      geometry IndexedFaceSet {
        solid FALSE creaseAngle 0.5
        coord DEF PTS Coordinate { point [ 0 0 0, 1 0 0, 2 1 0, 1 2 0, 0 1 0 ] }
        coordIndex [ 0, 1, 2, 3, 4, -1 ]
        texCoord TextureCoordinate { point [ 0 0, 0.5 0, 1 0.5, 0.5 1, 0 0.5 ] }
        texCoordIndex [ 0 1 2 3 4 -1 ]
      }
    }
  ]
}
Shape {
  appearance Appearance { texture ImageTexture { url "RIGHT.BMP" } }
  geometry IndexedFaceSet {
    coord USE PTS
    coordIndex [ 0 1 2 -1 2 3 4 ]
    texCoord TextureCoordinate { point [ 0.1 0.2, 0.3 0.4, 0.5 0.6, 0.7 0.8, 0.9 1.0 ] }
  }
}
"""


def _image(path: Path, size=(8, 8)) -> Path:
    Image.new("RGB", size, (120, 80, 60)).save(path)
    return path


def _write(tmp_path: Path, text: str, name: str = "scan.wrl") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_two_shapes_with_transform_def_use_and_textures(tmp_path):
    _image(tmp_path / "left.bmp")
    _image(tmp_path / "right.bmp")
    m = read_wrl(_write(tmp_path, TWO_SHAPES))
    pts = np.array([[0, 0, 0], [1, 0, 0], [2, 1, 0], [1, 2, 0], [0, 1, 0]], float)
    np.testing.assert_allclose(m.vertices, np.vstack([pts + [10, 0, 0], pts]))
    # pentagon fan (0,1,2)(0,2,3)(0,3,4); second shape: two triangles, the last polygon unterminated
    np.testing.assert_array_equal(m.faces, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [5, 6, 7], [7, 8, 9]])
    # second shape has no texCoordIndex: coordIndex indexes its texture coordinates (offset by 5)
    np.testing.assert_array_equal(m.face_uv, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [5, 6, 7], [7, 8, 9]])
    np.testing.assert_allclose(m.uv[7], [0.5, 0.6])
    # Windows path and case mismatch both resolve to the files beside the .wrl
    assert m.texture == tmp_path / "left.bmp"
    assert m.meta["textures"] == [tmp_path / "left.bmp", tmp_path / "right.bmp"]
    np.testing.assert_array_equal(m.meta["face_texture"], [0, 0, 0, 1, 1])
    assert m.meta["shapes"] == 2
    assert "units" not in m.meta  # the reader states no unit; source modules do


def test_rotation_scale_ccw_and_colors(tmp_path):
    text = """#VRML V2.0 utf8
Transform { rotation 0 0 1 1.5707963267948966 scale 2 2 2 children Shape { geometry IndexedFaceSet {
  ccw FALSE
  coord Coordinate { point [ 1 0 0, 0 1 0, 0 0 1 ] }
  color Color { color [ 255 0 0, 0 255 0, 0 0 255 ] }
  coordIndex [ 0 1 2 -1 ] } } }
"""
    m = read_wrl(_write(tmp_path, text))
    # scale 2 then 90 degrees about z: (1,0,0) -> (0,2,0), (0,1,0) -> (-2,0,0), (0,0,1) -> (0,0,2)
    np.testing.assert_allclose(m.vertices, [[0, 2, 0], [-2, 0, 0], [0, 0, 2]], atol=1e-12)
    np.testing.assert_array_equal(m.faces, [[0, 2, 1]])  # ccw FALSE: winding reversed
    np.testing.assert_allclose(m.colors, np.eye(3))
    assert m.uv is None and m.texture is None


def test_gzip_and_read_mesh_dispatch(tmp_path):
    _image(tmp_path / "left.bmp")
    _image(tmp_path / "right.bmp")
    p = tmp_path / "packed.wrl"
    p.write_bytes(gzip.compress(TWO_SHAPES.encode()))
    m = read_mesh(p)
    assert m.n_vertices == 10 and m.n_faces == 5


def test_large_block_numbers_parse_exactly(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.normal(0, 100, (3000, 3))
    f = rng.integers(0, 3000, (5000, 3))
    text = ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [\n"
            + "".join(f"{a:.6e} {b:.6e} {c:.6e},\n" for a, b, c in v)
            + "] } coordIndex [\n" + "".join(f"{a}, {b}, {c}, -1,\n" for a, b, c in f) + "] } }\n")
    m = read_wrl(_write(tmp_path, text))
    np.testing.assert_allclose(m.vertices, v, rtol=1e-6)
    np.testing.assert_array_equal(m.faces, f)


def _err(path: Path, **kw) -> str:
    with pytest.raises(InputError) as ei:
        read_wrl(path, **kw)
    msg = str(ei.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


@pytest.mark.parametrize("text, words", [
    ("Shape { }", "not a VRML 2.0 file"),
    ("#VRML V1.0 ascii\nSeparator { }", "VRML 1.0"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0",
     "never closed"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0 ] } coordIndex [ 0 0 0 ] }",
     "file ends"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 zero ] } "
     "coordIndex [ 0 0 0 ] } }", "not a number"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 1 1 ] } "
     "coordIndex [ 0 1 7 -1 ] } }", "refers to point 7"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0 1 ] } coordIndex [ ] } }",
     "multiple of 3"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 0 0, 0 1 0 ] } "
     "coordIndex [ 0 1 2 -1 ] texCoord TextureCoordinate { point [ 0 0 ] } texCoordIndex [ 0 0 -1 ] } }",
     "does not match"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord Coordinate { point [ 0 0 0, 1 1 1 ] } "
     "coordIndex [ 0 1 0.5 -1 ] } }", "'0.5' is not an integer"),
    ("#VRML V2.0 utf8\nShape { geometry Box { size 1 1 1 } }", "no IndexedFaceSet"),
    ("#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord USE NOWHERE coordIndex [ 0 1 2 ] } }", "before any DEF"),
])
def test_malformed_files_name_file_and_reason(tmp_path, text, words):
    assert words in _err(_write(tmp_path, text))


def test_error_names_the_line(tmp_path):
    text = "#VRML V2.0 utf8\n\n\nShape { geometry IndexedFaceSet {\n coord Coordinate { point [ 0 0 x ] } } }\n"
    assert "line 5" in _err(_write(tmp_path, text))


def test_missing_texture(tmp_path):
    p = _write(tmp_path, TWO_SHAPES)
    _image(tmp_path / "left.bmp")  # right.bmp missing
    assert "RIGHT.BMP" in _err(p, require_texture=True)
    m = read_wrl(p)  # tolerant by default: geometry still read
    assert m.n_vertices == 10 and m.texture == tmp_path / "left.bmp" and "textures" not in m.meta


def test_unreadable_and_corrupt_gzip(tmp_path):
    d = tmp_path / "dir.wrl"
    d.mkdir()
    assert "is a folder" in _err(d)
    p = tmp_path / "bad.wrl"
    p.write_bytes(gzip.compress(TWO_SHAPES.encode())[:40])
    assert "gzip" in _err(p)
    with pytest.raises(InputError, match="no such file"):
        read_mesh(tmp_path / "missing.wrl")
