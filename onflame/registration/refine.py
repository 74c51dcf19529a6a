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
following one noisy scan point costs a lot. A membrane (Σ_edges |d_i − d_j|²) charges the slope
instead; with it the real head's cheeks stayed 3–5 mm under the scan, because the pairs matched at
the bulge's sides could not lift its top. Pairs are sought within 5 mm (a smile's cheeks are 5 mm
beyond the fit), and the normals must agree. The three coordinates share one V × V matrix, factorised
once per round, as a symmetric positive definite system. Where the scan has no data only the last line
acts and the surface falls back smoothly to the FLAME fit; eyeballs are held fixed and stay round. α
is lowered over the rounds. A round that would flip a triangle first holds that triangle's corners and their neighbours where the previous round left them, and only if
flips remain is redone stiffer: one sliver in an ear used to stiffen the whole face (real head of the
benchmark: vertices 0.41 mm from the scan's surface after refinement, 0.31 with local holds).

**Detail beyond the FLAME space** (:func:`follow_detail`). Where the model explains the scan, the
vertices' robust offset spread to the scan is at the scan's own noise after these rounds, and nothing
more runs. Where it does not (a real face in the synthetic test model: 0.31 mm spread against 0.19 mm
of noise; in-model heads 0.13–0.14 mm), the fit's placement along the surface is wrong too, and
following the scan along the normals keeps that error. Then the surface is deformed as-similar-as-
possible to the fit — each vertex's edges in the fit, turned and scaled by that vertex's best
similarity, are the targets of its edges — with point-to-plane scan pairs and, if given, the
landmarks pulling it. Turning costs nothing, so a bulge is followed with the skin's spacing kept; the
landmarks then move the surface along itself. On the benchmark's real head this took the face's
median per-vertex error from 1.64 to 1.22 mm, landmark residuals from 1.7 to 1.2 mm (the clicks' own
noise is 1.6 mm), and triangles facing the other way than the truth's from 30 to 22. Last, soft
normal-only bending rounds (α 0.3, 0.1) relative to that surface bring it onto the scan (scan to
mesh 0.24 → 0.20 mm median, 22 → 29 triangles against the truth) without moving it along itself.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..geometry import (
    face_normals,
    flipped_against,
    median_edge_length,
    nearest_rotations,
    vertex_adjacency,
    vertex_normals,
)
from .correspond import ScanIndex
from .landmarks import LandmarkSet


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
        detail_above: the detail phase (:func:`follow_detail`) runs when the robust spread of the
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


_ORDERINGS: dict[bytes, np.ndarray] = {}


def _solve_spd(A: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
    """Solve A X = rhs for a sparse symmetric positive definite A: SuperLU in symmetric mode with a
    minimum-degree ordering of A + Aᵀ and no pivoting, 2× faster here than its general default.

    The rounds of a refinement, and every registration with one model, factorise matrices of one
    sparsity pattern: its ordering is computed once (kept per pattern) and the matrix permuted by it,
    which takes a third off each factorisation.
    """
    A = A.tocsc()
    A.sort_indices()
    key = hashlib.sha1(A.indptr.tobytes() + A.indices.tobytes()).digest()
    order = _ORDERINGS.get(key)
    if order is None:
        lu = spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        if len(_ORDERINGS) >= 8:
            _ORDERINGS.clear()
        _ORDERINGS[key] = np.argsort(lu.perm_c)
        return lu.solve(rhs)
    lu = spla.splu(A[order][:, order].tocsc(), permc_spec="NATURAL", diag_pivot_thresh=0.0,
                   options={"SymmetricMode": True})
    out = np.empty_like(rhs)
    out[order] = lu.solve(rhs[order])
    return out


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
    detail = follow_detail(cur, fit, faces, index, region, fixed, s, landmarks, info)
    if info["detail_rounds"]:
        # onto the scan along the normals, relative to the detailed surface (its placement along itself kept)
        surface = [(a, s.radius[-1], 0.0) for a in s.surface_stiffness]
        cur = _bending_rounds(detail, detail, faces, index, region, free, K, surface, s.anchor, info,
                              fit_normals=face_normals(fit, faces))
    return cur, info


def _around(faces: np.ndarray, flipped: np.ndarray) -> np.ndarray:
    """Vertex indices of the ``flipped`` (F,) triangles' corners and of every triangle touching them."""
    return np.unique(faces[np.isin(faces, np.unique(faces[flipped])).any(1)])


def _landmark_matrix(landmarks: LandmarkSet, faces: np.ndarray, n_vertices: int) -> tuple[sp.csr_matrix, sp.dia_matrix]:
    """(L, V) barycentric interpolation of the landmarks' surface points, and their (L, L) diagonal weights."""
    corners, bary = landmarks.corners(faces), landmarks.points.bary
    rows = np.repeat(np.arange(len(corners)), 3)
    B = sp.csr_matrix((bary.ravel(), (rows, corners.ravel())), shape=(len(corners), n_vertices))
    return B, sp.diags(landmarks.weights())


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
            new[free] += _solve_spd(A, rhs[free])
            flipped = flipped_against(new, faces, reference_normals=ref_normals)
            if not flipped.any():
                break
            if attempt < MAX_STIFFEN:
                # hold the would-be flips' corners and their neighbours where they were: a sliver in an
                # ear should not stiffen the whole face
                corners = _around(faces, flipped)
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


def _edge_similarities(ref: np.ndarray, cur: np.ndarray, i: np.ndarray, j: np.ndarray,
                       ends: sp.csr_matrix | None = None) -> np.ndarray:
    """(V, 3, 3): for each vertex, the rotation times scale that best maps its edges ``(i, j)`` in ``ref``
    (V, 3) onto the same edges in ``cur`` (V, 3) (Procrustes on the edge vectors' cross-covariance).
    ``ends``: the (V, E) incidence of vertices and edges, when the caller has it."""
    V, E = len(ref), len(i)
    er, ec = ref[i] - ref[j], cur[i] - cur[j]
    if ends is None:
        ends = _incidence(i, j, V)
    cov = (ends @ (ec[:, :, None] * er[:, None, :]).reshape(E, 9)).reshape(V, 3, 3)
    norm = ends @ (er**2).sum(1)
    R, trace = nearest_rotations(cov)
    return R * (trace / np.maximum(norm, 1e-30))[:, None, None]


def _incidence(i: np.ndarray, j: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, E) 0/1: the two ends of each edge ``(i, j)``."""
    E = len(i)
    return sp.csr_matrix((np.ones(2 * E), (np.r_[i, j], np.r_[np.arange(E), np.arange(E)])), shape=(n_vertices, E))


#: Per-vertex factor on the edge weight around a would-be flipped triangle (repeated while flips remain).
DETAIL_STIFFEN = 10.0


def follow_detail(cur: np.ndarray, fit: np.ndarray, faces: np.ndarray, index: ScanIndex, region: np.ndarray,
                  fixed: np.ndarray, settings: RefineSettings | None = None,
                  landmarks: LandmarkSet | None = None, info: dict | None = None) -> np.ndarray:
    """As-similar-as-possible deformation of the FLAME fit onto scan detail beyond the FLAME space.

    Minimises over the vertices x (V, 3), starting from ``cur``:

        Σ_i w_i (n_iᵀ (x_i − p_i))²                       point-to-plane, scan partners p_i, normals n_i
      + β Σ_(i,j) c_ij |x_i − x_j − ½ (S_i + S_j)(f_i − f_j)|²   f: the fit; S_i: vertex i's similarity
      + λ Σ_l |Σ_k b_lk x_(l,k) − t_l|²                    landmarks (optional)
      + ε Σ_i |x_i − f_i|²

    alternating the similarities (:func:`_edge_similarities`) with one sparse (3V × 3V) solve per round,
    solved by conjugate gradients from the previous round (10× faster here than a factorisation; the
    couplings of x, y, z through n nᵀ rule out one shared V × V matrix). Unlike the bending rounds, this
    moves the surface along itself: the landmarks set where it goes, the kept spacing of the fit's
    vertices how its neighbours follow. A round that would flip a triangle against the fit multiplies
    the edge weights c of its corners and their neighbours by ``DETAIL_STIFFEN`` and is redone; if flips
    remain after ``MAX_STIFFEN`` tries the last flip-free surface is kept. Fixed vertices stay at the fit.

    Args:
        cur: (V, 3) start (the bending rounds' result), metres.
        fit: (V, 3) the FLAME fit: the shape whose edges are kept.
        landmarks: as for :func:`refine`.
        info: updated with ``detail_rounds``.

    Returns:
        (V, 3) vertices.
    """
    s = settings or RefineSettings()
    info = {} if info is None else info
    info.setdefault("detail_rounds", 0)
    V = len(fit)
    A = vertex_adjacency(faces, V).tocoo()
    i, j = A.row[A.row < A.col], A.col[A.row < A.col]
    E = len(i)
    Dm = sp.csr_matrix((np.r_[np.ones(E), -np.ones(E)], (np.r_[np.arange(E), np.arange(E)], np.r_[i, j])),
                       shape=(E, V))  # edge differences
    ends = _incidence(i, j, V)
    free = np.setdiff1d(np.arange(V), fixed)
    held = np.setdiff1d(np.arange(V), free)
    # the parts of the system that are the same for x, y and z: one (V, V) matrix, (V, 3) right-hand sides
    constant = s.anchor * sp.identity(V, format="csr")
    constant_rhs = s.anchor * fit
    if landmarks is not None and s.detail_landmarks > 0:
        B, W = _landmark_matrix(landmarks, faces, V)
        constant = constant + s.detail_landmarks * (B.T @ W @ B)
        constant_rhs = constant_rhs + s.detail_landmarks * (B.T @ W @ landmarks.targets)
    cand = np.flatnonzero(region > 0)
    fit_normals = face_normals(fit, faces)
    fit_edges = fit[i] - fit[j]
    stiff = np.ones(V)
    for _ in range(s.detail_rounds):
        S = _edge_similarities(fit, cur, i, j, ends)
        edge_targets = 0.5 * np.einsum("eab,eb->ea", S[i] + S[j], fit_edges)
        m = index.match(cur[cand], vertex_normals(cur, faces)[cand], s.radius[-1], min_cos=0.6)
        src = cand[m.source]
        # point-to-plane: a 3 × 3 block w n nᵀ per matched vertex (one pair per vertex), w n (nᵀ p) on the right
        w, normal, data_rhs = np.zeros(V), np.zeros((V, 3)), np.zeros((V, 3))
        w[src], normal[src] = region[src], m.normal
        data_rhs[src] = (w[src] * (m.normal * m.target).sum(1))[:, None] * m.normal
        for _attempt in range(MAX_STIFFEN + 1):
            c = s.detail_similarity * np.maximum(stiff[i], stiff[j])
            L = (constant + Dm.T @ sp.diags(c) @ Dm).tocsr()
            rhs = constant_rhs + data_rhs + Dm.T @ (c[:, None] * edge_targets)
            L_free = L[free]
            new = fit.copy()
            # fixed vertices' coordinates move to the right-hand side (zero for FLAME's separate eyeballs)
            new[free] = _solve_block_cg(L_free[:, free], w[free], normal[free],
                                        rhs[free] - L_free[:, held] @ fit[held], cur[free])
            flipped = flipped_against(new, faces, reference_normals=fit_normals)
            if not flipped.any():
                break
            stiff[_around(faces, flipped)] *= DETAIL_STIFFEN
        if flipped.any():
            break
        cur = new
        info["detail_rounds"] += 1
    return cur


def _solve_block_cg(L: sp.csr_matrix, w: np.ndarray, n: np.ndarray, rhs: np.ndarray, start: np.ndarray,
                    rtol: float = 1e-5) -> np.ndarray:
    """Solve ``(L ⊗ I₃ + blockdiag(w_i n_i n_iᵀ)) X = rhs`` for X (N, 3): L (N, N) sparse symmetric
    positive definite, shared by x, y and z; ``w`` (N,) ≥ 0 and unit normals ``n`` (N, 3) couple a
    vertex's coordinates.

    Conjugate gradients from ``start`` (N, 3), preconditioned by the inverse of each vertex's 3 × 3
    diagonal block (``L_ii I + w n nᵀ``, inverted in closed form), to a residual of ``rtol`` relative to
    the right-hand side's: from the previous round's solution a few dozen iterations, each a sparse
    product with three columns, and the result well within the scan's noise of a direct solve. Without
    convergence in the iteration cap, the assembled (3N, 3N) system is factorised.
    """
    def apply(X: np.ndarray) -> np.ndarray:
        return L @ X + (w * np.einsum("ij,ij->i", n, X))[:, None] * n

    d = L.diagonal()
    share = w / (d + w)

    def precondition(R: np.ndarray) -> np.ndarray:
        return (R - (share * np.einsum("ij,ij->i", n, R))[:, None] * n) / d[:, None]

    X = np.array(start, dtype=np.float64)
    R = rhs - apply(X)
    Z = precondition(R)
    P = Z.copy()
    rz = float(np.vdot(R, Z))
    limit = (rtol * float(np.linalg.norm(rhs))) ** 2
    for _ in range(20 * int(np.sqrt(3 * len(X))) + 100):
        if np.vdot(R, R) <= limit:
            return X
        AP = apply(P)
        alpha = rz / float(np.vdot(P, AP))
        X += alpha * P
        R -= alpha * AP
        Z = precondition(R)
        rz, rz_old = float(np.vdot(R, Z)), rz
        P *= rz / rz_old
        P += Z
    N = len(X)
    rows = 3 * np.arange(N)[:, None] + np.arange(3)                                         # (N, 3)
    blocks = sp.csr_matrix(((w[:, None, None] * n[:, :, None] * n[:, None, :]).ravel(),
                            (np.repeat(rows, 3, axis=1).ravel(), np.tile(rows, (1, 3)).ravel())), shape=(3 * N, 3 * N))
    return _solve_spd(sp.kron(L, sp.eye(3), format="csr") + blocks, rhs.ravel()).reshape(N, 3)
