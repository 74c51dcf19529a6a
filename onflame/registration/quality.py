"""Measured quality of a registration and the verdict it earns (ok / suspect / failed).

Numbers (millimetres unless named otherwise):

- scan→registration distance (:func:`scan_to_registration`): the exact distance from scan points to
  the registration's surface (the closest point on any of its triangles, :mod:`onflame.mesh.distance`),
  over the points of :data:`SCAN_POINTS`; median, mean and p95 over those whose closest point lies in
  FLAME's face region;
- coverage (:func:`face_coverage`): share of the model's face vertices within 2 mm of the scan's surface;
- landmark residuals: registration landmarks vs the given clicks (when landmarks were given);
- mesh quality: triangles flipped relative to the FLAME fit (the refinement's own doing), degenerate
  triangles; the pipeline adds ``folds``, triangles flipped against FLAME's template posed as the fit.

None of these sees a registration that lies on the scan with its vertices slid along the surface (the
nose's vertices on the cheek). Landmarks are what pins them; a registration started from geometry
alone is therefore never better than ``suspect`` (:data:`UNANCHORED`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import count_degenerate, flipped_against, vertex_normals
from ..mesh.distance import SurfaceDistance
from .correspond import ScanIndex

#: Most scan points the distances are measured from: beyond, an even sample of the scan's vertices.
SCAN_SAMPLE = 10000
#: The stated set of scan points behind every scan→registration number onflame shows.
SCAN_POINTS = (f"the scan's vertices (an even sample of {SCAN_SAMPLE} on larger scans) off its border (holes and "
               "edges, one ring deep) whose closest point on the registration lies on a triangle of FLAME's face "
               "region")

#: Thresholds (mm / fractions) for the verdict: (suspect above, failed above).
LIMITS = {
    "scan_to_mesh_median_mm": (0.5, 3.0),
    "scan_to_mesh_p95_mm": (3.0, 10.0),
    "landmark_median_mm": (5.0, 12.0),
}
MIN_COVERAGE = (0.6, 0.25)  # (suspect below, failed below)
#: Reason given to registrations made without landmarks (given or detected).
UNANCHORED = ("no landmarks (geometry-only start): the surface fits, but where vertices sit along it is "
              "unchecked; give or detect landmarks")


@dataclass
class Quality:
    """Quality numbers and verdict; ``as_dict()`` is what reports show."""

    numbers: dict
    verdict: str
    reasons: list[str]

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "reasons": self.reasons, **self.numbers}

    def suspect(self, reason: str) -> "Quality":
        """The same numbers with one more reason for doubt: ``ok`` becomes ``suspect``, ``failed`` stays."""
        return Quality(self.numbers, "failed" if self.verdict == "failed" else "suspect", self.reasons + [reason])


@dataclass
class ScanDistances:
    """Exact scan→registration distances.

    Attributes:
        points: (N,) indices of the scan vertices measured (off the border; sampled, see :data:`SCAN_POINTS`).
        distance: (N,) their distance to the registration's surface (the scan's unit).
        in_face: (N,) bool: the closest point lies on a triangle of the face region.
    """

    points: np.ndarray
    distance: np.ndarray
    in_face: np.ndarray

    def face_mm(self, to_mm: float = 1000.0) -> np.ndarray:
        """The face's distances in millimetres (``to_mm``: millimetres per unit; metres by default)."""
        return self.distance[self.in_face] * to_mm


def scan_to_registration(scan_points: np.ndarray, scan_border: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                         face_vertices: np.ndarray | None = None, sample: int = SCAN_SAMPLE) -> ScanDistances:
    """Distances from the scan's points (N, 3) to a registration (``vertices`` (V, 3), ``faces`` (F, 3)),
    one frame and unit: up to ``sample`` evenly spread scan vertices not on the ``scan_border`` (N,) bool,
    exact point-to-triangle; face triangles: all three corners in ``face_vertices`` (all when None)."""
    idx = np.flatnonzero(~np.asarray(scan_border, bool))
    if len(idx) > sample:
        idx = idx[np.linspace(0, len(idx) - 1, sample).round().astype(np.int64)]
    dist, _, tri = SurfaceDistance(vertices, faces).query(scan_points[idx])
    if face_vertices is None:
        return ScanDistances(idx, dist, np.ones(len(idx), bool))
    in_face = np.zeros(len(vertices), bool)
    in_face[face_vertices] = True
    return ScanDistances(idx, dist, in_face[faces].all(1)[tri])


