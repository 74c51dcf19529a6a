"""FLAME-topology evaluation: predicted FLAME meshes (or parameter files) against a MICA root's registrations.

Both sides have FLAME's vertices, so the error is per vertex: the prediction is aligned to the reference
registration on the face region (rigidly, or by a similarity), and each vertex's distance to its
reference is measured in mm, per region of ``FLAME_masks`` (face, nose, eyes, lips, forehead, and the
cheeks: the face without the other four). With the raw scans (``scans``: a subset's raw release, read
through its :mod:`onflame.sources` module in the frame ``onflame build`` registers in), the NoW-style
scan-to-mesh error is measured too (:mod:`.scan_to_mesh`: the scan cropped around the reference's 7
landmarks, the prediction placed by landmarks and refined on the scan).

Predictions are found under ``PRED`` by their path: ``[<SUBSET>/][registrations/ | FLAME_parameters/]
<actor>/<name>.obj|.ply|.npz`` (a MICA root works as it is). A file whose name is not a reference capture
of its actor scores against the actor's only capture (per-image predictions such as MICA's:
``<actor>/<image>.ply``); with ``pred_files="auto"`` a subject's meshes win over its parameter files.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..fileio import confined_to, write_json, write_npz, write_text
from .curves import cumulative_percentage, curve_axis
from .flame_scoring import FlameItem, FlameSettings, Scorer, load_references, resolve_model_and_regions
from .metrics import summary_mm
from .report import format_rows, method_name, mm, write_curve_files


@dataclass
class FlameReport:
    """A FLAME-topology evaluation of one or more methods.

    Attributes:
        labels: method names.
        rows: label -> group (``SUBSET`` or ``all``) -> numbers: ``items``, ``face`` (:func:`summary_mm`),
            per-region medians and means, ``scan`` (summary of scan-to-mesh distances, when measured).
        subjects: label -> subject key -> the same numbers for that subject's predictions.
        failures: label -> one line per prediction that could not be scored (or matched).
        missing: label -> reference subjects without a prediction.
        outputs, settings, seconds: what was written and how it ran.
    """

    labels: list[str]
    rows: dict[str, dict[str, dict]]
    subjects: dict[str, dict[str, dict]]
    failures: dict[str, list[str]]
    missing: dict[str, list[str]]
    outputs: dict[str, str]
    settings: dict
    seconds: float
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 when every prediction found was matched and scored, else 1."""
        return 1 if any(self.failures.values()) else 0

    def to_dict(self) -> dict:
        return {"settings": self.settings, "labels": self.labels, "groups": self.rows, "subjects": self.subjects,
                "failures": self.failures, "missing": self.missing, "outputs": self.outputs, "seconds": self.seconds}

    def format_table(self) -> str:
        """One row per method and subset (and ``all``): per-vertex error medians in mm by region."""
        scan = any(r.get("scan") for g in self.rows.values() for r in g.values())
        head = ("method", "subset", "items", "face median", "mean", "p95", "nose", "eyes", "lips", "forehead",
                "cheeks") + (("scan median", "scan mean") if scan else ())
        rows = [head]
        for label in self.labels:
            for group, r in self.rows[label].items():
                f = r["face"]
                cells = (label, group, str(r["items"]), mm(f["median_mm"]), mm(f["mean_mm"]), mm(f["p95_mm"]),
                         *(mm(r["regions"].get(n, {}).get("median_mm")) for n in ("nose", "eyes", "lips", "forehead", "cheeks")))
                if scan:
                    s = r.get("scan") or {}
                    cells += (mm(s.get("median_mm")), mm(s.get("mean_mm")))
                rows.append(cells)
        return format_rows(rows)


def _group_numbers(items: list[FlameItem], regions: dict[str, np.ndarray]) -> dict:
    err = [it.errors for it in items]
    out: dict = {"items": len(items), "face": None, "regions": {}}
    for name, idx in regions.items():
        s = summary_mm(np.concatenate([e[idx] for e in err]) if err else np.zeros(0))
        out["regions"][name] = {"median_mm": s["median_mm"], "mean_mm": s["mean_mm"]}
        if name == "face":
            out["face"] = s
    d = [it.scan_distances for it in items if it.scan_distances is not None]
    if d:
        out["scan"] = {**summary_mm(np.concatenate(d)), "items": len(d)}
    return out


