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

The distance of a face from the training faces (RMS of its leading whitened components, and its offsets
beyond them, each relative to a limit learned with the correction on faces it had not seen) says when
the correction is out of its depth; each landmark's expected error comes from its corners' median
cross-validated error.
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
        expected_error_m: (L,) each landmark's expected error: its corners' median cross-validated error on
            the training faces, weighted by the barycentric coordinates.
        distance: how far the face lies from the training faces, 1.0 at the correction's limit.
    """

    points: np.ndarray
    expected_error_m: np.ndarray
    distance: float


@dataclass(frozen=True)
class RidgeMap:
    """A linear map from some dense points' normalised offsets to corrections of some vertices.

    Attributes:
        features: (N,) the dense points it reads (F of them).
        rows: (R,) which of the correction's vertices it corrects.
        mean: (3F,) the training faces' mean offsets of those points.
        directions: (3F, K) orthonormal principal directions of the training faces' offsets, and sd: (K,)
            their standard deviations: a face's whitened components are ``(x − mean) @ directions / sd``.
        weights: (K, 3R) whitened components → corrections; offset: (3R,) the mean correction (metres,
            normalised frame).
    """

    features: np.ndarray
    rows: np.ndarray
    mean: np.ndarray
    directions: np.ndarray
    sd: np.ndarray
    weights: np.ndarray
    offset: np.ndarray

    def components(self, offsets: np.ndarray) -> np.ndarray:
        """(K,) whitened components of a face's offsets (N, 3) from the mean configuration."""
        return ((offsets[self.features].ravel() - self.mean) @ self.directions) / self.sd

    def __call__(self, offsets: np.ndarray) -> np.ndarray:
        """(R, 3) corrections for a face's offsets (N, 3)."""
        return (self.offset + self.components(offsets) @ self.weights).reshape(-1, 3)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}{k}": getattr(self, k).astype(np.float32 if getattr(self, k).dtype.kind == "f" else
                                                         getattr(self, k).dtype)
                for k in ("features", "rows", "mean", "directions", "sd", "weights", "offset")}

    @classmethod
    def from_arrays(cls, z, prefix: str) -> "RidgeMap":
        return cls(z[f"{prefix}features"].astype(bool), z[f"{prefix}rows"].astype(np.int64),
                   *(z[f"{prefix}{k}"].astype(np.float64) for k in ("mean", "directions", "sd", "weights", "offset")))


