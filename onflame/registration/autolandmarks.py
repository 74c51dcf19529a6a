"""Find a scan's landmarks automatically: render, detect in 2D, lift onto the surface, agree across views.

1. Coarse search: a cheap copy of the scan (vertices clustered to 3 mm) is rendered small (192 px) from
   where the face probably looks: the facing hint if given, else the scan's area-weighted mean normal
   (a frontal scanner sees mostly the face's side of the head), then the six axis directions; each at
   four in-plane rotations, upright first, because a scan may lie in any orientation. The detector
   (pluggable, :func:`onflame.detection.get_detector`) runs on each; the first clearly confident face
   whose lifted eyes and mouth make a face ends the search (else the most confident one wins). Those
   points give the face's own frame (facing, up).
2. Views around the face: the scan (its texture or vertex colours if present, else skin-coloured geometry,
   brightened on ridges and darkened in creases by its relief, :func:`relief_colors`) is rendered zoomed on the face from straight in front (again, if the frontal view's own
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
from scipy.ndimage import grey_opening
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from ..detection import MEDIAPIPE_TO_IBUG68, Detection, DetectorUnavailable, FaceDetector, get_detector
from ..detection.correspondence import LandmarkTransfer, load_correspondence
from ..errors import InputError
from ..flame.embedding import INNER51
from ..flame.model import FlameModel
from ..geometry import cluster_mean, cluster_vertices, face_normals, relief, vertex_normals
from ..mesh import Mesh
from ..render import SKIN_ALBEDO, Rendering, framing, load_texture, render_mesh
from .landmarks import LandmarkSet

#: MediaPipe's dense points for iBUG-68's inner 51 (FLAME-51 order), and how many points it gives.
IBUG51_OF_DENSE = MEDIAPIPE_TO_IBUG68[17:]
N_DENSE = 478
#: FLAME-51 indices: the eye on the image's left (the subject's right eye), the other eye, the mouth.
_RIGHT_EYE, _LEFT_EYE, _MOUTH = slice(19, 25), slice(25, 31), slice(31, 51)
#: Plausible distance between the eye centres (metres): outside it, the lifted points are not a face.
_EYE_DISTANCE_M = (0.035, 0.12)
#: Share of the image, on each side, left around the face's landmarks in the views around the face.
_FACE_MARGIN = 0.28
#: How far (metres) a landmark may lie behind the median depth of the face's landmarks.
_FACE_DEPTH_M = 0.04
#: A lifted point more than ``_PIT_SLACK_M`` behind the surface around it (pits up to ``_PIT_WIDTH_M``
#: wide: eye sockets without eyeballs, an open mouth's inside) is a miss.
_PIT_WIDTH_M = 0.015
_PIT_SLACK_M = 0.003
#: Radius, as a share of the image size, searched for surface when a landmark misses it (holes, lips apart).
_SEARCH = 0.03
#: A coarse view whose detection is at least this confident ends the search: its face frame only aims the
#: views around the face, and MediaPipe scores faces turned 60° or rolled 60° about 0.7–0.9 (at 0.85,
#: simulated scans of the real head took up to 10 coarse renders instead of one, for no better landmarks).
_CONFIDENT = 0.7
#: Coarse views: image size (px), and scans with more triangles than ``COARSE_MAX_FACES`` are drawn as a
#: copy clustered to ``COARSE_CELL_M`` (a 192 px view of a 0.3 m scan has 1.6 mm pixels).
COARSE_SIZE = 192
COARSE_MAX_FACES = 20_000
COARSE_CELL_M = 0.003
#: Views around the face: (name, yaw, pitch) in degrees; yaw turns the camera towards the subject's
#: left for positive angles, pitch raises it. The frontal one comes first.
DEFAULT_VIEWS = (("frontal", 0.0, 0.0), ("yaw-25", -25.0, 0.0), ("yaw+25", 25.0, 0.0),
                 ("pitch-15", 0.0, -15.0), ("pitch+15", 0.0, 15.0))
#: The frontal view is rendered again when its own face frame is this far (degrees) from the coarse one.
_REFRAME_DEG = 6.0
#: A lifted point whose surface normal makes less than this cosine with the viewing direction (seen
#: nearly edge-on, ~75°) is not used: its lift is unreliable.
_MIN_COS = 0.25
#: Views agreeing within ``max(CONSENSUS_MIN_M, 2 × their median distance)`` of the median make a point.
CONSENSUS_MIN_M = 0.003
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


def _lift(d: Detection, r: Rendering, pixels: np.ndarray) -> np.ndarray:
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


def _seen_edge_on(r: Rendering, points: np.ndarray) -> np.ndarray:
    """(N,) True where the triangle seen at a point's (N, 3) pixel faces the camera at a grazing angle."""
    xy = r.camera.project(np.nan_to_num(points))[:, :2]
    H, W = r.fragments.face.shape
    col = np.clip(np.floor(xy[:, 0]).astype(np.int64), 0, W - 1)
    row = np.clip(np.floor(xy[:, 1]).astype(np.int64), 0, H - 1)
    tri = r.fragments.face[row, col]
    n = face_normals(r.vertices, r.faces[np.maximum(tri, 0)])
    cos = np.abs(n @ r.camera.forward)
    return (tri < 0) | (cos < _MIN_COS) | ~np.isfinite(points).all(1)


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
        info: JSON-ready account: ``detector``, ``views`` (renders drawn), ``views_used`` (names of the
            views around the face that found it), ``view_scores``, ``points_used`` (dense points the
            landmarks were made from that at least two views agree on), ``landmarks_from`` (the table or
            the detector's own iBUG points), ``spread_mm`` (per landmark), ``spread_median_mm``,
            ``spread_max_mm``, ``score``, ``facing``, ``up``; ``reason`` when nothing was found.
        from_table: the landmarks came through a dense-correspondence table (else they are the
            detector's own iBUG points).
    """

    landmarks: np.ndarray | None
    spread_m: np.ndarray | None = None
    dense: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    from_table: bool = False


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
    tex = None
    if texture is not None and uv is not None and face_uv is not None:
        try:
            tex = load_texture(texture)
        except (OSError, ValueError) as exc:  # an unreadable texture: shaded geometry still shows the face
            info["texture_error"] = str(exc)
    normals = None if normals is None else np.asarray(normals, dtype=np.float64)
    look = {"colors": colors, "uv": uv, "face_uv": face_uv, "texture": tex, "normals": normals}
    if len(f) > RENDER_MAX_FACES:  # a render of 512 px shows no more than this: draw a clustered copy
        v, f, look = _clustered(v, f, look, RENDER_CELL_M)
        info["rendered_faces"] = len(f)
    cv, cf, coarse_look = (v, f, look) if len(f) <= COARSE_MAX_FACES else _clustered(v, f, look, COARSE_CELL_M)

    def render(verts, tris, look_, points, facing, up, px, margin) -> tuple[Detection | None, Rendering]:
        r = render_mesh(verts, tris, framing(points, facing, up, px, margin=margin), **look_)
        info["views"] += 1
        d = _best_face(det.detect(r.image))
        return (d if d is not None and d.score >= min_score else None), r

    # 1. coarse views: the most confident face whose landmarks all land on the surface
    best = None
    for facing, up in coarse_views(cv, cf, facing_hint):
        d, r = render(cv, cf, coarse_look, cv, facing, up, COARSE_SIZE, 0.08)
        if d is not None and (best is None or d.score > best[0].score):
            pts = _lift(d, r, d.landmarks51)
            if _face_frame(pts) is not None:
                best = (d, pts)
                if d.score >= _CONFIDENT:
                    break
    if best is None:
        return DetectedLandmarks(None, info={**info, "reason": "no face found in any view of the scan"})
    coarse_score, centre = best[0].score, best[1]
    facing, up = _face_frame(centre)
    if look["colors"] is None and look["texture"] is None:  # the views around the face show the skin's relief
        look = {**look, "colors": relief_colors(v, f)}

    # 2. views around the face, the frontal one first (again if its own frame turns out different)
    def around(name: str, yaw: float, pitch: float) -> ViewResult | None:
        turn = (Rotation.from_rotvec(np.deg2rad(yaw) * up)
                * Rotation.from_rotvec(np.deg2rad(pitch) * np.cross(facing, up)))
        d, r = render(v, f, look, centre, turn.apply(facing), turn.apply(up), size, _FACE_MARGIN)
        if d is None:
            return None
        if d.dense is not None and len(d.dense) == N_DENSE:
            pts = _lift(d, r, d.dense)
        else:  # a detector without MediaPipe's dense points: its 51 stand in for them
            pts = np.full((N_DENSE, 3), np.nan)
            pts[IBUG51_OF_DENSE] = _lift(d, r, d.landmarks51)
        pts[_seen_edge_on(r, pts)] = np.nan
        return ViewResult(name, float(d.score), pts)

    results: list[ViewResult] = []
    first = around(*views[0])
    if first is not None:
        frame = _face_frame(first.dense[IBUG51_OF_DENSE])
        if frame is not None and np.degrees(np.arccos(np.clip(frame[0] @ facing, -1, 1))) > _REFRAME_DEG:
            facing, up = frame
            first = around(*views[0]) or first
        results.append(first)
    results += [res for res in (around(*view) for view in views[1:]) if res is not None]
    if not results:
        return DetectedLandmarks(None, info={**info, "reason": "the views around the face found no face",
                                         "coarse_score": float(coarse_score)})

    # 3. consensus per dense point, 4. landmarks from it, and each view's own estimate for the spread
    samples = np.stack([res.dense for res in results])
    dense, _, count, inlier = consensus(samples)
    transfer = transfer or LandmarkTransfer.ibug(IBUG51_OF_DENSE, N_DENSE, name="detector's iBUG-51")
    agreed = count >= min(2, len(results))
    landmarks = transfer.apply(dense, agreed)
    per_view = np.stack([transfer.apply(np.where(inlier[k][:, None], samples[k], np.nan)) for k in range(len(results))])
    landmarks = _onto_surface(landmarks, v, f, look["normals"])
    if not np.isfinite(landmarks).all() or _face_frame(landmarks) is None:
        return DetectedLandmarks(None, info={**info, "reason": "the views around the face gave no consistent face",
                                         "coarse_score": float(coarse_score)})
    with np.errstate(invalid="ignore"):
        seen = np.isfinite(per_view).all(2)
        dist2 = np.where(seen, np.linalg.norm(np.nan_to_num(per_view) - landmarks, axis=2) ** 2, 0.0)
        spread = np.where(seen.sum(0) >= 2, np.sqrt(dist2.sum(0) / np.maximum(seen.sum(0), 1)), np.nan)
    spread_mm = np.round(spread * 1000, 2)
    info.update(
        score=max(res.score for res in results), coarse_score=float(coarse_score), landmarks_from=transfer.name,
        views_used=[res.name for res in results], view_scores=[round(res.score, 3) for res in results],
        points_used=int((agreed[IBUG51_OF_DENSE] if transfer.selects else agreed & transfer.usable).sum()),
        spread_mm=[None if not np.isfinite(s) else float(s) for s in spread_mm],
        spread_median_mm=float(np.nanmedian(spread_mm)) if np.isfinite(spread_mm).any() else None,
        spread_max_mm=float(np.nanmax(spread_mm)) if np.isfinite(spread_mm).any() else None,
        facing=facing.tolist(), up=up.tolist())
    return DetectedLandmarks(landmarks, spread, dense, info, not transfer.selects)


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


def _clustered(v: np.ndarray, f: np.ndarray, look: dict, cell: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """A vertex-clustered copy of a scan and its look (colours and normals averaged, texture corners kept)."""
    cv, cf, cluster, kept = cluster_vertices(v, f, cell)
    out = dict(look)
    for key in ("colors", "normals"):
        if look[key] is not None:
            out[key] = cluster_mean(cluster, np.asarray(look[key], dtype=np.float64))
    if look["face_uv"] is not None:
        out["face_uv"] = np.asarray(look["face_uv"])[kept]
    return cv, cf, out


def _onto_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
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


#: ``register(auto_landmarks=...)`` choices.
AUTO_LANDMARK_MODES = ("auto", "detect", "geometry")


def choose_landmarks(scan: Mesh, points_m: np.ndarray, mode: str, model: FlameModel,
                     detector: str | FaceDetector = "auto",
                     normals: np.ndarray | None = None) -> tuple[LandmarkSet | None, dict]:
    """The detected landmarks a registration without given ones starts from, and a JSON-ready note.

    Args:
        scan: the scan (its texture, UVs and colours are shown to the detector).
        points_m: (V, 3) the scan's vertices in metres.
        mode: ``"auto"`` detects landmarks and falls back to the geometry-only alignment when that fails;
            ``"detect"`` detects them or raises; ``"geometry"`` never detects.
        model: the model (its 51-point embedding and, for FLAME's topology, the shipped dense table).
        detector, normals: passed to :func:`detect_scan_landmarks`.

    Returns:
        ``(landmarks or None, info)``: a :class:`~.landmarks.LandmarkSet` on the model's default 51-point
        convention (scan frame, metres, :func:`detected_set`); ``info["source"]`` is ``"detected"`` or
        ``"geometry"``, with the detector's account (:class:`DetectedLandmarks` ``info``) or the reason
        for falling back.

    Raises:
        InputError: unknown mode; ``"detect"`` and no face was found, or the model has no embedding.
        onflame.detection.DetectorUnavailable: ``"detect"`` and no detector is installed.
    """
    path = scan.source or "<scan>"
    if mode not in AUTO_LANDMARK_MODES:
        raise InputError(None, f"unknown auto_landmarks {mode!r}; use {', '.join(AUTO_LANDMARK_MODES)}")
    if mode == "geometry":
        return None, {"source": "geometry", "reason": "auto_landmarks='geometry'"}
    transfer = landmark_transfer(model)
    if transfer is None:
        if mode == "detect":
            raise InputError(None, "model has no 51-point landmark embedding; cannot use detected landmarks")
        return None, {"source": "geometry", "reason": "model has no 51-point landmark embedding"}
    try:
        found = detect_scan_landmarks(points_m, scan.faces, scan.uv, scan.face_uv, scan.texture,
                                      detector=detector, colors=scan.colors, normals=normals, transfer=transfer)
    except DetectorUnavailable as exc:
        if mode == "detect":
            raise
        return None, {"source": "geometry", "reason": str(exc)}
    if found.landmarks is None:
        if mode == "detect":
            raise InputError(path, f"automatic landmarks failed ({found.info.get('reason')}); give landmarks or "
                                   "use auto_landmarks='geometry'")
        return None, {"source": "geometry", **found.info}
    return detected_set(found, model), {"source": "detected", **found.info}


#: Median spread (mm) of the 51 landmarks across the views beyond which the views are said to disagree and
#: the registration is ``suspect``. Agreeing views stay below it (``benchmarks/registration_landmarks.py``):
#: 2.1–3.2 mm on simulated scans of the real head and 2.3–4.2 mm on in-model heads (untextured), 1.4 mm on
#: the textured 3dMD capture.
SPREAD_LIMIT_MM = 5.0


def views_disagree(info: dict) -> str | None:
    """A verdict reason when the detection's views disagree beyond :data:`SPREAD_LIMIT_MM`, else None."""
    spread = info.get("spread_median_mm")
    if spread is None or spread <= SPREAD_LIMIT_MM:
        return None
    return (f"the detector's views disagree: landmarks spread a median {spread:.1f} mm across "
            f"{len(info.get('views_used', []))} views (limit {SPREAD_LIMIT_MM} mm); give landmarks")


def detection_record(info: dict, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """What a registration's npz keeps of a detection: ``landmarks_detected`` (51, 3) (scan frame,
    metres), ``landmark_views`` (names of the views used), ``landmark_points_used`` (points the
    landmarks were made from that at least two views agree on) and ``landmark_spread_mm`` (51,) (NaN:
    fewer than two views)."""
    spread = np.array([np.nan if x is None else x for x in info.get("spread_mm", [])], dtype=np.float64)
    return {"landmarks_detected": np.asarray(landmarks, dtype=np.float64),
            "landmark_views": np.array(info.get("views_used", []), dtype=str),
            "landmark_points_used": np.array(int(info.get("points_used", 0))),
            "landmark_spread_mm": spread}


#: Uncertainty (m) of a detected landmark beyond its spread across views: how far the detector's points,
#: carried through the dense table, stay from where the model's convention puts a landmark on a face
#: whose views agree perfectly (2–3 mm median on the real head of the benchmark) ...
DETECTED_SIGMA_FLOOR = 0.002
#: ... and without a table, where the detector's own iBUG points stand for the model's (4–5 mm median
#: from FLAME's embedding, up to 11 mm on the procedural head's eyelids).
UNMAPPED_SIGMA_FLOOR = 0.005


def detected_set(found: DetectedLandmarks, model: FlameModel) -> LandmarkSet:
    """Detected FLAME-51 landmarks as a :class:`~.landmarks.LandmarkSet` on the model's default 51-point
    convention, each with sigma ``√(floor² + spread²)``: floor :data:`DETECTED_SIGMA_FLOOR` through the
    dense table, :data:`UNMAPPED_SIGMA_FLOOR` without; a landmark fewer than two views saw gets three
    floors for its spread."""
    floor = DETECTED_SIGMA_FLOOR if found.from_table else UNMAPPED_SIGMA_FLOOR
    spread = np.where(np.isfinite(found.spread_m), found.spread_m, 3 * floor)
    return LandmarkSet(model.landmarks.static51, found.landmarks, np.hypot(floor, spread),
                       model.landmarks.default_family or "default", "detected", INNER51.copy())
