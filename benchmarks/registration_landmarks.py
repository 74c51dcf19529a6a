#!/usr/bin/env python3
"""Registration from clicked vs automatically detected landmarks, on real faces and on in-model heads.

Cases:

- ``real <seed>``: the real registration ``../shared/fixtures/flame/registered_mesh.ply`` made into a scan
  (:func:`onflame.synthetic.scans.simulate_scan`: resampled to ~50k vertices, 0.2 mm noise, holes,
  millimetres, a random pose per seed; shaded geometry, no texture) and registered twice with the
  FLAME-structured test model (synthetic shape space, MICA's landmark embedding, FLAME's masks): from
  51 clicks (the truth's landmarks in the model's convention, ``mica51``, with 1 mm noise) and from
  detected landmarks. Scored by the per-vertex error in FLAME's ``face`` region after a rigid fit
  (median, mm) and their ratio; the detected landmarks (the 51 the fit used, model convention) against
  the truth's ``mica51`` landmarks, median over the 51 and per group.
- ``3dmd james``: the textured 3dMD capture ``../shared/fixtures/scans/3dmd_james/`` (hair and
  shoulders included) with its 68 human-annotated landmarks (menpo LJSON). There is no true mesh: the
  clicked path uses the annotation, and the table gives the detected landmarks against the annotation
  (inner 51), the registrations' own landmarks against it for both paths (their ratio stands in for the
  per-vertex ratio), and the median per-vertex distance between the two registrations.
- ``in-model <seed>``: a head the model explains (random identity and expression, jaw up to 0.25 rad),
  scanned the same way; per-vertex error of both paths.

Detection time is the registration's ``landmarks`` step (render, detect, lift, consensus), with the
detector loaded beforehand (loading MediaPipe's graph, ~0.3 s, happens once per process), on the machine
as it is (a shared one varies by ±25%).

``--ceiling`` adds, per real-head scan, what the clicked path gives from the truth's own landmarks
(exact: the floor) and from the detected landmarks given as clicks (the detected positions with the
clicks' weights), and splits the detected landmarks' error into what every scan of the head shares (the
bias of the detector and the dense table on this face) and what varies from scan to scan.

usage: python benchmarks/registration_landmarks.py [--seeds 0 1 ... 11] [--in-model 1 2] [--no-james]
       [--model PKL] [--ceiling]
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
from onflame.flame.embedding import IBUG_GROUPS
from onflame.mesh import read_mesh
from onflame.mesh.landmark_files import read_landmarks
from onflame.registration import register
from onflame.registration.landmark_detection import named_detector
from onflame.registration.fit import FitState, make_layer, vertices
from onflame.synthetic.scans import simulate_scan

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
JAMES = SHARED / "fixtures" / "scans" / "3dmd_james"
#: The four groups of the 51 inner points, as rows of FLAME's 51-point layout.
GROUPS = {g: IBUG_GROUPS[g] - 17 for g in ("brows", "nose", "eyes", "mouth")}


def load_test_model(tmp: Path, pkl: Path | None):
    if pkl is None:
        pkl = tmp / "generic_model.pkl"
        subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(pkl)],
                       check=True, capture_output=True)
    return load_model(pkl, landmarks=load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy"),
                      masks=load_masks(FLAME_FIX / "FLAME_masks.pkl"))


def landmark_errors(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Median distance (mm) over the 51 points and per group; both (51, 3) in metres."""
    e = np.linalg.norm(found - truth, axis=1) * 1000
    return {"all": float(np.median(e)), **{g: float(np.median(e[idx])) for g, idx in GROUPS.items()}}


def detected_targets(reg) -> np.ndarray:
    """(51, 3) the detected landmarks the registration used (scan frame, metres)."""
    return np.asarray(reg.params.extras["landmarks_detected"])


