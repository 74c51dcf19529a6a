"""Registration accuracy against ground truth.

The number that matters for a dataset is the per-vertex error: a registration can lie exactly on the
scan surface while its vertices slide away from their true places. :func:`per_vertex_error` aligns the
registration to the truth rigidly (no scale: units are part of what is tested) on the chosen region
and measures each vertex's distance to its true position.
"""
from __future__ import annotations

import numpy as np

from ..geometry import apply_rigid, rigid_fit


def per_vertex_error(registration: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> np.ndarray:
    """Distances (K,) in the input units between corresponding vertices after a rigid fit on ``region``.

    Args:
        registration, truth: (V, 3) same-topology vertex arrays.
        region: vertex indices to align and score (all if None).
    """
    idx = np.arange(len(truth)) if region is None else np.asarray(region)
    R, t, _ = rigid_fit(registration[idx], truth[idx])
    return np.linalg.norm(apply_rigid(registration[idx], R, t) - truth[idx], axis=1)


def error_summary(err_m: np.ndarray) -> dict[str, float]:
    """:func:`summary_mm` of errors given in metres."""
    return summary_mm(np.asarray(err_m) * 1000.0)


def summary_mm(err_mm: np.ndarray) -> dict[str, float]:
    """Median, mean, standard deviation, 95th percentile and max of errors in millimetres (NaN if empty),
    and their count ``n``. The standard deviation is the population one (``ddof=0``), as NoW's."""
    mm = np.asarray(err_mm, dtype=np.float64).ravel()
    if mm.size == 0:
        nan = float("nan")
        return {"median_mm": nan, "mean_mm": nan, "std_mm": nan, "p95_mm": nan, "max_mm": nan, "n": 0}
    return {"median_mm": float(np.median(mm)), "mean_mm": float(mm.mean()), "std_mm": float(mm.std()),
            "p95_mm": float(np.percentile(mm, 95)), "max_mm": float(mm.max()), "n": int(mm.size)}
