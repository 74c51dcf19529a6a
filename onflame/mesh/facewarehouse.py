"""FaceWarehouse meshes and ``.land`` landmark files.

FaceWarehouse (Cao et al. 2014) ships, per tester, ``TrainingPose/pose_<k>.obj`` (k = 0..19; 0 is the
neutral face) and ``Blendshape/shape_<k>.obj`` in its own quad topology of 11,510 vertices (11,400
quads, with texture coordinates), the Kinect colour photo ``pose_<k>.png`` and ``pose_<k>.land``.
The OBJ files are read by :func:`onflame.mesh.read_mesh` (quads are fan-split into two triangles).

A ``.land`` file is a count line followed by one landmark per line. The release's files hold 74 image
points ``x y`` (pixels in the photo); the same layout with one integer per line (vertex indices into
the mesh) or three numbers (3D points) is read too, so hand-made or converted landmark files work
alike. :func:`landmarks_3d` turns the 3D kinds into points on a mesh.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import SIDE_FILE_MAX_BYTES, read_text
from .mesh import Mesh
from .numbers import parse_numbers

#: Vertices of every FaceWarehouse mesh.
N_VERTICES = 11510
#: Landmarks in the release's ``.land`` files.
N_LANDMARKS = 74


@dataclass
class Landmarks:
    """Landmarks read from a ``.land`` file; exactly one of the three fields is set.

    Attributes:
        image_points: (N, 2) pixel positions ``x y`` in the capture's photo.
        vertex_ids: (N,) int64 indices into the mesh's vertices.
        points: (N, 3) positions in the mesh's frame and units.
        source: the file read.
    """

    image_points: np.ndarray | None = None
    vertex_ids: np.ndarray | None = None
    points: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        arr = next(a for a in (self.image_points, self.vertex_ids, self.points) if a is not None)
        return len(arr)


def read_land(path: str | os.PathLike) -> Landmarks:
    """Read a ``.land`` file: a count line, then that many lines of 1 (vertex id), 2 (x y) or 3 (x y z) numbers.

    Raises :class:`InputError` naming the file if it is missing, empty, truncated or mixes row widths.
    """
    path = Path(path)
    lines = [ln for ln in read_text(path, SIDE_FILE_MAX_BYTES).splitlines() if ln.strip()]
    if not lines:
        raise InputError(path, "empty landmark file")
    head = lines[0].split()
    if len(head) != 1 or not head[0].isdigit() or len(head[0]) > 9:
        raise InputError(path, f"first line should be the landmark count, found {lines[0][:40]!r}")
    n = int(head[0])
    rows = lines[1:]
    if len(rows) < n:
        raise InputError(path, f"truncated: the count line says {n} landmarks, found {len(rows)}")
    rows = rows[:n]
    widths = {len(r.replace(",", " ").split()) for r in rows}
    if len(widths) != 1 or (width := widths.pop()) not in (1, 2, 3):
        raise InputError(path, "each landmark line must hold 1 (vertex id), 2 (x y) or 3 (x y z) numbers, "
                               "the same on every line")
    values = parse_numbers(" ".join(rows), path, "landmarks").reshape(n, width)
    if not np.isfinite(values).all():
        raise InputError(path, "landmark coordinates include NaN or infinity")
    if width == 1:
        if not np.array_equal(values, np.round(values)) or (values < 0).any():
            raise InputError(path, "one-number landmark lines must be non-negative vertex indices")
        return Landmarks(vertex_ids=values[:, 0].astype(np.int64), source=str(path))
    if width == 2:
        return Landmarks(image_points=values, source=str(path))
    return Landmarks(points=values, source=str(path))


def landmarks_3d(landmarks: Landmarks, mesh: Mesh) -> np.ndarray:
    """(N, 3) landmark positions on ``mesh`` (its frame and units).

    Vertex ids are looked up; 3D points are returned as they are. Image points have no depth: they
    need the capture's camera, which FaceWarehouse does not ship, so they raise :class:`InputError`.
    """
    if landmarks.points is not None:
        return landmarks.points.copy()
    if landmarks.vertex_ids is not None:
        ids = landmarks.vertex_ids
        if ids.size and ids.max() >= mesh.n_vertices:
            raise InputError(landmarks.source or None,
                             f"vertex id {ids.max()} out of range for a mesh of {mesh.n_vertices} vertices")
        return mesh.vertices[ids]
    raise InputError(landmarks.source or None, "holds 2D image points; 3D positions need the photo's camera")


def is_facewarehouse_topology(mesh: Mesh) -> bool:
    """True if ``mesh`` has FaceWarehouse's vertex count (11,510)."""
    return mesh.n_vertices == N_VERTICES