def simulated_case(model, truth: np.ndarray, true_lmk: np.ndarray, seed: int, ceiling: bool = False) -> dict:
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    face = model.masks["face"]
    sim = simulate_scan(truth, model.faces, true_lmk, eyes, seed=seed)
    row: dict = {}
    for name, kw in (("clicked", {"landmarks": sim.landmarks}), ("detected", {"auto_landmarks": "detect"})):
        t = time.perf_counter()
        reg = register(sim.scan, model, **kw)
        row[f"{name}_s"] = time.perf_counter() - t
        err = per_vertex_error(sim.to_truth_frame(reg.mesh.vertices * sim.scale), truth, face) * 1000
        row[name] = float(np.median(err))
        row[f"{name}_verdict"] = reg.verdict
        if name == "detected":
            row["lmk"] = landmark_errors(sim.to_truth_frame(detected_targets(reg) * sim.scale), true_lmk)
            row["detect_s"] = reg.timings["landmarks"]
            info = reg.landmark_info
            row.update(views=len(info["views_used"]), points=info["points_used"], spread=info["spread_median_mm"])
            row["detected_truth_frame"] = sim.to_truth_frame(detected_targets(reg) * sim.scale)
            row["detected_scan"] = detected_targets(reg) * sim.scale
    row["ratio"] = row["detected"] / row["clicked"]
    if ceiling:
        exact = (true_lmk @ sim.rotation.T + sim.translation) * sim.scale
        for name, points in (("exact", exact), ("detected_as_clicks", row["detected_scan"])):
            reg = register(sim.scan, model, landmarks=points, landmark_convention="mica")
            err = per_vertex_error(sim.to_truth_frame(reg.mesh.vertices * sim.scale), truth, face) * 1000
            row[name] = float(np.median(err))
    return row


