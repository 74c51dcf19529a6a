"""Is this a head, and are these its landmarks? Checked before anything is sized from the coordinates.

Registration builds search indexes, normals, renders and linear solves from a scan's coordinates. A
stray vertex at 1e30, a flat plane, a head read in the wrong unit (10× or 1000× off) or landmarks
clicked on another scan or in another frame would reach them as absurd sizes: a singular solve, or
grids and renders sized by metres of empty space (a real scan whose 51 clicks were 10 m off grew to
24 GB). These checks refuse such input with the reason, naming the file at fault.
"""
from __future__ import annotations

import os

import numpy as np
from scipy.spatial import cKDTree

from ..errors import InputError
from .correspond import ScanIndex
from .units import TYPICAL_LANDMARK_RMS, TYPICAL_SCAN_RMS, rms_radius

#: Largest distance (m) of any scan point from the scan's median point. A head-and-shoulders scan lies
#: within half a metre of its centre; what lies beyond a few metres is corrupt data, not a stray point.
MAX_RADIUS_M = 5.0
#: How far (factor) a scan's or a landmark set's RMS radius may be from a head's, as in unit detection.
SIZE_FACTOR = 4.0
#: Thinnest RMS spread (m) of a scan that can hold a face (a frontal face scan is 1–3 cm deep).
MIN_THICKNESS_M = 0.004
#: Landmarks farther (m) than this from the scan's nearest point, at the median, are not on this scan.
MAX_LANDMARK_MEDIAN_M = 0.01
#: No single landmark may lie farther (m) than this from the scan's nearest point (clicks over a hole or
#: an open mouth lie a centimetre or two off).
MAX_LANDMARK_M = 0.05


def check_scan_extent(points_m: np.ndarray, path: str | os.PathLike | None, units_note: str = "") -> None:
    """Raise :class:`InputError` naming ``path`` if the scan's points (N, 3), in metres, are not a head's.

    Refused: a point more than :data:`MAX_RADIUS_M` from the scan's median point (corrupt
    coordinates), an RMS radius more than :data:`SIZE_FACTOR` times off a head's (wrong units: the
    message says which were used, ``units_note``, e.g. ``"cm, as given"``), and a scan thinner than
    :data:`MIN_THICKNESS_M` along its thinnest axis (a plane: nothing for a face fit to hold on to).
    """
    pts = np.asarray(points_m, dtype=np.float64)
    centre = np.median(pts, axis=0)
    reach = np.abs(pts - centre).max(axis=1)  # per-axis maximum: no overflow where coordinates are huge
    far = int(np.argmax(reach))
    if reach[far] > MAX_RADIUS_M:
        raise InputError(path, f"vertex {far} lies {_length(reach[far])} from the centre{_note(units_note)}; "
                               "a head scan spans under a metre: corrupt coordinates or stray points")
    rms = rms_radius(pts)
    if not np.isfinite(rms) or not 1.0 / SIZE_FACTOR <= rms / TYPICAL_SCAN_RMS <= SIZE_FACTOR:
        raise InputError(path, f"RMS radius {_length(rms)}{_note(units_note)}; a head's is about "
                               f"{TYPICAL_SCAN_RMS * 1000:.0f} mm: wrong units, or not a head")
    sample = pts[np.linspace(0, len(pts) - 1, min(len(pts), 20000)).astype(np.int64)]
    spread = np.linalg.svd(sample - sample.mean(0), compute_uv=False) / np.sqrt(max(len(sample), 1))
    thinnest = float(spread[-1]) if len(spread) == 3 else 0.0
    if thinnest < MIN_THICKNESS_M:
        raise InputError(path, f"flat: {_length(thinnest)} RMS along its thinnest axis; no face to register")


def check_landmarks_against_scan(landmarks_m: np.ndarray, scan: ScanIndex | np.ndarray,
                                 path: str | os.PathLike | None) -> None:
    """Raise :class:`InputError` naming ``path`` (the landmark file, else the scan) if the landmarks
    (N, 3), in metres, do not lie on the scan: its :class:`ScanIndex` or its points (M, 3), same frame.

    Refused: landmarks spanning a size more than :data:`SIZE_FACTOR` times off a face's (wrong units,
    all at one point), a median distance to the scan over :data:`MAX_LANDMARK_MEDIAN_M` (another scan's
    landmarks, another frame), or one landmark farther than :data:`MAX_LANDMARK_M`.
    """
    lmk = np.asarray(landmarks_m, dtype=np.float64)
    rms = rms_radius(lmk)
    if not np.isfinite(rms) or not 1.0 / SIZE_FACTOR <= rms / TYPICAL_LANDMARK_RMS <= SIZE_FACTOR:
        raise InputError(path, f"the landmarks' RMS radius is {_length(rms)}; a face's is about "
                               f"{TYPICAL_LANDMARK_RMS * 1000:.0f} mm: wrong units, or not face landmarks")
    tree = scan if isinstance(scan, ScanIndex) else cKDTree(np.asarray(scan, dtype=np.float64))
    dist, _ = tree.query(lmk, k=1)
    worst = int(np.argmax(dist))
    median = float(np.median(dist))
    if median > MAX_LANDMARK_MEDIAN_M:
        raise InputError(path, f"the landmarks are not on the scan: {_length(median)} from its nearest point at "
                               f"the median (landmark {worst}: {_length(dist[worst])}); another scan's landmarks, "
                               "another frame, or other units?")
    if dist[worst] > MAX_LANDMARK_M:
        raise InputError(path, f"landmark {worst} lies {_length(dist[worst])} from the scan's nearest point "
                               f"(at most {MAX_LANDMARK_M * 1000:.0f} mm); a misplaced click?")


def _note(units_note: str) -> str:
    return f" (units: {units_note})" if units_note else ""


def _length(metres: float) -> str:
    """A length for a message: millimetres below a metre, metres above."""
    return f"{metres * 1000:.3g} mm" if abs(metres) < 1.0 else f"{metres:.3g} m"
