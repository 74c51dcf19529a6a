"""Shared pieces of evaluation reports: plain-text tables and the per-figure curve files."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from ..fileio import safe_name
from .curves import plot_curves, write_curves_csv


def format_rows(rows: list[tuple[str, ...]]) -> str:
    """A plain text table: the first row is the header; columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_curve_files(out: Path, name: str, thresholds_mm: np.ndarray, curves: Mapping[str, np.ndarray],
                      title: str, xlabel: str = "error (mm)") -> dict[str, str]:
    """``out/cumulative_<name>.csv`` and ``.png`` (one curve per method); returns their paths."""
    csv, png = out / f"cumulative_{name}.csv", out / f"cumulative_{name}.png"
    write_curves_csv(csv, thresholds_mm, curves)
    plot_curves(png, thresholds_mm, curves, title, xlabel)
    return {f"curve_{name}_csv": str(csv), f"curve_{name}_png": str(png)}


def method_name(label: str) -> str:
    """A method's ``label`` as the file-name component that names its files."""
    return safe_name(label, "method")


def mm(value: float) -> str:
    """A millimetre value for a table cell (``-`` when missing)."""
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"
