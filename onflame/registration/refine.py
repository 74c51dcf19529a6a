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
fit alone (landmarks and the shape prior). A share of the tangential pull (τ = 0.75 by default) lets the
surface's features (nose, lids, lip edges) pull the fit's vertices the last few tenths of a millimetre
along the surface: on simulated in-model scans (with the membrane regulariser this module first had)
it lowered the face's p95 per-vertex error from 0.87–1.16 mm to 0.66–1.07 mm at the same scan distance,
with no flipped triangle; the regulariser averages out the scan's vertex spacing, which a full
point-to-point pull (τ = 1) would follow more closely on coarse scans. On scans hardly finer than the
model the pull is phased out (:func:`tangential_share`).

The regulariser penalises how the displacement bends, not how it tilts: a smooth deviation of a few
millimetres over a few centimetres (a smile's raised cheeks) costs almost nothing, while a vertex
following one noisy scan point costs a lot. A membrane (Σ_edges |d_i − d_j|²) charges the slope instead;
with it the real head's cheeks stayed 3–5 mm under the scan, because the pairs matched at the bulge's
sides could not lift its top. Pairs are sought within 5 mm (a smile's cheeks are 5 mm beyond the fit),
and the normals must agree. The three coordinates share one V × V matrix, factorised once per round, as
a symmetric positive definite system. Where the scan has no data only the last line acts and the surface
falls back smoothly to the FLAME fit; eyeballs are held fixed and stay round. α is lowered over the
rounds. A round that would flip a triangle first holds that triangle's corners and their neighbours
where the previous round left them, and only if flips remain is redone stiffer: one sliver in an ear
used to stiffen the whole face (real head of the benchmark: vertices 0.41 mm from the scan's surface
after refinement, 0.31 with local holds).

Where the model does not explain the scan, :mod:`.detail` then follows the scan's detail beyond
the FLAME space, and soft normal-only bending rounds (α 0.3, 0.1) relative to that surface bring it
onto the scan without moving it along itself.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..geometry import (
    face_normals,
    flipped_against,
    median_edge_length,
    vertex_adjacency,
    vertex_normals,
    vertices_around,
)
from .correspond import ScanIndex
from .detail import follow_detail
from .landmarks import LandmarkSet
from .solvers import solve_spd


@dataclass
class RefineSettings:
    """Schedule of the refinement (distances in metres).

    Attributes:
        stiffness: α per round (bending weight relative to a fully matched vertex's data weight).
        radius: correspondence radius per round.
        anchor: ε, pull towards the FLAME fit everywhere.
        tangential: τ, share of the tangential offset to each vertex's scan partner put in its target
            (0: normal direction only; 1: the partner itself), on scans at least
            ``TANGENTIAL_DENSITY[1]`` times finer than the model; less on coarser ones
            (:func:`tangential_share`). Ten simulated in-model scans (seeds 1-10 of
            ``benchmarks/registration.py``, with the second pass), mean median / p95 per-vertex error:
            τ = 0.5: 0.178 / 0.724 mm, 0.75: 0.183 / 0.665, 1: 0.189 / 0.650 (the p95 sits on the cheeks
            and upper forehead); but at 1 the synthetic FaceWarehouse release's registration departs
            0.106 mm from its own parameters' mesh (0.084 at 0.75), over the build test's 0.1 mm.
        detail_above: the detail phase (:func:`.detail.follow_detail`) runs when the robust spread of the
            vertices' offsets to the scan after the bending rounds exceeds this × the scan's own noise
            (:meth:`ScanIndex.noise`).
        detail_rounds: rounds of the as-similar-as-possible deformation (0 turns the phase off). On the
            benchmark's real head (τ = 1) 4 / 6 / 8 rounds gave 1.244 / 1.217 / 1.209 mm median
            per-vertex error; a round costs a few tens of milliseconds there.
        detail_similarity: its weight per edge, relative to a fully matched vertex's data weight.
        detail_landmarks: the landmarks' weight in it (each, relative to one matched vertex), for clicks
            of about 1.5 mm; each landmark is further weighed by its own uncertainty
            (:meth:`LandmarkSet.weights`).
        surface_stiffness: α of the normal-only bending rounds after it.
        second_pass: α of a second, short refinement that :func:`~onflame.registration.register` runs
            from the parameters refitted to the first one's result, where the detail phase did not run
            (empty: none). Ten simulated in-model scans (seeds 1-10 of ``benchmarks/registration.py``,
            τ = 0.75): mean median / p95 per-vertex error 0.192 / 0.766 → 0.183 / 0.665 mm, lower on
            every one; about 0.07 s more per scan (CPU).
    """

    stiffness: tuple[float, ...] = (30.0, 9.0, 3.0, 1.5)
    radius: tuple[float, ...] = (0.005, 0.005, 0.005, 0.005)
    anchor: float = 1e-3
    tangential: float = 0.75
    detail_above: float = 1.0
    detail_rounds: int = 6
    detail_similarity: float = 0.3
    detail_landmarks: float = 1.0
    surface_stiffness: tuple[float, ...] = (0.3, 0.1)
    second_pass: tuple[float, ...] = (3.0, 1.5)


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


def refine(fit: np.ndarray, faces: np.ndarray, index: ScanIndex, region: np.ndarray, fixed: np.ndarray,
           settings: RefineSettings | None = None, landmarks: LandmarkSet | None = None) -> tuple[np.ndarray, dict]:
    """Refine FLAME-fit vertices ``fit`` (V, 3) towards the scan.

    Args:
        fit: (V, 3) FLAME fit, same frame and units (metres) as ``index``.
        faces: (F, 3) model triangles.
        index: the scan.
        region: (V,) weights of vertices allowed to follow scan data (0: never).
        fixed: vertex indices held exactly at the fit (eyeballs).
        landmarks: optional surface points that should land on their targets (metres, the scan index's
            frame), each weighted by :meth:`LandmarkSet.weights` (1 for a click of 1.5 mm), in the detail
            phase: they move the surface along itself, which the normal-only bending rounds cannot.

    Returns:
        ``(vertices (V, 3), info)``; ``info`` has per-round matched counts, how many vertices were held
        against flips, how often a round was stiffened, the offset spread and noise (m) that decided the
        detail phase and its rounds (``detail_rounds``, 0 where the model explains the scan).
    """
    s = settings or RefineSettings()
    V = len(fit)
    free = np.setdiff1d(np.arange(V), fixed)  # fixed vertices (eyeballs) stay exactly: out of the system
    K = bending_matrix(faces, V)[free][:, free]
    info: dict = {"rounds": [], "stiffened": 0, "pinned": 0, "detail_rounds": 0}
    cand = np.flatnonzero(region > 0)
    tau = s.tangential * tangential_share(fit, faces, region, index.spacing)
    info["tangential"] = tau
    schedule = [(a, r, tau) for a, r in zip(s.stiffness, s.radius)]
    cur = _bending_rounds(fit, fit, faces, index, region, free, K, schedule, s.anchor, info)
    if s.detail_rounds <= 0:
        return cur, info
    info["offset_spread"] = _offset_spread(cur, faces, index, cand, s.radius[-1])
    info["noise"] = index.noise()
    if info["offset_spread"] <= s.detail_above * info["noise"]:
        return cur, info  # as close to the scan as its noise: the fit explains it
    detail = follow_detail(cur, fit, faces, index, region, fixed, landmarks, info, rounds=s.detail_rounds,
                           similarity=s.detail_similarity, landmark_weight=s.detail_landmarks, anchor=s.anchor,
                           radius=s.radius[-1])
    if info["detail_rounds"]:
        # onto the scan along the normals, relative to the detailed surface (its placement along itself kept)
        surface = [(a, s.radius[-1], 0.0) for a in s.surface_stiffness]
        cur = _bending_rounds(detail, detail, faces, index, region, free, K, surface, s.anchor, info,
                              fit_normals=face_normals(fit, faces))
    return cur, info


def _offset_spread(cur: np.ndarray, faces: np.ndarray, index: ScanIndex, cand: np.ndarray, radius: float) -> float:
    """Robust spread (m, 1.4826 × MAD about 0) of the offsets along the scan normals from vertices ``cand``
    of ``cur`` (V, 3) to their scan partners."""
    m = index.match(cur[cand], vertex_normals(cur, faces)[cand], radius, min_cos=0.6)
    offset = ((m.target - cur[cand[m.source]]) * m.normal).sum(1)
    return float(1.4826 * np.median(np.abs(offset))) if len(offset) else 0.0


def _bending_rounds(ref: np.ndarray, cur: np.ndarray, faces: np.ndarray, index: ScanIndex, region: np.ndarray,
                    free: np.ndarray, K: sp.spmatrix, schedule: list[tuple[float, float, float]], anchor: float,
                    info: dict, fit_normals: np.ndarray | None = None) -> np.ndarray:
    """Rounds ``(α, radius, τ)`` of the bending-regularised refinement of displacements from ``ref`` (V, 3),
    starting at ``cur``. Flips are judged against ``fit_normals`` (default: ``ref``'s). Returns the last
    flip-free surface."""
    V = len(ref)
    hold = np.full(V, anchor)
    pinned = np.zeros(V)  # weight holding a vertex at its previous round's place (corners of would-be flips)
    cand = np.flatnonzero(region > 0)
    ref_normals = face_normals(ref, faces) if fit_normals is None else fit_normals
    for alpha, radius, tau in schedule:
        vn = vertex_normals(cur, faces)
        m = index.match(cur[cand], vn[cand], radius, min_cos=0.6)
        src = cand[m.source]
        delta = m.target - cur[src]
        offset = (delta * m.normal).sum(1)
        w = np.zeros(V)
        w[src] = region[src]
        target = cur.copy()
        along = m.normal * offset[:, None]
        target[src] += along + tau * (delta - along)
        for attempt in range(2 * MAX_STIFFEN):
            A = sp.diags((w + hold + pinned)[free]) + alpha * K
            # solve for the new total displacement D: (W + H + P + αK) D = W (target − ref) + P (cur − ref):
            # the regularisers act on the total displacement from ``ref``
            rhs = w[:, None] * (target - ref) + pinned[:, None] * (cur - ref)
            new = ref.copy()
            new[free] += solve_spd(A, rhs[free])
            flipped = flipped_against(new, faces, reference_normals=ref_normals)
            if not flipped.any():
                break
            if attempt < MAX_STIFFEN:
                # hold the would-be flips' corners and their neighbours where they were: a sliver in an
                # ear should not stiffen the whole face
                corners = vertices_around(faces, flipped)
                info["pinned"] += int((pinned[corners] == 0).sum())
                pinned[corners] = PIN_WEIGHT
            else:
                alpha *= 4.0
                info["stiffened"] += 1
        if flipped.any():
            break  # keep the last flip-free surface
        cur = new
        info["rounds"].append({"alpha": alpha, "radius_m": radius, "matched": int(len(src))})
    return cur


