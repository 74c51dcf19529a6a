"""The sparse solves registration's refinement makes: symmetric positive definite systems, factorised
(:func:`solve_spd`) or, for the detail phase's 3 × 3-coupled ones, by preconditioned conjugate gradients
(:func:`solve_block_cg`). SuperLU through scipy does the factorising; the conjugate gradients are
written here because their preconditioner inverts each vertex's 3 × 3 block in closed form, which
scipy's ``cg`` cannot be given without building that block-diagonal inverse as a matrix.
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

_ORDERINGS: dict[bytes, np.ndarray] = {}


def solve_spd(A: sp.spmatrix, rhs: np.ndarray) -> np.ndarray:
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


def solve_block_cg(L: sp.csr_matrix, w: np.ndarray, n: np.ndarray, rhs: np.ndarray, start: np.ndarray,
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
    return solve_spd(sp.kron(L, sp.eye(3), format="csr") + blocks, rhs.ravel()).reshape(N, 3)
