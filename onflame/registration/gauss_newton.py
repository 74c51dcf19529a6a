"""The Gauss-Newton machinery of FLAME fitting (:mod:`.fit` runs it): the state θ, FLAME's vertices and
their Jacobian at a state, residual terms and the normal equations they sum to, one damped step.

For fixed joint rotations FLAME's vertices are affine in the coefficients c, so

    ∂v_i/∂c = (Σ_j W_ij R_j) D_i + (Σ_j W_ij ∂t_j/∂J) J_D

with D the blendshapes, J_D the joints' blendshapes, R_j and t_j the skinning transforms; the 12
rotation/translation columns come from one batched forward pass with finite differences.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.linalg
from scipy.linalg.blas import ssyrk

from ..flame.model import FlameModel
from ..flame.numpy_flame import NumpyFlame, axis_angle_to_matrix, numpy_flame, skinning_transforms
from ..flame.params import FlameParams
from .threads import in_parallel

#: Pose entries (of FLAME's 15) that fitting estimates: global, neck, jaw rotation.
FREE_POSE = 9
_FD_STEP = 1e-6
#: A prior at least this strong marks a parameter as frozen (held at zero) in the current stage.
FROZEN = 1e8


@dataclass
class FitState:
    """Parameters as float64 numpy arrays: shape (S,), expression (E,), pose (15,), trans (3,)."""

    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    trans: np.ndarray
    history: list[float] = field(default_factory=list)

    @classmethod
    def zeros(cls, flame: NumpyFlame) -> "FitState":
        return cls(np.zeros(flame.n_shape), np.zeros(flame.n_expression), np.zeros(3 * flame.n_joints), np.zeros(3))

    @property
    def theta(self) -> np.ndarray:
        """(C + 12,) the optimised vector: coefficients, global/neck/jaw rotation, translation."""
        return np.concatenate([self.shape, self.expression, self.pose[:FREE_POSE], self.trans])

    def with_theta(self, theta: np.ndarray) -> "FitState":
        S, E = len(self.shape), len(self.expression)
        pose = self.pose.copy()
        pose[:FREE_POSE] = theta[S + E : S + E + FREE_POSE]
        return FitState(theta[:S].copy(), theta[S : S + E].copy(), pose, theta[-3:].copy(), self.history)

    def to_params(self) -> FlameParams:
        return FlameParams(self.shape.copy(), self.expression.copy(), self.pose.copy(), self.trans.copy())


def make_layer(model: FlameModel) -> NumpyFlame:
    """The FLAME evaluation fitting uses: :class:`~onflame.flame.numpy_flame.NumpyFlame` (numpy, float64
    posing; no torch on registration's path), kept for the last couple of models."""
    return numpy_flame(model)


def vertices(flame: NumpyFlame, st: FitState) -> np.ndarray:
    """(V, 3) FLAME vertices for ``st``."""
    return flame.vertices(st.shape, st.expression, st.pose, st.trans)


#: Jacobians are float32: they only set each step's direction, and halving their memory traffic is what
#: the row gathers are bound by; vertices, residuals and energies stay float64 (the layer's precision).
#: Measured on simulated scans (seeds 1-8 and the real head): face errors within 0.05 mm of float64
#: Jacobians and the fit 15-20% faster.
JACOBIAN_DTYPE = np.float32


@dataclass(frozen=True)
class Columns:
    """The coefficients a stage solves for: the first ``n_shape`` identity components and every expression
    component (the others are held at zero). ``shape_dirs`` (V, 3, n_shape) and ``expr_dirs`` (V, 3, E)
    are views of the model's float32 blendshapes, ``j_dirs`` (3J, n_shape + E) the joints' ones."""

    n_shape: int
    shape_dirs: np.ndarray
    expr_dirs: np.ndarray
    j_dirs: np.ndarray

    @property
    def count(self) -> int:
        return self.n_shape + self.expr_dirs.shape[2]


class Linearization:
    """FLAME's vertices and their Jacobian with respect to θ at one state.

    ``v`` (V, 3); :meth:`rows` gives ∂v/∂θ (K, 3, C + 12) for chosen vertices only, since building it for
    all 5023 vertices when a few thousand matched would waste most of the work.
    """

    def __init__(self, flame: NumpyFlame, st: FitState, columns: Columns):
        V, J = flame.n_vertices, flame.n_joints
        self.theta = st.theta
        self.columns = columns  # blendshape rows of the coefficients being solved for
        v_shaped, joints = flame.shaped(flame.coefficients(st.shape, st.expression))
        rot = axis_angle_to_matrix(st.pose.reshape(1, J, 3))
        # skinning translations are linear in the joints (rotations fixed): exact differences
        nJ = 3 * J
        jb = np.repeat(joints[None], 1 + nJ, 0)
        jb.reshape(1 + nJ, nJ)[1:] += np.eye(nJ) * 1e-3
        A, _ = skinning_transforms(np.repeat(rot, 1 + nJ, 0), jb, flame.parents)
        dt_dJ = ((A[1:, :, :, 3] - A[0, :, :, 3]) / 1e-3).transpose(1, 2, 0)                 # (J, 3, 3J)
        W = flame.weights
        jac = JACOBIAN_DTYPE
        self.skin_rot = (W @ A[0, :, :, :3].reshape(J, 9)).reshape(V, 3, 3).astype(jac)      # (V, 3, 3)
        self.skin_dJ = (W @ dt_dJ.reshape(J, -1)).reshape(V, 3, nJ).astype(jac)              # (V, 3, 3J)
        # rotation columns by forward differences, one batched pass (shape computed once); a
        # translation moves every vertex by itself: its columns are the identity
        n = 1 + FREE_POSE
        pose = np.repeat(st.pose[None], n, 0)
        pose[1:, :FREE_POSE] += np.eye(FREE_POSE) * _FD_STEP
        verts = flame.posed(v_shaped, joints, pose, np.repeat(st.trans[None], n, 0))         # (n, V, 3)
        self.v = verts[0]
        d_trans = np.broadcast_to(np.eye(3, dtype=jac)[:, None, :], (3, V, 3))
        d_pose = np.concatenate([((verts[1:] - verts[0]) / _FD_STEP).astype(jac), d_trans])  # (12, V, 3)
        self.d_pose = np.ascontiguousarray(d_pose.transpose(1, 2, 0))                       # (V, 3, 12)

    def rows(self, idx: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Directional derivatives ``dᵀ ∂v_i/∂θ`` (K, P) for vertices ``idx`` (K,) and ``direction`` (K, 3).

        Columns are the active coefficients (see :func:`stage_columns`) then the 12 pose/translation
        columns. Projecting first (``Rᵀ d``) and only then touching the (3V, C) blendshape rows keeps the
        cost at one (3, C) gather and a (1 × 3) × (3 × C) product per vertex.
        """
        cols = self.columns
        d = direction.astype(JACOBIAN_DTYPE)
        S, C = cols.n_shape, cols.count
        u = np.einsum("ka,kab->kb", d, self.skin_rot[idx])                                   # (K, 3)
        out = np.empty((len(idx), C + 12), dtype=JACOBIAN_DTYPE)
        # one gather of each vertex's 3 rows of the columns in play
        out[:, :S] = np.einsum("kb,kbc->kc", u, cols.shape_dirs[idx])
        out[:, S:C] = np.einsum("kb,kbc->kc", u, cols.expr_dirs[idx])
        out[:, :C] += np.einsum("ka,kab->kb", d, self.skin_dJ[idx]) @ cols.j_dirs
        out[:, C:] = np.einsum("ka,kab->kb", d, self.d_pose[idx])
        return out


@dataclass
class Term:
    """Weighted linearised residuals: ``rows`` (K, P) = ∂r/∂θ, ``resid`` (K,), ``weight`` (K,), and
    ``residual(v)``, the same residuals recomputed from new vertices (V, 3) with the same pairs."""

    rows: np.ndarray
    resid: np.ndarray
    weight: np.ndarray
    residual: Callable[[np.ndarray], np.ndarray]


def plane_term(lin: Linearization, idx: np.ndarray, targets: np.ndarray, normals: np.ndarray,
               weight: np.ndarray) -> Term:
    """Point-to-plane residuals ``nᵀ (v_idx − target)``."""
    residual = lambda v: ((v[idx] - targets) * normals).sum(1)  # noqa: E731
    return Term(lin.rows(idx, normals), residual(lin.v), weight, residual)


def point_term(lin: Linearization, idx: np.ndarray, targets: np.ndarray, weight: float) -> Term:
    """Point-to-point residuals ``v_idx − target`` (3 rows per vertex)."""
    K = len(idx)
    rows = np.stack([lin.rows(idx, np.broadcast_to(np.eye(3)[a], (K, 3))) for a in range(3)], 1)  # (K, 3, P)
    residual = lambda v: (v[idx] - targets).ravel()  # noqa: E731
    weights = np.repeat(np.broadcast_to(np.asarray(weight, dtype=np.float64), (K,)), 3)
    return Term(rows.reshape(3 * K, -1), residual(lin.v), weights, residual)


def landmark_term(lin: Linearization, corners: np.ndarray, bary: np.ndarray, targets: np.ndarray,
                  weight: float | np.ndarray) -> Term:
    """Residuals of surface points (triangle ``corners`` (L, 3), ``bary`` (L, 3)) to ``targets`` (L, 3),
    weighted by ``weight`` (scalar or (L,))."""
    L = len(corners)
    flat = corners.ravel()
    Jl = np.stack([(lin.rows(flat, np.broadcast_to(np.eye(3)[a], (3 * L, 3))).reshape(L, 3, -1)
                    * bary[:, :, None]).sum(1) for a in range(3)], 1)             # (L, xyz, P)
    residual = lambda v: (np.einsum("lc,lca->la", bary, v[corners]) - targets).ravel()  # noqa: E731
    weights = np.repeat(np.broadcast_to(np.asarray(weight, dtype=np.float64), (L,)), 3)
    return Term(Jl.reshape(-1, Jl.shape[2]), residual(lin.v), weights, residual)


#: Groups of rows JᵀWJ is summed in (as many as registration may have threads; fixed, so that the
#: result does not depend on how many run).
ROW_GROUPS = 2


@dataclass
class NormalEquations:
    """``H = Σ JᵀWJ + diag(prior)`` (P, P) and ``g = Σ JᵀW r + prior θ`` (P,) over the parameters in play
    (``active`` (P,): prior below ``FROZEN``), at a state ``theta``; a Levenberg-Marquardt step solves
    them for one damping after another without building them again."""

    H: np.ndarray
    g: np.ndarray
    active: np.ndarray
    theta: np.ndarray

    @classmethod
    def of(cls, terms: list[Term], prior: np.ndarray, theta: np.ndarray) -> "NormalEquations":
        """JᵀWJ is a symmetric rank-K update (BLAS ``syrk``, half the work of a general product) in the
        Jacobian's float32 (see ``JACOBIAN_DTYPE``), its rows in :data:`ROW_GROUPS` groups that
        :func:`.threads.in_parallel` may run at once; the rest is float64."""
        active = np.flatnonzero(prior < FROZEN)  # the terms' rows hold exactly these columns
        # always the same groups, summed in the same order, whatever the thread count: same bytes out
        parts = _balanced(terms, ROW_GROUPS)
        done = in_parallel(*[functools.partial(_weighted_products, part) for part in parts])
        H = np.triu(sum(h for h, _ in done)).astype(np.float64)
        H += np.triu(H, 1).T
        pa = prior[active]
        H[np.diag_indices(len(active))] += pa
        return cls(H, sum(g for _, g in done) + pa * theta[active], active, theta)

    def step(self, st: FitState, damping: float) -> FitState:
        """The state moved by ``(H + damping diag(H)) δ = −g`` (Marquardt: damping relative to each
        parameter's curvature; H is symmetric positive definite: a Cholesky solve)."""
        H = self.H.copy()
        H[np.diag_indices(len(H))] *= 1.0 + damping
        try:
            step = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H, check_finite=False), -self.g, check_finite=False)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, -self.g, rcond=None)[0]
        delta = np.zeros_like(self.theta)
        delta[self.active] = step
        return st.with_theta(self.theta + delta)


