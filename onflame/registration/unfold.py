"""Repair triangles of a registration that face the other way than the same triangles of the template.

A face has no folds: no triangle of a registration should turn by more than 90° from where FLAME's
template has it. Folds still arise where a scan gives no data and the fit's expression bases fold the
skin (lids, nostrils, lip corners), or where a refinement pulls neighbouring vertices across each
other. :func:`unfold` finds each folded patch and replaces its vertices' displacement from an unfolded
rest shape (the fitted identity without expression) by the smoothest displacement that matches the
patch's surroundings: a harmonic fill, one sparse least-squares solve on the patch's edges. The rest
shape brings the orientation, the surroundings the place. Each fold is filled on its own; a patch
that stays folded grows by a ring and is filled again, and a fold that no patch of up to
:data:`MAX_RINGS` rings resolves is left as it was (a fill never makes a mesh worse). Vertices outside
the patches do not move.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components

from ..geometry import face_normals, flipped_against, vertex_adjacency

#: Rings a patch grows by, at most. Folds that need more are deep folds of the fit's own expression
#: (the synthetic test model's lids fold so at random expressions, and its heads' truths with them);
#: filling those moved hundreds of vertices by millimetres, so they are left and reported.
MAX_RINGS = 3


#: A triangle counts as folded when its normal is within this cosine of facing against the reference's:
#: a margin, so that a triangle left standing on edge (89°) does not become a fold against a reference
#: posed a little differently (the final parameters' pose, a rigid alignment).
FOLD_COS = 0.1


def folded(vertices: np.ndarray, faces: np.ndarray, reference_normals: np.ndarray) -> np.ndarray:
    """(F,) bool: triangles of ``vertices`` (V, 3) folded against the reference's triangle normals (F, 3)
    (:func:`~onflame.geometry.flipped_against` with the margin :data:`FOLD_COS`)."""
    return flipped_against(vertices, faces, reference_normals=reference_normals, below=FOLD_COS)


def unfold(vertices: np.ndarray, faces: np.ndarray, reference: np.ndarray, rest: list[np.ndarray],
           fixed: np.ndarray | None = None, keep_folds_of: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Remove folds (triangles flipped against ``reference``) from ``vertices``.

    Args:
        vertices: (V, 3) the mesh to repair (metres).
        faces: (F, 3) triangles.
        reference: (V, 3) the orientation to keep: FLAME's template, posed as the registration.
        rest: unfolded shapes (V, 3) to fill patches from, in the order tried (e.g. the fitted identity
            without expression, then the posed template); same frame as ``vertices``.
        fixed: vertex indices that must not move (they are left out of every patch).
        keep_folds_of: (V, 3) a mesh whose own folds are left alone (the FLAME fit: a fold of its
            expression is the model's, and filling one cost accuracy where it was the truth's too); a
            fill also never turns a triangle against it (the quality check counts those as flips).

    Returns:
        ``(vertices (V, 3), info)``; ``info``: ``folded`` (triangles flipped before), ``left`` (after,
        kept ones included), ``moved`` (vertices moved), ``rings`` (the largest patch growth used).
    """
    v = np.array(vertices, dtype=np.float64)
    V = len(v)
    A = vertex_adjacency(faces, V).tocsr()
    upper = sp.triu(A, k=1).tocoo()
    edges = (upper.row, upper.col)  # each edge once
    movable = np.ones(V, bool)
    if fixed is not None:
        movable[np.asarray(fixed, dtype=np.int64)] = False
    ref_n = face_normals(reference, faces)
    bad = folded(v, faces, ref_n)
    kept = np.zeros(len(faces), bool) if keep_folds_of is None else folded(keep_folds_of, faces, ref_n)
    guard_n = None if keep_folds_of is None else face_normals(keep_folds_of, faces)
    guard = None if guard_n is None else (guard_n, flipped_against(v, faces, reference_normals=guard_n))
    info = {"folded": int(bad.sum()), "left": int(bad.sum()), "moved": 0, "rings": 0}
    if not (bad & ~kept).any():
        return v, info
    # one fold at a time (the corners of connected flipped triangles), twice: filling one can free another
    moved = np.zeros(V, bool)
    for _ in range(2):
        corners = np.zeros(V, bool)
        corners[np.unique(faces[bad & ~kept])] = True
        n, label = connected_components(A[corners][:, corners], directed=False)
        members = np.flatnonzero(corners)
        for k in range(n):
            seed = np.zeros(V, bool)
            seed[members[label == k]] = True
            filled, rings = _fill_fold(v, faces, ref_n, rest, A, edges, seed, movable, bad, guard)
            if filled is not None:
                moved |= np.abs(filled - v).sum(1) > 0
                v, bad = filled, folded(filled, faces, ref_n)
                if guard is not None:
                    guard = (guard[0], flipped_against(v, faces, reference_normals=guard[0]))
                info["rings"] = max(info["rings"], rings)
        if not (bad & ~kept).any():
            break
    info.update(left=int(bad.sum()), moved=int(moved.sum()))
    return v, info


