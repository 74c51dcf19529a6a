"""Detections of generated heads with their truth: what the landmark correction learns from and is judged on.

A *case* is one head of :mod:`onflame.synthetic.expressive_scans` (seed → head and scan), run through the
same automatic landmarking as a registration (:func:`onflame.registration.landmark_detection.
detect_scan_landmarks`, with the scan's smoothed normals as :func:`onflame.registration.register` passes
them), kept in the truth's frame (FLAME frame, metres):

    dense (478, 3) float32      the consensus of the detector's dense points (NaN: not found)
    view_dense (K, 478, 3)      each view's points that entered the consensus
    vertices (V, 3) float32     the head (the truth)
    seed, settings (JSON), views, score, look, seconds; reason when no face was found

Cases are cached as ``<cache>/<model tag>/<seed>.npz`` (written whole or not at all), so an interrupted
run resumes and the fit reads them without detecting again.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from onflame.fileio import write_npz
from onflame.flame import FLAME
from onflame.flame.model import FlameModel
from onflame.registration.correspond import ScanIndex
from onflame.registration.landmark_detection import detect_scan_landmarks, named_detector
from onflame.synthetic.expressive_scans import expressive_head
from onflame.synthetic.scans import SyntheticScan


def detect_case(model: FlameModel, layer: FLAME, seed: int, scanner: str = "random") -> dict[str, np.ndarray]:
    """The arrays of one case (see the module's docstring)."""
    head = expressive_head(model, seed, layer, scanner)
    return {"seed": np.array(seed), **detect_simulated(head.scan, head.settings)}


def detect_simulated(sim: SyntheticScan, settings: dict | None = None) -> dict[str, np.ndarray]:
    """Detection on a simulated scan, in its truth's frame, with the truth (see the module's docstring)."""
    points = sim.scan.vertices / sim.scale
    t0 = time.process_time()
    normals = ScanIndex.build(points, sim.scan.faces).normals
    found = detect_scan_landmarks(points, sim.scan.faces, normals=normals, detector=named_detector("auto"))
    seconds = time.process_time() - t0
    out = {"vertices": sim.truth.astype(np.float32), "settings": np.array(json.dumps(settings or {})),
           "seconds": np.array(seconds), "look": np.array(found.info.get("look", ""))}
    if found.dense is None:
        out["reason"] = np.array(str(found.info.get("reason")))
        return out
    # back into the truth's frame: dense points are in the scan's frame (metres, posed)
    to_truth = lambda p: ((p - sim.translation) @ sim.rotation).astype(np.float32)  # noqa: E731
    out.update(dense=to_truth(found.dense), view_dense=to_truth(found.view_dense),
               views=np.array(found.info["views_used"]), score=np.array(found.info["score"]))
    return out


def case_path(cache: Path, tag: str, seed: int) -> Path:
    return cache / tag / f"{seed}.npz"


def make_cases(model: FlameModel, tag: str, seeds, cache: Path, scanner: str = "random", log=print) -> None:
    """Detect and cache every case of ``seeds`` not cached yet."""
    layer = FLAME(model, dtype=torch.float64)
    todo = [s for s in seeds if not case_path(cache, tag, s).is_file()]
    case_path(cache, tag, 0).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i, seed in enumerate(todo):
        write_npz(case_path(cache, tag, seed), **detect_case(model, layer, seed, scanner))
        if (i + 1) % 25 == 0 or i + 1 == len(todo):
            log(f"{tag}: {i + 1}/{len(todo)} cases, {(time.perf_counter() - t0) / (i + 1):.2f} s each")


def load_cases(cache: Path, tag: str, seeds) -> list[dict]:
    """The cached cases of ``seeds`` that found a face (dicts of arrays); missing ones are an error."""
    out = []
    for s in seeds:
        with np.load(case_path(cache, tag, s)) as z:
            case = {k: z[k] for k in z.files}
        if "dense" in case:
            out.append(case)
    return out
