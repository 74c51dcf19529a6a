"""What automatic landmarking draws and how it reads the drawings back: camera directions, face frames,
relief shading, lifting 2D points onto the scan through the z-buffer.

These are the geometric pieces of :func:`onflame.registration.landmark_detection.detect_scan_landmarks`;
all positions are in the scan's frame, in metres.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import grey_opening
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..detection import Detection
from ..geometry import cluster_mean, cluster_vertices, face_normals, relief, vertex_normals
from ..render import SKIN_ALBEDO, Rendering

#: FLAME-51 indices: the eye on the image's left (the subject's right eye), the other eye, the mouth.
_RIGHT_EYE, _LEFT_EYE, _MOUTH = slice(19, 25), slice(25, 31), slice(31, 51)
#: Plausible distance between the eye centres (metres): outside it, the lifted points are not a face.
_EYE_DISTANCE_M = (0.035, 0.12)
#: How far (metres) a landmark may lie behind the median depth of the face's landmarks.
_FACE_DEPTH_M = 0.04
#: A lifted point more than ``_PIT_SLACK_M`` behind the surface around it (pits up to ``_PIT_WIDTH_M``
#: wide: eye sockets without eyeballs, an open mouth's inside) is a miss.
_PIT_WIDTH_M = 0.015
_PIT_SLACK_M = 0.003
#: Radius, as a share of the image size, searched for surface when a landmark misses it (holes, lips apart).
_SEARCH = 0.03
#: A lifted point whose surface normal makes less than this cosine with the viewing direction (seen
#: nearly edge-on, ~75°) is not used: its lift is unreliable.
_MIN_COS = 0.25

def scan_facing(vertices: np.ndarray, faces: np.ndarray, min_strength: float = 0.1) -> np.ndarray | None:
    """(3,) unit area-weighted mean normal of a scan, or None when it is weaker than ``min_strength``
    (a closed or all-round head, whose normals cancel out)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    area = np.linalg.norm(fn, axis=1).sum()
    mean = fn.sum(0)
    strength = np.linalg.norm(mean) / max(area, 1e-30)
    return mean / np.linalg.norm(mean) if strength > min_strength else None


