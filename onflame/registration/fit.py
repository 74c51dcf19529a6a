"""Fit FLAME parameters: to a scan (region-restricted, point-to-plane) and to a FLAME-topology mesh (vertex-to-vertex).

Both are Gauss-Newton (Levenberg-Marquardt) on weighted least squares over
θ = (identity and expression coefficients c, global/neck/jaw rotation, translation) in the model's frame.
The Jacobian is cheap because, for fixed joint rotations, FLAME's vertices are *affine* in c: shaped
vertices and joints are linear in c, and skinning with fixed rotations is affine in both. So

    ∂v_i/∂c = (Σ_j W_ij R_j) D_i + (Σ_j W_ij ∂t_j/∂J) J_D

with D the blendshapes, J_D the joints' blendshapes, R_j and t_j the skinning transforms. The 12
rotation/translation columns come from one batched forward pass with finite differences. A step solves a
(C + 12)² system, so a fit takes a few dozen forward passes, not thousands of L-BFGS evaluations; the
ill-conditioning of FLAME's fine identity components (sub-millimetre per unit) costs nothing.

Scan fitting alternates correspondence search (:mod:`.correspond`) with these steps; residuals are
point-to-plane (model → scan and scan → model), optional landmarks, and Gaussian priors on the
coefficients (FLAME's coefficients are in units of standard deviation). In the last stages the data's
weight follows how well the model can explain the scan (:func:`_data_sigma`), so that a face beyond
the model's reach is placed by its landmarks rather than slid along the scan. Eyes are not estimated from scans
(scanners do not capture eyeballs). The model is never scaled: scale is fixed by the scan's units.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.linalg
from scipy.linalg.blas import ssyrk
from scipy.spatial import cKDTree

from ..flame.model import FlameModel
from ..flame.numpy_flame import NumpyFlame, axis_angle_to_matrix, numpy_flame, skinning_transforms
from ..flame.params import FlameParams
from ..geometry import rigid_fit, vertex_normals
from .correspond import ScanIndex, query_workers
from .landmarks import LandmarkSet
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


def _subsample(n: int, k: int) -> np.ndarray:
    """Up to ``k`` of ``range(n)``, evenly spread (deterministic)."""
    return np.arange(n) if n <= k else np.linspace(0, n - 1, k).round().astype(np.int64)


def _energy(terms: list[Term], prior: np.ndarray, theta: np.ndarray) -> float:
    return float(sum((t.weight * t.resid**2).sum() for t in terms) + (prior * theta**2).sum())


@dataclass(frozen=True)
class Stage:
    """One stage of scan fitting.

    Attributes:
        components: identity components in play (the rest held at zero).
        radius: correspondence radius (m).
        shape_prior: weight of the identity prior (1 = a standard normal prior).
        landmark_weight: factor on the landmark term.
        steps: Gauss-Newton steps (each with fresh correspondences).
        sigma: data residual scale (m); smaller trusts the scan more.
        misfit: widen ``sigma`` by the model's measured misfit (see ``FitSettings.misfit_gain``).
    """

    components: int
    radius: float
    shape_prior: float
    landmark_weight: float
    steps: int
    sigma: float = 0.0005
    misfit: bool = False


@dataclass
class FitSettings:
    """Weights and schedule of scan fitting (distances in metres).

    Early stages lean on landmarks and few identity components to settle pose and jaw before fine
    identity detail can compensate for them; the last stage trusts the scan at about its noise level.

    Attributes:
        stages: the schedule.
        expression_prior: prior weight on expression coefficients.
        neck_prior: prior weight on the neck rotation (radians²); a face scan cannot tell a neck turn from
            a global one, so the neck stays near rest unless the data insist.
        jaw_prior: prior weights on the jaw's opening and on its sideways/twisting rotation (radians²):
            without them a model that cannot explain a face bends the jaw to imitate shape.
        jaw_start: jaw opening (radians) a fit starts from when given no state. Half open, the model's
            lips can go either way; from closed, detected mouth landmarks a few millimetres off could hold
            an open mouth shut (one of ten simulated in-model scans with detected landmarks: 1.87 mm
            median error from 0, 0.19 mm from 0.1; the other nine within 0.05 mm; with given landmarks
            medians within 0.03 mm, mean p95 0.77 → 0.81 mm).
        misfit_gain: in stages marked ``misfit``, the data residual scale becomes
            √(σ² + g² · max(0, spread² − noise²)) with spread the robust spread of the point-to-plane
            residuals and noise the scan's own (:meth:`ScanIndex.noise`). Measured on simulated scans
            (seeds 1-8 and the real head of ``benchmarks/registration.py``): g = 4 took the real head
            the synthetic test model cannot explain from 2.36 to 1.74 mm median per-vertex error; heads
            the model explains keep σ (their spread is the noise), median 0.243 → 0.229 mm, p95
            0.92 → 0.97 mm on average. 0 turns it off.
        scan_to_model: weight of the scan → model term relative to model → scan.
        scan_samples: scan points used for the scan → model term.
        max_pairs: model → scan pairs used per step (evenly subsampled beyond this).
    """

    stages: tuple[Stage, ...] = (
        Stage(20, 0.015, 30.0, 30.0, 3),
        Stage(100, 0.008, 3.0, 5.0, 3),
        Stage(300, 0.004, 1.0, 1.0, 3, misfit=True),
        Stage(300, 0.0025, 1.0, 1.0, 3, sigma=0.00025, misfit=True),  # more steps: no nearer the truth
    )
    expression_prior: float = 1.0
    neck_prior: float = 1e5
    scan_to_model: float = 0.5
    scan_samples: int = 2500
    max_pairs: int = 2500
    jaw_prior: tuple[float, float] = (10.0, 1000.0)
    jaw_start: float = 0.1
    misfit_gain: float = 4.0


def _prior_vector(flame: NumpyFlame, n_active: int, shape_prior: float, expression_prior: float, neck_prior: float,
                  jaw_prior: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Diagonal prior weights over θ (coefficients, global/neck/jaw rotation, translation)."""
    S, E = flame.n_shape, flame.n_expression
    p = np.zeros(S + E + FREE_POSE + 3)
    p[:S] = shape_prior
    p[n_active:S] = FROZEN  # components not yet in play stay at zero
    p[S : S + E] = expression_prior
    p[S + E + 3 : S + E + 6] = neck_prior
    p[S + E + 6] = jaw_prior[0]           # opening
    p[S + E + 7 : S + E + 9] = jaw_prior[1]  # sideways and twisting: small in real faces
    return p