@confined_to("out")
def evaluate_flame(preds: list[tuple[str, str | os.PathLike]], ref: str | os.PathLike, out: str | os.PathLike,
                   model=None, masks: dict | None = None, embedding=None,
                   settings: FlameSettings = FlameSettings(), subset: str | None = None,
                   scans: dict[str, str | os.PathLike] | None = None, workers: int = 1,
                   echo: Callable[[str], None] | None = None) -> FlameReport:
    """Evaluate FLAME-topology predictions against a MICA root's registrations and write the outputs.

    Args:
        preds: ``(label, prediction folder)`` per method.
        ref: the MICA root (folders or subset zips) whose registrations are the reference.
        out: output folder: ``flame_results.json``, ``flame_table.txt``, ``cumulative_face.png/.csv``
            (per-vertex error in the face region, one curve per method), ``cumulative_scan.*`` with
            scans, ``per_vertex_<label>.npz`` (errors (N, V) in mm, and the keys).
        model: a :class:`~onflame.flame.FlameModel` (masks, landmark embedding, and the layer for parameter
            files), a model file, or None for the reference root's own ``model.npz`` (else a prediction root's).
        masks: FLAME's region masks, instead of the model's.
        embedding: a :class:`~onflame.flame.LandmarkEmbedding` (scan-to-mesh variant), instead of the model's.
        settings: :class:`FlameSettings`.
        subset: evaluate only these subsets (comma-separated).
        scans: subset -> its raw release folder, for the scan-to-mesh variant.
        workers: processes for the scan-to-mesh variant.
        echo: called with progress lines.

    Returns:
        A :class:`FlameReport`. Raises :class:`InputError` for a missing folder, an unknown subset, or no
        model to take the region masks from.
    """
    t0 = time.perf_counter()
    ref, out = Path(ref), Path(out)
    say = echo or (lambda line: None)
    preds = [(label, Path(p)) for label, p in preds]
    for _, p in preds:
        if not p.is_dir():
            raise InputError(p, "no such prediction folder")
    references, root_model = load_references(ref, subset)
    if root_model is None:  # a prediction root built by onflame names its model too
        root_model = next((p / "model.npz" for _, p in preds if (p / "model.npz").is_file()), None)
    model, regions, embedding = resolve_model_and_regions(model, masks, embedding, root_model, references, ref)
    if scans and (embedding is None or (embedding.full68 is None and embedding.static51 is None)):
        raise InputError(None, "the scan-to-mesh variant needs FLAME's landmark embedding (--model or --embedding)")
    scorer = Scorer(references, regions, settings, model, embedding,
                     {k.upper(): Path(v) for k, v in (scans or {}).items()})
    items, failures, missing = {}, {}, {}
    for label, pred in preds:
        items[label], failures[label], missing[label] = scorer.score(label, pred)
    scorer.run_scans(workers, say, failures)
    return _report(preds, items, failures, missing, regions, ref, out, settings, subset, scans,
                   time.perf_counter() - t0)


def _report(preds, items, failures, missing, regions, ref, out, settings, subset, scans, seconds) -> FlameReport:
    labels = [label for label, _ in preds]
    rows: dict = {}
    subjects: dict = {}
    x = curve_axis()
    curves: dict = {"face": {}, "scan": {}}
    outputs = {"json": str(out / "flame_results.json"), "table": str(out / "flame_table.txt")}
    for label in labels:
        mine = items[label]
        groups = sorted({it.key.split("/")[0] for it in mine})
        rows[label] = {g: _group_numbers([it for it in mine if it.key.split("/")[0] == g], regions) for g in groups}
        rows[label]["all"] = _group_numbers(mine, regions)
        subjects[label] = {k: _group_numbers([it for it in mine if it.key == k], regions)
                           for k in sorted({it.key for it in mine})}
        face = np.concatenate([it.errors[regions["face"]] for it in mine]) if mine else np.zeros(0)
        curves["face"][label] = cumulative_percentage(face, x)
        scan = [it.scan_distances for it in mine if it.scan_distances is not None]
        if scan:
            curves["scan"][label] = cumulative_percentage(np.concatenate(scan), x)
        if mine:
            per_vertex = out / f"per_vertex_{method_name(label)}.npz"
            write_npz(per_vertex, errors_mm=np.stack([it.errors for it in mine]).astype(np.float32),
                      keys=np.array([it.key for it in mine]), files=np.array([it.file for it in mine]))
            outputs[f"per_vertex_{label}"] = str(per_vertex)
    outputs.update(write_curve_files(out, "face", x, curves["face"], "per-vertex error, face region"))
    if curves["scan"]:
        outputs.update(write_curve_files(out, "scan", x, curves["scan"], "scan-to-mesh error (NoW crop)"))
    report = FlameReport(labels, rows, subjects, failures, missing, outputs,
                         {**asdict(settings), "reference": str(ref), "subset": subset,
                          "scans": {k: str(v) for k, v in (scans or {}).items()},
                          "predictions": {label: str(p) for label, p in preds}}, round(seconds, 3),
                         {k: v for k, v in curves.items() if v})
    write_json(out / "flame_results.json", report.to_dict())
    write_text(out / "flame_table.txt", report.format_table() + "\n")
    return report