def _fill_fold(v: np.ndarray, faces: np.ndarray, ref_n: np.ndarray, rest: list[np.ndarray], A: sp.csr_matrix,
               edges: tuple[np.ndarray, np.ndarray], seed: np.ndarray, movable: np.ndarray,
               bad: np.ndarray, guard: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray | None, int]:
    """The smallest fill (fewest rings around a fold's corners ``seed`` (V,) bool, the first rest shape
    first) that unfolds the fold's triangles (against the reference's triangle normals ``ref_n`` (F, 3))
    and flips none that ``bad`` (F,) does not already hold, nor, with a ``guard`` ``(triangle normals
    (F, 3), (F,) bool flipped against them now)``, any against those;
    ``(None, 0)`` if none up to :data:`MAX_RINGS` does."""
    own = bad & seed[faces].any(1)
    for shape in rest:
        patch = seed.copy()
        for rings in range(1, MAX_RINGS + 1):
            patch |= (A @ patch.astype(np.float64)) > 0
            out = _harmonic_fill(v, shape, edges, patch & movable)
            around = patch[faces].any(1)  # the only triangles the fill can turn
            after = folded(out, faces[around], ref_n[around])
            if (after & (own[around] | ~bad[around])).any():
                continue
            if guard is None or not (flipped_against(out, faces[around], reference_normals=guard[0][around]) & ~guard[1][around]).any():
                return out, rings
    return None, 0


def _harmonic_fill(v: np.ndarray, rest: np.ndarray, edges: tuple[np.ndarray, np.ndarray], patch: np.ndarray) -> np.ndarray:
    """``v`` with the displacement from ``rest`` harmonic over the ``patch`` (V,) bool vertices: the
    least-squares solution of ``x_i − x_j = rest_i − rest_j + (d_i − d_j)`` on the patch's edges with
    every vertex outside the patch held, i.e. Δd = 0 inside."""
    members = np.flatnonzero(patch)
    if members.size == 0:
        return v
    col = np.full(len(v), -1)
    col[members] = np.arange(len(members))
    touching = patch[edges[0]] | patch[edges[1]]
    ei, ej = edges[0][touching], edges[1][touching]
    in_i, in_j = col[ei] >= 0, col[ej] >= 0  # endpoints inside the patch are unknowns, the others held
    goal = rest[ei] - rest[ej]
    rhs = goal - np.where(in_i[:, None], 0.0, v[ei]) + np.where(in_j[:, None], 0.0, v[ej])
    # the normal equations DᵀD x = Dᵀ rhs of D x = rhs (D: ±1 per edge end inside the patch): the patch's
    # graph Laplacian, its held neighbours adding to the diagonal; small patches solve densely
    n = len(members)
    ci, cj = col[ei], col[ej]
    b = np.zeros((n, 3))
    for d in range(3):
        b[:, d] = np.bincount(ci[in_i], rhs[in_i, d], minlength=n) - np.bincount(cj[in_j], rhs[in_j, d], minlength=n)
    degree = np.bincount(ci[in_i], minlength=n) + np.bincount(cj[in_j], minlength=n)
    both = in_i & in_j
    out = v.copy()
    if n <= DENSE_PATCH:
        L = np.diag(degree.astype(np.float64))
        L[ci[both], cj[both]] = L[cj[both], ci[both]] = -1.0  # each edge once: no duplicates
        out[members] = np.linalg.solve(L, b)
    else:
        L = sp.csr_matrix((np.r_[degree, -np.ones(2 * both.sum())],
                           (np.r_[np.arange(n), ci[both], cj[both]], np.r_[np.arange(n), cj[both], ci[both]])),
                          shape=(n, n))
        out[members] = spla.spsolve(L.tocsc(), b)
    return out


#: Patches up to this many vertices are filled by a dense solve (faster than a sparse one's set-up).
DENSE_PATCH = 600