def perpendicular_up(facing: np.ndarray) -> np.ndarray:
    """An up direction for ``facing``: world +y (most scanners' up) unless nearly parallel, then +z."""
    up = np.array([0.0, 1.0, 0.0]) if abs(facing[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
    return up - (up @ facing) * facing


def coarse_views(vertices: np.ndarray, faces: np.ndarray,
                 facing_hint: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Camera directions ``[(facing (3,), up (3,))]`` to try, most likely first.

    ``facing_hint``: (3,) where the face looks, or (3, 3) a rotation from FLAME's frame (face towards +z,
    +y up) to the scan's, e.g. from a coarse rigid alignment; its up direction is then tried first.
    """
    up = None
    if facing_hint is not None:
        hint = np.asarray(facing_hint, dtype=np.float64)
        if hint.shape == (3, 3):
            facings, up = [hint[:, 2]], hint[:, 1]
        else:
            facings = [hint / np.linalg.norm(hint)]
    else:  # the mean normal first (often 30° off the face: scalp and neck count too), then every axis
        f = scan_facing(vertices, faces)
        axes = np.vstack([np.eye(3), -np.eye(3)])
        if f is not None:
            axes = axes[np.argsort(-(axes @ f), kind="stable")]
        facings = ([] if f is None else [f]) + list(axes)
    views = []
    for f in facings:
        f = f / np.linalg.norm(f)
        u0 = perpendicular_up(f) if up is None else up - (up @ f) * f
        for roll in (0.0, 180.0, 90.0, 270.0):  # upright and upside-down first: scans rarely lie on a side
            views.append((f, Rotation.from_rotvec(np.deg2rad(roll) * f).apply(u0)))
    return views


def best_face(detections: list[Detection]) -> Detection | None:
    """The most confident detection that has landmarks."""
    usable = [d for d in detections if d.landmarks is not None]
    return max(usable, key=lambda d: d.score) if usable else None


def face_frame(points51: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(facing, up)`` of a face from its 3D FLAME-51 landmarks, or None if they are not face-like.

    x runs from the subject's right eye to the left eye, up from the mouth to the eyes, facing = x × up.
    """
    if not np.isfinite(points51).all():
        return None
    right, left, mouth = points51[_RIGHT_EYE].mean(0), points51[_LEFT_EYE].mean(0), points51[_MOUTH].mean(0)
    x = left - right
    eye_distance = np.linalg.norm(x)
    if not _EYE_DISTANCE_M[0] <= eye_distance <= _EYE_DISTANCE_M[1]:
        return None
    x /= eye_distance
    up = (right + left) / 2.0 - mouth
    up -= (up @ x) * x
    if np.linalg.norm(up) < 0.3 * eye_distance:
        return None
    up /= np.linalg.norm(up)
    return np.cross(x, up), up


def lift_points(d: Detection, r: Rendering, pixels: np.ndarray) -> np.ndarray:
    """(N, 3) surface points under ``pixels`` (N, 2) of a detection ``d`` on rendering ``r``; NaN where none.

    A point drawn over an open mouth or an eye without eyeball must not land deep inside the head: the
    surface seen there is a miss when it lies more than ``_PIT_SLACK_M`` behind the surface around it
    (the depth map's grey opening over ``_PIT_WIDTH_M``, which fills narrow pits and keeps slopes such
    as the nose's sides) or more than a face's depth behind the face's landmarks; the nearest pixel
    that is not such a miss is taken instead.
    """
    size = r.fragments.face.shape[0]
    depth = r.fragments.depth
    px = np.clip(np.floor(d.landmarks51).astype(np.int64), 0, size - 1)
    at_face = depth[px[:, 1], px[:, 0]]
    limit = np.median(at_face[np.isfinite(at_face)]) + _FACE_DEPTH_M if np.isfinite(at_face).any() else np.inf
    finite = np.where(np.isfinite(depth), depth, np.nanmax(np.where(np.isfinite(depth), depth, np.nan)) + 1.0)
    width = max(3, int(round(_PIT_WIDTH_M * _pixels_per_metre(r))) | 1)
    around = grey_opening(finite, size=(width, width))
    pp = np.clip(np.floor(np.nan_to_num(pixels, nan=-1.0)).astype(np.int64), 0, size - 1)
    max_depth = np.minimum(limit, around[pp[:, 1], pp[:, 0]] + _PIT_SLACK_M)
    pts, _ = r.lift(pixels, search_px=_SEARCH * size, max_depth=max_depth)
    return pts


def _pixels_per_metre(r: Rendering) -> float:
    """Image pixels per metre on the surface (a pinhole camera: at the median depth seen)."""
    if r.camera.orthographic:
        return float(r.camera.focal)
    seen = r.fragments.depth[np.isfinite(r.fragments.depth)]
    return float(r.camera.focal / np.median(seen)) if seen.size else float(r.camera.focal)


def seen_edge_on(r: Rendering, points: np.ndarray) -> np.ndarray:
    """(N,) True where the triangle seen at a point's (N, 3) pixel faces the camera at a grazing angle."""
    xy = r.camera.project(np.nan_to_num(points))[:, :2]
    H, W = r.fragments.face.shape
    col = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, W - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, H - 1)
    tri = r.fragments.face[row, col]
    n = face_normals(r.vertices, r.faces[np.maximum(tri, 0)])
    cos = np.abs(n @ r.camera.forward)
    return (tri < 0) | (cos < _MIN_COS) | ~np.isfinite(points).all(1)


#: Relief shading of untextured scans in the views around the face: the skin colour brightened on ridges
#: and darkened in creases, ``1 + RELIEF_GAIN · tanh(relief / RELIEF_WIDTH_M)``, relief measured between
#: ``RELIEF_SCALES_M`` (:func:`onflame.geometry.relief`). It draws the lip line, the lips' borders and
#: the brow ridges, which Lambert shading alone leaves faint. With the dense table built from views drawn
#: the same way, twelve simulated scans of the benchmark's real head (``benchmarks/registration_landmarks.py``)
#: register with a median per-vertex error 1.21× the clicked one's and landmarks 2.22 mm off, against
#: 1.36× and 2.33 mm with plain shading. A stronger relief (gain 0.35) gives 1.18× but 2.59 mm (the
#: brows further off), 0.5 with 0.45 ambient light 1.16× but 3.4 mm; relief measured at 1 / 3 mm or
#: 2 / 5 mm: 1.35× and 1.32×; every view drawn both ways: 1.33×. A coarse search drawn this way finds a
#: wrong face on 2 of 12 scans, so it keeps plain shading.
RELIEF_SCALES_M = (0.0015, 0.004)
RELIEF_GAIN = 0.25
RELIEF_WIDTH_M = 0.0007


def relief_colors(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) per-vertex colours in [0, 1] for an untextured scan (metres): skin, shaded by its relief."""
    k = 1.0 + RELIEF_GAIN * np.tanh(relief(vertices, faces, *RELIEF_SCALES_M) / RELIEF_WIDTH_M)
    return np.clip(np.asarray(SKIN_ALBEDO)[None, :] * k[:, None], 0.0, 1.0)


def clustered_copy(v: np.ndarray, f: np.ndarray, look: dict, cell: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """A vertex-clustered copy of a scan and its look (colours and normals averaged, texture corners kept)."""
    cv, cf, cluster, kept = cluster_vertices(v, f, cell)
    out = dict(look)
    for key in ("colors", "normals"):
        if look[key] is not None:
            out[key] = cluster_mean(cluster, np.asarray(look[key], dtype=np.float64))
    if look["face_uv"] is not None:
        out["face_uv"] = np.asarray(look["face_uv"])[kept]
    return cv, cf, out


def onto_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  normals: np.ndarray | None) -> np.ndarray:
    """Points (L, 3) near a surface moved onto it: onto the tangent plane of the nearest vertex (within a
    vertex spacing of the true closest point; a viewing ray could pass through an eye or the mouth)."""
    n = vertex_normals(vertices, faces) if normals is None else normals
    ok = np.isfinite(points).all(1)
    out = np.full_like(points, np.nan)
    _, j = cKDTree(vertices).query(points[ok])
    off = points[ok] - vertices[j]
    out[ok] = points[ok] - (off * n[j]).sum(1, keepdims=True) * n[j]
    return out

