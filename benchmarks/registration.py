#!/usr/bin/env python3
"""Registration accuracy and speed: onflame beside trimesh's non-rigid ICP, same scans, same run.

Ground truth: realistic scans simulated from FLAME-topology meshes (``onflame.synthetic.scans``: a
frontal scanner's view without eyeballs, resampled to a denser topology, 0.2 mm normal noise, tangential
jitter, holes, random rigid pose, millimetres, 51 landmark clicks with 1 mm noise):

- ``in-model``: heads sampled from the FLAME-structured test model (shape, expression, jaw);
- ``real``: ``../shared/fixtures/flame/registered_mesh.ply``, a real person with an open mouth that the
  synthetic test model cannot explain.

Score: per-vertex error in FLAME's ``face`` region after a rigid (no scale) alignment to the truth,
median and mean scan-to-registration distance in the face (mm), landmark residual, triangles flipped
against the truth's (``flipped``), folds (triangles facing against FLAME's template posed as the
registration; the truth's own are printed too), eyeball vertices in front of the lids (``pierce``),
time in-process and the wall time of ``onflame register`` run as a user runs it (a fresh process);
for onflame also its FLAME parameters: the median per-vertex error of the mesh they give (``params mm``)
and, on in-model heads, the jaw rotation's error (``jaw °``). The peer, which gives no parameters:
trimesh ``nricp_amberg`` and ``nricp_sumner``, started from the mean head placed by an Umeyama similarity
on the same landmarks, with default settings and with a tuned one (5 mm distance threshold, eyeballs
left out); trimesh is given the scan in metres.

``--subdivisions 3`` or ``4`` resamples the scans denser (200k / 820k vertices) with the same noise.

usage: python benchmarks/registration.py [--cases in-model real] [--seeds 1 2] [--skip-defaults]
                                         [--subdivisions 2] [--no-trimesh]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from onflame.evaluation.metrics import per_vertex_error
from onflame.flame import load_model_with_assets
from onflame.geometry import apply_rigid, count_flipped, rigid_fit
from onflame.mesh import read_mesh, write_ply
from onflame.registration import register
from onflame.registration.eyes import piercing
from onflame.registration.fit import FitState, make_layer, vertices
from onflame.synthetic.scans import simulate_scan

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"


def load_test_model(tmp: Path):
    """The test model as a user's FLAME folder: ``generic_model.pkl`` with MICA's embedding and FLAME's
    masks beside it (the folder the command-line runs are given)."""
    pkl = tmp / "generic_model.pkl"
    subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(pkl)], check=True,
                   capture_output=True)
    for name in ("landmark_embedding.npy", "FLAME_masks.pkl"):
        shutil.copy(FLAME_FIX / name, tmp / name)
    return load_model_with_assets(pkl), pkl


def truths(model, cases, seeds):
    """``(case, truth vertices (V, 3) m, seed, true FitState or None)`` for each case."""
    flame = make_layer(model)
    for case in cases:
        if case == "real":
            yield "real", read_mesh(FLAME_FIX / "registered_mesh.ply").vertices, 0, None
            continue
        for seed in seeds:
            rng = np.random.default_rng(seed)
            st = FitState(rng.normal(0, 1, 300), rng.normal(0, 1, 100), np.zeros(15), np.zeros(3))
            st.pose[6] = rng.uniform(0.0, 0.25)
            yield f"in-model {seed}", vertices(flame, st), seed, st


def parameter_scores(reg, truth, true_state, model) -> dict:
    """How well the registration's FLAME parameters explain the truth: the per-vertex error (mm, face,
    after a rigid alignment) of the FLAME mesh they give, and the jaw rotation's error (degrees) where
    the true parameters are known."""
    with torch.no_grad():
        v = make_layer(model)(reg.params).vertices[0].numpy()
    out = {"params": float(np.median(per_vertex_error(v, truth, model.masks["face"]))) * 1000}
    if true_state is not None:
        out["jaw"] = float(np.degrees(np.linalg.norm(reg.params.pose[6:9] - true_state.pose[6:9])))
    return out


def score(name, reg_v, truth, scan_m, model, lmk_m, seconds, pose=None):
    face = model.masks["face"]
    err = per_vertex_error(reg_v, truth, face) * 1000
    # scan -> registration: scan points in the face, distance to the registration surface
    tm = trimesh.Trimesh(reg_v * 1000, model.faces, process=False)  # mm: trimesh's tolerances are absolute
    d, j = cKDTree(reg_v).query(scan_m)
    in_face = np.isin(j, face) & (d < 0.005)
    _, dist, _ = trimesh.proximity.closest_point(tm, scan_m[in_face] * 1000)
    lmk = model.landmarks.static51.locate(reg_v, model.faces)
    return {"method": name, "median": np.median(err), "p95": np.percentile(err, 95),
            "scan_to_mesh": dist.mean(), "scan_to_mesh_median": np.median(dist), "lmk": np.median(np.linalg.norm(lmk - lmk_m, axis=1)) * 1000,
            "flipped": flipped_vs_truth(reg_v, truth, model), "folds": folds(reg_v, model, pose),
            "pierce": piercing_eyeballs(reg_v, model), "seconds": seconds}


def flipped_vs_truth(reg_v, truth, model):
    """Triangles facing the other way than the same triangle of the truth (after a rigid alignment),
    eyeballs included (both meshes have them)."""
    face = model.masks["face"]
    R, t, _ = rigid_fit(reg_v[face], truth[face])
    return count_flipped(model.faces, truth, apply_rigid(reg_v, R, t))


def folds(v, model, pose=None):
    """Triangles facing against FLAME's template posed as ``pose`` (15,) (rest pose for None), after a
    rigid alignment of the template to ``v`` (V, 3): folds of the surface."""
    st = FitState(np.zeros(model.n_shape), np.zeros(model.n_expression), np.zeros(15) if pose is None else pose,
                  np.zeros(3))
    tmpl = vertices(make_layer(model), st)
    R, t, _ = rigid_fit(tmpl, v)
    return count_flipped(model.faces, apply_rigid(tmpl, R, t), v)


def piercing_eyeballs(v, model):
    """Eyeball vertices in front of the lid skin (:func:`onflame.registration.eyes.piercing`)."""
    eyes = [model.masks["left_eyeball"], model.masks["right_eyeball"]]
    lids = np.setdiff1d(model.masks["eye_region"], np.concatenate(eyes))
    lid_faces = model.faces[np.isin(model.faces, lids).all(1)]
    return int(sum(piercing(v, e, lid_faces).sum() for e in eyes))


def cli_seconds(pkl: Path, scan: Path, landmarks: Path, out: Path) -> float:
    """Wall time of ``onflame register`` as a user runs it (a fresh process: start-up, imports, model,
    registration, outputs; the model's pickle-free copy already made by an earlier run)."""
    cmd = [sys.executable, "-m", "onflame.cli", "register", str(scan), "--model", str(pkl),
           "--landmarks", str(landmarks), "--out", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def run_trimesh(kind, model, scan_m, lmk_m, tuned):
    src = model.v_template
    lm_src = model.landmarks.static51.locate(src, model.faces)
    R, t, s = rigid_fit(lm_src, lmk_m, scale=True)  # Umeyama similarity from the same landmarks
    placed = apply_rigid(src, R, t, s)
    faces, keep = model.faces, np.arange(len(src))
    emb = model.landmarks.static51
    if tuned:  # leave the eyeballs out of the source mesh
        eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
        keep = np.setdiff1d(np.arange(len(src)), eyes)
        remap = np.full(len(src), -1)
        remap[keep] = np.arange(len(keep))
        ok = (remap[faces] >= 0).all(1)
        new_face_id = np.cumsum(ok) - 1
        faces = remap[faces[ok]]
        lmk_faces = new_face_id[emb.face_idx]
        landmarks = (lmk_faces, emb.bary)
    else:
        landmarks = (emb.face_idx, emb.bary)
    source = trimesh.Trimesh(placed[keep], faces, process=False)
    target = trimesh.Trimesh(scan_m.vertices, scan_m.faces, process=False)
    fn = trimesh.registration.nricp_amberg if kind == "amberg" else trimesh.registration.nricp_sumner
    kw = {"distance_threshold": 0.005} if tuned else {}
    t0 = time.perf_counter()
    out = fn(source, target, source_landmarks=landmarks, target_positions=lmk_m, **kw)
    seconds = time.perf_counter() - t0
    full = placed.copy()
    full[keep] = out
    return full, seconds


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=["in-model", "real"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--skip-defaults", action="store_true", help="skip trimesh's default settings (slow)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--subdivisions", type=int, default=2, help="scan resampling density (2: ~52k vertices)")
    ap.add_argument("--no-trimesh", action="store_true", help="onflame only (trimesh is slow on dense scans)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="onflame-bench-"))
    model, pkl = load_test_model(tmp)
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    rows, cli = [], {}
    for case, truth, seed, true_state in truths(model, a.cases, a.seeds):
        lm = model.landmarks.static51.locate(truth, model.faces)
        sim = simulate_scan(truth, model.faces, lm, eyes, seed=100 + seed, subdivisions=a.subdivisions)
        scan_m = sim.scan.with_vertices(sim.scan.vertices / sim.scale)
        lmk_m = sim.landmarks / sim.scale
        print(f"{case}: scan {sim.scan.n_vertices} vertices, {sim.units}", flush=True)
        for with_lmk in (True, False):
            t0 = time.perf_counter()
            reg = register(sim.scan, model, landmarks=sim.landmarks if with_lmk else None)
            secs = time.perf_counter() - t0
            r = score("onflame" + ("" if with_lmk else " (no landmarks)"), reg.mesh.vertices,
                      truth, scan_m.vertices, model, lmk_m, secs, reg.params.pose)
            rows.append((case, {**r, **parameter_scores(reg, truth, true_state, model)}))
        write_ply(tmp / "scan.ply", sim.scan)
        np.save(tmp / "scan_lmk.npy", sim.landmarks)
        cli[case] = cli_seconds(pkl, tmp / "scan.ply", tmp / "scan_lmk.npy", tmp / "out")
        for kind in (() if a.no_trimesh else ("amberg", "sumner")):
            for tuned in ((True,) if a.skip_defaults else (False, True)):
                v, secs = run_trimesh(kind, model, scan_m, lmk_m, tuned)
                rows.append((case, score(f"trimesh {kind} ({'tuned' if tuned else 'defaults'})", v, truth,
                                         scan_m.vertices, model, lmk_m, secs)))
        rows.append((case, {"method": "truth", "folds": folds(truth, model, None if true_state is None else true_state.pose),
                            "pierce": piercing_eyeballs(truth, model)}))
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'case':12s} {'method':30s} {'median mm':>9s} {'p95 mm':>7s} {'s→m median':>10s} {'s→m mean':>8s} "
          f"{'lmk mm':>7s} {'flipped':>7s} {'folds':>5s} {'pierce':>6s} {'s':>6s} {'median vs ours':>14s} "
          f"{'s vs ours':>9s} {'params mm':>9s} {'jaw °':>6s}")
    ours = {c: r for c, r in rows if r["method"] == "onflame"}
    for case, r in rows:
        if r["method"] == "truth":
            print(f"{case:12s} {'(the truth itself)':30s} {'':>9s} {'':>7s} {'':>10s} {'':>8s} {'':>7s} {'':>7s} "
                  f"{r['folds']:5d} {r['pierce']:6d}")
            continue
        print(f"{case:12s} {r['method']:30s} {r['median']:9.3f} {r['p95']:7.3f} {r['scan_to_mesh_median']:10.3f} "
              f"{r['scan_to_mesh']:8.3f} "
              f"{r['lmk']:7.2f} {r['flipped']:7d} {r['folds']:5d} {r['pierce']:6d} {r['seconds']:6.2f} "
              f"{r['median'] / ours[case]['median']:13.2f}x {r['seconds'] / ours[case]['seconds']:8.2f}x "
              f"{_cell(r.get('params'), 9, 3)} {_cell(r.get('jaw'), 6, 2)}")
    print()
    for case, secs in cli.items():
        tuned = next((r["seconds"] for c, r in rows if c == case and r["method"] == "trimesh sumner (tuned)"), None)
        line = f"{case}: `onflame register` wall {secs:.2f} s (in-process {ours[case]['seconds']:.2f} s)"
        if tuned is not None:
            line += f"; tuned nricp_sumner {tuned:.2f} s in-process = {tuned / ours[case]['seconds']:.2f}x ours"
        print(line)


def _cell(x, width: int, digits: int) -> str:
    return f"{'—':>{width}s}" if x is None else f"{x:{width}.{digits}f}"


if __name__ == "__main__":
    main()
