"""Landmarks in the registration: scan points paired with points on the model, in a named convention.

A :class:`LandmarkSet` is what the rigid start, the FLAME fit, the refinement and the quality check use:
model-side surface points (a convention's embedding, or a detector's own correspondence table), their
targets on the scan, and each point's uncertainty. Clicks come as :class:`~onflame.mesh.landmark_files.
ScanLandmarks` (iBUG-68 indices); :func:`clicks_to_sets` turns them into one set per convention family
the model has (``mica``, ``flame``), and :func:`choose_convention` decides between them by which one the
fitted face agrees with.

FLAME's and MICA's 51 points coincide but for the brows and the nose bridge (5-13 mm and 2-5 mm apart on
FLAME's template), so the fit starts from the points all families agree on; where they differ, the
fitted surface says which family the clicks were made in.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from ..flame.embedding import IBUG_GROUPS, SurfacePoints
from ..flame.model import FlameModel
from ..mesh.landmark_files import ScanLandmarks

#: Uncertainty (m) of careful clicks on a scan.
CLICK_SIGMA = 0.0015
#: iBUG-68 points that do not move with expression (brows, nose, eyes): the rigid start uses these.
RIGID_IBUG = np.arange(17, 48)
#: Families whose points lie closer than this (m) on the mean head count as agreeing on that point.
AGREE_M = 0.001
#: A landmark is an outlier when its residual after registration exceeds this many sigmas ...
OUTLIER_SIGMAS = 3.0
#: ... and this floor (m): a registration's own error on real faces is about a millimetre.
OUTLIER_FLOOR_M = 0.004
#: This many outliers (or a third of the set) make the registration suspect.
MIN_OUTLIERS = 3


@dataclass
class LandmarkSet:
    """Scan targets for points on the model.

    Attributes:
        points: (N,) surface points on the model (triangle indices into the model's faces, barycentrics).
        targets: (N, 3) target positions (metres; the frame is the caller's: scan or model).
        sigma: (N,) uncertainty of each target (metres); terms weigh 1 / sigma².
        convention: the model-side convention's name (``"mica"``, ``"flame"``, a detector's table ...).
        source: ``"given"`` (a file or array from the user) or ``"detected"``.
        ibug: (N,) iBUG-68 index of each point, or None for points without one.
    """

    points: SurfacePoints
    targets: np.ndarray
    sigma: np.ndarray
    convention: str
    source: str = "given"
    ibug: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def in_frame(self, R: np.ndarray, t: np.ndarray) -> "LandmarkSet":
        """The same set with targets ``Rᵀ (x − t)``: from the scan's frame into the one where ``x = R y + t``."""
        return replace(self, targets=(self.targets - t) @ R)

    def select(self, keep: np.ndarray) -> "LandmarkSet":
        """The points where (N,) bool ``keep`` is set."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return replace(self, points=SurfacePoints(self.points.face_idx[keep], self.points.bary[keep]),
                       targets=self.targets[keep], sigma=self.sigma[keep], ibug=pick(self.ibug))

    def corners(self, faces: np.ndarray) -> np.ndarray:
        """(N, 3) model vertex indices of each point's triangle."""
        return np.asarray(faces)[self.points.face_idx]

    def locate(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """(N, 3) positions of the model-side points on a mesh in the model's topology."""
        return self.points.locate(vertices, faces)

    def weights(self, reference_sigma: float = CLICK_SIGMA) -> np.ndarray:
        """(N,) weights relative to a point of ``reference_sigma``: ``(reference_sigma / sigma)²``."""
        return (reference_sigma / self.sigma) ** 2

    def rigid_points(self) -> "LandmarkSet":
        """The points that do not move with expression (iBUG brows, nose, eyes; used for the rigid start),
        or all of them when none is known to be."""
        rigid = None if self.ibug is None else np.isin(self.ibug, RIGID_IBUG)
        return self if rigid is None or not rigid.any() else self.select(rigid)


def resolve_convention(model: FlameModel, convention: str) -> str | None:
    """The family a ``convention`` argument names (None for ``"auto"``).

    Raises:
        InputError: the model has no such convention.
    """
    from ..flame.embedding import convention_family

    if convention == "auto":
        return None
    family = convention_family(convention)
    if family not in model.landmarks.families():
        have = ", ".join(sorted(model.landmarks.conventions)) or "none"
        raise InputError(model.source or None, f"model has no {convention!r} landmarks; it has {have}")
    return family


def clicks_to_sets(clicks: ScanLandmarks, model: FlameModel, sigma: float = CLICK_SIGMA) -> list[LandmarkSet]:
    """One :class:`LandmarkSet` per convention family of the model for iBUG-indexed clicks, the model's
    default family first.

    The jaw contour (iBUG 0-16) is left out: on a 3D face it is a silhouette that moves with the view,
    not a fixed surface point.

    Args:
        clicks: the scan's landmarks, already in metres and in the frame targets should have.
        model: the model, with its landmark conventions.
        sigma: click uncertainty (m).

    Raises:
        InputError: too few points, or the model has no convention with the clicked points.
    """
    inner = clicks.select(clicks.ibug >= 17)
    if len(inner) < 4:
        raise InputError(clicks.source or None, f"only {len(inner)} landmarks besides the jaw contour; at least 4 are needed")
    sets = []
    for family in model.landmarks.families():
        pts = model.landmarks.ibug_points(family, inner.ibug)
        if pts is not None:
            sets.append(LandmarkSet(pts, inner.points.copy(), np.full(len(inner), sigma), family, "given",
                                    inner.ibug.copy()))
    if not sets:
        raise InputError(model.source or None, "model has no landmark embedding for the given points")
    return sets


def agreeing(sets: list[LandmarkSet], vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(N,) bool: points where every candidate set's model points lie within :data:`AGREE_M` of each other
    on a mesh ``vertices`` (the mean head)."""
    where = np.stack([s.locate(vertices, faces) for s in sets])
    return np.linalg.norm(where - where[0], axis=2).max(0) < AGREE_M


def convention_residuals(sets: list[LandmarkSet], vertices: np.ndarray, faces: np.ndarray,
                         disagree: np.ndarray) -> dict[str, float]:
    """Each set's median distance (mm) from its differing points (``disagree`` (N,) bool) to their targets
    on a fitted mesh ``vertices`` (made from the agreeing points only, in the targets' frame)."""
    return {s.convention: round(float(np.median(np.linalg.norm(
        s.locate(vertices, faces)[disagree] - s.targets[disagree], axis=1))) * 1000, 2) for s in sets}


#: A convention the user named is doubted when another fits its differing points this much better ...
MISMATCH_RATIO = 1.3
#: ... and by at least this much (mm).
MISMATCH_MM = 1.0


def convention_mismatch(used: str, residuals: dict[str, float]) -> str | None:
    """A verdict reason when the clicks fit another convention clearly better than ``used``, else None."""
    best = min(residuals, key=residuals.get)
    if best == used or residuals[used] < MISMATCH_RATIO * residuals[best] or residuals[used] - residuals[best] < MISMATCH_MM:
        return None
    return (f"the landmarks fit the {best!r} convention better than {used!r} (brows and nose bridge "
            f"{residuals[best]:.1f} mm vs {residuals[used]:.1f} mm from the fitted face): "
            f"--landmark-convention {best}?")


def ibug_name(i: int) -> str:
    """A short name for iBUG-68 index ``i``: its group and place in it (``"brows 3"``)."""
    for group, idx in IBUG_GROUPS.items():
        if i in idx:
            return f"{group} {int(i - idx[0]) + 1}"
    return str(i)


def landmark_outliers(lmk: LandmarkSet, registered: np.ndarray) -> list[dict]:
    """Landmarks whose registration position lies farther from their target than their uncertainty allows.

    Args:
        lmk: the set the registration used (targets in the same frame as ``registered``).
        registered: (N, 3) the registration's positions of the set's model points.

    Returns:
        ``[{"index", "ibug", "name", "residual_mm", "limit_mm"}]`` for each point beyond
        ``max(OUTLIER_SIGMAS · sigma, OUTLIER_FLOOR_M)``.
    """
    r = np.linalg.norm(registered - lmk.targets, axis=1)
    limit = np.maximum(OUTLIER_SIGMAS * lmk.sigma, OUTLIER_FLOOR_M)
    out = []
    for k in np.flatnonzero(r > limit):
        ib = None if lmk.ibug is None else int(lmk.ibug[k])
        out.append({"index": int(k), "ibug": ib, "name": ibug_name(ib) if ib is not None else str(k),
                    "residual_mm": round(float(r[k]) * 1000, 2), "limit_mm": round(float(limit[k]) * 1000, 2)})
    return out


def outlier_reason(outliers: list[dict], n: int, source: str) -> str | None:
    """A verdict reason when ``outliers`` of a set of ``n`` landmarks are too many, else None."""
    if len(outliers) < min(MIN_OUTLIERS, max(1, n // 3)):
        return None
    names = ", ".join(f"{o['name']} ({o['residual_mm']:.1f} mm)" for o in outliers[:6])
    more = f" and {len(outliers) - 6} more" if len(outliers) > 6 else ""
    hint = ("clicks in another convention (--landmark-convention) or misplaced" if source == "given"
            else "the detector's views disagree with the surface")
    return f"{len(outliers)} landmarks lie beyond their uncertainty from the registration: {names}{more}; {hint}"
