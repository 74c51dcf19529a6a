"""Fit FLAME parameters: to a scan (region-restricted, point-to-plane) and to a FLAME-topology mesh (vertex-to-vertex).

Both are Gauss-Newton (Levenberg-Marquardt) on weighted least squares over
θ = (identity and expression coefficients c, global/neck/jaw rotation, translation) in the model's frame
(:mod:`.gauss_newton`: the Jacobian is cheap because FLAME's vertices are affine in c for fixed joint
rotations). A step solves a (C + 12)² system, so a fit takes a few dozen forward passes, not thousands of
L-BFGS evaluations; the ill-conditioning of FLAME's fine identity components (sub-millimetre per unit)
costs nothing.

Scan fitting alternates correspondence search (:mod:`.correspond`) with these steps; residuals are
point-to-plane (model → scan and scan → model), optional landmarks, and Gaussian priors on the
coefficients (FLAME's coefficients are in units of standard deviation). In the last stages the data's
weight follows how well the model can explain the scan (:func:`_data_sigma`), so that a face beyond
the model's reach is placed by its landmarks rather than slid along the scan. Eyes are not estimated from scans
(scanners do not capture eyeballs). The model is never scaled: scale is fixed by the scan's units.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..flame.numpy_flame import NumpyFlame
from ..geometry import rigid_fit, vertex_normals
from .correspond import ScanIndex, query_workers
from .gauss_newton import (FREE_POSE, FROZEN, FitState, Linearization, NormalEquations, Term, landmark_term,
                           plane_term, point_term, stage_columns, vertices)
from .landmarks import LandmarkSet


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
