"""PLY through ``plyfile``: vertices, optional vertex colours, polygons fan-split into triangles.

``plyfile`` is a reader made for the format (binary and ASCII, any byte order and property types)
that imports in milliseconds; reading a 50k-vertex scan through trimesh first costs trimesh's import,
a tenth of a second or more of a one-scan ``onflame register``. Binary files whose faces are all
triangles are read as one array (``known_list_len``); any other polygon list falls back to plyfile's
per-face lists. ASCII PLY is parsed line by line in plyfile, three times slower than trimesh's
vectorised parser: :func:`onflame.mesh.read_mesh` gives those to trimesh (:func:`ply_header` tells
which, :func:`check_vertex_header` checks them first).
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import write_bytes
from ..geometry import fan_triangles
from .mesh import Mesh

#: Names PLY writers give the face list, the colour channels.
_FACE_LISTS = ("vertex_indices", "vertex_index")
_COLOURS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))


def ply_header(path: str | os.PathLike) -> tuple[str | None, dict[str, list[str]]]:
    """``(format, {element: [property names]})`` from the PLY header of ``path`` (format None: no
    ``format`` line in the first 4 kB). Only the header is read."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    fmt, elements, current = None, {}, None
    for line in head.split(b"\n")[:256]:
        words = line.decode("ascii", "replace").split()
        if words[:1] == ["format"] and len(words) > 1:
            fmt = words[1]
        elif words[:1] == ["element"] and len(words) > 1:
            current = elements.setdefault(words[1], [])
        elif words[:1] == ["property"] and current is not None and len(words) > 2:
            current.append(words[-1])
        elif words[:1] == ["end_header"]:
            break
    return fmt, elements


def check_vertex_header(path: str | os.PathLike, elements: dict[str, list[str]]) -> None:
    """Raise :class:`InputError` naming ``path`` when its header's ``elements`` (:func:`ply_header`) lack
    what a mesh needs, a ``vertex`` element with x, y and z: said in words before another reader (trimesh
    for ASCII) fails on it with a bare ``KeyError``."""
    if "vertex" not in elements:
        raise InputError(path, "PLY file has no 'vertex' element")
    _check_xyz(path, elements["vertex"])


def _check_xyz(path: str | os.PathLike, names: list[str] | tuple[str, ...]) -> None:
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise InputError(path, f"PLY vertices lack {', '.join(missing)}")


def read_ply(path: str | os.PathLike) -> Mesh:
    """Read a PLY mesh: ``vertex`` x/y/z (V, 3) float64, colours (V, 3) in [0, 1] if it has red/green/blue,
    ``face`` polygons (F, 3) int64 triangles. Raises :class:`InputError` naming the file if it is malformed."""
    from plyfile import PlyData, PlyParseError

    path = Path(path)
    try:
        try:  # all triangles, the usual case: one array, no per-face objects
            data = PlyData.read(str(path), known_list_len={"face": {n: 3 for n in _FACE_LISTS}})
        except PlyParseError as exc:
            if "unexpected list length" not in str(exc):
                raise
            data = PlyData.read(str(path))
    except PlyParseError as exc:
        raise InputError(path, f"malformed PLY file ({exc})") from None
    names = [e.name for e in data.elements]
    if "vertex" not in names:
        raise InputError(path, "PLY file has no 'vertex' element")
    vertex = data["vertex"].data
    _check_xyz(path, vertex.dtype.names)
    vertices = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in "xyz"], 1)
    colors = None
    for channels in _COLOURS:
        if all(c in vertex.dtype.names for c in channels):
            rgb = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in channels], 1)
            colors = rgb / 255.0 if np.issubdtype(vertex[channels[0]].dtype, np.integer) else rgb
            break
    faces = np.zeros((0, 3), np.int64)
    if "face" in names:
        face = data["face"].data
        name = next((n for n in _FACE_LISTS if n in face.dtype.names), None)
        if name is None:
            raise InputError(path, f"PLY faces have no vertex list ({' or '.join(_FACE_LISTS)})")
        faces = _triangles(face[name])
        if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise InputError(path, f"PLY face index out of range (vertices: {len(vertices)})")
    return Mesh(vertices, faces, colors=colors, source=str(path))


def _triangles(lists: np.ndarray) -> np.ndarray:
    """(F, 3) int64 triangles from a face-list column: an (F, 3) array, or per-face index arrays
    (polygons of any size, fan-split: corners (0, k, k + 1))."""
    if lists.dtype != object:
        return np.asarray(lists, dtype=np.int64).reshape(-1, 3)
    counts = np.fromiter((len(p) for p in lists), dtype=np.int64, count=len(lists))
    if len(counts) and counts.min() < 3:
        raise ValueError("a PLY face has fewer than 3 corners")
    flat = np.concatenate(lists).astype(np.int64) if len(lists) else np.zeros(0, np.int64)
    return flat[fan_triangles(counts)]


def write_ply(path: str | os.PathLike, mesh: Mesh) -> None:
    """Write ``mesh`` as binary little-endian PLY atomically: float64 x/y/z, uchar colours if it has them,
    int32 triangles."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f8"), ("y", "f8"), ("z", "f8")]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(mesh.n_vertices, dtype=fields)
    for i, c in enumerate("xyz"):
        vertex[c] = mesh.vertices[:, i]
    if mesh.colors is not None:
        rgb = np.clip(np.round(np.asarray(mesh.colors) * 255), 0, 255).astype(np.uint8)
        for i, c in enumerate(("red", "green", "blue")):
            vertex[c] = rgb[:, i]
    face = np.empty(mesh.n_faces, dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = mesh.faces
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex"),
             PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})]).write(buf)
    write_bytes(path, buf.getvalue())
