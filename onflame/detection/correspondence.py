"""Where a detector's dense points lie on a model's surface, and landmarks of any convention from them.

A 2D detector's dense points (MediaPipe: 478) follow the detector's own idea of the face, which is
not FLAME's landmark embedding: lifted onto a scan, MediaPipe's iBUG-mapped points sit a median 4–5 mm
from where FLAME's 51 landmarks lie on the same face (brows and lips most). A
:class:`DenseCorrespondence` is a fixed table, made once from renders of heads in the model's
topology (``tools/build_dense_correspondence.py``), of where each dense point lands on the model's
surface (triangle and barycentric weights), and how much it strayed between renders. With it:

- each detected point has a model-side surface point, so the fit can use the dense points directly;
- :class:`LandmarkTransfer` turns the detected dense points into any landmark set fixed on the same
  surface (FLAME's 51, MICA's 51, iBUG-68): the landmark follows the dense points' overall similarity
  motion plus the local displacement of the dense points around it.

The shipped table (``data/mediapipe_flame.npz``) fits FLAME's topology (5023 vertices, 9976
triangles); :func:`load_correspondence` returns None for any other topology, and callers then use the
detector's own iBUG-68 points.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from ..errors import InputError
from ..fileio import write_npz
from ..flame.embedding import SurfacePoints
from ..geometry import rigid_fit

#: Package data: one table per (detector, topology), tried in turn by :func:`load_correspondence`.
SHIPPED_TABLES = ("mediapipe_flame.npz",)
TABLE_FORMAT = "onflame-dense-correspondence-1"


def topology_key(faces: np.ndarray) -> str:
    """A short fingerprint of a triangle list (F, 3): same key, same topology."""
    f = np.ascontiguousarray(np.asarray(faces, dtype=np.int64))
    return f"{f.max(initial=-1) + 1}v{len(f)}f-" + hashlib.sha1(f.tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class DenseCorrespondence:
    """A detector's dense points fixed on a model's surface.

    Attributes:
        detector: the detector whose points these are (``"mediapipe"``).
        topology: :func:`topology_key` of the model's triangles the table is for.
        points: (N,) surface points on that topology (``face_idx`` (N,), ``bary`` (N, 3)).
        spread_m: (N,) RMS distance (metres, on the mean head) between where the point landed in each
            training render and the table's point: the detector's own wobble for that point.
        usable: (N,) False for points not fit to lift onto a scan (the face's outline, which follows the
            silhouette, and the irises, which a scan does not show).
    """

    detector: str
    topology: str
    points: SurfacePoints
    spread_m: np.ndarray
    usable: np.ndarray

    def __len__(self) -> int:
        return len(self.points)

    def fits(self, faces: np.ndarray) -> bool:
        """Whether the table is for triangles ``faces`` (F, 3)."""
        return topology_key(faces) == self.topology

    def save(self, path: str | os.PathLike) -> None:
        write_npz(path, format=np.array(TABLE_FORMAT), detector=np.array(self.detector),
                  topology=np.array(self.topology), face_idx=self.points.face_idx.astype(np.int32),
                  bary=self.points.bary.astype(np.float32), spread_m=self.spread_m.astype(np.float32),
                  usable=self.usable.astype(bool))


def read_correspondence(path: str | os.PathLike) -> DenseCorrespondence:
    """Read a table written by :meth:`DenseCorrespondence.save`.

    Raises:
        InputError: not such a table, or inconsistent arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "format" not in z or str(z["format"]) != TABLE_FORMAT:
                raise InputError(path, f"not a dense-correspondence table ({TABLE_FORMAT})")
            face_idx, bary = z["face_idx"].astype(np.int64), z["bary"].astype(np.float64)
            spread, usable = z["spread_m"].astype(np.float64), z["usable"].astype(bool)
            detector, topology = str(z["detector"]), str(z["topology"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read dense-correspondence table ({exc})") from None
    n = len(face_idx)
    if bary.shape != (n, 3) or spread.shape != (n,) or usable.shape != (n,) or not np.isfinite(bary).all():
        raise InputError(path, "dense-correspondence arrays do not agree in length or are not finite")
    return DenseCorrespondence(detector, topology, SurfacePoints(face_idx, bary), spread, usable)


def load_correspondence(detector: str, faces: np.ndarray) -> DenseCorrespondence | None:
    """The shipped table for ``detector``'s points on the topology ``faces`` (F, 3), or None."""
    key = topology_key(faces)
    for name in SHIPPED_TABLES:
        table = _shipped(name)
        if table is not None and table.detector == detector and table.topology == key:
            return table
    return None


_CACHE: dict[str, DenseCorrespondence | None] = {}


def _shipped(name: str) -> DenseCorrespondence | None:
    if name not in _CACHE:
        ref = resources.files(__package__).joinpath("data", name)
        _CACHE[name] = read_correspondence(ref) if ref.is_file() else None
    return _CACHE[name]


#: Dense points within this distance (m, on the mean head) of a landmark carry its local displacement.
TRANSFER_RADIUS_M = 0.015
#: Width (m) of the Gaussian that weighs them by distance.
TRANSFER_WIDTH_M = 0.006
#: At most this many nearest dense points per landmark.
TRANSFER_NEIGHBOURS = 8


@dataclass(frozen=True)
class LandmarkTransfer:
    """Landmarks of one convention estimated from a detector's dense points on a scan.

    On the model's mean head the landmarks ``E`` (L, 3) and the table's points ``S`` (N, 3) are known.
    On a scan the detected points ``P`` (N, 3) give a similarity ``P ≈ s R S + t`` (all usable points)
    and, per landmark, the displacement of its nearby points from it:
    ``landmark_l = s R E_l + t + Σ_k w_lk (P_k − s R S_k − t)``, weights Gaussian in the mean head's
    distance. Built with :meth:`build`; without a table for the topology, :meth:`ibug` picks the
    detector's own iBUG points instead.

    Attributes:
        name: what the landmarks are (e.g. the convention's name).
        template_landmarks: (L, 3) ``E``; template_points: (N, 3) ``S`` (metres).
        neighbours: (L, K) dense point indices (-1: none); weights: (L, K) their weights (rows sum to 1
            over the valid ones).
        usable: (N,) points that enter the similarity.
    """

    name: str
    template_landmarks: np.ndarray
    template_points: np.ndarray
    neighbours: np.ndarray
    weights: np.ndarray
    usable: np.ndarray

    @classmethod
    def build(cls, table: DenseCorrespondence, template: np.ndarray, faces: np.ndarray, landmarks: SurfacePoints,
              name: str = "landmarks") -> LandmarkTransfer:
        """A transfer onto ``landmarks`` (fixed on the topology of ``faces``), with the mean head ``template`` (V, 3).

        Neighbours are near along the surface, not through the air: the upper and lower lids and lips
        touch on the mean head but part on an open mouth or eye.
        """
        S = table.points.locate(template, faces)
        E = landmarks.locate(template, faces)
        usable = table.usable.copy()
        d = _surface_distances(template, faces, landmarks, table.points, TRANSFER_RADIUS_M)  # (L, N)
        d[:, ~usable] = np.inf
        k = min(TRANSFER_NEIGHBOURS, len(S))
        neighbours = np.argsort(d, axis=1, kind="stable")[:, :k]
        nd = np.take_along_axis(d, neighbours, axis=1)
        ok = np.isfinite(nd)
        w = np.where(ok, np.exp(-0.5 * (np.where(ok, nd, 0.0) / TRANSFER_WIDTH_M) ** 2), 0.0)
        return cls(name, E, S, np.where(ok, neighbours, -1), w, usable)

    @classmethod
    def ibug(cls, ibug_indices: np.ndarray, n_points: int, name: str = "detector iBUG") -> LandmarkTransfer:
        """No table: landmark l is the detector's own point ``ibug_indices[l]``."""
        L = len(ibug_indices)
        zero = np.zeros((L, 3))
        return cls(name, zero, np.zeros((n_points, 3)), np.asarray(ibug_indices, dtype=np.int64)[:, None],
                   np.ones((L, 1)), np.zeros(n_points, dtype=bool))

    @property
    def selects(self) -> bool:
        """True for :meth:`ibug` transfers (a plain selection of detected points)."""
        return not self.usable.any()

    def apply(self, dense: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """(L, 3) landmarks from detected dense points (N, 3) (metres, the scan's frame); NaN where none
        of a landmark's points is ``valid`` (N,) (default: all finite)."""
        P = np.asarray(dense, dtype=np.float64)
        ok = np.isfinite(P).all(1) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(P).all(1)
        if self.selects:
            out = P[self.neighbours[:, 0]].copy()
            out[~ok[self.neighbours[:, 0]]] = np.nan
            return out
        use = ok & self.usable
        if use.sum() < 6:
            return np.full((len(self.neighbours), 3), np.nan)
        R, t, s = rigid_fit(self.template_points[use], P[use], scale=True)
        residual = np.full_like(P, np.nan)
        residual[use] = P[use] - (s * self.template_points[use] @ R.T + t)
        nb = np.maximum(self.neighbours, 0)
        w = np.where((self.neighbours >= 0) & use[nb], self.weights, 0.0)
        total = w.sum(1)
        local = np.einsum("lk,lkd->ld", w, np.nan_to_num(residual[nb])) / np.maximum(total, 1e-12)[:, None]
        out = s * self.template_landmarks @ R.T + t + local
        out[total <= 0] = np.nan
        return out


def _surface_distances(vertices: np.ndarray, faces: np.ndarray, sources: SurfacePoints, targets: SurfacePoints,
                       limit: float) -> np.ndarray:
    """(S, T) distances (m) along the mesh's edges from surface points ``sources`` to ``targets``
    (``inf`` beyond ``limit``): Dijkstra from each source's triangle corners, plus the straight steps
    from a point to its own triangle's corners."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    length = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    V = len(vertices)
    graph = sp.coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(V, V)).tocsr()
    src_xyz, dst_xyz = sources.locate(vertices, faces), targets.locate(vertices, faces)
    src_corners, dst_corners = faces[sources.face_idx], faces[targets.face_idx]          # (S, 3), (T, 3)
    along = dijkstra(graph, directed=False, indices=np.unique(src_corners), limit=limit)  # (U, V)
    row = {c: i for i, c in enumerate(np.unique(src_corners))}
    out = np.full((len(src_corners), len(dst_corners)), np.inf)
    to_dst = np.linalg.norm(vertices[dst_corners] - dst_xyz[:, None], axis=2)               # (T, 3)
    for s, corners in enumerate(src_corners):
        step = np.linalg.norm(vertices[corners] - src_xyz[s], axis=1)                        # (3,)
        via = np.min(step[:, None] + along[[row[c] for c in corners]], axis=0)              # (V,)
        out[s] = np.min(via[dst_corners] + to_dst, axis=1)
        same = targets.face_idx == sources.face_idx[s]  # on one triangle: the straight line
        out[s, same] = np.linalg.norm(dst_xyz[same] - src_xyz[s], axis=1)
    out[out > limit] = np.inf
    return out
