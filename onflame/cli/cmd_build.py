"""Commands that make a MICA tree: ``build`` (raw release -> registrations), ``prepare`` (photos -> ArcFace
inputs and image list) and ``demo`` (all of it on onflame's procedural head)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, chatty, note, print_json, say_error
from .model import describe, load_for, model_option, require_model
from .options import add_json, add_model, add_workers, detector, landmark_convention, landmark_template, score, source, subset

BUILD_EXAMPLES = """examples:
  onflame build --source BU3DFE --raw /data/BU-3DFE --out MICA --model FLAME2020/
  onflame build --source FRGC --raw /data/FRGC_v2 --out MICA --image-list image_paths/FRGC.npy
  onflame build --source LYHM --raw /data/LYHM --out MICA --executor ray --address auto
  onflame build --source STIRLING --raw /data/Stirling --out MICA --landmarks 'clicks/{actor}/{stem}.pp'

exit codes: 0 every scan registered (ok or suspect), 1 a scan failed (the others go on; a re-run redoes
only what is missing or changed), 2 bad usage (no model, an unwritable --out, ...: before any work),
130 interrupted (a re-run resumes), 143 terminated."""

PREPARE_EXAMPLES = """examples:
  onflame prepare MICA --subset FLORENCE --photos /data/Florence/photos
  onflame prepare MICA --subset STIRLING --photos /data/Stirling/images --detector insightface \\
      --detector-models ~/.insightface/models/antelopev2

