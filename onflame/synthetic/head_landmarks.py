"""Landmark embeddings of the procedural head, in FLAME's layouts.

- 68 static points in iBUG-68 order (0-16 jaw contour, 17-26 brows, 27-35 nose, 36-47 eyes, 48-67
  mouth); image-left first, i.e. the subject's right (x < 0). The 51-point embedding is points 17-67.
- 79 x 17 dynamic jaw-contour points: row ``r`` is the contour for a head turned by ``r`` degrees
  (``r`` <= 39) or ``39 - r`` degrees (``r`` > 39), as in FLAME's file. Turning by ``+a`` degrees
  is a rotation by ``+a`` about +y: the face turns toward +x and the +x cheek becomes the far side,
  whose contour slides forward onto the cheek (what FLAME's own rows do: row 39 has its points 9-16
  forward of row 0's).

Interior points are placed from :mod:`.anatomy` (x, y) and dropped onto the head's surface along the
viewing direction; contour points are the silhouette of the face seen from the front (or turned).
Each point is stored as (triangle, barycentric) on the head mesh.
"""
from __future__ import annotations

import numpy as np
import trimesh
from scipy.spatial import ConvexHull

from ..flame.embedding import LandmarkEmbedding, SurfacePoints
from . import anatomy as A
from .head_mesh import HeadMesh, surface_along_rays

#: Largest contour yaw in degrees; the dynamic embedding has 2 * 39 + 1 rows.
MAX_YAW = 39
#: Height (m) of the top ends of the jaw contour (points 0 and 16): a little below the eye corners.
CONTOUR_TOP_Y = 0.0140


def _eye_points(sign: int) -> list[tuple[float, float]]:
    """(x, y) of one eye's 6 points in iBUG order; ``sign`` -1 for the subject's right eye (36-41)."""
    cx, cy = sign * A.EYE_CENTRE[0], A.EYE_CENTRE[1] - A.EYE_OPEN_DROP
    w = A.EYE_HALF_WIDTH

    def lid(t: float, up: bool) -> float:  # the almond's edge at |dx| = t * w (see head_solid.eye_opening)
        return cy + (A.EYE_OPEN_UP if up else -A.EYE_OPEN_DOWN) * np.sqrt(max(1.0 - t**1.5, 0.0))

    outer, inner = cx + sign * w, cx - sign * w
    # iBUG goes clockwise in the image: outer corner, upper lid, inner corner, lower lid (right eye);
    # the left eye starts at its inner corner
    right = [(outer, cy), (cx + sign * w / 3, lid(1 / 3, True)), (cx - sign * w / 3, lid(1 / 3, True)), (inner, cy),
             (cx - sign * w / 3, lid(1 / 3, False)), (cx + sign * w / 3, lid(1 / 3, False))]
    if sign < 0:
        return right
    return [(inner, cy), (cx - w / 3, lid(1 / 3, True)), (cx + w / 3, lid(1 / 3, True)), (outer, cy),
            (cx + w / 3, lid(1 / 3, False)), (cx - w / 3, lid(1 / 3, False))]


def interior_points_xy() -> np.ndarray:
    """(51, 2) front-view positions (x, y) of iBUG points 17-67 on the mean head, metres."""
    # left brow from outer to inner end, relative to the eye's centre
    brow = [(0.0300, 0.0050), (0.0215, 0.0215), (0.0075, 0.0255), (-0.0080, 0.0235), (-0.0210, 0.0190)]
    ex, ey = A.EYE_CENTRE[0], A.EYE_CENTRE[1]
    right_brow = [(-(ex + dx), ey + dy) for dx, dy in brow]
    left_brow = [(ex + dx, ey + dy) for dx, dy in reversed(brow)]
    bridge = [(0.0, A.NASION[1]), (0.0, A.NASION[1] - 0.0115), (0.0, A.NASION[1] - 0.0215), (0.0, A.NOSE_TIP[1])]
    sy = A.SUBNASALE[1]
    nostrils = [(-0.0122, sy + 0.0030), (-0.0062, sy + 0.0010), (0.0, sy), (0.0062, sy + 0.0010), (0.0122, sy + 0.0030)]
    m, w = A.MOUTH_Y, A.MOUTH_HALF_WIDTH
    outer_lips = [(-w, m), (-0.0160, m + 0.0050), (-0.0065, m + 0.0068), (0.0, m + 0.0062), (0.0065, m + 0.0068),
                  (0.0160, m + 0.0050), (w, m), (0.0160, m - 0.0055), (0.0068, m - 0.0075), (0.0, m - 0.0080),
                  (-0.0068, m - 0.0075), (-0.0160, m - 0.0055)]
    inner_lips = [(-(w - 0.002), m), (-0.0065, m + 0.0009), (0.0, m + 0.0009), (0.0065, m + 0.0009), (w - 0.002, m),
                  (0.0065, m - 0.0009), (0.0, m - 0.0009), (-0.0065, m - 0.0009)]
    pts = right_brow + left_brow + bridge + nostrils + _eye_points(-1) + _eye_points(+1) + outer_lips + inner_lips
    return np.array(pts, dtype=np.float64)