def fit_scan(flame: NumpyFlame, index: ScanIndex, region: np.ndarray, landmarks: LandmarkSet | None = None,
             settings: FitSettings | None = None, state: FitState | None = None) -> FitState:
    """Fit FLAME to a scan already rigidly aligned to the template (model frame, metres).

    Args:
        flame: the layer (float64).
        index: the scan.
        region: (V,) weights of model vertices allowed to match scan points (0 where a scan never has
            data, e.g. eyeballs).
        landmarks: landmarks with targets in the model frame, or None; each weighs
            ``stage.landmark_weight / sigma²`` (its own sigma).
        settings: weights and schedule.
        state: start values (zeros if None).
    """
    s = settings or FitSettings()
    st = state
    if st is None:
        st = FitState.zeros(flame)
        st.pose[6] = s.jaw_start  # FLAME's jaw joint: pose[6:9]; x opens the mouth
    faces = flame.faces
    rng = np.random.default_rng(0)
    sample = rng.choice(len(index.points), size=min(s.scan_samples, len(index.points)), replace=False)
    scan_pts, scan_nrm = index.points[sample], index.normals[sample]
    cand = np.flatnonzero(region > 0)
    if landmarks is not None:
        lmk_corners, lmk_bary = landmarks.corners(faces), landmarks.points.bary
        lmk_bary = lmk_bary / lmk_bary.sum(1, keepdims=True)  # MICA stores them in float32
    noise = index.noise() if s.misfit_gain > 0 else 0.0
    for stage in s.stages:
        radius = stage.radius
        prior = _prior_vector(flame, stage.components, stage.shape_prior, s.expression_prior, s.neck_prior, s.jaw_prior)
        columns = stage_columns(flame, prior)
        damping = 1e-3
        for _ in range(stage.steps):
            lin = Linearization(flame, st, columns)
            v = lin.v
            vn = vertex_normals(v, faces)
            m = index.match(v[cand], vn[cand], radius)
            keep = _subsample(len(m.source), s.max_pairs)
            src = cand[m.source[keep]]
            # scan -> model: sampled scan points to their nearest model vertex, if close and facing alike
            d, j = cKDTree(v[cand]).query(scan_pts, distance_upper_bound=radius, workers=query_workers(len(scan_pts)))
            ok = np.isfinite(d)
            jj = cand[np.where(ok, j, 0)]
            ok &= (vn[jj] * scan_nrm).sum(1) > 0.5
            # a subsample stands for all pairs: scale its weight up so the priors keep their meaning
            scale = len(m.source) / max(len(keep), 1)
            sigma = stage.sigma
            if stage.misfit and s.misfit_gain > 0 and len(keep):
                sigma = _data_sigma(stage.sigma, ((v[src] - m.target[keep]) * m.normal[keep]).sum(1), noise, s.misfit_gain)
            terms = [plane_term(lin, src, m.target[keep], m.normal[keep], scale * region[src] / sigma**2)]
            if ok.any():
                w = s.scan_to_model * region[jj[ok]] / sigma**2
                terms.append(plane_term(lin, jj[ok], scan_pts[ok], scan_nrm[ok], w))
            if landmarks is not None:
                terms.append(landmark_term(lin, lmk_corners, lmk_bary, landmarks.targets,
                                           stage.landmark_weight / landmarks.sigma**2))
            st, damping = _levenberg_marquardt_step(flame, st, terms, prior, damping)
    return st