exit codes: 0 every photo aligned or left out by the subset's rules, 1 unreadable photos or actors left
out of the image list (each named), 2 bad usage, 130 interrupted, 143 terminated."""


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("build", parents=parents,
                       help="register every scan of a raw source release into a MICA subset (resumable, parallel, Ray)",
                       description="Register every scan of a raw source release into ROOT/<SUBSET>/: FLAME_parameters/, "
                                   "registrations/ and build/ (per-scan reports, summary.txt/.json, a manifest that "
                                   "lets a re-run redo only what is missing or changed).",
                       epilog=BUILD_EXAMPLES)
    p.add_argument("--source", required=True, type=source,
                   help="source dataset: BP4D, BU3DFE, D3DFACS, FACEWAREHOUSE, FLORENCE, FRGC, LYHM, STIRLING (any "
                        "case; BU-3DFE and FRGCv2 work too)")
    p.add_argument("--raw", type=Path, required=True, help="the raw release's root folder")
    p.add_argument("--out", type=Path, required=True, help="MICA root to write <SUBSET>/ into")
    add_model(p, needed=True)
    add_workers(p, "processes (local) or CPUs of a local Ray")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="local process pool or Ray")
    p.add_argument("--address", help="Ray cluster address (auto, ray://head:10001); default: start Ray here")
    p.add_argument("--ray-files", default="auto", choices=["auto", "shared", "ship"],
                   help="how Ray tasks reach scans and outputs: shared (every node sees these paths), ship (through "
                        "Ray's object store, written here: no shared file system needed), auto (shared when every "
                        "node is this machine); see docs/build.md")
    p.add_argument("--landmarks", default="auto", type=landmark_template, metavar="auto|none|TEMPLATE",
                   help="auto (<scan stem>.lmk51.npy/.txt beside each scan or the release's own, else detected), "
                        "none, or a file template with {actor} {stem} {subset}, e.g. 'lmk/{actor}/{stem}.pp' "
                        "(.npy .txt .pp .ljson .bnd .lnd .land)")
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="for scans without a landmark file: detect on a render (auto falls back to geometry)")
    p.add_argument("--landmark-convention", default="auto", type=landmark_convention, metavar="NAME",
                   help="convention of the landmark files: auto (decided by fitting per scan), mica, flame, ...")
    p.add_argument("--image-list", type=Path, help="MICA's image_paths/<SUBSET>.npy: build only its subjects")
    p.add_argument("--require-texture", action="store_true", help="fail scans whose texture image is missing")
    p.add_argument("--retry-failed", action="store_true", help="also redo scans that failed on bad input before")
    add_json(p)
    p.set_defaults(run=cmd_build, main_input="raw")

    p = sub.add_parser("prepare", parents=parents,
                       help="detect, align and list a subset's photos: MICA's arcface_input and image list",
                       description="Detect the face in each photo of a subset, ArcFace-align it (112 px blob .npy and "
                                   "224 px .jpg), and write <SUBSET>/arcface_input/ and image_paths/<SUBSET>.npy with "
                                   "the source's photo rules. Resumable; every skipped photo is recorded.",
                       epilog=PREPARE_EXAMPLES)
    p.add_argument("root", type=Path, help="dataset root (gets <SUBSET>/arcface_input and image_paths/<SUBSET>.npy)")
    p.add_argument("--subset", required=True, type=subset, help="MICA subset name, e.g. FLORENCE (selects the photo rules)")
    p.add_argument("--photos", type=Path, required=True, help="raw photo folder: <actor>/... (flat for STIRLING)")
    p.add_argument("--detector", default="auto", type=detector,
                   help="face detector: auto (MediaPipe if installed), mediapipe, insightface")
    p.add_argument("--detector-models", type=Path, help="insightface model folder (antelopev2 or buffalo_l)")
    add_workers(p, "processes")
    p.add_argument("--min-score", type=score, help="override the subset's minimum detection score (0 to 1)")
    add_json(p)
    p.set_defaults(run=cmd_prepare, main_input="photos")

    p = sub.add_parser("demo", parents=parents, help="run the main job on onflame's procedural head, end to end",
                       description="Build onflame's procedural FLAME-structured head, write miniature raw releases of "
                                   "the eight source datasets, build, evaluate, register, prepare, validate, export and "
                                   "review them: everything onflame does, on a fresh machine, without FLAME. It says "
                                   "what it is doing as it goes.",
                       epilog="example:\n  onflame demo --out onflame-demo\n"
                              "exit codes: 0 everything validated, 1 a step failed, 2 bad usage, 130 interrupted.")
    p.add_argument("--out", type=Path, default=Path("onflame-demo"), help="output folder (default ./onflame-demo)")
    add_json(p)
    p.set_defaults(run=cmd_demo, main_input="out")


class BuildEcho:
    """The build's lines as progress: n/N and the time left (redrawn on a terminal, plain lines in a log),
    with failed scans as lines of their own."""

    def __init__(self, enabled: bool):
        self.enabled, self.progress = enabled, None

    def __call__(self, line: str) -> None:
        from ..progress import Progress

        if not self.enabled:
            return
        if self.progress is None:
            found = re.match(r"(\d+) scan\(s\), (\d+) to build", line)
            print(f"build: {line}", file=sys.stderr, flush=True)
            if found:
                self.progress = Progress(int(found.group(2)), "build")
            return
        if ": failed" in line:
            self.progress.note(f"build: {line}")
        self.progress.advance(line)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()


def cmd_build(args: argparse.Namespace) -> int:
    from ..dataset.build import build_subset
    from ..dataset.names import MODEL_FILE
    from ..fileio import check_output_dir, confine_writes, refuse_links
    from ..sources import get_source, mica_subjects

    require_model(args)
    check_output_dir(args.out)
    refuse_links(Path(args.out) / get_source(args.source).name, Path(args.out) / MODEL_FILE)
    only = mica_subjects(args.image_list) if args.image_list else None
    model = load_for(args)
    model_text = describe(model, model_option(args))
    note(args, f"build {args.source}: model {model_text}")
    echo = BuildEcho(chatty(args))
    try:
        with confine_writes(args.out):  # this process's writes (the workers' are the build's to confine)
            report = build_subset(args.source, args.raw, args.out, model, only=only, workers=args.workers,
                                  executor=args.executor, address=args.address, ray_files=args.ray_files,
                                  landmarks=args.landmarks,
                                  auto_landmarks=args.auto_landmarks, landmark_convention=args.landmark_convention,
                                  require_texture=args.require_texture, retry_failed=args.retry_failed, echo=echo)
    finally:
        echo.close()
    if args.json:
        print_json({**report.to_dict(), "model": model_text})
    else:
        print(f"model: {model_text}")
        print(report.format_table())
    for problem in report.problems:
        say_error(None, problem)
    if report.interrupted:
        pending = report.count("pending")
        say_error(None, "build: interrupted" + (f"; {pending} scan(s) not built (a re-run resumes)" if pending else ""))
    return report.exit_code


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..fileio import check_output_dir, confine_writes, refuse_links
    from ..training.prepare import MANIFEST_NAME, UNREADABLE, prepare_subset
    from ..workers import available_cores

    check_output_dir(args.root)
    root, lists = Path(args.root), Path(args.root) / "image_paths"
    refuse_links(root / args.subset / "arcface_input", root / args.subset / MANIFEST_NAME, lists,
                 lists / f"{args.subset}.npy", lists / f"{args.subset}.json")
    options = {"model_dir": str(args.detector_models)} if args.detector_models else {}
    with confine_writes(root):  # the workers confine their crops to the subset's folder themselves
        report = prepare_subset(args.root, args.subset, args.photos, detector=args.detector,
                                workers=args.workers or available_cores(), min_score=args.min_score,
                                detector_options=options, progress=chatty(args))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format_table())
    unreadable = [rec for rec in report.records if rec.status == UNREADABLE]
    for rec in unreadable:
        say_error(Path(args.photos) / rec.source, rec.detail or "unreadable photo")
    if report.actors_left_out and not unreadable:
        actor, why = sorted(report.actors_left_out.items())[0]
        more = len(report.actors_left_out) - 1
        say_error(Path(args.photos) / actor, f"left out of the image list: {why}"
                  + (f" (and {more} more actor(s): see the report)" if more else ""))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    from ..fileio import check_output_dir, confine_writes, refuse_links
    from ..synthetic.demo import run_demo

    check_output_dir(args.out)
    out = Path(args.out)
    if out.is_dir():  # the demo's own folder: no link anywhere inside (the folder itself may be one)
        refuse_links(*sorted(out.iterdir()))
    with confine_writes(out):
        return run_demo(out, json_output=args.json, progress=chatty(args))
