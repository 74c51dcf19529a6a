"""Scoring one predicted face against one ground-truth scan, the NoW way.

1. :func:`prepare_scan`: the scan is cropped to NoW's ball around the face (:mod:`.crop`), once per scan;
2. :func:`score_prediction`: the prediction is placed on the scan by its 7 landmarks (a similarity, or a
   rigid motion when the prediction is metrical), then by the scan's points themselves
   (:func:`.alignment.refine_to_surface`: rotation, translation and, unless metrical, scale); the error
   is each cropped scan point's unsigned distance to the prediction's surface.

Everything is in the scan's unit (millimetres for NoW); the scan never moves, so the distances are in its
metric whatever the prediction's scale.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geometry import triangle_areas
from ..mesh import Mesh
from ..mesh.distance import SurfaceDistance
from . import now_landmarks
from .alignment import Similarity, fit_landmarks, refine_to_surface
from .crop import RADIUS_FACTOR, crop_mesh, face_ball, inside_ball

#: At most this many cropped scan points drive the refinement (a fixed, seeded sample); the final
#: distances are measured at every point. A NoW scan's crop holds 50–200k points: on a 198k-point crop,
#: fitting the 7 numbers to 10k of them changed the median error by at most 3 µm (20k: 2 µm, all: the
#: reference) over 8 predictions, at 0.35 s per image instead of 2.3 s (``tests/test_evaluation_now.py``
#: checks 5 µm).
REFINE_POINTS = 10_000


@dataclass
class ScanTarget:
    """A cropped ground-truth scan, ready to score predictions against.

    Attributes:
        mesh: the crop (scan unit): the vertices strictly inside the ball and the triangles between them.
        landmarks: (7, 3) its NoW landmarks (scan unit).
        centre, radius: the crop ball.
        degenerate: zero-area triangles of the whole scan (counted; points are scored, not triangles).
        sample: indices of the points that drive the refinement.
    """

    mesh: Mesh
    landmarks: np.ndarray
    centre: np.ndarray
    radius: float
    degenerate: int
    sample: np.ndarray = field(repr=False)

    @property
    def points(self) -> np.ndarray:
        return self.mesh.vertices


def zero_area(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) bool: triangles of (numerically) zero area: repeated corners or corners on one line."""
    if len(faces) == 0:
        return np.zeros(0, dtype=bool)
    size = float(np.linalg.norm(vertices.max(0) - vertices.min(0))) or 1.0
    return triangle_areas(vertices, faces) <= 1e-14 * size * size


def prepare_scan(scan: Mesh, landmarks7: np.ndarray, protocol: str = "now", check_order: bool = True) -> ScanTarget:
    """Crop ``scan`` to the NoW ball of its landmarks (7, 3) (``protocol`` ``now`` or ``fg2018``).

    Raises :class:`InputError` naming the scan when the crop is empty or its landmarks look mirrored.
    """
    centre, radius = face_ball(landmarks7, RADIUS_FACTOR[protocol])
    keep = inside_ball(scan.vertices, centre, radius)
    if keep.sum() < 10:
        raise InputError(scan.source or None, f"only {int(keep.sum())} scan points lie inside the face crop "
                         f"(centre {np.round(centre, 2).tolist()}, radius {radius:.3g}): do its landmarks belong to it?")
    cropped = crop_mesh(scan, keep)
    if check_order:
        problem = now_landmarks.orientation_problem(landmarks7, cropped.vertices)
        if problem:
            raise InputError(scan.source or None, f"scan landmarks: {problem}")
    n = cropped.n_vertices
    sample = np.arange(n) if n <= REFINE_POINTS else np.sort(np.random.default_rng(0).choice(n, REFINE_POINTS, replace=False))
    return ScanTarget(cropped, np.asarray(landmarks7, np.float64), centre, radius,
                      int(zero_area(scan.vertices, scan.faces).sum()), sample)


