#!/usr/bin/env python3
"""Registration accuracy and speed: onflame beside trimesh's non-rigid ICP, same scans, same run.

Two test models, each a user's FLAME folder (``generic_model.pkl`` with MICA's landmark embedding and
FLAME's masks beside it): ``synthetic`` (``../shared/tools/make_synthetic_flame.py``: FLAME's topology,
synthetic shape, expression and pose spaces) and ``realistic`` (``../shared/tools/make_realshape_flame.py``:
FLAME 2023 Open's mean head and first 60 identity components, learned from real scans).

Ground truth: realistic scans simulated from FLAME-topology meshes (``onflame.synthetic.scans``: a frontal
scanner's view without eyeballs, resampled to ~52k vertices, 0.2 mm normal noise, tangential jitter,
holes, random rigid pose, millimetres, 51 landmark clicks with 1 mm noise):

- ``in-model <seed>``: a head sampled from the model (identity, expression, jaw);
- ``real head``: ``../shared/fixtures/flame/registered_mesh.ply``, a real person with an open mouth that
  neither model explains exactly.

Rows, each named for what it runs:

- ``onflame, clicked landmarks``: ``register(scan, model, landmarks=clicks)``;
- ``onflame, detected landmarks``: no clicks, ``auto_landmarks="detect"`` (MediaPipe on renders of the
  scan; needs the ``detect`` extra, else the row says so);
- ``onflame, geometry only``: no clicks, ``auto_landmarks="geometry"`` (no detector);
- ``trimesh nricp_sumner`` / ``nricp_amberg``: started from the mean head placed by an Umeyama similarity on
  the same clicks, with trimesh's defaults and tuned (5 mm distance threshold, eyeballs left out); trimesh
  is given the scan in metres. They give no FLAME parameters.

Scores: per-vertex error in FLAME's ``face`` region after a rigid (no scale) alignment to the truth
(median and p95, mm); the scan→registration distance exactly as onflame's verdict measures it
(:data:`onflame.registration.quality.SCAN_POINTS`, median, mm); folds (triangles facing against FLAME's
template posed as the registration; the truth's own in brackets); seconds in-process (wall, and CPU
where the machine is shared: timings of a shared machine vary; the clicked row's the median of three
runs, the others one run); for the clicked row the seconds of
``onflame register`` run as a user runs it (a fresh process: start-up, imports, model, registration,
outputs; wall and CPU, the median of seven runs after one that makes the model's pickle-free copies)
and the median per-vertex error of the mesh its FLAME parameters give (``params``). The first
registration of each model in the process is not timed (its line reports it): it lays the model out
for fitting.

usage: python benchmarks/registration.py [--models synthetic realistic] [--cases in-model real]
       [--seeds 1 2] [--skip-defaults] [--no-trimesh] [--no-detect] [--no-geometry] [--write-docs]
"""
from __future__ import annotations

import argparse
import compileall
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh

import onflame
from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import load_model_with_assets
from onflame.geometry import apply_rigid, flipped_against, rigid_fit
from onflame.mesh import read_mesh, write_ply
from onflame.registration import register
from onflame.registration.correspond import ScanIndex
from onflame.registration.eyes import piercing
from onflame.registration.gauss_newton import FitState, make_layer, vertices
from onflame.registration.quality import scan_to_registration
from onflame.synthetic.scans import simulate_scan

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
MODELS = {"synthetic": "make_synthetic_flame.py", "realistic": "make_realshape_flame.py"}


def load_test_model(name: str, tmp: Path):
    """A test model as a user's FLAME folder: ``generic_model.pkl`` with MICA's embedding and FLAME's
    masks beside it (the folder the command-line runs are given)."""
    folder = tmp / name
    folder.mkdir()
    pkl = folder / "generic_model.pkl"
    subprocess.run([sys.executable, str(SHARED / "tools" / MODELS[name]), str(pkl)], check=True, capture_output=True)
    for f in ("landmark_embedding.npy", "FLAME_masks.pkl"):
        shutil.copy(FLAME_FIX / f, folder / f)
    return load_model_with_assets(pkl), pkl


