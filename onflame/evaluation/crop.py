"""The NoW crop: the part of a scan that a face reconstruction is scored on.

NoW cuts each ground-truth scan to a ball around the face, fixed by its 7 landmarks (see
:mod:`.now_landmarks` for their order): centred at ``nose_bottom + 0.3 · (nose_bridge − nose_bottom)``
with ``nose_bridge`` the midpoint of the inner eye corners, radius
``factor · (‖outer right eye − outer left eye‖ + ‖nose_bridge − nose_bottom‖) / 2``, with factor 1.4 for
NoW and 1.2 for the FG2018 (Stirling/ESRC) variant.
"""
from __future__ import annotations

import numpy as np

from ..mesh import Mesh

#: Ball radius factors per protocol.
RADIUS_FACTOR = {"now": 1.4, "fg2018": 1.2}


def face_ball(landmarks7: np.ndarray, factor: float = RADIUS_FACTOR["now"]) -> tuple[np.ndarray, float]:
    """``(centre (3,), radius)`` of the crop ball for NoW-ordered landmarks (7, 3) (their unit)."""
    lmk = np.asarray(landmarks7, dtype=np.float64)
    nose_bottom = lmk[4]
    nose_bridge = (lmk[1] + lmk[2]) / 2
    centre = nose_bottom + 0.3 * (nose_bridge - nose_bottom)
    radius = factor * (np.linalg.norm(lmk[0] - lmk[3]) + np.linalg.norm(nose_bridge - nose_bottom)) / 2
    return centre, float(radius)


def inside_ball(points: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """(N,) bool: points (N, 3) strictly closer than ``radius`` to ``centre``."""
    return np.linalg.norm(np.asarray(points) - centre, axis=1) < radius


def crop_mesh(mesh: Mesh, keep: np.ndarray) -> Mesh:
    """The vertices where ``keep`` (V,) is True, in their order, and the triangles with all corners kept."""
    keep = np.asarray(keep, dtype=bool)
    remap = np.full(mesh.n_vertices, -1, dtype=np.int64)
    remap[keep] = np.arange(int(keep.sum()))
    f = remap[mesh.faces]
    f = f[(f >= 0).all(1)]
    colors = None if mesh.colors is None else mesh.colors[keep]
    return Mesh(mesh.vertices[keep], f, colors=colors, source=mesh.source, meta=dict(mesh.meta))
