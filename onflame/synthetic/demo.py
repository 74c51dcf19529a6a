"""``onflame demo``: the main job on the embedded default, end to end, on a fresh machine.

1. build onflame's procedural FLAME-structured head and write it in FLAME's own file formats
   (``generic_model.pkl`` with a chumpy-style ``shapedirs``, landmark embeddings, masks) and as a
   pickle-free ``.npz``;
2. write miniature raw releases of the eight source datasets in their native formats (FRGC range
   images, BU-3DFE and Florence VRML, Stirling OBJ with broken mtl lines, turned LYHM scans,
   FaceWarehouse quad meshes, ...; MICA's actor ids and capture names) and build the MICA tree from
   them with ``onflame build`` (every scan registered, resumable, all cores); score the registrations
   against the FLAME meshes the scans were made from (``onflame evaluate flame``: per-vertex error by
   region, cumulative error plot in ``evaluation/``);
3. simulate a raw scan (millimetres, random pose, holes, noise, 51 landmark clicks) of one subject
   and register it to the model, then refit the parameters of its registration (``fit-mesh``);
4. training inputs: render photos of one subset's subjects, detect and ArcFace-align them, write
   MICA's ``arcface_input`` and ``image_paths`` list, and load one training batch (needs the ``detect``
   extra; skipped with a note otherwise);
5. validate the dataset (registration vs FLAME(params) in mm, image lists against files), export
   all parameters to one file, and write the browsable report of the tree (``onflame report``).

Everything is deterministic and re-runnable: files that exist are kept.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from ..fileio import write_json


def run_demo(out: Path, json_output: bool = False, progress: bool = True) -> int:
    """Run the demo into ``out``; print a summary; return the exit code (0: everything validated).

    ``progress``: say on stderr what each step is doing while it runs (the build's n/N and time left).
    """
    t0 = time.perf_counter()
    out = Path(out)
    say = (lambda *a: None) if json_output else print
    doing = _Doing(progress)
    steps: dict = {}
    model, steps["model"] = _model(out / "model", say, doing)
    root = out / "mica"
    steps["build"] = _build(out, root, model, say, doing)
    steps["evaluation"] = _evaluate(out, root, model, say, doing)
    steps["registration"] = _register(out, root, model, say, doing)
    doing("[4/5] training inputs: rendering photos, detecting and aligning faces")
    steps["training_inputs"] = _training_inputs(out, root, model, say)
    ok = _check(out, root, steps, json_output, say, doing)
    steps["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(out / "demo_summary.json", steps)
    if json_output:
        print(json.dumps(steps, indent=2, default=str))
    else:
        print(f"\ndone in {steps['seconds']} s; summary: {out / 'demo_summary.json'}")
    return 0 if ok and steps["build"]["exit_code"] == 0 and not steps["evaluation"]["failures"] else 1


def _model(model_dir: Path, say, doing) -> tuple:
    """Step 1: the procedural head in FLAME's formats and onflame's; ``(model, summary)``."""
    from ..flame.model import load_model, save_model
    from .flame_files import save_flame_pkl, save_landmark_files
    from .head import make_head_model

    doing("[1/5] model: building onflame's procedural head and writing it in FLAME's file formats")
    model = make_head_model()
    if not (model_dir / "generic_model.pkl").exists():
        save_flame_pkl(model, model_dir / "generic_model.pkl")
        save_landmark_files(model, model_dir)
    if not (model_dir / "head_model.npz").exists():
        save_model(model, model_dir / "head_model.npz")
    reloaded = load_model(model_dir / "head_model.npz")
    say(f"[1/5] model: procedural FLAME-structured head, {model.n_vertices} vertices -> {model_dir}")
    return model, {"files": str(model_dir), **{k: reloaded.summary()[k] for k in ("vertices", "faces", "joints")}}


def _build(out: Path, root: Path, model, say, doing) -> dict:
    """Step 2: raw releases of the eight sources -> ``onflame build`` -> a MICA tree (with its model.npz)."""
    from ..dataset.names import BUILD_DIR
    from .raw_releases import build_all_synthetic

    doing(f"[2/5] build: writing raw releases of the eight sources -> {out / 'raw'}, then registering them")
    reports = build_all_synthetic(out, model, n_actors=3, echo=doing.build_line)
    doing.done()
    counts = {k: sum(r.count(k) for r in reports.values()) for k in ("registered", "suspect", "failed")}
    built = sum(r.built for r in reports.values())
    say(f"[2/5] build: raw releases of {len(reports)} sources in their native formats -> {out / 'raw'}; "
        f"registered {counts['registered']}, suspect {counts['suspect']}, failed {counts['failed']} "
        f"({built} built now) -> {root}")
    for r in reports.values():
        for line in r.problems:
            say(f"      ERROR {line}")
    return {"raw": str(out / "raw"), "root": str(root), "subsets": len(reports), **counts, "built_now": built,
            "exit_code": max(r.exit_code for r in reports.values()),
            "summaries": {k: str(Path(r.out) / BUILD_DIR / "summary.txt") for k, r in reports.items()}}


def _evaluate(out: Path, root: Path, model, say, doing) -> dict:
    """Step 2, continued: the build's registrations scored against the FLAME meshes its scans were made from."""
    from ..evaluation.flame_topology import evaluate_flame

    doing("      evaluate: scoring the registrations against the meshes the scans were made from")
    scored = evaluate_flame([("onflame build", root)], out / "truth", out / "evaluation", model=model)
    rows = scored.rows["onflame build"]["all"]
    face = rows["face"]
    say(f"      evaluate: {rows['items']} registrations vs their truths -> per-vertex error in the face median "
        f"{face['median_mm']:.2f} mm (mean {face['mean_mm']:.2f}, p95 {face['p95_mm']:.2f}); "
        f"cumulative plot -> {scored.outputs['curve_face_png']}")
    return {"truth": str(out / "truth"), "registrations": rows["items"], "per_vertex_error_face": face,
            "regions": rows["regions"], "failures": scored.failures["onflame build"], "outputs": scored.outputs}


def _register(out: Path, root: Path, model, say, doing) -> dict:
    """Step 3: a simulated raw scan of one subject registered back, then its parameters refitted."""
    from ..evaluation.metrics import error_summary, per_vertex_error
    from ..flame.params import read_params
    from ..mesh import read_mesh, write_ply
    from ..registration import fit_mesh, register, save_registration
    from .scans import simulate_scan

    doing("[3/5] register: simulating a raw scan of one subject and registering it")
    truth = read_mesh(root / "BU3DFE" / "registrations" / "F0001" / "F0001_NE00WH_RAW.obj").vertices
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    scan = simulate_scan(truth, model.faces, model.landmarks.static51.locate(truth, model.faces), eyes, seed=7)
    scan_dir = out / "scans"
    write_ply(scan_dir / "F0001_scan.ply", scan.scan)
    np.save(scan_dir / "F0001_scan_landmarks.npy", scan.landmarks)
    reg = register(read_mesh(scan_dir / "F0001_scan.ply"), model, landmarks=scan.landmarks)
    paths = save_registration(reg, out / "registered", "F0001_scan")
    read_params(paths["params"])  # the written parameters read back through the validating reader
    err = error_summary(per_vertex_error(reg.mesh.vertices, truth, model.masks.get("face")))
    q = reg.quality.numbers
    say(f"[3/5] registration of a simulated raw scan ({scan.scan.n_vertices} vertices, {scan.units}, random pose): "
        f"{reg.verdict}; units detected: {reg.report()['units']}; scan-to-mesh median {q['scan_to_mesh_median_mm']:.2f} mm; "
        f"per-vertex error vs truth median {err['median_mm']:.2f} mm (p95 {err['p95_mm']:.2f}); "
        f"{reg.timings['total']:.1f} s -> {paths['params']}")
    return {**reg.report(), "per_vertex_error_vs_truth": err, "outputs": paths,
            "fit_mesh": fit_mesh(reg.mesh, model).summary()}


def _check(out: Path, root: Path, steps: dict, json_output: bool, say, doing) -> bool:
    """Step 5: validate the tree (image lists included), export its parameters, write its report; True
    when the tree validates."""
    from ..dataset.export import export_params
    from ..dataset.validate import validate_root
    from ..report import write_report

    doing("[5/5] validate, export and report")
    report = validate_root(root)
    export = export_params(root, out / "all_params.npz")
    steps["validate"] = {"ok": report.ok, "errors": len(report.errors), "warnings": len(report.warnings)}
    steps["export"] = {"out": export["out"], "subjects": export["subjects"]}
    say(f"[5/5] validate: {'ok' if report.ok else 'ERRORS'} ({len(report.errors)} errors, {len(report.warnings)} warnings); "
        f"export: {export['subjects']} subjects -> {export['out']}")
    if not json_output:
        print()
        print(report.format_table())
    site = write_report(root, out / "report")
    steps["report"] = {"index": str(site.index), "drawn": site.drawn, "reused": site.cached,
                       "seconds": round(site.seconds, 2)}
    say(f"\nreport: {sum(c['subjects'] for c in site.counts.values())} subjects, pictures drawn {site.drawn} "
        f"(reused {site.cached}) in {site.seconds:.1f} s; open {site.index.resolve()}")
    return report.ok


def _training_inputs(out: Path, root: Path, model, say) -> dict:
    """Step 4: photos → ArcFace inputs and image list for BU3DFE → one training batch."""
    from ..detection import DetectorUnavailable
    from ..flame.params import read_params
    from ..training.dataset import MicaDataset, collate_samples
    from ..training.prepare import prepare_subset
    from .photos import render_photos

    subset = "BU3DFE"
    photos = out / "photos" / subset
    for npz in sorted((root / subset / "FLAME_parameters").glob("*/*.npz")):
        render_photos(model, read_params(npz), photos / npz.parent.name, n=6, seed=len(npz.parent.name))
    try:
        report = prepare_subset(root, subset, photos, progress=False)
    except DetectorUnavailable as exc:
        say(f"[4/5] training inputs: skipped ({exc}); install with: pip install -e '.[detect]'")
        return {"skipped": str(exc)}
    data = MicaDataset(root, subset, K=4)
    batch = collate_samples([data[i] for i in range(min(2, len(data)))])
    shapes = {"image": list(batch["image"].shape), "arcface": list(batch["arcface"].shape),
              **{k: list(v.shape) for k, v in batch["flame"].items()}}
    summary = report.to_dict()
    say(f"[4/5] training inputs: {subset} photos rendered -> {photos}; aligned and listed -> "
        f"{root / 'image_paths' / (subset + '.npy')}; one batch: " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()))
    return {"photos": str(photos), "image_list": str(root / "image_paths" / f"{subset}.npy"), "batch": shapes,
            "prepare": {k: summary[k] for k in summary if k in ("photos_in", "aligned", "skipped", "totals")}}


class _Doing:
    """What the demo is doing, on stderr while it runs (nothing when ``enabled`` is False): a line per step,
    and the build's progress (n/N, time left) from its per-scan lines."""

    def __init__(self, enabled: bool):
        self.enabled, self.progress = enabled, None

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(line, file=sys.stderr, flush=True)

    def build_line(self, line: str) -> None:
        """The build's lines: the first says how many scans it builds, then one per scan."""
        from ..progress import Progress

        if not self.enabled:
            return
        if self.progress is None:
            found = re.match(r"\d+ scan\(s\), (\d+) to build", line)
            self.progress = Progress(int(found.group(1)) if found else 0, "      build")
            return
        self.progress.advance(line)

    def done(self) -> None:
        if self.progress is not None:
            self.progress.close()
