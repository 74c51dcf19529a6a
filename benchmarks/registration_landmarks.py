#!/usr/bin/env python3
"""Registration from clicked vs automatically detected landmarks, with both test models.

Test models (each with MICA's landmark embedding, ``mica51``, unless ``--convention flame51``, and FLAME's
masks): ``synthetic`` (``../shared/tools/make_synthetic_flame.py``: FLAME 2020's mean head, smooth random
shape space) and ``realshape`` (``../shared/tools/make_realshape_flame.py``: FLAME 2023 Open's mean head
and real identity space). Cases, each registered by each model twice: from 51 clicks (the truth's
landmarks in the model's convention with 1 mm noise) and from detected landmarks:

- ``held-out <seed>``: generated heads of :mod:`onflame.synthetic.expressive_scans` (realistic shape,
  everyday expressions) from seeds the landmark correction never saw (``HELD_OUT_SEEDS``), scanned as
  the real head is;
- ``in-sample <seed>``: heads the correction was trained on (``TRAINING_SEEDS``, their own random scans);
- ``real <seed>``: the real registration ``../shared/fixtures/flame/registered_mesh.ply`` made into a scan
  (:func:`onflame.synthetic.scans.simulate_scan`: ~50k vertices, 0.2 mm noise, holes, millimetres, a
  random pose per seed; shaded geometry, no texture);
- ``3dmd james``: the textured 3dMD capture (hair and shoulders) with its 68 human-annotated landmarks;
  there is no true mesh: the clicked path uses the annotation, and the table gives the registrations'
  own landmarks against it (their ratio stands in for the per-vertex ratio);
- ``in-model <seed>``: a head the model explains (random identity and expression, jaw up to 0.25 rad).

Per case: the per-vertex error in FLAME's ``face`` region after a rigid fit (median, mm) of both paths
and their ratio, the detected landmarks (the 51 the fit used) against the truth's (median over the 51
and per group), triangles flipped against the truth where the truth itself is not folded (clicked /
automatic), whether the landmark
correction ran (and the face's distance from its training faces, 1 at its limit), the detection's time
(render, detect, lift, consensus, correction; detector loaded beforehand) and the verdicts. Timings
are of the machine as it is (a shared one varies).

``--correction on`` runs the learned landmark correction (off by default:
:data:`onflame.registration.landmark_correction.ON_BY_DEFAULT`; its ``--write-docs`` table goes to a
section of its own); the column ``corrected`` counts the cases it ran on.

usage: python benchmarks/registration_landmarks.py [--models synthetic realshape] [--held-out 24]
       [--in-sample 4] [--seeds 0 1 2 3 4 5] [--in-model 1 2] [--no-james] [--convention mica51|flame51]
       [--correction default|on|off] [--write-docs]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import FLAME, load_landmark_embedding, load_masks, load_model
from onflame.flame.embedding import IBUG_GROUPS
from onflame.geometry import apply_rigid, flipped_against, rigid_fit
from onflame.mesh import read_mesh
from onflame.mesh.landmark_files import read_landmarks
from onflame.registration import register
from onflame.registration.landmark_correction import SWITCH, correction_enabled
from onflame.registration.landmark_detection import named_detector
from onflame.synthetic.expressive_scans import HELD_OUT_SEEDS, TRAINING_SEEDS, expressive_head
from onflame.synthetic.scans import simulate_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import markdown_table, write_section  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
JAMES = SHARED / "fixtures" / "scans" / "3dmd_james"
TOOLS = {"synthetic": "make_synthetic_flame.py", "realshape": "make_realshape_flame.py"}
EMBEDDINGS = {"mica51": "landmark_embedding.npy", "flame51": "flame_static_embedding.pkl"}
#: The four groups of the 51 inner points, as rows of FLAME's 51-point layout.
GROUPS = {g: IBUG_GROUPS[g] - 17 for g in ("brows", "nose", "eyes", "mouth")}


def load_test_model(tmp: Path, name: str, convention: str):
    pkl = tmp / f"{name}.pkl"
    subprocess.run([sys.executable, str(SHARED / "tools" / TOOLS[name]), str(pkl), "--plain"],
                   check=True, capture_output=True)
    return load_model(pkl, landmarks=load_landmark_embedding(FLAME_FIX / EMBEDDINGS[convention]),
                      masks=load_masks(FLAME_FIX / "FLAME_masks.pkl"))


def landmark_errors(found: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Median distance (mm) over the 51 points and per group; both (51, 3) in metres."""
    e = np.linalg.norm(found - truth, axis=1) * 1000
    return {"all": float(np.median(e)), **{g: float(np.median(e[idx])) for g, idx in GROUPS.items()}}


def flipped_vs_truth(reg_v: np.ndarray, truth: np.ndarray, model) -> int:
    """Triangles facing the other way than the truth's after a rigid fit on the face (eyeballs included),
    among those the truth does not itself fold against the model's template (generated heads' lids and
    lip corners fold at some expressions; the real registration folds nowhere)."""
    face = model.masks["face"]
    R, t, _ = rigid_fit(reg_v[face], truth[face])
    Rt, tt, _ = rigid_fit(truth[face], model.v_template[face])
    unfolded = ~flipped_against(apply_rigid(truth, Rt, tt), model.faces, model.v_template)
    return int(flipped_against(apply_rigid(reg_v, R, t), model.faces[unfolded], truth).sum())


