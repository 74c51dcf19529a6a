"""Correspondences between a moving FLAME mesh and a fixed scan.

The scan is indexed once (a cKDTree over its vertices, with vertex normals and a boundary flag). Each
query pairs mesh points with their nearest scan vertex and keeps a pair only when it is plausible: close
enough, normals agreeing, and not on the scan's border (a model point beyond a hole or the scan's edge
would otherwise be dragged onto the border). Point-to-plane residuals against the scan normal make
nearest-vertex pairs behave like nearest-surface pairs on scans denser than the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import boundary_vertices, edge_use, median_edge_length, smoothed_vertex_normals
from .threads import thread_count

#: Surface patch (m) the scan's normals are averaged over: about the FLAME face's vertex spacing.
#: Measured on ``benchmarks/registration.py``'s simulated in-model scans (0.2 mm noise), face error
#: median / p95, seeds 1-5: plain vertex normals 0.21-0.25 / 0.59-0.98 mm, 3 mm normals 0.15-0.20 /
#: 0.46-1.03 mm; with detected landmarks (and the bending refinement) seeds 6-8 went from 0.37-1.34 mm
#: to 0.18-0.21 mm; an 820k-vertex scan of one head 0.52 → 0.20 mm (its plain normals follow the noise).
#: A scan coarser than this keeps its plain normals (:func:`~onflame.geometry.smoothed_vertex_normals`).
NORMAL_SCALE_M = 0.003


@dataclass
class ScanIndex:
    """A scan (metres) prepared for nearest-point queries.

    Attributes:
        points: (N, 3) vertices; normals: (N, 3) unit normals averaged over ``NORMAL_SCALE_M`` of
        surface; border: (N,) bool boundary flags; spacing: the median edge length (m).
        tree: a cKDTree of the scan's points in the frame it was built in; ``to_tree`` ``(R, t)`` maps
        this index's frame to that one (``x ↦ R x + t``), so that a moved index keeps the tree.
    """

    points: np.ndarray
    normals: np.ndarray
    border: np.ndarray
    tree: cKDTree
    spacing: float = 0.0
    _noise: float | None = field(default=None, repr=False)
    to_tree: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, vertices: np.ndarray, faces: np.ndarray) -> "ScanIndex":
        uses = edge_use(faces, len(vertices)) if len(faces) else None
        spacing = median_edge_length(vertices, faces)
        adjacency = None
        if uses is not None:
            adjacency = uses.copy()
            adjacency.data[:] = 1.0
        normals = smoothed_vertex_normals(vertices, faces, NORMAL_SCALE_M, adjacency, spacing)
        border = boundary_vertices(faces, len(vertices), uses) if len(faces) else np.zeros(len(vertices), bool)
        # grow the border by one ring: vertices next to a hole have unreliable normals too
        if border.any():
            border = border | (adjacency @ border.astype(np.float64) > 0)
        return cls(vertices, normals, border, cKDTree(vertices), spacing)

    def to_frame(self, R: np.ndarray, t: np.ndarray) -> "ScanIndex":
        """The same scan in the frame where its points are ``Rᵀ (p − t)`` (``R`` (3, 3), ``t`` (3,)):
        normals, border, spacing, noise and the search tree carry over (queries are moved into the
        tree's frame rather than the tree rebuilt)."""
        R0, t0 = self.to_tree if self.to_tree is not None else (np.eye(3), np.zeros(3))
        return ScanIndex((self.points - t) @ R, self.normals @ R, self.border, self.tree, self.spacing,
                         self._noise, (R0 @ R, R0 @ t + t0))

    def query(self, points: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        """``cKDTree.query`` of ``points`` (M, 3) given in this index's frame: ``(distances, indices)``."""
        if self.to_tree is not None:
            R, t = self.to_tree
            points = points @ R.T + t
        return self.tree.query(points, **kwargs)

    def noise(self) -> float:
        """Robust standard deviation (m) of the scan's noise along its normals; computed once, then cached.

        Over up to 2500 evenly spread vertices: each one's offset along its normal from the centroid
        of its k = 8 nearest neighbours (the median offset, which curvature causes, removed), scaled by the
        MAD; the centroid averages the neighbours' noise, hence the √(1 + 1/k). On simulated scans with
        ~0.7 mm vertex spacing it reads 0.1–0.3 mm noise within 25%; nearer the spacing it reads low
        (0.4 mm → 0.27 mm), since the nearest neighbours are then preferably those the noise moved the
        same way; for the same reason 0.2 mm reads 0.14 mm on 200k-vertex and 0.10 mm on 820k-vertex
        resamplings (0.48 / 0.24 mm edges). Picking neighbours by their distance along the surface
        instead read 0.1–0.3 mm 20–40% high on the usual scans, so this one stays.
        """
        if self._noise is None:
            k = 8
            sample = np.linspace(0, len(self.points) - 1, min(2500, len(self.points))).astype(np.int64)
            p, n = self.points[sample], self.normals[sample]
            _, nb = self.query(p, k=k + 1)
            r = ((p - self.points[nb[:, 1:]].mean(1)) * n).sum(1)
            self._noise = 1.4826 * float(np.median(np.abs(r - np.median(r)))) / float(np.sqrt(1.0 + 1.0 / k))
        return self._noise

    def match(self, points: np.ndarray, normals: np.ndarray | None, max_dist: float,
              min_cos: float = 0.5) -> "Matches":
        """Nearest scan vertex for each of ``points`` (M, 3), filtered (see module docstring)."""
        dist, idx = self.query(points, k=1, distance_upper_bound=max_dist, workers=query_workers(len(points)))
        ok = np.isfinite(dist)
        idx = np.where(ok, idx, 0)
        ok &= ~self.border[idx]
        if normals is not None:
            ok &= (self.normals[idx] * normals).sum(1) >= min_cos
        return Matches(np.flatnonzero(ok), self.points[idx[ok]], self.normals[idx[ok]], dist[ok])


def query_workers(n_points: int) -> int:
    """Threads for a cKDTree query of ``n_points``: registration's thread count (:mod:`.threads`) for a
    thousand points or more, where it pays for starting them."""
    return thread_count() if n_points >= 1000 else 1


@dataclass
class Matches:
    """Accepted pairs: ``source`` (K,) indices into the queried points, scan ``target`` (K, 3) positions,
    scan ``normal`` (K, 3), and ``dist`` (K,) point-to-point distances (metres)."""

    source: np.ndarray
    target: np.ndarray
    normal: np.ndarray
    dist: np.ndarray