def assess(reg: np.ndarray, fit: np.ndarray, faces: np.ndarray, index: ScanIndex, face_idx: np.ndarray,
           landmarks: np.ndarray | None = None, reg_landmarks: np.ndarray | None = None) -> Quality:
    """Measure a registration ``reg`` (V, 3) against the scan, all in the same frame and metres."""
    d = scan_to_registration(index.points, index.border, reg, faces, face_idx).face_mm()
    numbers = {
        "scan_to_mesh_median_mm": float(np.median(d)) if d.size else float("nan"),
        "scan_to_mesh_mean_mm": float(np.mean(d)) if d.size else float("nan"),
        "scan_to_mesh_p95_mm": float(np.percentile(d, 95)) if d.size else float("nan"),
        "face_scan_points": int(d.size),
        "coverage": face_coverage(reg, faces, index, face_idx),
        "flipped_triangles": int(flipped_against(reg, faces, fit).sum()),
        "degenerate_triangles": count_degenerate(reg, faces),
    }
    if landmarks is not None and reg_landmarks is not None:
        r = np.linalg.norm(landmarks - reg_landmarks, axis=1) * 1000
        numbers.update(landmark_median_mm=float(np.median(r)), landmark_max_mm=float(r.max()))
    return judge(numbers)


#: How far (m) from the scan's surface a face vertex may lie and still count as covered.
COVERAGE_GAP = 0.002


def face_coverage(reg: np.ndarray, faces: np.ndarray, index: ScanIndex, face_idx: np.ndarray) -> float:
    """Share of the registration's face vertices ``reg[face_idx]`` ((V, 3), metres, the scan index's frame)
    that lie within :data:`COVERAGE_GAP` of the scan's surface.

    A vertex counts when its nearest scan vertex (one a triangle uses) is within the gap, or when that
    vertex's tangent plane is, it faces the same way (normals within 73°) and it lies within the gap plus
    the scan's median edge length: over a coarse scan (a 3dMD export at 4 mm spacing) a point on the
    surface can be most of an edge from every vertex, which a plain 2 mm vertex radius would count as a
    hole (half of such a face).
    Vertices at holes' rims count (unlike registration's matches): a scan with a pinhole every fifty
    triangles still covers its face. Agrees with the share the exact point-to-triangle distance gives
    within 0.01 on the 3dMD capture and on 50k-vertex scans (``tests/test_registration_quality.py``).
    """
    points, n = reg[face_idx], vertex_normals(reg, faces)[face_idx]
    dist, near = index.query(points, k=1, distance_upper_bound=COVERAGE_GAP + index.spacing)
    found = np.isfinite(dist)
    near = np.where(found, near, 0)
    facing = (index.normals[near] * n).sum(1) >= 0.3
    gap = np.abs(((points - index.points[near]) * index.normals[near]).sum(1))
    on_surface = (index.normals[near] ** 2).sum(1) > 0  # a vertex no triangle uses has no normal
    covered = on_surface & ((dist <= COVERAGE_GAP) | (found & facing & (gap <= COVERAGE_GAP)))
    return float(covered.sum() / max(len(face_idx), 1))


def judge(numbers: dict) -> Quality:
    """Turn measured numbers into a verdict with reasons."""
    failed, suspect = [], []
    for key, (warn, fail) in LIMITS.items():
        val = numbers.get(key)
        if val is None:
            continue
        if not np.isfinite(val) or val > fail:
            failed.append(f"{key} = {val:.3g} > {fail}")
        elif val > warn:
            suspect.append(f"{key} = {val:.3g} > {warn}")
    cov = numbers["coverage"]
    if cov < MIN_COVERAGE[1]:
        failed.append(f"coverage = {cov:.2f} < {MIN_COVERAGE[1]} (too little of the face found in the scan)")
    elif cov < MIN_COVERAGE[0]:
        suspect.append(f"coverage = {cov:.2f} < {MIN_COVERAGE[0]}")
    if numbers["flipped_triangles"] or numbers["degenerate_triangles"]:
        suspect.append(f"{numbers['flipped_triangles']} flipped, {numbers['degenerate_triangles']} degenerate triangles")
    verdict = "failed" if failed else "suspect" if suspect else "ok"
    return Quality(numbers, verdict, failed + suspect)