@dataclass(frozen=True)
class LandmarkCorrection:
    """A linear map from detected dense points to FLAME vertex positions (see the module's docstring).

    Attributes:
        name: what it is and what it was trained on, for reports.
        detector: whose dense points it reads (``"mediapipe"``).
        topology: :func:`~.correspondence.topology_key` of the FLAME triangles it predicts vertices of.
        align: (N,) dense points the similarity into the normalised frame is fitted on.
        template: (N, 3) mean configuration of the dense points in the normalised frame (metres).
        vertices: (M,) FLAME vertex indices predicted.
        base: the first estimate of the vertices (a transfer onto them, on the reference head).
        base_fill: (M, 3) where a vertex the transfer cannot place usually lies (normalised frame).
        maps: the corrections, each of some vertices from the dense points near them (together every
            vertex once).
        vertex_error_m: (M,) each vertex's median cross-validated error on the training faces (metres).
        spread: how faces differ (``rows`` unused): a face's distance from the training faces is the RMS
            of its whitened components and of its offsets beyond them (relative to ``residual_scale``,
            metres), each against ``limits`` (2,), limits learned on faces the training had not seen.
        info: JSON-ready account of the training (heads, seeds, settings, cross-validated errors).
    """

    name: str
    detector: str
    topology: str
    align: np.ndarray
    template: np.ndarray
    vertices: np.ndarray
    base: LandmarkTransfer
    base_fill: np.ndarray
    maps: tuple[RidgeMap, ...]
    vertex_error_m: np.ndarray
    spread: RidgeMap
    residual_scale: float
    limits: np.ndarray
    info: dict[str, Any]

    def fits(self, faces: np.ndarray) -> bool:
        """Whether the correction is for triangles ``faces`` (F, 3)."""
        return topology_key(faces) == self.topology

    def covers(self, points: SurfacePoints, faces: np.ndarray) -> bool:
        """Whether every corner of the triangles of ``points`` is a predicted vertex."""
        return bool(np.isin(np.asarray(faces)[points.face_idx], self.vertices).all())

    def normalised(self, dense: np.ndarray, valid: np.ndarray | None = None
                   ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, float]] | None:
        """A detection's offsets (N, 3) from the mean configuration in the normalised frame (0 for points
        not found: where they usually are) and the similarity ``(R, t, s)`` into it (``x_norm = s R x +
        t``); None with fewer than :data:`MIN_ALIGN_POINTS` alignment points.

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
        return np.where(ok[:, None], s * P @ R.T + t - self.template, 0.0), (R, t, s)

    def distance(self, offsets: np.ndarray) -> float:
        """How far a face's offsets (N, 3) lie from the training faces: 1.0 at the limit."""
        z = self.spread.components(offsets)
        x = offsets[self.spread.features].ravel() - self.spread.mean
        beyond = x - self.spread.directions @ (self.spread.directions.T @ x)
        component_rms = float(np.sqrt(np.mean(z**2)))
        residual_rms = float(np.sqrt(np.mean(beyond**2)) / self.residual_scale)
        return max(component_rms / self.limits[0], residual_rms / self.limits[1])

    def predict(self, dense: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
        """``(vertices (M, 3) in the scan's frame, distance)`` for a detection, or None when it has too few
        alignment points (see :meth:`normalised`)."""
        got = self.normalised(dense, valid)
        if got is None:
            return None
        offsets, (R, t, s) = got
        y = s * self.base.apply(dense, valid) @ R.T + t
        y = np.where(np.isfinite(y).all(1, keepdims=True), y, self.base_fill)
        for m in self.maps:
            y[m.rows] += m(offsets)
        return ((y - t) @ R) / s, self.distance(offsets)

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
        """Write the correction (float32 arrays, compressed)."""
        arrays = {"format": np.array(CORRECTION_FORMAT), "name": np.array(self.name),
                  "detector": np.array(self.detector), "topology": np.array(self.topology), "align": self.align,
                  "template": self.template.astype(np.float32), "vertices": self.vertices.astype(np.int32),
                  "base_fill": self.base_fill.astype(np.float32),
                  "base_landmarks": self.base.template_landmarks.astype(np.float32),
                  "base_points": self.base.template_points.astype(np.float32),
                  "base_neighbours": self.base.neighbours.astype(np.int32),
                  "base_weights": self.base.weights.astype(np.float32), "base_usable": self.base.usable,
                  "maps": np.array(len(self.maps)), "vertex_error_m": self.vertex_error_m.astype(np.float32),
                  "residual_scale": np.array(self.residual_scale), "limits": np.asarray(self.limits, np.float64),
                  "info": np.array(json.dumps(self.info, sort_keys=True)), **self.spread.arrays("spread_")}
        for i, m in enumerate(self.maps):
            arrays.update(m.arrays(f"map{i}_"))
        write_npz(path, compressed=True, **arrays)


def read_correction(path: str | os.PathLike) -> LandmarkCorrection:
    """Read a correction written by :meth:`LandmarkCorrection.save`.

    Raises:
        InputError: not such a file, or arrays that do not agree.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != CORRECTION_FORMAT:
                raise InputError(path, f"not a landmark correction ({CORRECTION_FORMAT})")
            base = LandmarkTransfer("first estimate", z["base_landmarks"].astype(np.float64),
                                    z["base_points"].astype(np.float64), z["base_neighbours"].astype(np.int64),
                                    z["base_weights"].astype(np.float64), z["base_usable"].astype(bool))
            c = LandmarkCorrection(
                str(z["name"]), str(z["detector"]), str(z["topology"]), z["align"].astype(bool),
                z["template"].astype(np.float64), z["vertices"].astype(np.int64), base,
                z["base_fill"].astype(np.float64),
                tuple(RidgeMap.from_arrays(z, f"map{i}_") for i in range(int(z["maps"]))),
                z["vertex_error_m"].astype(np.float64), RidgeMap.from_arrays(z, "spread_"),
                float(z["residual_scale"]), z["limits"].astype(np.float64), json.loads(str(z["info"])))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read landmark correction ({exc})") from None
    n, m = len(c.align), len(c.vertices)
    rows = np.concatenate([r.rows for r in c.maps]) if c.maps else np.zeros(0, np.int64)
    maps_agree = all(r.features.shape == (n,) and r.mean.shape == (3 * r.features.sum(),)
                     and r.directions.shape == (len(r.mean), len(r.sd)) and r.weights.shape == (len(r.sd), 3 * len(r.rows))
                     and r.offset.shape == (3 * len(r.rows),) for r in (*c.maps, c.spread))
    if (not maps_agree or c.template.shape != (n, 3) or np.sort(rows).tolist() != list(range(m))
            or c.vertex_error_m.shape != (m,) or c.limits.shape != (2,) or c.base_fill.shape != (m, 3)
            or c.base.template_landmarks.shape != (m, 3) or c.base.template_points.shape != (n, 3)):
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