def james_case(model) -> dict:
    scan = read_mesh(JAMES / "james.obj")
    ann = read_landmarks(JAMES / "james.ljson")
    inner = ann.select(ann.ibug >= 17)
    truth51 = inner.points[np.argsort(inner.ibug)] / 1000  # the scan is in millimetres
    row: dict = {}
    regs = {}
    for name, kw in (("clicked", {"landmarks": ann}), ("detected", {"auto_landmarks": "detect"})):
        t = time.perf_counter()
        regs[name] = reg = register(scan, model, **kw)
        row[f"{name}_s"] = time.perf_counter() - t
        reg_lmk = model.landmarks.static51.locate(reg.mesh.vertices, model.faces)
        row[f"{name}_reg_lmk"] = landmark_errors(reg_lmk, truth51)["all"]
        row[f"{name}_verdict"] = reg.verdict
    reg = regs["detected"]
    row["lmk"] = landmark_errors(detected_targets(reg), truth51)
    row["detect_s"] = reg.timings["landmarks"]
    info = reg.landmark_info
    row.update(views=len(info["views_used"]), points=info["points_used"], spread=info["spread_median_mm"])
    row["between_mm"] = float(np.median(per_vertex_error(regs["detected"].mesh.vertices, regs["clicked"].mesh.vertices,
                                                         model.masks["face"]) * 1000))
    row["ratio"] = row["detected_reg_lmk"] / row["clicked_reg_lmk"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(12)), help="scan seeds of the real head")
    ap.add_argument("--in-model", type=int, nargs="*", default=[1, 2], help="in-model head seeds")
    ap.add_argument("--no-james", action="store_true", help="leave out the 3dMD capture")
    ap.add_argument("--model", type=Path, help="generic_model.pkl (default: the synthetic one, made now)")
    ap.add_argument("--ceiling", action="store_true", help="also the clicked path from exact and from detected "
                    "landmarks, and the detected landmarks' error split into shared bias and per-scan spread")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = load_test_model(Path(tmp), args.model)
    truth = read_mesh(FLAME_FIX / "registered_mesh.ply").vertices
    named_detector("auto")  # load the detector once, outside the timed detections
    emb = model.landmarks.static51  # the convention the model's fit uses (MICA's static 51: mica51)

    head = (f"{'case':<14} {'clicked mm':>10} {'detected mm':>11} {'ratio':>6} | {'lmk mm':>6} "
            + " ".join(f"{g:>6}" for g in GROUPS)
            + f" | {'views':>5} {'points':>6} {'spread':>6} {'detect s':>8}  verdicts")
    print(head)
    print("-" * len(head))
    ratios, lmk_all, real_rows = [], [], []

    def show(case: str, row: dict, clicked: str, detected: str) -> None:
        lm = row["lmk"]
        print(f"{case:<14} {clicked:>10} {detected:>11} {row['ratio']:>6.2f} | {lm['all']:>6.2f} "
              + " ".join(f"{lm[g]:>6.2f}" for g in GROUPS)
              + f" | {row['views']:>5} {row['points']:>6} {row['spread']:>6.2f} {row['detect_s']:>8.2f}  "
              f"{row['clicked_verdict']}/{row['detected_verdict']}", flush=True)

    for seed in args.seeds:
        row = simulated_case(model, truth, emb.locate(truth, model.faces), seed, args.ceiling)
        real_rows.append(row)
        ratios.append(row["ratio"])
        lmk_all.append(row["lmk"]["all"])
        show(f"real {seed}", row, f"{row['clicked']:.2f}", f"{row['detected']:.2f}")
    if not args.no_james:
        row = james_case(model)
        lmk_all.append(row["lmk"]["all"])
        show("3dmd james", row, f"({row['clicked_reg_lmk']:.2f})", f"({row['detected_reg_lmk']:.2f})")
        print(f"{'':<14} 3dMD: (registration's landmarks vs the annotation, mm); the two registrations lie "
              f"{row['between_mm']:.2f} mm apart per vertex (median, face)")
    flame = make_layer(model)
    in_model = []
    for seed in args.in_model:
        rng = np.random.default_rng(seed)
        st = FitState(rng.normal(0, 1, 300), rng.normal(0, 1, 100), np.zeros(15), np.zeros(3))
        st.pose[6] = rng.uniform(0.0, 0.25)
        v = vertices(flame, st)
        row = simulated_case(model, v, emb.locate(v, model.faces), 100 + seed)
        in_model.append(row)
        show(f"in-model {seed}", row, f"{row['clicked']:.3f}", f"{row['detected']:.3f}")
    print()
    if args.ceiling and real_rows:
        print("ceiling, real head (per-vertex median mm, clicked path): "
              + "; ".join(f"seed {s}: clicks {r['clicked']:.2f}, exact {r['exact']:.2f}, detected as clicks "
                          f"{r['detected_as_clicks']:.2f}, detected {r['detected']:.2f}"
                          for s, r in zip(args.seeds, real_rows)))
        err = np.stack([r["detected_truth_frame"] for r in real_rows]) - emb.locate(truth, model.faces)  # (S, 51, 3)
        bias = err.mean(0)
        print(f"detected landmarks on the real head over {len(real_rows)} scans: error median "
              f"{np.median(np.linalg.norm(err, axis=2)) * 1000:.2f} mm = shared bias median "
              f"{np.median(np.linalg.norm(bias, axis=1)) * 1000:.2f} mm (per group "
              + ", ".join(f"{g} {np.median(np.linalg.norm(bias[idx], axis=1)) * 1000:.2f}" for g, idx in GROUPS.items())
              + f") + per-scan part median {np.median(np.linalg.norm(err - bias, axis=2)) * 1000:.2f} mm")
    if ratios:
        print(f"real head, {len(ratios)} scans: median ratio detected/clicked {np.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    if lmk_all:
        print(f"real-face cases: median detected-landmark error {np.median(lmk_all):.2f} mm "
              f"(per case median over the 51 points; truth: the model's convention, mica51, on the real head; "
              f"the human annotation on the 3dMD capture)")
    if in_model:
        print("in-model heads: median per-vertex error clicked "
              + ", ".join(f"{r['clicked']:.3f}" for r in in_model) + " mm; detected "
              + ", ".join(f"{r['detected']:.3f}" for r in in_model) + " mm")


if __name__ == "__main__":
    main()
