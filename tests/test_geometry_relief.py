"""geometry.relief: how far a vertex stands out of its surroundings, at fixed scales in metres."""
from __future__ import annotations

import numpy as np

from onflame.geometry import relief
from onflame.registration.landmark_views import relief_colors


def _sheet(spacing: float, height: float, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40 mm square sheet (metres) with a Gaussian bump (σ 1.5 mm, ``height``) at its centre, triangulated
    every ``spacing``; returns vertices, faces and each vertex's distance from the bump's axis."""
    n = int(round(0.04 / spacing)) + 1
    x, y = np.meshgrid(np.linspace(-0.02, 0.02, n), np.linspace(-0.02, 0.02, n))
    r = np.hypot(x, y).ravel()
    z = height * np.exp(-(r**2) / (2 * 0.0015**2)) + np.random.default_rng(seed).normal(0, noise, r.size)
    v = np.column_stack([x.ravel(), y.ravel(), z])
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    return v, np.concatenate([np.column_stack([a, b, c]), np.column_stack([a, c, d])]), r


def test_a_bump_stands_out_a_groove_sinks_and_flat_skin_is_zero():
    v, f, r = _sheet(0.0005, 0.002)
    rel = relief(v, f, 0.0015, 0.004)
    top, flat = rel[np.argmin(r)], rel[(r > 0.012) & (r < 0.016)]
    assert top > 0.0004  # the bump's top is well above its smoothed surroundings
    assert np.abs(flat).max() < 0.00005  # far from it the sheet is flat
    groove = relief(*_sheet(0.0005, -0.002)[:2], 0.0015, 0.004)
    np.testing.assert_allclose(groove, -rel, atol=1e-5)  # a groove is the bump's negative


def test_relief_does_not_depend_on_the_tessellation_or_the_noise():
    coarse = relief(*_sheet(0.0005, 0.002)[:2], 0.0015, 0.004)
    v, f, r = _sheet(0.00025, 0.002)
    fine = relief(v, f, 0.0015, 0.004)
    top_coarse = coarse[np.argmin(_sheet(0.0005, 0.002)[2])]
    assert abs(fine[np.argmin(r)] - top_coarse) < 0.3 * top_coarse
    noisy_v, noisy_f, noisy_r = _sheet(0.00025, 0.0, noise=0.0002)
    noisy = relief(noisy_v, noisy_f, 0.0015, 0.004)
    assert np.percentile(np.abs(noisy[noisy_r < 0.015]), 95) < 0.25 * top_coarse  # 0.2 mm noise stays small


def test_relief_colours_brighten_ridges_and_darken_creases():
    v, f, r = _sheet(0.0005, 0.002)
    bump = relief_colors(v, f)
    groove = relief_colors(*_sheet(0.0005, -0.002)[:2])
    flat = (r > 0.012) & (r < 0.016)
    top = np.argmin(r)
    assert bump.shape == (len(v), 3) and bump.min() >= 0 and bump.max() <= 1
    assert bump[top].sum() > bump[flat].mean(0).sum() > groove[top].sum()
