"""Realistic synthetic scans with known ground truth, made from FLAME-topology meshes.

A structured-light or stereo face scanner sees the front and sides of the head: face, forehead, some
scalp, ears and neck, never the eyeballs' back or the back of the head. :func:`simulate_scan` keeps that
part of a FLAME-topology mesh, resamples it to a different, denser topology, adds normal noise and
tangential jitter, cuts a few holes, applies a random rigid pose and millimetre units, and returns 51
landmarks with click noise. The truth mesh stays in FLAME's frame, in metres, so a registration can be
scored vertex by vertex.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from ..geometry import apply_rigid, median_edge_length, vertex_normals
from ..mesh import Mesh


@dataclass
class SyntheticScan:
    """A simulated scan and its truth.

    Attributes:
        scan: the scan mesh, in ``units`` and a random pose.
        landmarks: (51, 3) landmark clicks on the scan, same units and pose, with click noise.
        truth: (V, 3) the FLAME-topology mesh it was made from (metres, FLAME frame).
        rotation, translation, scale: ``scan = scale * (R truth + t)``; scale 1000 for millimetres.
        units: ``"mm"``, ``"cm"`` or ``"m"``.
    """

    scan: Mesh
    landmarks: np.ndarray
    truth: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray
    scale: float
    units: str

    def to_truth_frame(self, points: np.ndarray) -> np.ndarray:
        """Map points (N, 3) from the scan's frame and units back to the truth's (metres)."""
        return (points / self.scale - self.translation) @ self.rotation


UNIT_SCALE = {"m": 1.0, "cm": 100.0, "mm": 1000.0}


def visible_faces(vertices: np.ndarray, faces: np.ndarray, exclude: np.ndarray,
                  views_deg: tuple[float, ...] = (-60.0, 0.0, 60.0), min_cos: float = 0.15) -> np.ndarray:
    """(F,) bool: triangles a frontal scanner with cameras at ``views_deg`` yaw (about +y) would see.

    A triangle is kept when its normal faces at least one camera (cosine ≥ ``min_cos``) and none of its
    corners is in ``exclude`` (e.g. eyeballs). Occlusion is ignored: a convex-ish head has little.
    """
    n = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-20
    keep = np.zeros(len(faces), dtype=bool)
    for yaw in np.deg2rad(views_deg):
        keep |= n @ np.array([np.sin(yaw), 0.0, np.cos(yaw)]) >= min_cos
    bad = np.zeros(len(vertices), dtype=bool)
    bad[exclude] = True
    return keep & ~bad[faces].any(1)


#: Largest tangential jitter as a share of the resampled mesh's median edge. FLAME's visible head
#: subdivided twice has 0.97 mm edges, so the default 0.4 mm jitter is kept there; at 0.24 mm edges
#: (four subdivisions, 820k vertices) a 0.4 mm jitter would fold the triangles over each other.
MAX_JITTER = 0.42


def simulate_scan(truth: np.ndarray, faces: np.ndarray, landmarks: np.ndarray, exclude: np.ndarray,
                  seed: int = 0, units: str = "mm", noise_m: float = 0.0002, jitter_m: float = 0.0004,
                  click_noise_m: float = 0.001, n_holes: int = 3, hole_radius_m: float = 0.006,
                  subdivisions: int = 2, pose: bool = True, min_height_m: float | None = -0.09) -> SyntheticScan:
    """Make a realistic scan of the FLAME-topology mesh ``truth``.

    Args:
        truth: (V, 3) vertices in metres, FLAME frame (+y up, face towards +z).
        faces: (F, 3) FLAME triangles.
        landmarks: (51, 3) true landmark positions on ``truth`` (metres).
        exclude: vertex indices a scanner never sees (eyeballs).
        seed: random seed (everything is deterministic given it).
        units: units of the returned scan: ``"mm"``, ``"cm"`` or ``"m"``.
        noise_m: standard deviation of the noise along the surface normal.
        jitter_m: standard deviation of the tangential jitter of resampled vertices, at most
            ``MAX_JITTER`` of the resampled mesh's median edge (dense resamplings are jittered, not tangled).
        click_noise_m: standard deviation of each landmark click's error.
        n_holes, hole_radius_m: holes cut at random places on the face and head.
        subdivisions: midpoint subdivisions (each ×4 triangles) to make a denser, different topology.
        pose: apply a random rigid pose (up to ±30° about each axis, ±5 cm) if True.
        min_height_m: drop everything below this height (the neck's lower part), or None.
    """
    rng = np.random.default_rng(seed)
    keep = visible_faces(truth, faces, exclude)
    if min_height_m is not None:
        keep &= truth[faces].mean(1)[:, 1] > min_height_m
    v, f = truth, faces[keep]
    for _ in range(subdivisions):
        v, f = trimesh.remesh.subdivide(v, f)
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    v, f = v[used], remap[f]

    # tangential jitter (slide in the tangent plane) and noise along the normal: no scan vertex sits on a truth vertex
    n = vertex_normals(v, f)
    jitter_m = min(jitter_m, MAX_JITTER * median_edge_length(v, f))
    step = rng.normal(0.0, jitter_m, (len(v), 3))
    step -= (step * n).sum(1, keepdims=True) * n
    v = v + step + rng.normal(0.0, noise_m, (len(v), 1)) * n

    # holes: remove triangles near random surface points
    centres = v[rng.choice(len(v), size=n_holes, replace=False)] if n_holes else np.zeros((0, 3))
    if n_holes:
        cen = v[f].mean(1)
        drop = (np.linalg.norm(cen[:, None] - centres[None], axis=2) < hole_radius_m).any(1)
        f = f[~drop]

    R = Rotation.from_euler("xyz", rng.uniform(-30, 30, 3), degrees=True).as_matrix() if pose else np.eye(3)
    t = rng.uniform(-0.05, 0.05, 3) if pose else np.zeros(3)
    s = UNIT_SCALE[units]
    clicks = landmarks + rng.normal(0.0, click_noise_m, landmarks.shape)
    scan = Mesh(apply_rigid(v, R, t) * s, f, source=f"synthetic scan (seed {seed})", meta={"units": units})
    return SyntheticScan(scan, apply_rigid(clicks, R, t) * s, truth.copy(), R, t, s, units)
