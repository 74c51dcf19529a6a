#!/usr/bin/env python3
"""Registration accuracy by landmark source: given clicks vs automatic (render + detect + lift) vs geometry only.

The real registration ``../shared/fixtures/flame/registered_mesh.ply`` is made into synthetic scans
(:func:`onflame.synthetic.scans.simulate_scan`: resampled, noisy, holes, millimetres, a random pose, clicks
with 1 mm noise) and registered three ways with the FLAME-structured model of the tests (synthetic
shape space, MICA's landmark embedding, FLAME's masks). Printed per seed: the per-vertex error of the
registration in FLAME's ``face`` region after a rigid fit (:func:`onflame.evaluation.metrics.per_vertex_error`),
median / 95th percentile in mm, the verdict, and for the automatic path the 3D error of the detected
landmarks against the true ones; then the ratio of each path to the given-landmark path.

usage: python benchmarks/registration_landmarks.py [--seeds 0 1 2] [--model PKL]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import load_landmark_embedding, load_masks, load_model
from onflame.mesh import read_mesh
from onflame.registration import register
from onflame.synthetic.scans import simulate_scan

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", type=Path, help="generic_model.pkl (default: the synthetic one, made now)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkl = args.model
        if pkl is None:
            pkl = Path(tmp) / "generic_model.pkl"
            subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(pkl)],
                           check=True, capture_output=True)
        model = load_model(pkl, landmarks=load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy"),
                           masks=load_masks(FLAME_FIX / "FLAME_masks.pkl"))
    truth = read_mesh(FLAME_FIX / "registered_mesh.ply")
    embedding = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl").static51
    true_lmk = embedding.locate(truth.vertices, truth.faces)
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    face = model.masks["face"]

    paths = {"given": {}, "auto": {"auto_landmarks": "detect"}, "geometry": {"auto_landmarks": "geometry"}}
    medians: dict[str, list[float]] = {p: [] for p in paths}
    print(f"{'seed':>4} {'path':>9} {'median mm':>10} {'p95 mm':>8} {'verdict':>8} {'time s':>7}  landmarks")
    for seed in args.seeds:
        sim = simulate_scan(truth.vertices, truth.faces, true_lmk, eyes, seed=seed)
        for name, kw in paths.items():
            t = time.perf_counter()
            reg = register(sim.scan, model, landmarks=sim.landmarks if name == "given" else None, **kw)
            dt = time.perf_counter() - t
            err = per_vertex_error(sim.to_truth_frame(reg.mesh.vertices * sim.scale), truth.vertices, face) * 1000
            medians[name].append(float(np.median(err)))
            note = ""
            if name == "auto":
                info = reg.landmark_info
                note = f"{info['source']}, {info.get('views')} views, score {info.get('score', float('nan')):.2f}"
                found = _detected(sim)
                if found is not None:
                    e = np.linalg.norm(found - true_lmk, axis=1) * 1000
                    note += f", 3D error median {np.median(e):.1f} mm, max {e.max():.1f} mm"
            elif name == "given":
                e = np.linalg.norm(sim.to_truth_frame(sim.landmarks) - true_lmk, axis=1) * 1000
                note = f"clicks, 3D error median {np.median(e):.1f} mm"
            print(f"{seed:>4} {name:>9} {np.median(err):>10.2f} {np.percentile(err, 95):>8.2f} {reg.verdict:>8} "
                  f"{dt:>7.1f}  {note}")
    print()
    base = np.mean(medians["given"])
    for name in paths:
        m = np.mean(medians[name])
        print(f"mean median per-vertex error ({name:>8}): {m:.2f} mm   ratio to given: {m / base:.2f}")


def _detected(sim) -> np.ndarray | None:
    """The landmarks the automatic path found (truth frame, metres): detection is deterministic, so
    running it again on the same scan gives the same points."""
    from onflame.registration.autolandmarks import detect_scan_landmarks

    found, _ = detect_scan_landmarks(sim.scan.vertices / sim.scale, sim.scan.faces)
    return None if found is None else sim.to_truth_frame(found * sim.scale)


if __name__ == "__main__":
    main()
