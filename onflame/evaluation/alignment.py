"""Aligning a predicted face to a scan: landmarks first, then the scan's own surface.

:func:`fit_landmarks` is a least-squares similarity (or rigid) fit of corresponding points, with proper
rotations only: a mirrored prediction is never "aligned" by a reflection. :func:`refine_to_surface`
then moves the prediction to minimise the sum of squared unsigned distances from the scan's points to the
prediction's surface, as the NoW protocol asks: Gauss-Newton on the point-to-surface residuals (each
scan point pulls along the line to its closest surface point, which is the exact gradient wherever the
closest point is unique) with a step-halving line search, so the objective never goes up.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import face_normals, rigid_fit
from ..mesh.distance import SurfaceDistance


@dataclass(frozen=True)
class Similarity:
    """``x -> scale * R x + t`` (``rotation`` (3, 3) with det +1, ``translation`` (3,))."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transformed points (N, 3)."""
        return self.scale * np.asarray(points) @ self.rotation.T + self.translation

    def invert_points(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 3) mapped back by the inverse transform."""
        return (np.asarray(points) - self.translation) @ self.rotation / self.scale

    def then(self, scale: float, rotation: np.ndarray, translation: np.ndarray) -> "Similarity":
        """This transform followed by ``x -> scale * rotation x + translation``."""
        return Similarity(self.scale * scale, rotation @ self.rotation, scale * rotation @ self.translation + translation)

    def as_matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m


def fit_landmarks(source: np.ndarray, target: np.ndarray, scale: bool) -> Similarity:
    """Least-squares ``target ≈ s R source + t`` for corresponding points (K, 3) (``s = 1`` unless ``scale``)."""
    R, t, s = rigid_fit(np.asarray(source, np.float64), np.asarray(target, np.float64), scale=scale)
    return Similarity(float(s), R, t)


@dataclass(frozen=True)
class RefineResult:
    """What :func:`refine_to_surface` found.

    Attributes:
        transform: the prediction's final placement.
        rms_before, rms_after: root-mean-square point-to-surface distance at the start and the end
            (the points' units).
        iterations: Gauss-Newton steps taken.
    """

    transform: Similarity
    rms_before: float
    rms_after: float
    iterations: int


def refine_to_surface(points: np.ndarray, surface: SurfaceDistance, start: Similarity, scale: bool,
                      max_iterations: int = 60, tolerance: float = 1e-10) -> RefineResult:
    """Place ``surface`` (in its own frame) so that ``points`` (N, 3) lie as close to it as possible.

    Minimises ``Σ d(p_i, T(surface))²`` over rotation and translation of ``T`` (and scale when ``scale``),
    starting from ``start``. The tree is built once in the surface's frame: ``d(p, T(S)) = s · d(T⁻¹ p, S)``.

    Args:
        points: (N, 3) scan points (they stay where they are).
        surface: the prediction's :class:`SurfaceDistance`, in the prediction's frame.
        start: initial placement (e.g. :func:`fit_landmarks`).
        scale: also fit a uniform scale.
        max_iterations: Gauss-Newton steps at most.
        tolerance: stop when a step lowers the objective by less than this fraction (or moves no point by
            more than a millionth of the points' RMS distance from their centre).

    Returns:
        A :class:`RefineResult`.
    """
    q = np.asarray(points, dtype=np.float64)
    pivot = q.mean(0)  # rotate and scale about the points' centre: a well-conditioned 7×7 system
    reach = float(np.sqrt(((q - pivot) ** 2).sum(1).mean()))  # the points' size: steps below 1e-6 of it end it
    fn = face_normals(surface.vertices, surface.faces)
    T = start
    dist, closest, face = surface.query(T.invert_points(q))
    energy = float(((T.scale * dist) ** 2).sum())
    rms0 = np.sqrt(energy / max(len(q), 1))
    n_params = 7 if scale else 6
    it = 0
    for it in range(1, max_iterations + 1):
        x = T.apply(closest)  # closest points on the placed surface
        r = q - x
        length = np.linalg.norm(r, axis=1)
        # pull direction: towards the point; on the surface itself, the (placed) triangle's normal
        n = np.where(length[:, None] > 1e-12, r / np.maximum(length, 1e-300)[:, None], fn[face] @ T.rotation.T)
        arm = x - pivot
        J = np.empty((len(q), n_params))
        J[:, :3] = np.cross(arm, n)
        J[:, 3:6] = n
        if scale:
            J[:, 6] = (n * arm).sum(1)
        b = (n * r).sum(1)
        # least squares on unit-scaled columns, directions the points cannot see (a sphere's rotations
        # about its centre, a plane's sliding) cut off by rcond rather than taken at random
        norm = np.linalg.norm(J, axis=0)
        norm[norm == 0] = 1.0
        step = np.linalg.lstsq(J / norm, b, rcond=1e-7)[0] / norm
        improved = False
        for _ in range(12):  # halve the step until the true objective goes down
            cand = _compose(T, step, pivot, scale)
            d2, c2, f2 = surface.query(cand.invert_points(q))
            e2 = float(((cand.scale * d2) ** 2).sum())
            if e2 <= energy:
                improved = True
                break
            step = step / 2
        if not improved:
            break
        gain = (energy - e2) / max(energy, 1e-300)
        moved = float(np.abs(cand.invert_points(q) - T.invert_points(q)).max()) * cand.scale
        T, energy, dist, closest, face = cand, e2, d2, c2, f2
        if gain < tolerance or moved < 1e-6 * reach:
            break
    return RefineResult(T, float(rms0), float(np.sqrt(energy / max(len(q), 1))), it)


def _compose(T: Similarity, step: np.ndarray, pivot: np.ndarray, scale: bool) -> Similarity:
    """``T`` followed by the update ``x -> (1+σ) R(ω) (x − m) + m + δ`` for ``step = (ω, δ[, σ])``."""
    R = Rotation.from_rotvec(step[:3]).as_matrix()
    s = float(np.exp(step[6])) if scale else 1.0  # exp: the first-order (1+σ), never negative
    return T.then(s, R, pivot + step[3:6] - s * R @ pivot)
