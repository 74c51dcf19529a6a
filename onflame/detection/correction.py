"""A learned correction from a detector's dense points to where a face's FLAME landmarks lie.

MediaPipe's dense points, carried through the dense table (:mod:`.correspondence`), land about 2 mm
(median) from where FLAME's 51-point conventions put the landmarks, and most of that error belongs to
the face: every scan of one head shares it. A :class:`LandmarkCorrection` is a linear map, learned from
generated heads whose landmarks are known exactly (``tools/build_landmark_correction.py``), from the
detected dense points to the positions of the FLAME vertices that carry the landmarks:

1. the dense table's transfer (:class:`~.correspondence.LandmarkTransfer`, built on a reference head)
   gives a first estimate of each FLAME vertex :attr:`~LandmarkCorrection.vertices` (the corners of
   every triangle FLAME's and MICA's 51 landmarks lie on) from the detected points;
2. the detected points are brought into a normalised frame by a similarity fitted on the points that
   do not move with expression (:attr:`~LandmarkCorrection.align`);
3. their offsets from the mean configuration (:attr:`~LandmarkCorrection.template`), in whitened
   principal components of the training faces, predict how far each vertex's first estimate is off
   (a ridge map, fitted robustly: faces the transfer gets badly wrong weigh less); a face unlike the
   training faces gets a correction near the training faces' typical one, not a guess of its shape;
4. any landmark set fixed on FLAME's topology (FLAME's ``flame51``, MICA's ``mica51`` ...) is located on
   the predicted vertices like on a mesh, and taken back to the scan's frame.

The distance of a face from the training faces (RMS of its whitened components, and its offset beyond
them, each relative to a limit learned with the correction) says when the correction is out of its
depth; each landmark's expected error is its corners' cross-validated error.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import write_npz
from ..flame.embedding import SurfacePoints
from ..geometry import rigid_fit
from .correspondence import LandmarkTransfer, topology_key

CORRECTION_FORMAT = "onflame-landmark-correction-1"
#: Package data: one correction per (detector, topology), tried in turn by :func:`load_correction`.
SHIPPED_CORRECTIONS = ("mediapipe_flame_correction.npz",)
#: Fewest alignment points a detection needs for a correction.
MIN_ALIGN_POINTS = 50


@dataclass(frozen=True)
class CorrectedLandmarks:
    """Landmarks from a correction (scan frame, metres).

    Attributes:
        points: (L, 3) landmark positions.
        expected_error_m: (L,) each landmark's cross-validated RMS error on the training faces.
        distance: how far the face lies from the training faces, 1.0 at the correction's limit.
    """

    points: np.ndarray
    expected_error_m: np.ndarray
    distance: float


@dataclass(frozen=True)
class LandmarkCorrection:
    """A linear map from detected dense points to FLAME vertex positions (see the module's docstring).

    Attributes:
        name: what it is and what it was trained on, for reports.
        detector: whose dense points it reads (``"mediapipe"``).
        topology: :func:`~.correspondence.topology_key` of the FLAME triangles it predicts vertices of.
        align: (N,) dense points the similarity into the normalised frame is fitted on.
        features: (N,) dense points the prediction reads (F of them).
        template: (N, 3) mean configuration of the dense points in the normalised frame (metres).
        vertices: (M,) FLAME vertex indices predicted.
        base: the first estimate of the vertices (a transfer onto them, on the reference head).
        base_fill: (M, 3) where a vertex the transfer cannot place usually lies (normalised frame).
        feature_mean: (3F,) mean normalised offsets of the feature points from ``template``.
        directions: (3F, K) orthonormal principal directions of the training faces' offsets, and sd: (K,)
            their standard deviations: a face's whitened components are ``(x − mean) @ directions / sd``.
        weights: (K, 3M) components → corrections of the first estimates; offset: (3M,) the mean correction.
        vertex_error_m: (M,) each vertex's cross-validated RMS error on the training faces (metres).
        residual_scale: RMS of the training faces' offsets beyond the K components (metres).
        limits: (2,) RMS component and beyond-component residual (relative to ``residual_scale``) at which
            a face counts as outside the training faces.
        info: JSON-ready account of the training (heads, seeds, settings, cross-validated errors).
    """

    name: str
    detector: str
    topology: str
    align: np.ndarray
    features: np.ndarray
    template: np.ndarray
    vertices: np.ndarray
    base: LandmarkTransfer
    base_fill: np.ndarray
    feature_mean: np.ndarray
    directions: np.ndarray
    sd: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    vertex_error_m: np.ndarray
    residual_scale: float
    limits: np.ndarray
    info: dict[str, Any]

    def fits(self, faces: np.ndarray) -> bool:
        """Whether the correction is for triangles ``faces`` (F, 3)."""
        return topology_key(faces) == self.topology

    def covers(self, points: SurfacePoints, faces: np.ndarray) -> bool:
        """Whether every corner of the triangles of ``points`` is a predicted vertex."""
        return bool(np.isin(np.asarray(faces)[points.face_idx], self.vertices).all())

    def components(self, dense: np.ndarray, valid: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, float]] | None:
        """A detection's offsets from the mean (3F,), its whitened components (K,) and the similarity
        ``(R, t, s)`` into the normalised frame (``x_norm = s R x + t``); None with fewer than
        :data:`MIN_ALIGN_POINTS` alignment points.

        Args:
            dense: (N, 3) detected dense points (scan frame, metres), NaN where none.
            valid: (N,) points to use (default: all finite).
        """
        P = np.asarray(dense, dtype=np.float64)
        ok = np.isfinite(P).all(1) if valid is None else np.asarray(valid, bool) & np.isfinite(P).all(1)
        use = ok & self.align
        if use.sum() < MIN_ALIGN_POINTS:
            return None
        R, t, s = rigid_fit(P[use], self.template[use], scale=True)
        offsets = np.where(ok[:, None], s * P @ R.T + t - self.template, 0.0)  # a missing point: where it usually is
        x = offsets[self.features].ravel() - self.feature_mean
        return x, (x @ self.directions) / self.sd, (R, t, s)

    def predict(self, dense: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
        """``(vertices (M, 3) in the scan's frame, distance)`` for a detection, or None when it has too few
        alignment points (see :meth:`components`)."""
        got = self.components(dense, valid)
        if got is None:
            return None
        x, z, (R, t, s) = got
        first = s * self.base.apply(dense, valid) @ R.T + t
        first = np.where(np.isfinite(first).all(1, keepdims=True), first, self.base_fill)
        y = first + (self.offset + z @ self.weights).reshape(-1, 3)
        beyond = x - self.directions @ (self.directions.T @ x)
        component_rms = float(np.sqrt(np.mean(z**2)))
        residual_rms = float(np.sqrt(np.mean(beyond**2)) / self.residual_scale)
        distance = max(component_rms / self.limits[0], residual_rms / self.limits[1])
        return ((y - t) @ R) / s, distance

    def landmarks(self, dense: np.ndarray, valid: np.ndarray | None, points: SurfacePoints,
                  faces: np.ndarray) -> CorrectedLandmarks | None:
        """Landmarks ``points`` (fixed on the topology ``faces``, which :meth:`covers` them) for a
        detection (see :meth:`predict`), or None."""
        got = self.predict(dense, valid)
        if got is None:
            return None
        predicted, distance = got
        row = np.full(int(np.max(faces)) + 1, -1)
        row[self.vertices] = np.arange(len(self.vertices))
        corners = row[np.asarray(faces)[points.face_idx]]  # (L, 3)
        if (corners < 0).any():
            raise ValueError("landmarks on triangles the correction does not predict; check covers() first")
        xyz = np.einsum("lk,lkd->ld", points.bary, predicted[corners])
        expected = np.sqrt(np.einsum("lk,lk->l", np.abs(points.bary), self.vertex_error_m[corners] ** 2))
        return CorrectedLandmarks(xyz, expected, distance)

    def save(self, path: str | os.PathLike) -> None:
        """Write the correction (float32 arrays, a few hundred kB)."""
        write_npz(path, compressed=True, format=np.array(CORRECTION_FORMAT), name=np.array(self.name),
                  detector=np.array(self.detector), topology=np.array(self.topology), align=self.align,
                  features=self.features, template=self.template.astype(np.float32),
                  vertices=self.vertices.astype(np.int32), base_fill=self.base_fill.astype(np.float32),
                  base_landmarks=self.base.template_landmarks.astype(np.float32),
                  base_points=self.base.template_points.astype(np.float32),
                  base_neighbours=self.base.neighbours.astype(np.int32),
                  base_weights=self.base.weights.astype(np.float32), base_usable=self.base.usable, feature_mean=self.feature_mean.astype(np.float32),
                  directions=self.directions.astype(np.float32), sd=self.sd.astype(np.float32), weights=self.weights.astype(np.float32),
                  offset=self.offset.astype(np.float32), vertex_error_m=self.vertex_error_m.astype(np.float32),
                  residual_scale=np.array(self.residual_scale), limits=np.asarray(self.limits, np.float64),
                  info=np.array(json.dumps(self.info, sort_keys=True)))


def read_correction(path: str | os.PathLike) -> LandmarkCorrection:
    """Read a correction written by :meth:`LandmarkCorrection.save`.

    Raises:
        InputError: not such a file, or arrays that do not agree.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != CORRECTION_FORMAT:
                raise InputError(path, f"not a landmark correction ({CORRECTION_FORMAT})")
            c = LandmarkCorrection(
                str(z["name"]), str(z["detector"]), str(z["topology"]), z["align"].astype(bool),
                z["features"].astype(bool), z["template"].astype(np.float64), z["vertices"].astype(np.int64),
                LandmarkTransfer("first estimate", z["base_landmarks"].astype(np.float64),
                                 z["base_points"].astype(np.float64), z["base_neighbours"].astype(np.int64),
                                 z["base_weights"].astype(np.float64), z["base_usable"].astype(bool)),
                z["base_fill"].astype(np.float64),
                z["feature_mean"].astype(np.float64), z["directions"].astype(np.float64), z["sd"].astype(np.float64),
                z["weights"].astype(np.float64), z["offset"].astype(np.float64),
                z["vertex_error_m"].astype(np.float64), float(z["residual_scale"]),
                z["limits"].astype(np.float64), json.loads(str(z["info"])))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read landmark correction ({exc})") from None
    n, f, m = len(c.align), int(c.features.sum()), len(c.vertices)
    if (c.features.shape != (n,) or c.template.shape != (n, 3) or c.feature_mean.shape != (3 * f,)
            or c.directions.shape != (3 * f, len(c.sd)) or c.weights.shape != (len(c.sd), 3 * m)
            or c.offset.shape != (3 * m,) or c.vertex_error_m.shape != (m,) or c.limits.shape != (2,)
            or c.base_fill.shape != (m, 3) or c.base.template_landmarks.shape != (m, 3)
            or c.base.template_points.shape != (n, 3) or c.base.neighbours.shape != c.base.weights.shape):
        raise InputError(path, "landmark correction arrays do not agree in size")
    return c


_CACHE: dict[str, LandmarkCorrection | None] = {}


def load_correction(detector: str, faces: np.ndarray) -> LandmarkCorrection | None:
    """The shipped correction for ``detector``'s points on the topology ``faces`` (F, 3), or None."""
    key = topology_key(faces)
    for name in SHIPPED_CORRECTIONS:
        if name not in _CACHE:
            ref = resources.files(__package__).joinpath("data", name)
            _CACHE[name] = read_correction(ref) if ref.is_file() else None
        c = _CACHE[name]
        if c is not None and c.detector == detector and c.topology == key:
            return c
    return None