def truths(model, cases, seeds):
    """``(case, truth vertices (V, 3) m, seed, true FitState or None)`` for each case."""
    flame = make_layer(model)
    for case in cases:
        if case == "real":
            yield "real head", read_mesh(FLAME_FIX / "registered_mesh.ply").vertices, 0, None
            continue
        for seed in seeds:
            rng = np.random.default_rng(seed)
            st = FitState(rng.normal(0, 1, 300), rng.normal(0, 1, 100), np.zeros(15), np.zeros(3))
            st.pose[6] = rng.uniform(0.0, 0.25)
            yield f"in-model {seed}", vertices(flame, st), seed, st


def score(reg_v, truth, scan_m, scan_border, model, pose=None) -> dict:
    """Face error (mm, median and p95), scan→registration median (mm, onflame's definition), folds."""
    face = model.masks["face"]
    err = per_vertex_error(reg_v, truth, face) * 1000
    s2m = scan_to_registration(scan_m.vertices, scan_border, reg_v, model.faces, face).face_mm()
    return {"median": float(np.median(err)), "p95": float(np.percentile(err, 95)),
            "s2m": float(np.median(s2m)), "folds": folds(reg_v, model, pose)}


def folds(v, model, pose=None) -> int:
    """Triangles facing against FLAME's template posed as ``pose`` (15,) (rest pose for None), after a
    rigid alignment of the template to ``v`` (V, 3): folds of the surface."""
    st = FitState(np.zeros(model.n_shape), np.zeros(model.n_expression), np.zeros(15) if pose is None else pose,
                  np.zeros(3))
    tmpl = vertices(make_layer(model), st)
    R, t, _ = rigid_fit(tmpl, v)
    return int(flipped_against(v, model.faces, apply_rigid(tmpl, R, t)).sum())


def piercing_eyeballs(v, model) -> int:
    """Eyeball vertices in front of the lid skin (:func:`onflame.registration.eyes.piercing`)."""
    eyes = [model.masks["left_eyeball"], model.masks["right_eyeball"]]
    lids = np.setdiff1d(model.masks["eye_region"], np.concatenate(eyes))
    lid_faces = model.faces[np.isin(model.faces, lids).all(1)]
    return int(sum(piercing(v, e, lid_faces).sum() for e in eyes))


def params_error(reg, truth, model) -> float:
    """Median per-vertex error (mm, face) of the mesh the registration's FLAME parameters give."""
    p = reg.params
    v = vertices(make_layer(model), FitState(p.shape, p.expression, p.pose, p.trans))
    return float(np.median(per_vertex_error(v, truth, model.masks["face"]))) * 1000


def timed(fn):
    """``(result, wall seconds, CPU seconds)`` of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def median_timed(fn, repeats: int):
    """``(result, wall, CPU)``: ``fn()``'s result and the median seconds of ``repeats`` runs."""
    runs = [timed(fn) for _ in range(repeats)]
    return runs[-1][0], float(np.median([r[1] for r in runs])), float(np.median([r[2] for r in runs]))


#: Timed runs of ``onflame register`` per case (after one untimed).
CLI_RUNS = 7