def gauss_newton_step(st: FitState, terms: list[Term], prior: np.ndarray, damping: float) -> FitState:
    """Solve ``(H + damping diag(H)) δ = −(Σ JᵀW r + prior θ)``, ``H = Σ JᵀWJ + diag(prior)``; return the
    moved state (:class:`NormalEquations`). Only parameters in play (prior below ``FROZEN``) are solved
    for: early stages with few identity components then cost a fraction of a full step."""
    return NormalEquations.of(terms, prior, st.theta).step(st, damping)


def _weighted_products(terms: list[Term]) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangle of ``Σ JᵀWJ`` (float32, BLAS ``syrk``) and ``Σ JᵀW r`` over ``terms``."""
    H, g = 0.0, 0.0
    for t in terms:
        root_w = np.sqrt(t.weight).astype(JACOBIAN_DTYPE)
        scaled = t.rows * root_w[:, None]                                                    # (K, P), C order
        H = H + ssyrk(1.0, scaled.T)
        g = g + (scaled.T @ (root_w * t.resid.astype(JACOBIAN_DTYPE))).astype(np.float64)
    return H, g


def _balanced(terms: list[Term], n: int) -> list[list[Term]]:
    """``terms`` in up to ``n`` groups of about equal rows: a large term is cut into row blocks."""
    total = sum(len(t.rows) for t in terms)
    if n < 2 or total < 2000:
        return [terms]
    size = -(-total // n)
    groups: list[list[Term]] = [[]]
    room = size
    for t in terms:
        lo = 0
        while lo < len(t.rows):
            hi = min(len(t.rows), lo + room)
            piece = t if (lo, hi) == (0, len(t.rows)) else Term(t.rows[lo:hi], t.resid[lo:hi], t.weight[lo:hi], t.residual)
            groups[-1].append(piece)
            room -= hi - lo
            lo = hi
            if room == 0 and len(groups) < n:
                groups.append([])
                room = size
    return [g for g in groups if g]


def stage_columns(flame: NumpyFlame, prior: np.ndarray) -> Columns:
    """The coefficients a stage solves for (prior below ``FROZEN``): a first part of the identity
    components and all expression ones (:func:`_prior_vector`'s pattern), as views of the blendshapes."""
    S, E = flame.n_shape, flame.n_expression
    active = np.flatnonzero(prior[:S + E] < FROZEN)
    n = int((active < S).sum())
    if not np.array_equal(active, np.r_[np.arange(n), S + np.arange(E)]):
        raise ValueError("a stage solves for the first identity components and every expression component")
    V = flame.n_vertices
    return Columns(n, flame.shape_dirs.reshape(V, 3, S)[:, :, :n], flame.expr_dirs.reshape(V, 3, E),
                   np.ascontiguousarray(flame.j_dirs[active].T, dtype=JACOBIAN_DTYPE))
