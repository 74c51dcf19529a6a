"""Find FLAME's 51 landmarks on a raw scan automatically: render, detect in 2D, lift onto the surface.

1. Coarse views: the scan is rendered (its texture or vertex colours if present, else shaded skin-coloured
   geometry) from where the face probably looks: the facing hint if given, else the scan's area-weighted
   mean normal (a frontal scanner sees mostly the face's side of the head), then the six axis
   directions; each at four in-plane rotations, upright first, because a scan may lie in any
   orientation and face detectors prefer upright faces.
2. The 2D detector (pluggable, :func:`onflame.detection.get_detector`) runs on each render; the most
   confident face wins (the search stops at the first clearly confident one). Its landmarks are lifted
   onto the scan through the z-buffer: the viewing ray of each landmark meets the triangle visible at
   that pixel; a landmark over a hole or an open mouth takes the nearest surface pixel.
3. Refinement: the lifted eyes and mouth give the face's own frame; the scan is rendered again from
   straight in front, upright and zoomed on the face, and a slightly turned view left and right as
   well. Each view is detected and lifted, and the per-landmark median over the views is the answer:
   detectors are most accurate on upright frontal faces, and the median removes much of the
   view-dependent error (a landmark drawn on the silhouette in one view).

MediaPipe's 478 points map to iBUG-68 and then to FLAME's 51 (iBUG-68 without the jaw contour) through
:mod:`onflame.detection.landmarks`.
"""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..detection import Detection, DetectorUnavailable, FaceDetector, get_detector
from ..errors import InputError
from ..geometry import cluster_mean, cluster_vertices
from ..mesh import Mesh
from ..render import Rendering, framing, load_texture, render_mesh

#: FLAME-51 indices: the eye on the image's left (the subject's right eye), the other eye, the mouth.
_RIGHT_EYE, _LEFT_EYE, _MOUTH = slice(19, 25), slice(25, 31), slice(31, 51)
#: Plausible distance between the eye centres (metres): outside it, the lifted points are not a face.
_EYE_DISTANCE_M = (0.035, 0.12)
#: Share of the image, on each side, left around the 51 landmarks in the refined view.
_FACE_MARGIN = 0.28
#: How far (metres) a landmark may lie behind the median depth of the face's landmarks.
_FACE_DEPTH_M = 0.04
#: Radius, as a share of the image size, searched for surface when a landmark misses it (holes, lips apart).
_SEARCH = 0.03
#: A coarse view whose detection is at least this confident ends the search.
_CONFIDENT = 0.85
#: Yaw (degrees) of the extra refined views on either side of the frontal one.
_SIDE_YAW_DEG = 15.0
#: Scans with more triangles are rendered as a vertex-clustered copy with cells this size (m): a 512 px
#: view of a head has ~0.5 mm pixels. A 3.2M-vertex scan's detection took 41 s drawn whole.
RENDER_MAX_FACES = 500_000
RENDER_CELL_M = 0.0007


@functools.lru_cache(maxsize=4)
def _named_detector(name: str) -> FaceDetector:
    return get_detector(name)  # building a detector loads its model: once per process and name


def _as_detector(detector: str | FaceDetector) -> FaceDetector:
    return _named_detector(detector) if isinstance(detector, str) else detector


def scan_facing(vertices: np.ndarray, faces: np.ndarray, min_strength: float = 0.1) -> np.ndarray | None:
    """(3,) unit area-weighted mean normal of a scan, or None when it is weaker than ``min_strength``
    (a closed or all-round head, whose normals cancel out)."""
    fn = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    area = np.linalg.norm(fn, axis=1).sum()
    mean = fn.sum(0)
    strength = np.linalg.norm(mean) / max(area, 1e-30)
    return mean / np.linalg.norm(mean) if strength > min_strength else None


def _perpendicular_up(facing: np.ndarray) -> np.ndarray:
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
        u0 = _perpendicular_up(f) if up is None else up - (up @ f) * f
        for roll in (0.0, 180.0, 90.0, 270.0):  # upright and upside-down first: scans rarely lie on a side
            views.append((f, Rotation.from_rotvec(np.deg2rad(roll) * f).apply(u0)))
    return views


def _best_face(detections: list[Detection]) -> Detection | None:
    """The most confident detection that has landmarks."""
    usable = [d for d in detections if d.landmarks is not None]
    return max(usable, key=lambda d: d.score) if usable else None


