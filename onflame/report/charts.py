"""Small inline SVG charts: bar charts of parameters, histograms and a scatter plot with linked points.

Written as SVG text because the site must open from ``file://`` with no network and no script library:
an inline ``<svg>`` needs nothing, scales with the page, and its points can be links to subject pages
(a plotting library's PNG could not link; matplotlib is not a dependency of onflame).
"""
from __future__ import annotations

from html import escape
from typing import Sequence

import numpy as np

_BAR = "#4a78b5"
_NEG = "#c0604a"
_FLAG = "#d0342c"


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def bar_chart(values: Sequence[float], labels: Sequence[str] | None = None, height: int = 120,
              bar_width: float = 6.0, title: str = "") -> str:
    """Bars around a zero line (positive up, negative down), one per value, each with a tooltip."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    labels = list(labels) if labels is not None else [str(i) for i in range(n)]
    lim = float(np.max(np.abs(v))) if n and np.isfinite(v).any() else 1.0
    lim = lim if lim > 0 else 1.0
    pad, w = 46, max(n * bar_width, 60)
    mid, half = height / 2, height / 2 - 8
    parts = [f'<svg class="chart" viewBox="0 0 {w + pad + 4:.0f} {height}" width="{w + pad + 4:.0f}" '
             f'height="{height}" role="img" aria-label="{escape(title)}">']
    parts.append(f'<line x1="{pad}" x2="{pad + w}" y1="{mid}" y2="{mid}" stroke="#999" stroke-width="0.5"/>')
    parts.append(f'<text x="{pad - 3}" y="{mid - half + 4}" text-anchor="end" class="tick">{_fmt(lim)}</text>')
    parts.append(f'<text x="{pad - 3}" y="{mid + half}" text-anchor="end" class="tick">{_fmt(-lim)}</text>')
    for i, (x, lab) in enumerate(zip(v, labels)):
        if not np.isfinite(x):
            continue
        h = abs(x) / lim * half
        y = mid - h if x >= 0 else mid
        parts.append(f'<rect x="{pad + i * bar_width + 0.5:.1f}" y="{y:.1f}" width="{bar_width - 1:.1f}" '
                     f'height="{max(h, 0.5):.1f}" fill="{_BAR if x >= 0 else _NEG}">'
                     f'<title>{escape(lab)} = {x:.4g}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_chart(counts: np.ndarray, edges: np.ndarray, marks: Sequence[tuple[float, str, str]] = (),
                    width: int = 300, height: int = 130, unit: str = "") -> str:
    """A histogram; ``marks`` ``(value, label, href)`` are drawn as red linked ticks under the axis."""
    counts = np.asarray(counts)
    if counts.size == 0:
        return '<p class="muted">no values</p>'
    left, bottom, top = 30, 28, 8
    pw, ph = width - left - 6, height - bottom - top
    lo, hi = float(edges[0]), float(edges[-1])
    sx = lambda x: left + (x - lo) / (hi - lo) * pw  # noqa: E731
    peak = max(int(counts.max()), 1)
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}">']
    for c, a, b in zip(counts, edges[:-1], edges[1:]):
        h = c / peak * ph
        parts.append(f'<rect x="{sx(a) + 0.5:.1f}" y="{top + ph - h:.1f}" width="{max(sx(b) - sx(a) - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="{_BAR}"><title>{_fmt(a)} to {_fmt(b)}{unit}: {int(c)}</title></rect>')
    y0 = top + ph
    parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y0}" y2="{y0}" stroke="#666" stroke-width="0.6"/>')
    parts.append(f'<text x="{left}" y="{y0 + 12}" class="tick">{_fmt(lo)}{escape(unit)}</text>')
    parts.append(f'<text x="{left + pw}" y="{y0 + 12}" text-anchor="end" class="tick">{_fmt(hi)}{escape(unit)}</text>')
    parts.append(f'<text x="{left - 3}" y="{top + 8}" text-anchor="end" class="tick">{peak}</text>')
    for value, label, href in marks:
        x = sx(min(max(value, lo), hi))
        parts.append(f'<a href="{escape(href)}"><line x1="{x:.1f}" x2="{x:.1f}" y1="{y0 + 14}" y2="{y0 + 26}" '
                     f'stroke="{_FLAG}" stroke-width="2.5"><title>{escape(label)}: {value:.4g}{escape(unit)}</title>'
                     '</line></a>')
    parts.append("</svg>")
    return "".join(parts)


def scatter_chart(x: np.ndarray, y: np.ndarray, labels: Sequence[str], hrefs: Sequence[str], flagged: Sequence[bool],
                  x_label: str, y_label: str, size: int = 320) -> str:
    """Points ``(x, y)``, each a link with a tooltip; flagged ones red and larger."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return '<p class="muted">no values</p>'
    m = 30
    p = size - 2 * m

    def scale(v: np.ndarray) -> tuple[np.ndarray, float, float]:
        lo, hi = float(v.min()), float(v.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 1, hi + 1
        pad = 0.05 * (hi - lo)
        return (v - lo + pad) / (hi - lo + 2 * pad), lo, hi

    ux, xlo, xhi = scale(x)
    uy, ylo, yhi = scale(y)
    parts = [f'<svg class="chart" viewBox="0 0 {size} {size}" width="{size}" height="{size}">',
             f'<rect x="{m}" y="{m}" width="{p}" height="{p}" fill="none" stroke="#bbb" stroke-width="0.6"/>',
             f'<text x="{m + p / 2}" y="{size - 6}" text-anchor="middle" class="tick">{escape(x_label)} '
             f'({_fmt(xlo)} to {_fmt(xhi)})</text>',
             f'<text x="10" y="{m + p / 2}" text-anchor="middle" class="tick" transform="rotate(-90 10 {m + p / 2})">'
             f'{escape(y_label)} ({_fmt(ylo)} to {_fmt(yhi)})</text>']
    order = np.argsort(np.asarray(flagged, dtype=bool), kind="stable")  # flagged drawn last, on top
    for i in order:
        cx, cy = m + ux[i] * p, m + (1 - uy[i]) * p
        fill, r = (_FLAG, 4.5) if flagged[i] else (_BAR, 2.8)
        parts.append(f'<a href="{escape(hrefs[i])}"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{fill}" '
                     f'fill-opacity="0.8"><title>{escape(labels[i])}</title></circle></a>')
    parts.append("</svg>")
    return "".join(parts)


def color_bar(colors: np.ndarray, max_value: float, unit: str) -> str:
    """A horizontal colour legend (CSS gradient) from 0 to ``max_value``; ``colors`` (K, 3) in [0, 1]."""
    stops = ", ".join(f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)}) {100 * i / (len(colors) - 1):.0f}%"
                      for i, (r, g, b) in enumerate(colors))
    return (f'<div class="colorbar"><span>0</span><div class="ramp" style="background: linear-gradient(to right, '
            f'{stops})"></div><span>≥ {max_value:g} {escape(unit)}</span></div>')