def detection_columns(reg) -> dict:
    info = reg.landmark_info
    note = info.get("correction") or {}
    return {"detect_s": reg.timings["landmarks"], "corrected": bool(note.get("applied")),
            "distance": note.get("distance"), "detected_verdict": reg.verdict}


def simulated_case(model, sim, truth: np.ndarray) -> dict:
    """Both paths on a simulated scan of ``truth`` (V, 3, FLAME frame, metres)."""
    true_lmk = model.landmarks.static51.locate(truth, model.faces)
    face = model.masks["face"]
    row: dict = {}
    for name, kw in (("clicked", {"landmarks": sim.landmarks}), ("detected", {"auto_landmarks": "detect"})):
        reg = register(sim.scan, model, **kw)
        reg_v = sim.to_truth_frame(reg.mesh.vertices * sim.scale)
        row[name] = float(np.median(per_vertex_error(reg_v, truth, face) * 1000))
        row[f"{name}_flipped"] = flipped_vs_truth(reg_v, truth, model)
        row[f"{name}_verdict"] = reg.verdict
    detected = sim.to_truth_frame(np.asarray(reg.params.extras["landmarks_detected"]) * sim.scale)
    row.update(detection_columns(reg), lmk=landmark_errors(detected, true_lmk), ratio=row["detected"] / row["clicked"])
    return row


def james_case(model) -> dict:
    scan = read_mesh(JAMES / "james.obj")
    ann = read_landmarks(JAMES / "james.ljson")
    inner = ann.select(ann.ibug >= 17)
    truth51 = inner.points[np.argsort(inner.ibug)] / 1000  # the scan is in millimetres
    row: dict = {}
    regs = {}
    for name, kw in (("clicked", {"landmarks": ann}), ("detected", {"auto_landmarks": "detect"})):
        regs[name] = reg = register(scan, model, **kw)
        reg_lmk = model.landmarks.static51.locate(reg.mesh.vertices, model.faces)
        row[name] = landmark_errors(reg_lmk, truth51)["all"]
        row[f"{name}_verdict"] = reg.verdict
        row[f"{name}_flipped"] = None
    reg = regs["detected"]
    row.update(detection_columns(reg), lmk=landmark_errors(np.asarray(reg.params.extras["landmarks_detected"]), truth51),
               ratio=row["detected"] / row["clicked"])
    return row


