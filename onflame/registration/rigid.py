"""Coarse rigid alignment of a scan to the FLAME template: from landmarks, or from geometry alone.

With landmarks the template's landmarks are matched to the clicked ones (Kabsch, no scale). Without,
many start orientations (the 24 rotations of the cube, each tilted a little) are each given a few steps of
trimmed ICP on a small sample of the template's face, and the best few are refined. Both end with
trimmed ICP on the face region, so the result does not hinge on any single landmark.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import apply_rigid, rigid_fit
from .correspond import ScanIndex


def start_rotations() -> np.ndarray:
    """(120, 3, 3) rotations: the cube group, each alone and tilted ±35° about x and y."""
    cube = Rotation.create_group("O").as_matrix()
    tilts = [np.eye(3)] + [Rotation.from_euler(ax, s * 35, degrees=True).as_matrix() for ax in "xy" for s in (-1, 1)]
    return np.stack([c @ t for c in cube for t in tilts])


def trimmed_icp(src: np.ndarray, src_normals: np.ndarray, index: ScanIndex, R: np.ndarray, t: np.ndarray,
                iters: int, max_dist: float, keep: float = 0.8) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid ICP moving template points ``src`` (M, 3) onto the scan; returns ``(R, t, score)``.

    Each step pairs points with their nearest scan vertex (normals agreeing), keeps the closest
    ``keep`` fraction and solves Kabsch. The score is the mean squared distance, with points that found
    no partner counted at ``max_dist`` (lower is better).
    """
    score = np.inf
    for _ in range(iters):
        moved = apply_rigid(src, R, t)
        m = index.match(moved, src_normals @ R.T, max_dist, min_cos=0.3)
        if len(m.source) < 10:
            return R, t, np.inf
        d = m.dist
        order = np.argsort(d)[: max(10, int(keep * len(d)))]
        dR, dt, _ = rigid_fit(moved[m.source[order]], m.target[order])
        R, t = dR @ R, dR @ t + dt
        full = np.full(len(src), max_dist)
        full[m.source] = d
        score = float(np.mean(np.minimum(full, max_dist) ** 2))
    return R, t, score


def align_with_landmarks(template_lmk: np.ndarray, scan_lmk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid ``(R, t)`` taking template landmarks (K, 3) onto scan landmarks (K, 3), metres, no scale."""
    R, t, _ = rigid_fit(template_lmk, scan_lmk)
    return R, t


def align_by_geometry(template_pts: np.ndarray, template_normals: np.ndarray, index: ScanIndex,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Rigid ``(R, t, score)`` taking template face points (M, 3) onto the scan, without landmarks."""
    rng = np.random.default_rng(seed)
    small = rng.choice(len(template_pts), size=min(400, len(template_pts)), replace=False)
    src, nrm = template_pts[small], template_normals[small]
    c_src = src.mean(0)
    # the face sits at the scan's front: start from the centroid of the scan's points nearest its centre of mass
    c_scan = np.median(index.points, axis=0)
    results = []
    for R in start_rotations():
        t = c_scan - R @ c_src
        results.append(trimmed_icp(src, nrm, index, R, t, iters=4, max_dist=0.03))
    best = sorted(results, key=lambda r: r[2])[:4]
    refined = [trimmed_icp(template_pts, template_normals, index, R, t, iters=15, max_dist=0.02) for R, t, _ in best]
    return min(refined, key=lambda r: r[2])
