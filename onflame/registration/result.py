"""What :func:`.pipeline.register` returns (:class:`Registration`) and how it is written
(:func:`save_registration`: parameters, mesh, report, picture, all or none).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..flame.params import FlameParams
from ..mesh import Mesh
from ..units import METRES_PER_UNIT
from .quality import SCAN_POINTS, Quality


@dataclass
class Registration:
    """The result of :func:`register`.

    Attributes:
        mesh: the registration, FLAME topology, metres, in the scan's frame.
        params: FLAME parameters with FLAME(params) ≈ ``mesh`` (scan frame, metres). ``params.extras``
            holds ``units`` (str), ``scale_to_m`` (float: metres per scan unit), ``scan_to_flame`` (4, 4):
            the rigid transform from the scan's frame (in metres) to FLAME's canonical frame,
            ``verdict``, ``landmark_source`` (given / detected / geometry) and ``landmark_convention``;
            with detected landmarks also what :func:`.autolandmarks.detection_record` lists (the
            landmarks, the views used, the points used, each landmark's spread across the views).
        fit: (V, 3) the FLAME fit before refinement (scan frame, metres).
        quality: measured numbers and the verdict (the scan→registration numbers over
            :data:`.quality.SCAN_POINTS`).
        timings: seconds per step.
        landmarks: (N, 3) the registration's positions of the landmarks it used (scan frame, metres).
        landmark_info: where the landmarks came from: ``source``, ``convention`` (and each candidate's
            residual when it was chosen by fitting), ``outliers``, the detector's details.
        scan: the scan, in metres.
    """

    mesh: Mesh
    params: FlameParams
    fit: np.ndarray
    quality: Quality
    timings: dict = field(default_factory=dict)
    landmarks: np.ndarray | None = None
    landmark_info: dict = field(default_factory=dict)
    scan: Mesh | None = None

    @property
    def verdict(self) -> str:
        return self.quality.verdict

    def report(self) -> dict:
        """JSON-ready summary: units, verdict with reasons, quality numbers (and which scan points the
        scan→registration ones are over), timings."""
        return {
            "source": self.mesh.source,
            "units": str(self.params.extras["units"]),
            "scale_to_m": float(self.params.extras["scale_to_m"]),
            **self.quality.as_dict(),
            "scan_to_mesh_points": SCAN_POINTS,
            "landmarks": self.landmark_info,
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }


def save_registration(reg: Registration, out_dir: str | os.PathLike, name: str, picture: bool = True,
                      mesh_units: str = "m") -> dict:
    """Write ``<name>.npz`` (MICA keys + extras), ``<name>.obj``, with ``picture`` ``<name>_report.png``
    (scan and registration side by side, a heat map of each scan point's exact distance to the
    registration), and ``<name>_report.json``.

    ``mesh_units``: the ``.obj``'s unit (``m``, MICA's, by default; ``cm`` or ``mm`` to lay it over the scan
    in a viewer); the parameters stay in metres, and the report's ``mesh_units`` says which was written.

    The files appear together or not at all (:func:`onflame.fileio.written_together`): all are written to
    temporaries first and renamed at the end, the report last, so a report means the set is complete.
    Returns ``{"params", "mesh", ["picture",] "report"}`` paths.
    """
    from ..fileio import write_json, written_together
    from ..mesh import write_obj

    out = Path(out_dir)
    paths = {"params": out / f"{name}.npz", "mesh": out / f"{name}.obj"}
    if picture and reg.scan is not None:
        paths["picture"] = out / f"{name}_report.png"
    paths["report"] = out / f"{name}_report.json"
    with written_together(*paths.values()) as temps:
        tmp = dict(zip(paths, temps))
        reg.params.save(tmp["params"])
        scale = 1.0 / METRES_PER_UNIT[mesh_units]
        write_obj(tmp["mesh"], reg.mesh if scale == 1.0 else replace(reg.mesh, vertices=reg.mesh.vertices * scale))
        if "picture" in tmp:
            from .report import save_report_picture, scan_to_mesh_distances_mm

            dist = scan_to_mesh_distances_mm(reg.scan.vertices, reg.mesh)
            save_report_picture(tmp["picture"], reg.scan, reg.mesh, dist, reg.params.extras["scan_to_flame"],
                                title=f"{name}: {reg.verdict}")
        write_json(tmp["report"], {**reg.report(), "mesh_units": mesh_units})
    return {k: str(v) for k, v in paths.items()}