@dataclass
class Score:
    """One prediction scored against one scan.

    Attributes:
        distances: (N,) each cropped scan point's distance to the placed prediction (scan unit).
        transform: prediction (its unit) → scan frame.
        landmark_rms: RMS of the landmarks after the landmark alignment (scan unit).
        rms_landmarks_only, rms_refined: RMS point-to-surface distance before and after the refinement.
        iterations: refinement steps.
        degenerate: zero-area triangles dropped from the prediction.
    """

    distances: np.ndarray
    transform: Similarity
    landmark_rms: float
    rms_landmarks_only: float
    rms_refined: float
    iterations: int
    degenerate: int

    def details(self) -> dict:
        """JSON-ready numbers (everything but the distances)."""
        return {"landmark_rms": self.landmark_rms, "rms_after_landmarks": self.rms_landmarks_only,
                "rms_after_refinement": self.rms_refined, "iterations": self.iterations,
                "prediction_degenerate_triangles": self.degenerate, "transform": self.transform.as_matrix().tolist()}


def check_prediction_landmarks(pred: Mesh, landmarks7: np.ndarray, target: ScanTarget, where: str) -> None:
    """Refuse landmarks that would silently spoil the alignment: off the mesh, mirrored, or in another order.

    Raises :class:`InputError` naming ``where`` (the landmark file).
    """
    size = now_landmarks.outer_eye_distance(landmarks7)
    if not size > 0:
        raise InputError(where, "the outer eye corners coincide")
    if pred.n_faces:
        off = SurfaceDistance(pred.vertices, pred.faces).distances(landmarks7)
        if np.median(off) > 0.25 * size:
            raise InputError(where, f"the landmarks lie {np.median(off):.3g} off the mesh (median; outer eye "
                             f"distance {size:.3g}): another unit or another mesh's landmarks?")
    problem = now_landmarks.orientation_problem(landmarks7, pred.vertices)
    if problem is None:
        problem = now_landmarks.order_problem(landmarks7, target.landmarks)
    if problem:
        raise InputError(where, problem)


def score_prediction(target: ScanTarget, pred: Mesh, landmarks7: np.ndarray, metrical: bool = False,
                     pred_scale: float = 1.0, where: str = "") -> Score:
    """Score a prediction against a prepared scan.

    Args:
        target: from :func:`prepare_scan`.
        pred: the predicted mesh (any unit; quads already triangulated by the reader).
        landmarks7: its NoW landmarks (7, 3), same unit as ``pred``.
        metrical: place it rigidly (the scale is part of what is scored); otherwise a similarity.
        pred_scale: scan units per prediction unit (metrical only: e.g. 1000 for a prediction in metres
            against a scan in mm).
        where: the prediction's file, for messages.

    Returns:
        A :class:`Score`. Raises :class:`InputError` naming ``where`` for a prediction without triangles.
    """
    bad = zero_area(pred.vertices, pred.faces)
    faces = pred.faces[~bad]
    if len(faces) == 0:
        raise InputError(where or pred.source or None, "the prediction has no triangle of non-zero area")
    if metrical:
        vertices, lmk = pred.vertices * pred_scale, landmarks7 * pred_scale
    else:
        vertices, lmk = pred.vertices, landmarks7
    start = fit_landmarks(lmk, target.landmarks, scale=not metrical)
    landmark_rms = float(np.sqrt(((start.apply(lmk) - target.landmarks) ** 2).sum(1).mean()))
    surface = SurfaceDistance(vertices, faces, where)
    refined = refine_to_surface(target.points[target.sample], surface, start, scale=not metrical)
    T = refined.transform
    distances = T.scale * surface.distances(T.invert_points(target.points))
    if metrical and pred_scale != 1.0:  # report the placement of the prediction in its own unit
        T = Similarity(T.scale * pred_scale, T.rotation, T.translation)
    return Score(distances, T, landmark_rms, refined.rms_before, refined.rms_after, refined.iterations, int(bad.sum()))