def drop_onto_surface(xy: np.ndarray) -> np.ndarray:
    """Points (N, 3) on the head's implicit surface seen from the front at positions ``xy`` (N, 2)."""
    origins = np.column_stack([xy, np.full(len(xy), -0.03)])
    dirs = np.tile([0.0, 0.0, 1.0], (len(xy), 1))
    return origins + surface_along_rays(origins, dirs, t_max=0.2)[:, None] * dirs


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def contour_points(vertices: np.ndarray, normals: np.ndarray, candidates: np.ndarray, yaw_deg: float,
                   n_points: int = 17) -> np.ndarray:
    """The 17 jaw-contour points (17, 3), subject's right first, for the head turned by ``yaw_deg``.

    Seen along -z after turning the head by ``yaw_deg`` about +y, the contour is the outline of the
    visible part of ``candidates`` (vertex indices allowed on it) below ``CONTOUR_TOP_Y``: its convex
    hull in the image less the top edge, from the top-left corner down and round to the top-right one
    (a face's outline is nearly convex, and the hull ignores the vertex-level zigzag). The 17 points are spread
    at equal steps along it. Returned in the unturned head's frame (on chords between hull vertices;
    :func:`_on_mesh` snaps them to the surface).
    """
    R = _rot_y(yaw_deg)
    q = vertices[candidates] @ R.T
    top = (R @ np.array([0.0, CONTOUR_TOP_Y, 0.0]))[1]
    keep = ((normals[candidates] @ R.T)[:, 2] > 0.0) & (q[:, 1] <= top)
    idx, img = candidates[keep], q[keep, :2]
    hull = ConvexHull(img).vertices                     # counter-clockwise
    edge = np.roll(img[hull], -1, axis=0) - img[hull]
    facing_up = -edge[:, 0] / np.linalg.norm(edge, axis=1) > 0.5  # outward normal points up: the cut at the top
    last_top = int(np.nonzero(facing_up & ~np.roll(facing_up, -1))[0][0])
    order = np.roll(hull, -(last_top + 1))
    n_chain = int(np.argmax(np.roll(facing_up, -(last_top + 1)))) + 1  # up to the first top edge
    chain = order[:n_chain]
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(img[chain], axis=0), axis=1))])
    targets = np.linspace(0.0, s[-1], n_points)
    pos = vertices[idx[chain]]
    return np.stack([np.interp(targets, s, pos[:, k]) for k in range(3)], -1)


def _on_mesh(tm: trimesh.Trimesh, points: np.ndarray) -> SurfacePoints:
    """(triangle, barycentric) of the closest surface points of ``tm`` to ``points`` (..., 3)."""
    flat = points.reshape(-1, 3)
    closest, _, tri = trimesh.proximity.closest_point(tm, flat)
    bary = trimesh.triangles.points_to_barycentric(tm.triangles[tri], closest)
    bary = np.clip(bary, 0.0, None)
    bary /= bary.sum(1, keepdims=True)
    return SurfacePoints(tri.astype(np.int64).reshape(points.shape[:-1]), bary.reshape(points.shape))


def build_landmarks(mesh: HeadMesh, masks: dict[str, np.ndarray], n_head_faces: int) -> LandmarkEmbedding:
    """The static 51 / 68 and the dynamic (79, 17) embeddings on the head surface (triangles < ``n_head_faces``)."""
    faces = mesh.faces[:n_head_faces]
    tm = trimesh.Trimesh(mesh.vertices, faces, process=False)
    normals = np.asarray(tm.vertex_normals)
    inner = np.concatenate([masks["nose"], masks["lips"], masks["eye_region"]])
    p = mesh.vertices
    candidates = np.setdiff1d(masks["face"], inner)
    # the outline follows the jaw's lower border: annotators mark the chin's front, not its underside
    # (seen edge-on from the front), so skin below the line from the jaw angle to the menton is left out
    pc = p[candidates]
    g, mz = (A.GONION[2], A.GONION[1] - 0.008), (A.MENTON[2] - 0.002, A.MENTON[1] - 0.002)
    below_jaw = ((pc[:, 2] - g[0]) * (mz[1] - g[1]) - (pc[:, 1] - g[1]) * (mz[0] - g[0])) > 0
    candidates = candidates[(pc[:, 1] < CONTOUR_TOP_Y + 0.004) & ~below_jaw]
    yaws = [float(r) for r in range(MAX_YAW + 1)] + [-float(r) for r in range(1, MAX_YAW + 1)]
    contours = np.stack([contour_points(p, normals, candidates, yaw) for yaw in yaws])  # (79, 17, 3)
    interior = drop_onto_surface(interior_points_xy())
    full = _on_mesh(tm, np.concatenate([contours[0], interior]))
    dynamic = _on_mesh(tm, contours)
    static = SurfacePoints(full.face_idx[17:].copy(), full.bary[17:].copy())
    # the head's points are written as both FLAME's and MICA's files (flame_files), so it carries both names
    return LandmarkEmbedding({"mica51": static, "mica68": full, "flame51": static, "flame68": full}, dynamic)
