"""Find a scan's landmarks automatically: render, detect in 2D, lift onto the surface, agree across views.

1. Coarse search: a cheap copy of the scan (vertices clustered to 3 mm) is rendered small (192 px) from
   where the face probably looks: the facing hint if given, else the scan's area-weighted mean normal
   (a frontal scanner sees mostly the face's side of the head), then the six axis directions; each at
   four in-plane rotations, upright first, because a scan may lie in any orientation. The detector
   (pluggable, :func:`onflame.detection.get_detector`) runs on each; the first clearly confident face
   whose lifted eyes and mouth make a face ends the search (else the most confident one wins). Those
   points give the face's own frame (facing, up).
2. Views around the face: the scan (its texture or vertex colours if present, else skin-coloured geometry,
   brightened on ridges and darkened in creases by its relief,
   :func:`~.landmark_views.relief_colors`) is rendered zoomed on the face from straight in front (again, if the frontal view's own
   frame differs by more than a few degrees) and turned ±25° in yaw and ±15° in pitch. In each, the
   detector's dense points (MediaPipe: 478) are lifted onto the scan through the z-buffer (the viewing
   ray meets the triangle seen at that pixel; a point over a hole or an open mouth takes the nearest
   surface pixel); a point whose surface is seen edge-on does not count.
3. Consensus per dense point: the median over the views, then the mean of the views within
   ``max(CONSENSUS_MIN_M, 2 × median distance)`` of it; its spread is their RMS distance from it.
4. Landmarks in the model's convention: through the dense-correspondence table for the model's topology
   (:mod:`onflame.detection.correspondence`: where each dense point lies on FLAME's surface), the
   landmarks follow the dense points (:class:`~onflame.detection.correspondence.LandmarkTransfer`);
   without a table (another topology, e.g. the procedural head) they are the detector's own iBUG-68
   points without the jaw. Each view gives its own estimate too: a landmark's spread across views is
   the RMS distance of those from the answer. The answer is put back onto the surface through the
   frontal view.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from ..detection import MEDIAPIPE_TO_IBUG68, Detection, FaceDetector, get_detector
from ..detection.correspondence import LandmarkTransfer, load_correspondence
from ..flame.model import FlameModel
from ..render import Rendering, framing, load_texture, render_mesh
from .landmark_views import (best_face, clustered_copy, coarse_views, face_frame, lift_points, onto_surface,
                             relief_colors, seen_edge_on)

#: MediaPipe's dense points for iBUG-68's inner 51 (FLAME-51 order), and how many points it gives.
IBUG51_OF_DENSE = MEDIAPIPE_TO_IBUG68[17:]
N_DENSE = 478
#: A coarse view whose detection is at least this confident ends the search: its face frame only aims the
#: views around the face, and MediaPipe scores faces turned 60° or rolled 60° about 0.7–0.9 (at 0.85,
#: simulated scans of the real head took up to 10 coarse renders instead of one, for no better landmarks).
_CONFIDENT = 0.7
#: Views around the face: (name, yaw, pitch) in degrees; yaw turns the camera towards the subject's
#: left for positive angles, pitch raises it. The frontal one comes first.
DEFAULT_VIEWS = (("frontal", 0.0, 0.0), ("yaw-25", -25.0, 0.0), ("yaw+25", 25.0, 0.0),
                 ("pitch-15", 0.0, -15.0), ("pitch+15", 0.0, 15.0))
#: The frontal view is rendered again when its own face frame is this far (degrees) from the coarse one.
_REFRAME_DEG = 6.0
#: Views agreeing within ``max(CONSENSUS_MIN_M, 2 × their median distance)`` of the median make a point.
CONSENSUS_MIN_M = 0.003
#: Share of the image, on each side, left around the face's landmarks in the views around the face.
FACE_MARGIN = 0.28
#: Coarse views: image size (px), and scans with more triangles than ``COARSE_MAX_FACES`` are drawn as a
#: copy clustered to ``COARSE_CELL_M`` (a 192 px view of a 0.3 m scan has 1.6 mm pixels).
COARSE_SIZE = 192
COARSE_MAX_FACES = 20_000
COARSE_CELL_M = 0.003
#: Scans with more triangles are rendered as a vertex-clustered copy with cells this size (m): a 512 px
#: view of a head has ~0.5 mm pixels. A 3.2M-vertex scan's detection took 41 s drawn whole.
RENDER_MAX_FACES = 500_000
RENDER_CELL_M = 0.0007


@functools.lru_cache(maxsize=4)
def named_detector(name: str) -> FaceDetector:
    """The detector ``name`` (:func:`onflame.detection.get_detector`), built once per process: building
    one loads its model (MediaPipe's graph: ~0.3 s)."""
    return get_detector(name)


def _as_detector(detector: str | FaceDetector) -> FaceDetector:
    return named_detector(detector) if isinstance(detector, str) else detector


@dataclass
class ViewResult:
    """One view around the face: its name, the detector's score and the lifted dense points.

    Attributes:
        dense: (N, 3) lifted dense points (scan frame, metres), NaN where not lifted or seen edge-on.
    """

    name: str
    score: float
    dense: np.ndarray


@dataclass
class DetectedLandmarks:
    """What automatic landmarking found on a scan (scan frame, metres).

    Attributes:
        landmarks: (L, 3) landmarks in the requested convention, or None when no usable face was found.
        spread_m: (L,) each landmark's RMS distance, across the views, of that view's own estimate from
            ``landmarks`` (NaN where fewer than two views saw it).
        dense: (N, 3) the consensus of the detector's dense points (NaN where no two views agree).
        view_dense: (K, N, 3) each view's lifted dense points that entered the consensus (NaN elsewhere),
            in the order of ``info["views_used"]``.
        expected_error_m: (L,) each landmark's expected error when a learned correction placed them
            (:mod:`.landmark_correction`), else None.
        info: JSON-ready account: ``detector``, ``views`` (renders drawn), ``views_used`` (names of the
            views around the face that found it), ``view_scores``, ``points_used`` (dense points the
            landmarks were made from that at least two views agree on), ``landmarks_from`` (the table or
            the detector's own iBUG points), ``spread_mm`` (per landmark), ``spread_median_mm``,
            ``spread_max_mm``, ``score``, ``facing``, ``up``, ``look`` (how the views around the face
            were drawn: ``"texture"``, ``"colours"`` or ``"relief"``); ``reason`` when nothing was found.
        from_table: the landmarks came through a dense-correspondence table (else they are the
            detector's own iBUG points).
    """

    landmarks: np.ndarray | None
    spread_m: np.ndarray | None = None
    dense: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    from_table: bool = False
    view_dense: np.ndarray | None = None
    expected_error_m: np.ndarray | None = None


def landmark_transfer(model: FlameModel, detector: str = "mediapipe") -> LandmarkTransfer | None:
    """How detected dense points become ``model``'s 51 landmarks: the dense-correspondence table of the
    model's topology when onflame ships one (FLAME's), else the detector's iBUG-68 points without the
    jaw; None when the model has no 51-point embedding."""
    emb = model.landmarks.static51
    if emb is None:
        return None
    table = load_correspondence(detector, model.faces)
    if table is None:
        return LandmarkTransfer.ibug(IBUG51_OF_DENSE, N_DENSE, name="the detector's iBUG-51 points")
    return LandmarkTransfer.build(table, model.v_template, model.faces, emb,
                                  name=f"{table.detector}'s {len(table)} points through the dense table")


def consensus(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Robust per-point agreement of views.

    Args:
        samples: (K, N, 3) each view's points, NaN where a view has none.

    Returns:
        ``(points (N, 3), spread (N,), count (N,), inlier (K, N))``: the mean of the views within
        ``max(CONSENSUS_MIN_M, 2 × median distance)`` of the per-point median, their RMS distance from
        it, how many they are, and which they are. Points with fewer than two such views are NaN (with
        one view only, that view's point is kept and its spread is NaN).
    """
    K, N = samples.shape[:2]
    valid = np.isfinite(samples).all(2)
    with np.errstate(all="ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are expected
            med = np.nanmedian(samples, axis=0)
            d = np.linalg.norm(samples - med, axis=2)
            typical = np.nanmedian(np.where(valid, d, np.nan), axis=0)
        limit = np.maximum(CONSENSUS_MIN_M, 2.0 * np.nan_to_num(typical))
        inlier = valid & (d <= limit)
        count = inlier.sum(0)
        points = np.where(inlier[..., None], samples, 0.0).sum(0) / np.maximum(count, 1)[:, None]
        d2 = np.where(inlier, np.linalg.norm(samples - points, axis=2) ** 2, 0.0)
        spread = np.sqrt(d2.sum(0) / np.maximum(count, 1))
    points[count == 0] = np.nan
    spread[count < 2] = np.nan
    return points, spread, count, inlier


def detect_scan_landmarks(scan_vertices_m: np.ndarray, faces: np.ndarray, uv: np.ndarray | None = None,
                          face_uv: np.ndarray | None = None, texture: np.ndarray | str | os.PathLike | None = None,
                          facing_hint: np.ndarray | None = None, detector: str | FaceDetector = "auto", *,
                          colors: np.ndarray | None = None, normals: np.ndarray | None = None, size: int = 384,
                          min_score: float = 0.5, transfer: LandmarkTransfer | None = None,
                          views: tuple[tuple[str, float, float], ...] = DEFAULT_VIEWS) -> DetectedLandmarks:
    """Landmarks on a scan, found by a 2D face detector on renders of it from several views.

    Args:
        scan_vertices_m: (V, 3) scan vertices in metres, any orientation and position.
        faces: (F, 3) triangles.
        uv, face_uv, texture: the scan's texture (``uv`` (T, 2), ``face_uv`` (F, 3), an image array or
            file); ``colors`` (V, 3) in [0, 1]: per-vertex colour. Without either, shaded geometry in a
            skin colour is shown to the detector, in the views around the face shaded by its relief too
            (:func:`relief_colors`).
        facing_hint: (3,) direction the face looks, or (3, 3) rotation FLAME frame → scan frame; None to
            guess from the scan's normals.
        detector: a name for :func:`onflame.detection.get_detector` (``"auto"``: MediaPipe) or a detector.
        normals: (V, 3) smoothed unit vertex normals for the shading (a dense scan's own are speckled).
        size: render size of the views around the face, pixels.
        min_score: detections below this detector score are ignored.
        transfer: how dense points become landmarks (:func:`landmark_transfer`); None: the detector's
            iBUG-68 points without the jaw (FLAME-51 order). Detectors without dense points always give those.
        views: the views around the face, ``(name, yaw°, pitch°)``, frontal first.

    Returns:
        :class:`DetectedLandmarks`.

    Raises:
        onflame.detection.DetectorUnavailable: the detector cannot run here (not installed).
    """
    v = np.asarray(scan_vertices_m, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    det = _as_detector(detector)
    info: dict[str, Any] = {"detector": getattr(det, "name", type(det).__name__), "views": 0}
    if len(v) == 0 or len(f) == 0:
        return DetectedLandmarks(None, info={**info, "reason": "empty scan"})
    v, f, look = _what_to_show(v, f, uv, face_uv, texture, colors, normals, info)
    cam = _Camera(det, min_score, info)
    best = _coarse_face(cam, v, f, look, facing_hint)
    if best is None:
        return DetectedLandmarks(None, info={**info, "reason": "no face found in any view of the scan"})
    coarse_score, centre = best
    facing, up = face_frame(centre)
    info["look"] = "texture" if look["texture"] is not None else "colours" if look["colors"] is not None else "relief"
    if info["look"] == "relief":  # the views around the face show the skin's relief
        look = {**look, "colors": relief_colors(v, f)}
    results, facing, up = _views_around(cam, v, f, look, centre, facing, up, size, views)
    if not results:
        return DetectedLandmarks(None, info={**info, "reason": "the views around the face found no face",
                                         "coarse_score": float(coarse_score)})
    info.update(coarse_score=float(coarse_score), facing=facing.tolist(), up=up.tolist())
    return _from_views(results, transfer, v, f, look["normals"], info)


def _what_to_show(v: np.ndarray, f: np.ndarray, uv, face_uv, texture, colors, normals,
                  info: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """The mesh to render (a clustered copy of a scan finer than a render shows) and how it looks
    (texture, colours, normals); an unreadable texture is noted in ``info`` and left out."""
    tex = None
    if texture is not None and uv is not None and face_uv is not None:
        try:
            tex = load_texture(texture)
        except (OSError, ValueError) as exc:  # an unreadable texture: shaded geometry still shows the face
            info["texture_error"] = str(exc)
    normals = None if normals is None else np.asarray(normals, dtype=np.float64)
    look = {"colors": colors, "uv": uv, "face_uv": face_uv, "texture": tex, "normals": normals}
    if len(f) > RENDER_MAX_FACES:  # a render of 512 px shows no more than this: draw a clustered copy
        v, f, look = clustered_copy(v, f, look, RENDER_CELL_M)
        info["rendered_faces"] = len(f)
    return v, f, look


@dataclass
class _Camera:
    """Renders the scan from a view and runs the detector on it; counts the views in ``info``."""

    det: FaceDetector
    min_score: float
    info: dict

    def look_at(self, verts: np.ndarray, tris: np.ndarray, look: dict, points: np.ndarray, facing: np.ndarray,
                up: np.ndarray, px: int, margin: float) -> tuple[Detection | None, Rendering]:
        """The most confident face at least ``min_score`` (or None) in a ``px`` render framing ``points``."""
        r = render_mesh(verts, tris, framing(points, facing, up, px, margin=margin), **look)
        self.info["views"] += 1
        d = best_face(self.det.detect(r.image))
        return (d if d is not None and d.score >= self.min_score else None), r


def _coarse_face(cam: _Camera, v: np.ndarray, f: np.ndarray, look: dict,
                 facing_hint: np.ndarray | None) -> tuple[float, np.ndarray] | None:
    """Step 1, coarse views: ``(score, its 51 landmarks (51, 3) on the surface)`` of the most confident face
    whose landmarks all land on the surface, or None."""
    cv, cf, coarse_look = (v, f, look) if len(f) <= COARSE_MAX_FACES else clustered_copy(v, f, look, COARSE_CELL_M)
    best = None
    for facing, up in coarse_views(cv, cf, facing_hint):
        d, r = cam.look_at(cv, cf, coarse_look, cv, facing, up, COARSE_SIZE, 0.08)
        if d is not None and (best is None or d.score > best[0]):
            pts = lift_points(d, r, d.landmarks51)
            if face_frame(pts) is not None:
                best = (float(d.score), pts)
                if d.score >= _CONFIDENT:
                    break
    return best


def _views_around(cam: _Camera, v: np.ndarray, f: np.ndarray, look: dict, centre: np.ndarray,
                  facing: np.ndarray, up: np.ndarray, size: int,
                  views: tuple[tuple[str, float, float], ...]) -> tuple[list[ViewResult], np.ndarray, np.ndarray]:
    """Step 2, the views around the face, the frontal one first (again if its own frame turns out
    different): ``(each view's dense points on the surface, facing, up)``."""

    def around(name: str, yaw: float, pitch: float) -> ViewResult | None:
        turn = (Rotation.from_rotvec(np.deg2rad(yaw) * up)
                * Rotation.from_rotvec(np.deg2rad(pitch) * np.cross(facing, up)))
        d, r = cam.look_at(v, f, look, centre, turn.apply(facing), turn.apply(up), size, FACE_MARGIN)
        if d is None:
            return None
        if d.dense is not None and len(d.dense) == N_DENSE:
            pts = lift_points(d, r, d.dense)
        else:  # a detector without MediaPipe's dense points: its 51 stand in for them
            pts = np.full((N_DENSE, 3), np.nan)
            pts[IBUG51_OF_DENSE] = lift_points(d, r, d.landmarks51)
        pts[seen_edge_on(r, pts)] = np.nan
        return ViewResult(name, float(d.score), pts)

    results: list[ViewResult] = []
    first = around(*views[0])
    if first is not None:
        frame = face_frame(first.dense[IBUG51_OF_DENSE])
        if frame is not None and np.degrees(np.arccos(np.clip(frame[0] @ facing, -1, 1))) > _REFRAME_DEG:
            facing, up = frame
            first = around(*views[0]) or first
        results.append(first)
    results += [res for res in (around(*view) for view in views[1:]) if res is not None]
    return results, facing, up


def _from_views(results: list[ViewResult], transfer: LandmarkTransfer | None, v: np.ndarray, f: np.ndarray,
                normals: np.ndarray | None, info: dict) -> DetectedLandmarks:
    """Steps 3 and 4: the consensus of the views per dense point, the landmarks from it (on the surface),
    and their spread over each view's own estimate."""
    samples = np.stack([res.dense for res in results])
    dense, _, count, inlier = consensus(samples)
    transfer = transfer or LandmarkTransfer.ibug(IBUG51_OF_DENSE, N_DENSE, name="detector's iBUG-51")
    agreed = count >= min(2, len(results))
    landmarks = transfer.apply(dense, agreed)
    per_view = np.stack([transfer.apply(np.where(inlier[k][:, None], samples[k], np.nan)) for k in range(len(results))])
    landmarks = onto_surface(landmarks, v, f, normals)
    if not np.isfinite(landmarks).all() or face_frame(landmarks) is None:
        keep = {k: info[k] for k in info if k not in ("facing", "up")}
        return DetectedLandmarks(None, info={**keep, "reason": "the views around the face gave no consistent face"})
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(per_view).all(2)
        dist2 = np.where(seen, np.linalg.norm(np.nan_to_num(per_view) - landmarks, axis=2) ** 2, 0.0)
        spread = np.where(seen.sum(0) >= 2, np.sqrt(dist2.sum(0) / np.maximum(seen.sum(0), 1)), np.nan)
    spread_mm = np.round(spread * 1000, 2)
    info.update(
        score=max(res.score for res in results), landmarks_from=transfer.name,
        views_used=[res.name for res in results], view_scores=[round(res.score, 3) for res in results],
        points_used=int((agreed[IBUG51_OF_DENSE] if transfer.selects else agreed & transfer.usable).sum()),
        spread_mm=[None if not np.isfinite(s) else float(s) for s in spread_mm],
        spread_median_mm=float(np.nanmedian(spread_mm)) if np.isfinite(spread_mm).any() else None,
        spread_max_mm=float(np.nanmax(spread_mm)) if np.isfinite(spread_mm).any() else None)
    return DetectedLandmarks(landmarks, spread, dense, info, not transfer.selects,
                             np.where(inlier[..., None], samples, np.nan))