def _face_frame(points51: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(facing, up)`` of a face from its 3D FLAME-51 landmarks, or None if they are not face-like.

    x runs from the subject's right eye to the left eye, up from the mouth to the eyes, facing = x × up.
    """
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


def detect_scan_landmarks(scan_vertices_m: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
                          face_uv: np.ndarray | None = None, texture: np.ndarray | str | os.PathLike | None = None,
                          facing_hint: np.ndarray | None = None, detector: str | FaceDetector = "auto", *,
                          colors: np.ndarray | None = None, normals: np.ndarray | None = None, size: int = 512,
                          min_score: float = 0.5) -> tuple[np.ndarray | None, dict[str, Any]]:
    """FLAME's 51 landmarks on a scan, found by a 2D face detector on renders of it.

    Args:
        scan_vertices_m: (V, 3) scan vertices in metres, any orientation and position.
        faces: (F, 3) triangles.
        uv, face_uv, texture: the scan's texture (``uv`` (T, 2), ``face_uv`` (F, 3), an image array or
            file); ``colors`` (V, 3) in [0, 1]: per-vertex colour. Without either, shaded geometry in a
            skin colour is shown to the detector.
        facing_hint: (3,) direction the face looks, or (3, 3) rotation FLAME frame → scan frame; None to
            guess from the scan's normals.
        detector: a name for :func:`onflame.detection.get_detector` (``"auto"``: MediaPipe) or a detector.
        size: render size in pixels.
        min_score: detections below this detector score are ignored.

    Returns:
        ``(landmarks51, info)``: (51, 3) landmarks in the scan's frame (metres), FLAME-51 order, or None if
        no view gave a usable face; ``info`` says how (``detector``, ``views``, ``score``, ``facing``,
        ``up``, ``spread_mm`` (median distance of each view's landmarks from the answer), ``reason`` when
        None).

    Raises:
        onflame.detection.DetectorUnavailable: the detector cannot run here (not installed).
    """
    v = np.asarray(scan_vertices_m, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    det = _as_detector(detector)
    info: dict[str, Any] = {"detector": getattr(det, "name", type(det).__name__), "views": 0}
    if len(v) == 0 or len(f) == 0:
        return None, {**info, "reason": "empty scan"}
    tex = None
    if texture is not None and uv is not None and face_uv is not None:
        try:
            tex = load_texture(texture)
        except (OSError, ValueError) as exc:  # an unreadable texture: shaded geometry still shows the face
            info["texture_error"] = str(exc)
    normals = None if normals is None else np.asarray(normals, dtype=np.float64)
    if len(f) > RENDER_MAX_FACES:  # a render of 512 px shows no more than this: draw a clustered copy
        v, f, cluster, kept = cluster_vertices(v, f, RENDER_CELL_M)
        colors = None if colors is None else cluster_mean(cluster, np.asarray(colors, dtype=np.float64))
        normals = None if normals is None else cluster_mean(cluster, normals)
        face_uv = None if face_uv is None else np.asarray(face_uv)[kept]
        info["rendered_faces"] = len(f)
    look = {"colors": colors, "uv": uv, "face_uv": face_uv, "texture": tex, "normals": normals}

    def view(points: np.ndarray, facing: np.ndarray, up: np.ndarray,
             margin: float) -> tuple[Detection | None, Rendering]:
        r = render_mesh(v, f, framing(points, facing, up, size, margin=margin), **look)
        info["views"] += 1
        d = _best_face(det.detect(r.image))
        return (d if d is not None and d.score >= min_score else None), r

    def lift(d: Detection, r: Rendering) -> np.ndarray | None:
        # a landmark drawn over an open mouth must not land deep inside the head: deeper than the face's
        # landmarks by more than a face is deep counts as a miss, and the nearest lip pixel is taken
        px = np.clip(np.floor(d.landmarks51).astype(np.int64), 0, size - 1)
        depth = r.fragments.depth[px[:, 1], px[:, 0]]
        limit = np.median(depth[np.isfinite(depth)]) + _FACE_DEPTH_M if np.isfinite(depth).any() else np.inf
        pts, hit = r.lift(d.landmarks51, search_px=_SEARCH * size, max_depth=limit)
        return pts if hit.all() else None

    # 1-2. coarse views: the most confident face whose landmarks all land on the surface
    best = None
    for facing, up in coarse_views(v, f, facing_hint):
        d, r = view(v, facing, up, margin=0.08)
        if d is not None and (best is None or d.score > best[0].score):
            pts = lift(d, r)
            if pts is not None and _face_frame(pts) is not None:
                best = (d, pts)
                if d.score >= _CONFIDENT:
                    break
    if best is None:
        return None, {**info, "reason": "no face found in any view of the scan"}
    coarse_score, coarse = best[0].score, best[1]

    # 3. refined views: frontal, upright and zoomed on the face, plus slight turns either side
    facing, up = _face_frame(coarse)
    estimates, scores = [], []
    for yaw in (0.0, -_SIDE_YAW_DEG, _SIDE_YAW_DEG):
        turned = Rotation.from_rotvec(np.deg2rad(yaw) * up).apply(facing)
        d, r = view(coarse, turned, up, margin=_FACE_MARGIN)
        pts = None if d is None else lift(d, r)
        if pts is not None and _face_frame(pts) is not None:
            estimates.append(pts)
            scores.append(d.score)
    if not estimates:  # the zoomed views lost the face: keep the coarse answer
        estimates, scores = [coarse], [coarse_score]
    result = np.median(np.stack(estimates), axis=0)
    spread = [float(np.median(np.linalg.norm(e - result, axis=1)) * 1000) for e in estimates]
    info.update(score=float(max(scores)), coarse_score=float(coarse_score), refined_views=len(estimates),
                facing=facing.tolist(), up=up.tolist(), spread_mm=spread)
    return result, info


#: ``register(auto_landmarks=...)`` choices.
AUTO_LANDMARK_MODES = ("auto", "detect", "geometry")


def choose_landmarks(scan: Mesh, points_m: np.ndarray, given_m: np.ndarray | None, mode: str,
                     has_embedding: bool, detector: str | FaceDetector = "auto",
                     normals: np.ndarray | None = None) -> tuple[np.ndarray | None, dict]:
    """The landmarks registration starts from, and a JSON-ready note of where they came from.

    Args:
        scan: the scan (its texture, UVs and colours are shown to the detector).
        points_m: (V, 3) the scan's vertices in metres.
        given_m: (51, 3) landmarks the user gave (metres), or None.
        mode: without given landmarks, ``"auto"`` detects them and falls back to the geometry-only
            alignment when that fails; ``"detect"`` detects them or raises; ``"geometry"`` never detects.
        has_embedding: the model has a 51-point landmark embedding (needed to use any landmarks).
        detector, normals: passed to :func:`detect_scan_landmarks`.

    Returns:
        ``(landmarks (51, 3) metres or None, info)``; ``info["source"]`` is ``"given"``, ``"detected"`` or
        ``"geometry"``, with the detector's details or the reason for falling back.

    Raises:
        InputError: unknown mode; ``"detect"`` and no face was found, or the model has no embedding.
        onflame.detection.DetectorUnavailable: ``"detect"`` and no detector is installed.
    """
    path = scan.source or "<scan>"
    if mode not in AUTO_LANDMARK_MODES:
        raise InputError(None, f"unknown auto_landmarks {mode!r}; use {', '.join(AUTO_LANDMARK_MODES)}")
    if given_m is not None:
        return given_m, {"source": "given"}
    if mode == "geometry":
        return None, {"source": "geometry", "reason": "auto_landmarks='geometry'"}
    if not has_embedding:
        if mode == "detect":
            raise InputError(None, "model has no 51-point landmark embedding; cannot use detected landmarks")
        return None, {"source": "geometry", "reason": "model has no 51-point landmark embedding"}
    try:
        found, info = detect_scan_landmarks(points_m, scan.faces, scan.uv, scan.face_uv, scan.texture,
                                            detector=detector, colors=scan.colors, normals=normals)
    except DetectorUnavailable as exc:
        if mode == "detect":
            raise
        return None, {"source": "geometry", "reason": str(exc)}
    if found is None:
        if mode == "detect":
            raise InputError(path, f"automatic landmarks failed ({info.get('reason')}); give landmarks or use "
                                   "auto_landmarks='geometry'")
        return None, {"source": "geometry", **info}
    return found, {"source": "detected", **info}
