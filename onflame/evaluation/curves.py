"""Cumulative error curves, as the NoW paper and leaderboard draw them: the percentage of points whose
error is at most x, for x from 0 to 8 mm. Written as CSV (one column per method) and as a PNG
(matplotlib with its file-only Agg backend, imported only when a plot is drawn)."""
from __future__ import annotations

import io
import os
from typing import Mapping

import numpy as np

from ..fileio import write_bytes, write_text

#: The curves' range (mm) and sampling step (mm).
CURVE_MAX_MM = 8.0
CURVE_STEP_MM = 0.01


def curve_axis(max_mm: float = CURVE_MAX_MM, step_mm: float = CURVE_STEP_MM) -> np.ndarray:
    """The error thresholds (K,) in mm: 0, step, ..., max."""
    return np.round(np.arange(0.0, max_mm + step_mm / 2, step_mm), 10)


def cumulative_percentage(errors_mm: np.ndarray, thresholds_mm: np.ndarray) -> np.ndarray:
    """(K,) percentage of ``errors_mm`` (N,) that are ≤ each threshold (K,); NaN for no errors."""
    e = np.sort(np.asarray(errors_mm, dtype=np.float64).ravel())
    if e.size == 0:
        return np.full(len(thresholds_mm), np.nan)
    return 100.0 * np.searchsorted(e, thresholds_mm, side="right") / e.size


def write_curves_csv(path: str | os.PathLike, thresholds_mm: np.ndarray, curves: Mapping[str, np.ndarray]) -> None:
    """``error_mm,<label>,...`` rows: each method's percentage at each threshold."""
    labels = list(curves)
    lines = [",".join(["error_mm"] + [_csv_field(lbl) for lbl in labels])]
    for k, x in enumerate(thresholds_mm):
        lines.append(",".join([f"{x:.4f}"] + [f"{curves[lbl][k]:.4f}" for lbl in labels]))
    write_text(path, "\n".join(lines) + "\n")


def _csv_field(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def plot_curves(path: str | os.PathLike, thresholds_mm: np.ndarray, curves: Mapping[str, np.ndarray],
                title: str, xlabel: str = "error (mm)") -> None:
    """A PNG with one cumulative curve per method (the legend names them)."""
    # a bare Figure on the Agg canvas: no pyplot state, no window, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, pct in curves.items():
        ax.plot(thresholds_mm, pct, label=label, linewidth=1.8)
    ax.set_xlim(0, float(thresholds_mm[-1]))
    ax.set_ylim(0, 100)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("percentage of points (%)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    write_bytes(path, buf.getvalue())
