"""Measured quality of a registration and the verdict it earns (ok / suspect / failed).

Numbers (millimetres unless named otherwise):

- scan→registration distance for scan points in the face: the registration should lie on the scan;
- coverage: share of the model's face vertices that found scan data within 2 mm;
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
from scipy.spatial import cKDTree

from ..geometry import count_degenerate, count_flipped, vertex_normals
from .correspond import ScanIndex

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


def assess(reg: np.ndarray, fit: np.ndarray, faces: np.ndarray, index: ScanIndex, face_idx: np.ndarray,
           landmarks: np.ndarray | None = None, reg_landmarks: np.ndarray | None = None) -> Quality:
    """Measure a registration ``reg`` (V, 3) against the scan, all in the same frame and metres."""
    n = vertex_normals(reg, faces)
    # scan points whose nearest registration vertex is a face vertex, within 5 mm: the face's scan data
    tree = cKDTree(reg)
    d, j = tree.query(index.points, distance_upper_bound=0.005)
    in_face = np.zeros(len(reg), bool)
    in_face[face_idx] = True
    sel = np.isfinite(d)
    sel[sel] &= in_face[j[sel]]
    sel &= ~index.border
    plane = np.abs(((index.points[sel] - reg[j[sel]]) * n[j[sel]]).sum(1))
    # point-to-plane to the nearest vertex, capped by the point-to-point distance
    dist = np.minimum(plane, d[sel]) * 1000
    m = index.match(reg[face_idx], n[face_idx], 0.002, min_cos=0.3)
    numbers = {
        "scan_to_mesh_median_mm": float(np.median(dist)) if dist.size else float("nan"),
        "scan_to_mesh_mean_mm": float(np.mean(dist)) if dist.size else float("nan"),
        "scan_to_mesh_p95_mm": float(np.percentile(dist, 95)) if dist.size else float("nan"),
        "face_scan_points": int(sel.sum()),
        "coverage": float(len(m.source) / max(len(face_idx), 1)),
        "flipped_triangles": count_flipped(faces, fit, reg),
        "degenerate_triangles": count_degenerate(reg, faces),
    }
    if landmarks is not None and reg_landmarks is not None:
        r = np.linalg.norm(landmarks - reg_landmarks, axis=1) * 1000
        numbers.update(landmark_median_mm=float(np.median(r)), landmark_max_mm=float(r.max()))
    return judge(numbers)


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
