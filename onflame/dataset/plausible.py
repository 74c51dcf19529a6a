"""The thresholds ``validate`` and ``report`` judge a subject's numbers by (stated in docs/validate.md).

A MICA parameter file holds ``betas`` (400: 300 shape, 100 expression), ``pose`` (15: global, neck, jaw,
left eye, right eye as axis-angle radians) and ``trans`` (3, metres). FLAME's coefficients are in units
of the training population's standard deviation, so a coefficient of 100 lies where no face of any
statistical head model does; a joint turned by more than 90° (or the whole head by more than a full
turn) is no pose a face takes; a translation of 10 m is no scan's frame. A registration and
FLAME(params) of the same subject lie a mean of about a millimetre apart (the refinement follows the
scan where FLAME cannot): a mean of 5 mm or a vertex 50 mm away means parameters that do not belong to
the registration (another subject, another unit, another model, or scaled values).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..flame.params import MICA_KEYS, N_SHAPE

#: Largest plausible absolute shape or expression coefficient (standard deviations).
COEFFICIENT_MAX = 100.0
#: Largest plausible rotation angle of the global joint, and of every other joint (radians).
GLOBAL_ROTATION_MAX = 2 * np.pi
JOINT_ROTATION_MAX = np.pi / 2
#: Largest plausible translation (metres).
TRANSLATION_MAX_M = 10.0
#: Registration vs FLAME(params): largest plausible mean and maximum per-vertex distance (millimetres).
PARAMS_MEAN_MM_MAX = 5.0
PARAMS_MAX_MM_MAX = 50.0

JOINTS = ("global", "neck", "jaw", "left eye", "right eye")


def length_problems(arrays: Mapping[str, Any]) -> list[str]:
    """MICA's arrays with exactly their lengths (``betas`` 400, ``pose`` 15, ``trans`` 3; a leading axis of
    1 allowed): one line per array that has another (missing keys are the reader's to report)."""
    problems = []
    for key, (n,) in MICA_KEYS.items():
        if key not in arrays:
            continue
        shape = tuple(np.shape(arrays[key]))
        flat = shape[1:] if len(shape) == 2 and shape[0] == 1 else shape
        if flat != (n,):
            what = " (300 shape coefficients and no expression)" if key == "betas" and flat == (N_SHAPE,) else ""
            problems.append(f"{key} has {'x'.join(map(str, shape)) or 'no'} values{what}, expected {n}")
    return problems


def magnitude_problems(shape: np.ndarray, expression: np.ndarray, pose: np.ndarray, trans: np.ndarray) -> list[str]:
    """One line per block of parameters beyond the plausible (see the module text)."""
    problems = []
    for name, values in (("shape", shape), ("expression", expression)):
        values = np.asarray(values, dtype=np.float64)
        if values.size and np.abs(values).max() > COEFFICIENT_MAX:
            i = int(np.abs(values).argmax())
            problems.append(f"implausible {name} coefficient {values[i]:.4g} (#{i}; beyond ±{COEFFICIENT_MAX:g} "
                            "standard deviations)")
    angles = np.linalg.norm(np.asarray(pose, dtype=np.float64).reshape(-1, 3), axis=1)
    for j, angle in enumerate(angles[: len(JOINTS)]):
        limit = GLOBAL_ROTATION_MAX if j == 0 else JOINT_ROTATION_MAX
        if angle > limit:
            problems.append(f"implausible {JOINTS[j]} rotation {np.degrees(angle):.4g}° (beyond {np.degrees(limit):g}°)")
    distance = float(np.linalg.norm(np.asarray(trans, dtype=np.float64)))
    if distance > TRANSLATION_MAX_M:
        problems.append(f"implausible translation {distance:.4g} m (beyond {TRANSLATION_MAX_M:g} m)")
    return problems


def distance_problems(mean_mm: float | None, max_mm: float | None) -> list[str]:
    """A line when a registration lies farther from FLAME(params) than :data:`PARAMS_MEAN_MM_MAX` (mean) or
    :data:`PARAMS_MAX_MM_MAX` (any vertex)."""
    if mean_mm is None or max_mm is None:
        return []
    if mean_mm > PARAMS_MEAN_MM_MAX or max_mm > PARAMS_MAX_MM_MAX or not np.isfinite([mean_mm, max_mm]).all():
        return [f"registration lies mean {mean_mm:.3f} mm / max {max_mm:.3f} mm from FLAME(params) (thresholds "
                f"{PARAMS_MEAN_MM_MAX:g} / {PARAMS_MAX_MM_MAX:g} mm): the parameters do not belong to this registration"]
    return []