def _data_sigma(sigma: float, residuals: np.ndarray, noise: float, gain: float) -> float:
    """The data term's residual scale (m): the stage's ``sigma`` widened by the model's misfit.

    The misfit is the part of the point-to-plane ``residuals`` (m) that the scan's own ``noise`` (m)
    does not explain. Where the model explains the scan (misfit ≈ 0) this is ``sigma``; where it cannot
    (a real face in a small or synthetic model) a few thousand surface pairs, whose errors are then
    systematic and correlated rather than independent, would otherwise outvote the 51 landmarks and
    let the face slide along the scan.
    """
    spread = 1.4826 * float(np.median(np.abs(residuals)))
    return float(np.sqrt(sigma**2 + gain**2 * max(0.0, spread**2 - noise**2)))


def _levenberg_marquardt_step(flame: NumpyFlame, st: FitState, terms: list[Term], prior: np.ndarray,
                              damping: float) -> tuple[FitState, float]:
    """One accepted step: raise the damping until the true energy (same pairs) goes down."""
    e0 = _energy(terms, prior, st.theta)
    st.history.append(e0)
    normal = NormalEquations.of(terms, prior, st.theta)
    for _try in range(8):
        new = normal.step(st, damping)
        v = vertices(flame, new)
        e1 = sum(float((t.weight * t.residual(v) ** 2).sum()) for t in terms) + float((prior * new.theta**2).sum())
        if e1 <= e0:
            return new, max(damping / 5, 1e-6)
        damping *= 10
    return st, damping


def fit_mesh_vertices(flame: NumpyFlame, target: np.ndarray, weights: np.ndarray | None = None,
                      state: FitState | None = None, iters: int = 6,
                      shape_prior: float = 1e-6, expression_prior: float = 1e-6,
                      max_vertices: int | None = None) -> FitState:
    """Fit FLAME parameters to a FLAME-topology mesh ``target`` (V, 3) in metres, vertex to vertex.

    Starts from ``state`` or, if None, from a rigid Procrustes fit of the mean head (FLAME's global
    rotation turns about the root joint, so the translation is corrected for it). ``weights`` (V,)
    weigh vertices (default all 1). Priors are tiny: the mesh fully determines the parameters.
    ``max_vertices`` caps the vertices used per step (an even subsample), trading a little accuracy for speed.
    """
    st = state or FitState.zeros(flame)
    V = len(target)
    w = np.ones(V) if weights is None else np.asarray(weights, dtype=np.float64)
    if state is None:
        from scipy.spatial.transform import Rotation

        v0, root = flame.v_template, flame.j_template[0]
        R, t, _ = rigid_fit(v0, target, weights=w)
        st.pose[:3] = Rotation.from_matrix(R).as_rotvec()
        st.trans = R @ root + t - root
    prior = _prior_vector(flame, flame.n_shape, shape_prior, expression_prior, 0.0)
    idx = np.flatnonzero(w > 0)
    if max_vertices is not None and len(idx) > max_vertices:  # an even subsample still pins 412 parameters
        idx = idx[_subsample(len(idx), max_vertices)]
    scale = 1.0 / (w[idx].sum() * 1e-6)  # residuals normalised by 1 mm
    damping = 1e-6
    columns = stage_columns(flame, prior)
    for _ in range(iters):
        lin = Linearization(flame, st, columns)
        terms = [point_term(lin, idx, target[idx], w[idx] * scale)]
        st, damping = _levenberg_marquardt_step(flame, st, terms, prior, damping)
        if len(st.history) > 1 and st.history[-2] - st.history[-1] < 1e-6 * max(st.history[-1], 1e-30):
            break
    return st


def unexplained(v: np.ndarray, index: ScanIndex, region: np.ndarray, cap: float = 0.01, samples: int = 3000) -> float:
    """How badly a fitted mesh ``v`` (V, 3) and the scan explain each other (m², lower is better).

    Mean squared nearest distance, capped at ``cap``, from a sample of scan points to the mesh's
    matchable vertices plus the same from those vertices to the scan. Used to choose between rigid
    hypotheses after a short FLAME fit.
    """
    cand = np.flatnonzero(region > 0)
    step = max(1, len(index.points) // samples)
    d_scan, _ = cKDTree(v[cand]).query(index.points[::step], distance_upper_bound=cap)
    d_mesh, _ = index.query(v[cand], distance_upper_bound=cap)
    return float(np.mean(np.minimum(d_scan, cap) ** 2) + np.mean(np.minimum(d_mesh, cap) ** 2))
