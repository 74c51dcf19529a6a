"""Coarse rigid alignment of a scan to the FLAME template: from landmarks, or from geometry alone.

:func:`rigid_starts` gives the starts the registration's FLAME fit tries. With landmarks the template's
landmarks are matched to the clicked ones (Kabsch, no scale); detected landmarks add that start refined
by trimmed ICP on the face. Without landmarks, many start orientations (the 24 rotations of the cube, each
tilted a little) are each given a few steps of trimmed ICP on a small sample of the template's face, the
best few are refined on the whole face, and :func:`search_around` turns the best one further.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import apply_rigid, rigid_fit, vertex_normals
from .correspond import ScanIndex
from .landmarks import LandmarkSet


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3, 3) turning unit vector ``a`` onto unit vector ``b``."""
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(a @ b)
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        perp = np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        return Rotation.from_rotvec(np.pi * perp / np.linalg.norm(perp)).as_matrix()
    return Rotation.from_rotvec(axis / s * np.arctan2(s, c)).as_matrix()


def start_rotations(template_facing: np.ndarray, scan_facing: np.ndarray | None) -> np.ndarray:
    """Start orientations (N, 3, 3) for the geometric search.

    A frontal scan's area-weighted mean normal points roughly at the scanner, i.e. where the face
    looks: then the template's facing direction is turned onto it and only the roll about it (every
    15°) and small tilts (±25°) are searched. Without a clear facing direction (a full 360° head), the
    24 rotations of the cube, each alone and tilted ±35° about x and y, cover all orientations.
    """
    if scan_facing is not None:
        base = _rotation_between(template_facing, scan_facing)
        tilts = [np.eye(3)] + [Rotation.from_rotvec(np.deg2rad(25) * ax).as_matrix()
                               for ax in np.vstack([np.eye(3)[:2], -np.eye(3)[:2]])]
        rolls = [Rotation.from_rotvec(np.deg2rad(a) * scan_facing).as_matrix() for a in range(0, 360, 15)]
        return np.stack([r @ base @ t for r in rolls for t in tilts])
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
                      seed: int = 0, keep: int = 1) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Rigid hypotheses ``[(R, t, score)]``, best first, taking template points (M, 3) onto the scan.

    Up to ``keep`` hypotheses at least 30° apart are returned: a mean-shape template cannot always tell
    an upright face from an upside-down one by rigid fit alone, so the caller may let a FLAME fit decide.
    """
    rng = np.random.default_rng(seed)
    small = rng.choice(len(template_pts), size=min(400, len(template_pts)), replace=False)
    src, nrm = template_pts[small], template_normals[small]
    c_src = src.mean(0)
    facing = template_normals.mean(0)
    facing /= np.linalg.norm(facing)
    scan_facing = index.normals.mean(0)  # vertex normals of a fine scan: close to area weighting
    strength = np.linalg.norm(scan_facing)
    scan_facing = scan_facing / strength if strength > 0.25 else None
    c_scan = np.median(index.points, axis=0)
    results = []
    for R in start_rotations(facing, scan_facing):
        t = c_scan - R @ c_src
        results.append(trimmed_icp(src, nrm, index, R, t, iters=6, max_dist=0.03))
    distinct: list[tuple[np.ndarray, np.ndarray, float]] = []
    for R, t, score in sorted(results, key=lambda r: r[2]):
        if all(Rotation.from_matrix(R @ Q.T).magnitude() > np.deg2rad(30) for Q, _, _ in distinct):
            distinct.append((R, t, score))
        if len(distinct) == keep:
            break
    refined = [trimmed_icp(template_pts, template_normals, index, R, t, iters=20, max_dist=0.015) for R, t, _ in distinct]
    return sorted(refined, key=lambda r: r[2])


def rigid_starts(rest_v: np.ndarray, faces: np.ndarray, weights: np.ndarray, lmk: LandmarkSet | None,
                 index_scan: ScanIndex, detected: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Rigid starts ``x_scan = R x_model + t`` for the mean head ``rest_v`` (V, 3).

    With landmarks, the points that do not move with expression (brows, nose, eyes; the mouth and jaw
    would tilt the start) are aligned. With ``detected`` landmarks that alignment is joined by the same
    start refined by ICP on the face: a detector's points sit several millimetres from FLAME's (4-7 mm on
    the benchmark's renders) and can tilt the start by degrees, which the fit then cannot undo; the FLAME
    fit decides. Measured on simulated in-model scans with detected landmarks (seeds 1-10): seed 6
    0.46 → 0.20 mm, seed 7 0.19 → 0.17 mm, the others unchanged.
    """
    tmpl_n = vertex_normals(rest_v, faces)
    # the front of the head, as a frontal scanner sees it
    front = np.flatnonzero((tmpl_n[:, 2] > 0.2) & (weights > 0))
    if lmk is not None:
        stable = lmk.rigid_points()
        start = align_with_landmarks(stable.locate(rest_v, faces), stable.targets)
        if not detected:
            return [start]
        R, t, _ = trimmed_icp(rest_v[front], tmpl_n[front], index_scan, *start, iters=20, max_dist=0.015)
        return [start, (R, t)]
    return [(R, t) for R, t, _ in align_by_geometry(rest_v[front], tmpl_n[front], index_scan, keep=4)]


#: Turns (degrees) tried about each axis around the best geometry-only start, coarse then fine.
GEOMETRY_SEARCH_DEG = (15.0, 8.0)


def search_around(start, best: tuple, centre: np.ndarray) -> tuple:
    """Local search over rigid starts without landmarks: turn the best start about each model axis
    through ``centre`` (the face's centroid, model frame) by each of ``GEOMETRY_SEARCH_DEG``, keeping
    whichever short FLAME fit explains the scan best (``start(R, t)`` returns ``(score, R, t, ...)``).

    The rigid ICP of the mean head settles 4-13° from the truth on a head of another shape, and from
    there the fit slides into a wrong minimum. Measured on six simulated scans (random poses, the
    benchmark's simulator, ``auto_landmarks="geometry"``): per-vertex face error 1.6-7.0 mm median without
    the search, 0.16-0.23 mm on five and 0.70 mm on one with it, at several times the cost of a
    registration with landmarks (each turn is a short FLAME fit). A start at the true pose scores lowest
    on all of them, so the score is sound and what remains is the search.
    """
    for degrees in GEOMETRY_SEARCH_DEG:
        R0, t0 = best[1], best[2]
        for axis in np.vstack([np.eye(3), -np.eye(3)]):
            turn = Rotation.from_rotvec(np.deg2rad(degrees) * axis).as_matrix()
            tried = start(R0 @ turn, R0 @ centre + t0 - R0 @ turn @ centre)
            if tried[0] < best[0]:
                best = tried
    return best
