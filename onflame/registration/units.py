"""Detect a scan's length unit (m, cm or mm) from its size.

A human head is about 0.15–0.25 m wide; a face landmark set spans about 0.1–0.15 m. Whichever of
m/cm/mm brings the measured size closest (on a log scale) to the expected one is chosen. Scale is only
ever used to convert units: registration never scales the model to fit a scan.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..units import METRES_PER_UNIT

#: Typical RMS distance of head-scan points from their centroid (m), and of 51 landmarks from theirs.
TYPICAL_SCAN_RMS = 0.08
TYPICAL_LANDMARK_RMS = 0.04


def rms_radius(points: np.ndarray) -> float:
    """Robust RMS radius of ``points`` (N, 3): the root of the median squared distance from the median point
    (stray points do not move it)."""
    with np.errstate(over="ignore", invalid="ignore"):  # absurd coordinates are refused by the caller
        centred = points - np.median(points, axis=0)
        return float(np.sqrt(np.median((centred**2).sum(1))))


def detect_units(points: np.ndarray, landmarks: np.ndarray | None = None) -> tuple[str, float]:
    """Guess the unit of ``points`` (N, 3) (and of ``landmarks`` (K, 3), which decide when given).

    Returns:
        ``(unit, metres_per_unit)``.

    Raises:
        InputError: the size fits no unit within a factor of 4 (not a head, or corrupt data).
    """
    ref = landmarks if landmarks is not None and len(landmarks) >= 5 else points
    typical = TYPICAL_LANDMARK_RMS if ref is landmarks else TYPICAL_SCAN_RMS
    rms = rms_radius(ref)
    if not np.isfinite(rms) or rms <= 0:
        raise InputError(None, "cannot measure the scan's size (degenerate or NaN points)")
    best = min(METRES_PER_UNIT, key=lambda u: abs(np.log(rms * METRES_PER_UNIT[u] / typical)))
    if abs(np.log(rms * METRES_PER_UNIT[best] / typical)) > np.log(4.0):
        raise InputError(None, f"scan size {rms:.4g} (RMS radius) fits no unit m/cm/mm for a head")
    return best, METRES_PER_UNIT[best]


def resolve_units(points: np.ndarray, landmarks: np.ndarray | None, units: str, path: str) -> tuple[str, float]:
    """``(unit, metres per unit)`` of a scan's ``points`` (N, 3): as given, or detected from the head's
    size (``units="auto"``; ``landmarks`` (K, 3), when given, decide).

    Raises:
        InputError: an unknown unit, or a size that fits none (naming ``path``).
    """
    if units == "auto":
        try:
            return detect_units(points, landmarks)
        except InputError as exc:
            raise InputError(path, exc.problem) from None
    if units in METRES_PER_UNIT:
        return units, METRES_PER_UNIT[units]
    raise InputError(None, f"unknown units {units!r}; use auto, m, cm or mm")


def units_mismatch(points: np.ndarray, landmarks: np.ndarray, scan_units: str, scan_path: str,
                   landmark_path: str) -> InputError | None:
    """The error to raise when a scan's points (N, 3) and its landmarks (K, 3) are in different units,
    else None: each alone sized as a head (:func:`detect_units`), the scan's as given unless
    ``scan_units`` is ``"auto"``. Named for the landmark file: a scan's unit is the one its landmarks
    must follow."""
    def alone(pts: np.ndarray, lmk: np.ndarray | None) -> str | None:
        try:
            return detect_units(pts, lmk)[0]
        except InputError:
            return None

    scan_unit = alone(points, None) if scan_units == "auto" else scan_units
    lmk_unit = alone(landmarks, landmarks) if len(landmarks) >= 5 else None
    if scan_unit is None or lmk_unit is None or scan_unit == lmk_unit:
        return None
    scan_how = f"RMS radius {rms_radius(points):.4g}" if scan_units == "auto" else "as given"
    return InputError(landmark_path, f"landmarks in {lmk_unit} (RMS radius {rms_radius(landmarks):.4g}) but the scan "
                                     f"{scan_path} in {scan_unit} ({scan_how}): give the landmarks in the scan's unit")