def cli_seconds(pkl: Path, scan: Path, landmarks: Path, out: Path) -> tuple[float, float]:
    """``(wall, CPU)`` seconds of ``onflame register`` as a user runs it (a fresh process): the median of
    :data:`CLI_RUNS` runs after one that makes the model's and the embedding's pickle-free copies (one
    run varies by up to a fifth on a quiet 2-core machine). onflame's
    bytecode is compiled first, as pip does at install and Python at a first run (an environment with
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module on every run)."""
    compileall.compile_dir(Path(onflame.__file__).parent, quiet=1)
    cmd = [sys.executable, "-m", "onflame.cli", "register", str(scan), "--model", str(pkl),
           "--landmarks", str(landmarks), "--out", str(out)]
    runs = []
    for _ in range(CLI_RUNS + 1):
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        runs.append((time.perf_counter() - t0, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
        shutil.rmtree(out, ignore_errors=True)
    return float(np.median([w for w, _ in runs[1:]])), float(np.median([c for _, c in runs[1:]]))


def run_trimesh(kind, model, scan_m, lmk_m, tuned):
    src = model.v_template
    emb = model.landmarks.static51
    R, t, s = rigid_fit(emb.locate(src, model.faces), lmk_m, scale=True)  # Umeyama similarity from the same landmarks
    placed = apply_rigid(src, R, t, s)
    faces, keep, landmarks = model.faces, np.arange(len(src)), (emb.face_idx, emb.bary)
    if tuned:  # leave the eyeballs out of the source mesh
        eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
        keep = np.setdiff1d(np.arange(len(src)), eyes)
        remap = np.full(len(src), -1)
        remap[keep] = np.arange(len(keep))
        ok = (remap[faces] >= 0).all(1)
        landmarks = ((np.cumsum(ok) - 1)[emb.face_idx], emb.bary)
        faces = remap[faces[ok]]
    source = trimesh.Trimesh(placed[keep], faces, process=False)
    target = trimesh.Trimesh(scan_m.vertices, scan_m.faces, process=False)
    fn = trimesh.registration.nricp_amberg if kind == "amberg" else trimesh.registration.nricp_sumner
    kw = {"distance_threshold": 0.005} if tuned else {}
    out, wall, cpu = timed(lambda: fn(source, target, source_landmarks=landmarks, target_positions=lmk_m, **kw))
    full = placed.copy()
    full[keep] = out
    return full, wall, cpu


def onflame_rows(model, sim, truth, true_state, scan_m, border, a) -> list[dict]:
    """The onflame rows of one case (see the module docstring)."""
    runs = [("onflame, clicked landmarks", {"landmarks": sim.landmarks})]
    if not a.no_detect:
        runs.append(("onflame, detected landmarks", {"auto_landmarks": "detect"}))
    if not a.no_geometry:
        runs.append(("onflame, geometry only", {"auto_landmarks": "geometry"}))
    rows = []
    for name, kw in runs:
        repeats = 3 if "clicked" in name else 1  # the row the CLI and trimesh are compared with: a median
        try:
            reg, wall, cpu = median_timed(lambda: register(sim.scan, model, **kw), repeats)
        except Exception as exc:  # noqa: BLE001  the detector may be missing: the row says why
            rows.append({"method": name, "error": str(exc).splitlines()[0][:120]})
            continue
        rows.append({"method": name, **score(reg.mesh.vertices, truth, scan_m, border, model, reg.params.pose),
                     "wall": wall, "cpu": cpu, "verdict": reg.verdict, "params": params_error(reg, truth, model),
                     "timings": reg.timings})
    return rows


def run_case(model, pkl, case, truth, seed, true_state, a, tmp: Path) -> list[dict]:
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    lm = model.landmarks.static51.locate(truth, model.faces)
    sim = simulate_scan(truth, model.faces, lm, eyes, seed=100 + seed, subdivisions=2)
    scan_m, lmk_m = sim.scan.with_vertices(sim.scan.vertices / sim.scale), sim.landmarks / sim.scale
    border = ScanIndex.build(scan_m.vertices, scan_m.faces).border
    print(f"{case}: scan {sim.scan.n_vertices} vertices, {sim.units}", flush=True)
    rows = onflame_rows(model, sim, truth, true_state, scan_m, border, a)
    write_ply(tmp / "scan.ply", sim.scan)
    np.save(tmp / "scan_lmk.npy", sim.landmarks)
    rows[0]["cli"] = cli_seconds(pkl, tmp / "scan.ply", tmp / "scan_lmk.npy", tmp / "out")
    for kind in (() if a.no_trimesh else ("sumner", "amberg")):
        for tuned in ((True,) if a.skip_defaults else (True, False)):
            v, wall, cpu = run_trimesh(kind, model, scan_m, lmk_m, tuned)
            rows.append({"method": f"trimesh nricp_{kind} ({'tuned' if tuned else 'defaults'})",
                         **score(v, truth, scan_m, border, model), "wall": wall, "cpu": cpu})
    truth_folds = folds(truth, model, None if true_state is None else true_state.pose)
    return [{"case": case, "truth_folds": truth_folds, **r} for r in rows]


def table(model_rows: dict[str, list[dict]]) -> str:
    """The markdown table of all rows (see the module docstring for the columns)."""
    from doc_tables import markdown_table

    out = []
    for model_name, rows in model_rows.items():
        last = None
        for r in rows:
            head = [model_name if last is None else "", r["case"] if r["case"] != last else ""]
            last = r["case"]
            if "error" in r:
                out.append(head + [r["method"], f"not run: {r['error']}"] + [""] * 6)
                continue
            ours = next(x for x in rows if x["case"] == r["case"] and x["method"] == "onflame, clicked landmarks")
            folds_cell = f"{r['folds']} ({r['truth_folds']})" if r["method"].startswith("onflame, clicked") else str(r["folds"])
            faster = f"{r['wall'] / ours['wall']:.2f}×" if r["method"].startswith("trimesh") else ""
            out.append(head + [r["method"], f"{r['median']:.3f} ({r['p95']:.2f})", f"{r['s2m']:.3f}", folds_cell,
                               f"{r['wall']:.2f} ({r['cpu']:.2f})", f"{r['cli'][0]:.2f} ({r['cli'][1]:.2f})" if "cli" in r else "",
                               f"{r['params']:.3f}" if "params" in r else "", faster])
    return markdown_table(["model", "case", "method", "face error median mm (p95)", "scan→mesh median mm",
                           "folds (truth's)", "s in-process, wall (CPU)", "`onflame register` s, wall (CPU)",
                           "params mm", "onflame faster by"], out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--cases", nargs="+", default=["in-model", "real"], choices=["in-model", "real"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--skip-defaults", action="store_true", help="skip trimesh's default settings (slow)")
    ap.add_argument("--no-trimesh", action="store_true", help="onflame only")
    ap.add_argument("--no-detect", action="store_true", help="skip the detected-landmarks row")
    ap.add_argument("--no-geometry", action="store_true", help="skip the geometry-only row")
    ap.add_argument("--write-docs", action="store_true", help="rewrite this benchmark's section of docs/benchmarks.md")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="onflame-bench-"))
    model_rows = {}
    try:
        for name in a.models:
            model, pkl = load_test_model(name, tmp)
            cases = list(truths(model, a.cases, a.seeds))
            scan0, clicks0 = _first_scan(model, cases[0][1])
            first = timed(lambda: register(scan0, model, landmarks=clicks0))
            print(f"{name}: first registration in the process {first[1]:.2f} s wall (lays the model out), "
                  f"later ones below", flush=True)
            model_rows[name] = [r for c in cases for r in run_case(model, pkl, *c, a, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    md = table(model_rows)
    print()
    print(md)
    for name, rows in model_rows.items():
        for r in rows:
            if r["method"] == "onflame, clicked landmarks":
                steps = ", ".join(f"{k} {v:.2f}" for k, v in r["timings"].items())
                print(f"{name}, {r['case']}: {r['verdict']}; seconds: {steps}; CLI / in-process "
                      f"{r['cli'][0] / r['wall']:.2f} (wall), {r['cli'][1] / r['cpu']:.2f} (CPU)")
    if a.write_docs:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from doc_tables import write_section

        write_section("registration", md)


def _first_scan(model, truth):
    """A scan and its clicks for the untimed first registration of a model."""
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    sim = simulate_scan(truth, model.faces, model.landmarks.static51.locate(truth, model.faces), eyes, seed=99)
    return sim.scan, sim.landmarks


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
