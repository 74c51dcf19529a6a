"""The learned landmark correction in a registration: when it runs, and what it says when it does not.

:func:`correct_detection` takes what automatic landmarking found
(:class:`~.landmark_detection.DetectedLandmarks`) and, where the shipped correction
(:mod:`onflame.detection.correction`) applies, replaces the landmarks by the corrected ones, put back
onto the scan's surface. It runs only when turned on (:func:`correction_enabled`), and applies when the
correction is for the detector and the model's topology,
covers the model's landmark convention, and the scan was shown to the detector the way the correction
was trained (untextured, relief-shaded). A face far outside the training faces keeps its uncorrected
landmarks and gets a verdict reason (:func:`correction_doubt`).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from ..detection.correction import load_correction
from ..errors import InputError
from ..flame.model import FlameModel
from .landmark_detection import DetectedLandmarks
from .landmark_views import onto_surface


#: The environment variable that turns the correction on or off (``on`` / ``off``), and whether it runs
#: without it. Off: learned from generated heads, it places their landmarks a median ~1.3 mm from the
#: truth (2.4 mm uncorrected) on heads it never saw, but on the benchmark's real head it moves them
#: further off (~3.3 mm against 2.5 mm) and the registrations with them (docs/benchmarks.md): generated
#: heads do not look to the detector the way real faces do.
SWITCH = "ONFLAME_LANDMARK_CORRECTION"
ON_BY_DEFAULT = False


def correction_enabled() -> bool:
    """Whether the landmark correction runs: :data:`SWITCH` ``on``/``off``, else :data:`ON_BY_DEFAULT`.

    Raises:
        InputError: the variable holds something else.
    """
    value = os.environ.get(SWITCH, "").strip().lower()
    if value in ("", "default"):
        return ON_BY_DEFAULT
    if value in ("on", "off"):
        return value == "on"
    raise InputError(None, f"{SWITCH}={value!r}: use on or off")


def correct_detection(found: DetectedLandmarks, model: FlameModel, points_m: np.ndarray, faces: np.ndarray,
                      normals: np.ndarray | None = None) -> DetectedLandmarks:
    """``found`` with corrected landmarks where the correction applies, and ``info["correction"]``.

    Args:
        found: a detection with landmarks, its consensus dense points and each view's points.
        model: the model whose default 51-point convention the landmarks are in.
        points_m: (V, 3) the scan's vertices (metres); faces: (F, 3) its triangles; normals: (V, 3) its
            smoothed vertex normals (as the detection used), or None.

    Returns:
        The detection; ``info["correction"]`` holds ``name``, ``applied``, and ``reason`` when it did not
        apply, ``distance`` (from the training faces, 1 at the limit) when it was computed;
        ``expected_error_m`` (51,) is set when it applied.
    """
    note: dict[str, Any] = {"name": None, "applied": False}
    detector = found.info.get("detector", "")
    correction = load_correction(detector, model.faces)
    points = model.landmarks.static51
    if not correction_enabled():
        note["reason"] = f"the landmark correction is off ({SWITCH}=on turns it on)"
    elif correction is None:
        note["reason"] = f"no landmark correction for {detector} on this model's topology"
    elif found.info.get("look") != "relief":
        note.update(name=correction.name, reason=f"the detector saw the scan's {found.info.get('look')}; the "
                                                 "correction is learned from untextured, relief-shaded views")
    elif points is None or not correction.covers(points, model.faces):
        note.update(name=correction.name, reason="the model's landmarks lie on triangles the correction does not predict")
    elif found.dense is None or found.view_dense is None:
        note.update(name=correction.name, reason="the detector gave no dense points")
    else:
        note["name"] = correction.name
        agreed = np.isfinite(found.view_dense).all(2).sum(0) >= min(2, len(found.view_dense))
        got = correction.landmarks(found.dense, agreed, points, model.faces)
        if got is None:
            note["reason"] = "too few dense points to place the face for the correction"
        else:
            note["distance"] = round(got.distance, 3)
            if got.distance > 1.0:
                note["reason"] = (f"the detected face lies outside the faces the landmark correction was trained on "
                                  f"(distance {got.distance:.2f}, limit 1); landmarks left uncorrected")
                note["outside"] = True
            else:
                landmarks = onto_surface(got.points, points_m, faces, normals)
                if np.isfinite(landmarks).all():
                    note["applied"] = True
                    note["expected_error_mm"] = [round(float(e) * 1000, 2) for e in got.expected_error_m]
                    return replace(found, landmarks=landmarks, expected_error_m=got.expected_error_m,
                                   info={**found.info, "correction": note})
                note["reason"] = "corrected landmarks fell off the scan"
    return replace(found, info={**found.info, "correction": note})


def correction_doubt(info: dict) -> str | None:
    """A verdict reason when the detected face lay outside the correction's training faces, else None."""
    note = info.get("correction") or {}
    return note.get("reason") if note.get("outside") else None