def in_model_head(model, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pose = np.zeros(15)
    pose[6] = rng.uniform(0.0, 0.25)
    with torch.no_grad():
        out = FLAME(model, dtype=torch.float64)(torch.as_tensor(rng.normal(0, 1, (1, model.n_shape))),
                                                torch.as_tensor(rng.normal(0, 1, (1, model.n_expression))),
                                                torch.as_tensor(pose[None]))
    return out.vertices[0].numpy()


def run_cases(model, generator, args):
    """``(kind, case, row)`` for every case of one model, as each is done; ``generator`` makes the
    generated heads."""
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    emb = model.landmarks.static51
    layer = FLAME(generator, dtype=torch.float64)
    for kind, seeds, scanner in (("held-out", HELD_OUT_SEEDS[:args.held_out], "default"),
                                 ("in-sample", TRAINING_SEEDS[:args.in_sample], "random")):
        for seed in seeds:
            head = expressive_head(generator, seed, layer, scanner, landmarks=emb)
            yield kind, f"{kind} {seed}", simulated_case(model, head.scan, head.vertices)
    truth = read_mesh(FLAME_FIX / "registered_mesh.ply").vertices
    for seed in args.seeds:
        sim = simulate_scan(truth, model.faces, emb.locate(truth, model.faces), eyes, seed=seed)
        yield "real head", f"real {seed}", simulated_case(model, sim, truth)
    if not args.no_james:
        yield "3dMD capture", "3dmd james", james_case(model)
    for seed in args.in_model:
        v = in_model_head(model, seed)
        sim = simulate_scan(v, model.faces, emb.locate(v, model.faces), eyes, seed=100 + seed)
        yield "in-model", f"in-model {seed}", simulated_case(model, sim, v)


def show(model_name: str, case: str, row: dict) -> None:
    lm = row["lmk"]
    fmt = "{:.2f}" if not case.startswith("in-model") else "{:.3f}"
    flips = "-" if row["clicked_flipped"] is None else f"{row['clicked_flipped']}/{row['detected_flipped']}"
    dist = "-" if row["distance"] is None else f"{row['distance']:.2f}"
    print(f"{model_name:<9} {case:<15} {fmt.format(row['clicked']):>7} {fmt.format(row['detected']):>8} "
          f"{row['ratio']:>5.2f} | {lm['all']:>5.2f} " + " ".join(f"{lm[g]:>5.2f}" for g in GROUPS)
          + f" | {flips:>5} {'yes' if row['corrected'] else 'no':>4} {dist:>5} {row['detect_s']:>5.2f}  "
          f"{row['clicked_verdict']}/{row['detected_verdict']}", flush=True)


def rng_text(values, fmt="{:.2f}") -> str:
    values = [v for v in values if v is not None]
    if not values:
        return ""
    lo, med, hi = min(values), float(np.median(values)), max(values)
    return fmt.format(med) if len(values) == 1 else f"{fmt.format(med)} ({fmt.format(lo)}–{fmt.format(hi)})"


def summary(results: dict[str, list[tuple[str, str, dict]]]) -> str:
    """The markdown table: per model and kind of case, medians (and ranges) over its cases."""
    header = ["model", "cases", "n", "clicked mm", "automatic mm", "ratio", "detected landmarks mm (51)",
              *GROUPS, "flipped (clicked/automatic, max)", "corrected", "verdicts ok (clicked/automatic)"]
    rows = []
    for model_name, cases in results.items():
        for kind in dict.fromkeys(k for k, _, _ in cases):
            rs = [r for k, _, r in cases if k == kind]
            fmt = "{:.3f}" if kind == "in-model" else "{:.2f}"
            paren = (lambda s: f"({s})") if kind == "3dMD capture" else (lambda s: s)  # noqa: E731
            flips = [r["clicked_flipped"] for r in rs if r["clicked_flipped"] is not None]
            rows.append([model_name, kind, len(rs), paren(rng_text([r["clicked"] for r in rs], fmt)),
                         paren(rng_text([r["detected"] for r in rs], fmt)), rng_text([r["ratio"] for r in rs]),
                         rng_text([r["lmk"]["all"] for r in rs]),
                         *[f"{np.median([r['lmk'][g] for r in rs]):.2f}" for g in GROUPS],
                         "-" if not flips else f"{max(flips)}/{max(r['detected_flipped'] for r in rs)}",
                         f"{sum(r['corrected'] for r in rs)}/{len(rs)}",
                         f"{sum(r['clicked_verdict'] == 'ok' for r in rs)}/{sum(r['detected_verdict'] == 'ok' for r in rs)}"])
    return markdown_table(header, rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["synthetic", "realshape"], choices=sorted(TOOLS))
    ap.add_argument("--held-out", type=int, default=24, help="generated heads from the held-out seeds")
    ap.add_argument("--in-sample", type=int, default=4, help="generated heads the correction was trained on")
    ap.add_argument("--seeds", type=int, nargs="*", default=list(range(6)), help="scan seeds of the real head")
    ap.add_argument("--in-model", type=int, nargs="*", default=[1, 2], help="in-model head seeds")
    ap.add_argument("--no-james", action="store_true", help="leave out the 3dMD capture")
    ap.add_argument("--convention", default="mica51", choices=sorted(EMBEDDINGS))
    ap.add_argument("--correction", default="default", choices=["default", "on", "off"],
                    help="run the learned landmark correction (default: as onflame does)")
    ap.add_argument("--write-docs", action="store_true", help="rewrite this benchmark's section of docs/benchmarks.md")
    args = ap.parse_args()
    os.environ[SWITCH] = args.correction
    with tempfile.TemporaryDirectory() as tmp:
        models = {name: load_test_model(Path(tmp), name, args.convention) for name in args.models}
        generator = models.get("realshape") or load_test_model(Path(tmp), "realshape", args.convention)
    named_detector("auto")  # load the detector once, outside the timed detections
    head = (f"{'model':<9} {'case':<15} {'clicked':>7} {'detected':>8} {'ratio':>5} | {'lmk':>5} "
            + " ".join(f"{g[:5]:>5}" for g in GROUPS) + f" | {'flips':>5} {'corr':>4} {'dist':>5} {'det s':>5}  verdicts")
    print(head + "\n" + "-" * len(head))
    t0 = time.perf_counter()
    results = {}
    for name, model in models.items():
        results[name] = []
        for kind, case, row in run_cases(model, generator, args):
            results[name].append((kind, case, row))
            show(name, case, row)
    table = summary(results)
    print(f"\nlandmark correction {'on' if correction_enabled() else 'off'}\n{table}\n\n{time.perf_counter() - t0:.0f} s")
    if args.write_docs:
        note = ("Per-vertex error in FLAME's face region (median mm over each case, then median and range over the "
                "cases); on the 3dMD capture (no true mesh) the registrations' landmarks against the human "
                "annotation. Detected landmarks: the 51 the fit used, against the truth's in the model's "
                f"convention ({args.convention}). Flipped: triangles facing against the truth's (where the truth "
                "does not fold against the model's template itself). Landmark "
                f"correction {'on' if correction_enabled() else 'off'}; corrected: the cases it ran on.")
        section = "registration_landmarks_corrected" if args.correction == "on" else "registration_landmarks"
        write_section(section, f"{table}\n\n{note}")


if __name__ == "__main__":
    main()
