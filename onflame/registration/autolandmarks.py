"""Detected landmarks in a registration: when to detect, how much to trust them, what the verdict and the
npz say about them.

:func:`choose_landmarks` runs automatic landmarking
(:func:`~.landmark_detection.detect_scan_landmarks`: render, detect, lift, agree across views) when a
scan comes without landmarks and turns the result into a :class:`~.landmarks.LandmarkSet` on the
model's default 51-point convention.
"""
from __future__ import annotations

import numpy as np

from ..detection import DetectorUnavailable, FaceDetector
from ..errors import InputError
from ..flame.embedding import INNER51
from ..flame.model import FlameModel
from ..mesh import Mesh
from . import landmark_detection
from .landmark_correction import correct_detection, correction_doubt
from .landmark_detection import DetectedLandmarks, landmark_transfer
from .landmarks import LandmarkSet

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
        detector, normals: passed to :func:`.landmark_detection.detect_scan_landmarks`.

    Returns:
        ``(landmarks or None, info)``: a :class:`~.landmarks.LandmarkSet` on the model's default 51-point
        convention (scan frame, metres, :func:`detected_set`); ``info["source"]`` is ``"detected"`` or
        ``"geometry"``, with the detector's account (:class:`DetectedLandmarks` ``info``, with
        ``correction``: :func:`.landmark_correction.correct_detection`) or the reason for falling back.

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
        found = landmark_detection.detect_scan_landmarks(points_m, scan.faces, scan.uv, scan.face_uv, scan.texture,
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
    found = correct_detection(found, model, points_m, scan.faces, normals)
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


def detection_doubt(info: dict) -> str | None:
    """A verdict reason for a detection: its views disagree (:func:`views_disagree`), or the face lay
    outside what the landmark correction was trained on (:func:`.landmark_correction.correction_doubt`)."""
    reasons = [r for r in (views_disagree(info), correction_doubt(info)) if r is not None]
    return "; ".join(reasons) if reasons else None


def detection_record(info: dict, landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """What a registration's npz keeps of a detection: ``landmarks_detected`` (51, 3) (scan frame,
    metres), ``landmark_views`` (names of the views used), ``landmark_points_used`` (points the
    landmarks were made from that at least two views agree on), ``landmark_spread_mm`` (51,) (NaN:
    fewer than two views), ``landmark_correction`` (the correction that ran, ``""`` if none) and
    ``landmark_expected_error_mm`` (51,) (its expected error per landmark; NaN without a correction)."""
    spread = np.array([np.nan if x is None else x for x in info.get("spread_mm", [])], dtype=np.float64)
    note = info.get("correction") or {}
    applied = bool(note.get("applied"))
    expected = np.array(note["expected_error_mm"] if applied else [np.nan] * len(landmarks), dtype=np.float64)
    return {"landmarks_detected": np.asarray(landmarks, dtype=np.float64),
            "landmark_views": np.array(info.get("views_used", []), dtype=str),
            "landmark_points_used": np.array(int(info.get("points_used", 0))),
            "landmark_spread_mm": spread,
            "landmark_correction": np.array(note.get("name") or "" if applied else ""),
            "landmark_expected_error_mm": expected}


#: Uncertainty (m) of a detected landmark beyond its spread across views: how far the detector's points,
#: carried through the dense table, stay from where the model's convention puts a landmark on a face
#: whose views agree perfectly (2–3 mm median on the real head of the benchmark) ...
DETECTED_SIGMA_FLOOR = 0.002
#: ... and without a table, where the detector's own iBUG points stand for the model's (4–5 mm median
#: from FLAME's embedding, up to 11 mm on the procedural head's eyelids).
UNMAPPED_SIGMA_FLOOR = 0.005


#: Smallest sigma (m) of a corrected landmark: its expected error is measured on generated heads, and a
#: real face's lies further from them.
CORRECTED_SIGMA_FLOOR = 0.0015


def detected_set(found: DetectedLandmarks, model: FlameModel) -> LandmarkSet:
    """Detected FLAME-51 landmarks as a :class:`~.landmarks.LandmarkSet` on the model's default 51-point
    convention. Corrected landmarks get their expected error as sigma (at least
    :data:`CORRECTED_SIGMA_FLOOR`); others ``√(floor² + spread²)``: floor :data:`DETECTED_SIGMA_FLOOR`
    through the dense table, :data:`UNMAPPED_SIGMA_FLOOR` without; a landmark fewer than two views saw
    gets three floors for its spread."""
    if found.expected_error_m is not None:
        return LandmarkSet(model.landmarks.static51, found.landmarks,
                           np.maximum(found.expected_error_m, CORRECTED_SIGMA_FLOOR),
                           model.landmarks.default_family or "default", "detected", INNER51.copy())
    floor = DETECTED_SIGMA_FLOOR if found.from_table else UNMAPPED_SIGMA_FLOOR
    spread = np.where(np.isfinite(found.spread_m), found.spread_m, 3 * floor)
    return LandmarkSet(model.landmarks.static51, found.landmarks, np.hypot(floor, spread),
                       model.landmarks.default_family or "default", "detected", INNER51.copy())
