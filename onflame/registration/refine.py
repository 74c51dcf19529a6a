"""Non-rigid refinement: move the FLAME fit onto the scan's detail where the scan has data.

Unknowns are per-vertex displacements D (V, 3) from the FLAME fit X. Each round pairs the current
surface's vertices with scan points (:mod:`.correspond`) and solves the sparse least-squares problem

    Σ_i w_i |x_i + d_i − q_i|²        q_i: the current vertex moved along the scan normal n_i onto the
                                      scan's tangent plane at its partner p_i, plus a share τ of the
                                      remaining tangential offset towards p_i
  + α Σ_i deg_i |d_i − mean_(j ~ i) d_j|²   (bending: the displacement's curvature, not its slope)
  + ε Σ_i |d_i|²                      (stay on the fit), with d_i = 0 for fixed vertices (eyeballs),
                                      which leave the system

With τ = 0 targets move vertices only along the normal and tangential placement comes from the FLAME
fit alone (landmarks and the shape prior). Half the tangential pull (τ = 0.5, the default) lets the
surface's features (nose, lids, lip edges) pull the fit's vertices the last few tenths of a millimetre
along the surface: on simulated in-model scans (with the membrane regulariser this module first had)
it lowered the face's p95 per-vertex error from 0.87–1.16 mm to 0.66–1.07 mm at the same scan distance,
with no flipped triangle; the regulariser averages out the scan's vertex spacing, which a full
point-to-point pull (τ = 1) would follow more closely on coarse scans. On scans hardly finer than the
model the pull is phased out (:func:`tangential_share`).

The regulariser penalises how the displacement bends, not how it tilts: a smooth deviation of a few
millimetres over a few centimetres (a smile's raised cheeks) costs almost nothing, while a vertex
following one noisy scan point costs a lot. A membrane (Σ_edges |d_i − d_j|²) charges the slope
instead; with it the real head's cheeks stayed 3–5 mm under the scan, because the pairs matched at
the bulge's sides could not lift its top. Pairs are sought within 5 mm (a smile's cheeks are 5 mm
beyond the fit), and the normals must agree. The three coordinates share one V × V matrix, factorised
once per round, as a symmetric positive definite system. Where the scan has no data only the last line
acts and the surface falls back smoothly to the FLAME fit; eyeballs are held fixed and stay round. α
is lowered over the rounds. A round that would flip a triangle first holds that triangle's corners and their neighbours where the previous round left them, and only if
flips remain is redone stiffer: one sliver in an ear used to stiffen the whole face (real head of the
benchmark: vertices 0.41 mm from the scan's surface after refinement, 0.31 with local holds).

Then, for detail beyond the FLAME space (real faces), softer normal-only rounds run while the robust
spread of the vertices' offsets to the scan is above the scan's own noise; on a head the model
explains the spread is already at the noise and they do not run, so they cannot add noise to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..geometry import face_normals, median_edge_length, vertex_adjacency, vertex_normals
from .correspond import ScanIndex


@dataclass
class RefineSettings:
    """Schedule of the refinement (distances in metres).

    Attributes:
        stiffness: α per round (bending weight relative to a fully matched vertex's data weight).
        radius: correspondence radius per round.
        anchor: ε, pull towards the FLAME fit everywhere.
        landmark_weight: weight of each landmark (relative to one matched vertex), when landmarks are given.
        tangential: τ, share of the tangential offset to each vertex's scan partner put in its target
            (0: normal direction only; 1: the partner itself), on scans at least
            ``TANGENTIAL_DENSITY[1]`` times finer than the model; less on coarser ones
            (:func:`tangential_share`).
        detail_stiffness: α of further, normal-only rounds for detail the FLAME fit cannot explain
            (real faces), run one after another only while the robust spread of the vertices' offsets
            to the scan exceeds ``detail_above`` × the scan's own noise (:meth:`ScanIndex.noise`).
    """

    stiffness: tuple[float, ...] = (30.0, 9.0, 3.0, 1.5)
    radius: tuple[float, ...] = (0.005, 0.005, 0.005, 0.005)
    anchor: float = 1e-3
    landmark_weight: float = 0.0  # off by default: it helped heads the model cannot explain, hurt the others
    tangential: float = 0.5
    detail_stiffness: tuple[float, ...] = (0.6, 0.15, 0.06)
    detail_above: float = 1.0


#: Attempts per round: first holding would-be flips' corners, then as many stiffening the whole round ×4.
MAX_STIFFEN = 4
#: Weight (relative to a matched vertex) holding a vertex where the previous round left it.
PIN_WEIGHT = 1e3


def bending_matrix(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) quadratic form of ``Σ_i deg_i |d_i − mean_(j ~ i) d_j|²`` over a displacement field d.

    With the graph Laplacian K = D − A (D: vertex degrees, A: edge adjacency), ``(K d)_i = deg_i ×
    (d_i − mean of its neighbours)``, so the form is Kᵀ D⁻¹ K: zero for a constant displacement, near
    zero for a locally linear one, large for one that follows single points. Uniform weights, not cotangent ones: the
    FLAME mesh's triangles are regular enough, and uniform weights cannot go negative on slivers.
    """
    A = vertex_adjacency(faces, n_vertices)
    deg = np.asarray(A.sum(1)).ravel()
    K = (sp.diags(deg) - A).tocsr()
    return (K.T @ sp.diags(1.0 / np.maximum(deg, 1.0)) @ K).tocsr()


#: Model-to-scan edge-length ratios between which the tangential pull is phased in (none below the first).
TANGENTIAL_DENSITY = (1.5, 3.0)


def tangential_share(fit: np.ndarray, faces: np.ndarray, region: np.ndarray, scan_spacing: float) -> float:
    """0–1: the share of ``RefineSettings.tangential`` a scan this dense earns.

    A vertex's nearest scan vertex lies up to half a scan edge along the surface from where the surface
    really is; on a scan hardly finer than the model that offset is discretisation, not a feature.
    Measured on the synthetic releases of the procedural head (5.2 mm edges): FRGC's 3.2 mm grid took the
    face from 0.35 mm (fit) to 0.53 mm with the full pull and 0.36 without; on scans of the FLAME test
    model (3.9 mm edges) resampled to 1.9 mm the full pull lowered it from 0.17–0.23 to 0.13–0.17 mm.
    """
    inside = faces[(region[faces] > 0).all(1)]
    if scan_spacing <= 0 or len(inside) == 0:
        return 0.0
    model_spacing = median_edge_length(fit, inside)
    lo, hi = TANGENTIAL_DENSITY
    return float(np.clip((model_spacing / scan_spacing - lo) / (hi - lo), 0.0, 1.0))


def _solve_spd(A: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Solve A X = rhs for a sparse symmetric positive definite A: SuperLU in symmetric mode with a
    minimum-degree ordering of A + Aᵀ and no pivoting, 2× faster here than its general default."""
    lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    return lu.solve(rhs)


def refine(fit: np.ndarray, faces: np.ndarray, index: ScanIndex, region: np.ndarray, fixed: np.ndarray,
           settings: RefineSettings | None = None,
           landmarks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
    """Refine FLAME-fit vertices ``fit`` (V, 3) towards the scan.

    Args:
        fit: (V, 3) FLAME fit, same frame and units (metres) as ``index``.
        faces: (F, 3) model triangles.
        index: the scan.
        region: (V,) weights of vertices allowed to follow scan data (0: never).
        fixed: vertex indices held exactly at the fit (eyeballs).
        landmarks: optional ``(corners (L, 3), bary (L, 3), targets (L, 3))``: surface points that should
            land on given positions. They move the surface along itself, which the normal-only data
            term cannot, so features beyond the model's reach end up where they were clicked.

    Returns:
        ``(vertices (V, 3), info)``; ``info`` has per-round matched counts, how many vertices were held
        against flips and how often a round was stiffened.
    """
    s = settings or RefineSettings()
    V = len(fit)
    free = np.setdiff1d(np.arange(V), fixed)  # fixed vertices (eyeballs) stay exactly: out of the system
    K = bending_matrix(faces, V)[free][:, free]
    hold = np.full(V, s.anchor)
    pinned = np.zeros(V)  # weight holding a vertex at its previous round's place (corners of would-be flips)
    cur = fit.copy()
    info: dict = {"rounds": [], "stiffened": 0, "pinned": 0, "detail_rounds": 0}
    cand = np.flatnonzero(region > 0)
    fit_normals = face_normals(fit, faces)
    L_mat = L_rhs = None
    if landmarks is not None and s.landmark_weight > 0:
        corners, bary, targets = landmarks
        rows = np.repeat(np.arange(len(corners)), 3)
        B = sp.csr_matrix((bary.ravel(), (rows, corners.ravel())), shape=(len(corners), V))
        L_mat = s.landmark_weight * (B.T @ B)[free][:, free]
        L_rhs = s.landmark_weight * (B.T @ (targets - B @ fit))
    tau = s.tangential * tangential_share(fit, faces, region, index.spacing)
    info["tangential"] = tau
    schedule = [(a, r, tau) for a, r in zip(s.stiffness, s.radius)]
    detail = [(a, s.radius[-1], 0.0) for a in s.detail_stiffness]
    noise = index.noise() if detail else 0.0
    while schedule or detail:
        detail_round = not schedule
        alpha, radius, tau = schedule.pop(0) if schedule else detail.pop(0)
        vn = vertex_normals(cur, faces)
        m = index.match(cur[cand], vn[cand], radius, min_cos=0.6)
        src = cand[m.source]
        delta = m.target - cur[src]
        offset = (delta * m.normal).sum(1)
        if detail_round and 1.4826 * np.median(np.abs(offset)) <= s.detail_above * noise:
            break  # the surface is as close to the scan as its noise: softer rounds would follow the noise
        w = np.zeros(V)
        w[src] = region[src]
        target = cur.copy()
        along = m.normal * offset[:, None]
        target[src] += along + tau * (delta - along)
        for attempt in range(2 * MAX_STIFFEN):
            A = sp.diags((w + hold + pinned)[free]) + alpha * K
            # solve for the new total displacement D: (W + H + P + αK (+ landmarks)) D = W (target − fit)
            # + P (cur − fit) (+ ...): the regularisers act on the total displacement from the fit
            rhs = w[:, None] * (target - fit) + pinned[:, None] * (cur - fit)
            if L_mat is not None:
                A = A + L_mat
                rhs = rhs + L_rhs
            new = fit.copy()
            new[free] += _solve_spd(A, rhs[free])
            flipped = (face_normals(new, faces) * fit_normals).sum(1) < 0
            if not flipped.any():
                break
            if attempt < MAX_STIFFEN:
                # hold the would-be flips' corners and their neighbours where they were: a sliver in an
                # ear should not stiffen the whole face
                corners = np.unique(faces[np.isin(faces, np.unique(faces[flipped])).any(1)])
                info["pinned"] += int((pinned[corners] == 0).sum())
                pinned[corners] = PIN_WEIGHT
            else:
                alpha *= 4.0
                info["stiffened"] += 1
        if flipped.any():
            break  # keep the last flip-free surface
        cur = new
        info["detail_rounds"] += int(detail_round)
        info["rounds"].append({"alpha": alpha, "radius_m": radius, "matched": int(len(src))})
    return cur, info
