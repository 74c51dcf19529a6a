"""The ``onflame`` command line.

Each sub-command is a thin wrapper: it parses arguments, calls the library function that does the work,
and prints a table (or JSON with ``--json``). Exit codes: 0 success, 1 the input has errors (the run
still went through every item), 2 bad usage.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import OnflameError


def _print_json(obj: Any) -> None:
    from .fileio import _json_default

    print(json.dumps(obj, indent=2, default=_json_default))


def cmd_info(args: argparse.Namespace) -> int:
    from .info import describe

    summary = describe(args.path)
    if args.json:
        _print_json(summary)
    else:
        from .info import format_summary

        print(format_summary(summary))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .dataset.validate import validate_root

    report = validate_root(args.root, model=args.model, check_images=not args.no_images)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from .dataset.export import export_params

    result = export_params(args.root, args.out)
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {result['subjects']} subjects from {len(result['subsets'])} subsets to {args.out}")
        for problem in result.get("skipped", []):
            print(f"skipped {problem}")
    return 0 if not result.get("skipped") else 1


def _model(args: argparse.Namespace):
    from .flame import load_model_with_assets

    return load_model_with_assets(args.model, args.embedding, args.masks)


def cmd_register(args: argparse.Namespace) -> int:
    from .registration import register, save_registration

    if args.landmarks is not None and len(args.scans) != 1:
        print("onflame register: --landmarks needs exactly one scan", file=sys.stderr)
        return 2
    model = _model(args)
    results, failed = [], 0
    for scan in args.scans:
        try:
            reg = register(scan, model, landmarks=args.landmarks, units=args.units, auto_landmarks=args.auto_landmarks)
        except OnflameError as exc:  # one bad scan never stops the others
            failed += 1
            results.append({"scan": str(scan), "verdict": "failed", "error": str(exc)})
            print(f"failed: {exc}", file=sys.stderr)
            continue
        paths = save_registration(reg, args.out, Path(scan).name.split(".")[0], picture=not args.no_picture)
        results.append({"scan": str(scan), **reg.report(), "outputs": paths})
        if not args.json:
            q = reg.quality.numbers
            print(f"{scan}: {reg.verdict} ({', '.join(reg.quality.reasons) or 'all checks passed'}); units {reg.report()['units']}; "
                  f"scan-to-mesh median {q['scan_to_mesh_median_mm']:.3f} mm; {reg.timings['total']:.2f} s -> {paths['params']}")
    if args.json:
        _print_json(results)
    return 1 if failed else 0


def cmd_fit_mesh(args: argparse.Namespace) -> int:
    from .registration import fit_mesh

    model = _model(args)
    results, failed = [], 0
    for mesh in args.meshes:
        try:
            fit = fit_mesh(mesh, model, units=args.units)
        except OnflameError as exc:
            failed += 1
            results.append({"mesh": str(mesh), "error": str(exc)})
            print(f"failed: {exc}", file=sys.stderr)
            continue
        out = Path(args.out) / (Path(mesh).name.split(".")[0] + ".npz")
        fit.params.save(out)
        results.append({"mesh": str(mesh), "params": str(out), **fit.summary()})
        if not args.json:
            s = fit.summary()
            print(f"{mesh}: FLAME(params) vs mesh: mean {s['mean_mm']:.3f} mm, max {s['max_mm']:.3f} mm -> {out}")
    if args.json:
        _print_json(results)
    return 1 if failed else 0


def cmd_build(args: argparse.Namespace) -> int:
    from .dataset.build import build_subset
    from .sources import get_source, mica_subjects

    try:
        name = get_source(args.source).name
    except KeyError as exc:
        print(f"onflame build: {exc.args[0]}", file=sys.stderr)
        return 2
    only = mica_subjects(args.image_list) if args.image_list else None
    echo = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = build_subset(name, args.raw, args.out, _model(args), only=only, workers=args.workers, executor=args.executor,
                          address=args.address, landmarks=args.landmarks, auto_landmarks=args.auto_landmarks,
                          require_texture=args.require_texture, retry_failed=args.retry_failed, echo=echo)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    return report.exit_code


def cmd_prepare(args: argparse.Namespace) -> int:
    from .training.prepare import prepare_subset

    options = {"model_dir": str(args.detector_models)} if args.detector_models else {}
    report = prepare_subset(args.root, args.subset, args.photos, detector=args.detector, workers=args.workers,
                            min_score=args.min_score, detector_options=options, progress=not args.json)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    return 0 if report.ok else 1


def cmd_image_paths(args: argparse.Namespace) -> int:
    from .training.lists import diff_image_paths, format_diff

    diff = diff_image_paths(args.a, args.b)
    if args.json:
        _print_json(diff)
    else:
        print(format_diff(diff))
    return 0 if diff["same"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .synthetic.demo import run_demo

    return run_demo(Path(args.out), json_output=args.json)


def cmd_evaluate(args: argparse.Namespace) -> int:
    labels = args.label or [Path(p).resolve().name or str(p) for p in args.pred]
    if len(labels) != len(args.pred) or len(set(labels)) != len(labels):
        print(f"onflame evaluate: give one distinct --label per --pred ({len(args.pred)} folders, labels: "
              f"{', '.join(labels)})", file=sys.stderr)
        return 2
    preds = list(zip(labels, args.pred))
    echo = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.protocol_kind == "now":
        from .evaluation.now import NowSettings, evaluate_now

        settings = NowSettings(metrical=args.metrical, pred_unit=args.pred_unit, protocol=args.protocol)
        report = evaluate_now(preds, args.gt, args.out, settings, split=args.split, image_list=args.image_list,
                              workers=args.workers, check_alignment=args.check_alignment, echo=echo)
    else:
        from .evaluation.flame_topology import FlameSettings, evaluate_flame

        scans: dict[str, Path] = {}
        for spec in args.scans or []:
            subset, sep, folder = spec.rpartition("=")
            if not sep:
                if not args.subset or "," in args.subset:
                    print("onflame evaluate flame: --scans DIR needs --subset S (one subset), or write --scans S=DIR",
                          file=sys.stderr)
                    return 2
                subset = args.subset
            scans[subset.upper()] = Path(folder)
        model = masks = embedding = None
        if args.model is not None:
            model = _model(args)
        else:
            from .flame import load_landmark_embedding, load_masks

            masks = load_masks(args.masks) if args.masks else None
            embedding = load_landmark_embedding(*args.embedding) if args.embedding else None
        settings = FlameSettings(align=args.align, pred_unit=args.pred_unit, pred_files=args.pred_files,
                                 protocol=args.protocol)
        report = evaluate_flame(preds, args.ref, args.out, model=model, masks=masks, embedding=embedding,
                                settings=settings, subset=args.subset, scans=scans, workers=args.workers, echo=echo)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
        print(f"\nwrote {args.out}: " + ", ".join(Path(v).name for v in report.outputs.values()))
    return report.exit_code


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "info": (cmd_info, "summarise a model, embedding, masks, params npz, image list or dataset root"),
    "validate": (cmd_validate, "check a MICA dataset root and report every problem with its file"),
    "export": (cmd_export, "write all subjects' FLAME parameters to one file"),
    "register": (cmd_register, "register raw face scans to FLAME: registration mesh + FLAME parameters + report"),
    "fit-mesh": (cmd_fit_mesh, "fit FLAME parameters to meshes already in FLAME topology"),
    "build": (cmd_build, "register every scan of a raw source release into a MICA subset (resumable, parallel, Ray)"),
    "prepare": (cmd_prepare, "detect, align and list a subset's photos: MICA's arcface_input and image list"),
    "image-paths": (cmd_image_paths, "compare two MICA image lists (image-paths diff A.npy B.npy)"),
    "demo": (cmd_demo, "run the main job on the embedded synthetic default"),
    "evaluate": (cmd_evaluate, "score face reconstructions: the NoW protocol (evaluate now), or FLAME meshes against "
                               "a MICA root (evaluate flame)"),
}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="onflame", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"onflame {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress and warnings")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help=COMMANDS["info"][1])
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("validate", help=COMMANDS["validate"][1])
    p.add_argument("root", type=Path, help="MICA root (subset folders or subset .zip files)")
    p.add_argument("--model", type=Path, help="FLAME model: also measure registration vs FLAME(params)")
    p.add_argument("--no-images", action="store_true", help="skip checking image lists against files")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help=COMMANDS["export"][1])
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True, help=".npz (arrays) or .csv (one row per subject)")
    p.add_argument("--json", action="store_true")

    def model_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model", type=Path, help="FLAME model (.pkl or onflame .npz); default: onflame's procedural head")
        p.add_argument("--embedding", type=Path, nargs="+", help="landmark embedding file(s); default: found beside the model")
        p.add_argument("--masks", type=Path, help="FLAME_masks.pkl; default: found beside the model")

    p = sub.add_parser("register", help=COMMANDS["register"][1])
    p.add_argument("scans", type=Path, nargs="+", help="scan files (OBJ, PLY, WRL, ABS, ...)")
    model_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder for <name>.npz/.obj/_report.json")
    p.add_argument("--landmarks", type=Path, help="(51, 3) or (68, 3) landmarks on the scan (.npy or .txt), scan units")
    p.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"])
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="without --landmarks: detect them on a render (auto falls back to geometry), or geometry only")
    p.add_argument("--no-picture", action="store_true", help="skip the report picture")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fit-mesh", help=COMMANDS["fit-mesh"][1])
    p.add_argument("meshes", type=Path, nargs="+", help="meshes in the model's topology")
    model_args(p)
    p.add_argument("--out", type=Path, default=Path("."), help="output folder for <name>.npz (default: .)")
    p.add_argument("--units", default="m", choices=["auto", "m", "cm", "mm"])
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("build", help=COMMANDS["build"][1])
    p.add_argument("--source", required=True, help="source dataset: BP4D, BU3DFE, D3DFACS, FACEWAREHOUSE, FLORENCE, "
                                                   "FRGC, LYHM, STIRLING (any case, BU-3DFE and FRGCv2 work too)")
    p.add_argument("--raw", type=Path, required=True, help="the raw release's root folder")
    p.add_argument("--out", type=Path, required=True, help="MICA root to write <SUBSET>/ into")
    model_args(p)
    p.add_argument("--workers", type=int, help="processes (local) or CPUs of a local Ray (default: all cores)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="local process pool or Ray")
    p.add_argument("--address", help="Ray cluster address (auto, ray://head:10001); default: start Ray here")
    p.add_argument("--landmarks", default="auto",
                   help="auto (a <scan stem>.lmk51.npy/.txt beside each scan or the release's own, else detected), "
                        "none, or a file template with {actor} {stem} {subset}, e.g. 'lmk/{actor}/{stem}.npy'")
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="for scans without a landmark file: detect on a render (auto falls back to geometry)")
    p.add_argument("--image-list", type=Path, help="MICA's image_paths/<SUBSET>.npy: build only its subjects")
    p.add_argument("--require-texture", action="store_true", help="fail scans whose texture image is missing")
    p.add_argument("--retry-failed", action="store_true", help="also redo scans that failed on bad input before")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prepare", help=COMMANDS["prepare"][1])
    p.add_argument("root", type=Path, help="dataset root (gets <SUBSET>/arcface_input and image_paths/<SUBSET>.npy)")
    p.add_argument("--subset", required=True, help="subset name, e.g. FLORENCE (selects the photo rules)")
    p.add_argument("--photos", type=Path, required=True, help="raw photo folder: <actor>/... (flat for STIRLING)")
    p.add_argument("--detector", default="auto", help="face detector: auto (MediaPipe if installed), mediapipe, insightface")
    p.add_argument("--detector-models", type=Path, help="insightface model folder (antelopev2 or buffalo_l)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--min-score", type=float, help="override the subset's minimum detection score")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("image-paths", help=COMMANDS["image-paths"][1])
    actions = p.add_subparsers(dest="action", required=True)
    d = actions.add_parser("diff", help="actors and photos only in one of two image lists")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    d.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help=COMMANDS["demo"][1])
    p.add_argument("--out", type=Path, default=Path("onflame-demo"), help="output folder (default ./onflame-demo)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"][1])
    kinds = p.add_subparsers(dest="protocol_kind", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pred", type=Path, nargs="+", required=True, help="prediction folder(s), one per method")
    common.add_argument("--label", nargs="+", help="method names, one per --pred (default: the folder names)")
    common.add_argument("--out", type=Path, default=Path("onflame-evaluation"),
                        help="output folder: results JSON, table, cumulative curves (default ./onflame-evaluation)")
    common.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    common.add_argument("--protocol", default="now", choices=["now", "fg2018"],
                        help="scan crop radius factor: now 1.4, fg2018 (Stirling/ESRC) 1.2")
    common.add_argument("--json", action="store_true")
    e = kinds.add_parser("now", parents=[common], help="the NoW protocol: <pred>/<subject>/<challenge>/<image>.obj + 7 landmarks")
    e.add_argument("--gt", type=Path, required=True, help="NoW dataset folder: scans/, scans_lmks_onlypp/, image lists")
    e.add_argument("--split", default="validation", choices=["validation", "test"], help="image list imagepaths<split>.txt")
    e.add_argument("--image-list", type=Path, help="another image list (<subject>/<challenge>/<image> per line)")
    e.add_argument("--metrical", action="store_true", help="rigid alignment: the prediction's scale is scored")
    e.add_argument("--pred-unit", default="auto", choices=["auto", "m", "cm", "mm"],
                   help="predictions' unit with --metrical (auto: from the eye-corner distance)")
    e.add_argument("--check-alignment", type=Path, help="write each image's cropped scan and aligned prediction here")
    e = kinds.add_parser("flame", parents=[common], help="FLAME-topology meshes or parameter files against a MICA root")
    e.add_argument("--ref", type=Path, required=True, help="MICA root whose registrations are the reference")
    e.add_argument("--subset", help="only these subsets (comma-separated)")
    model_args(e)
    e.add_argument("--align", default="rigid", choices=["rigid", "similarity"], help="alignment on the face region")
    e.add_argument("--pred-unit", default="m", choices=["m", "cm", "mm"], help="predicted meshes' unit (default m)")
    e.add_argument("--pred-files", default="auto", choices=["auto", "meshes", "params"],
                   help="which predictions to score where a subject has a mesh and a parameter file")
    e.add_argument("--scans", nargs="+", metavar="[SUBSET=]RAW",
                   help="raw release folder(s) for the scan-to-mesh variant (read as onflame build reads them)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return COMMANDS[args.command][0](args)
    except OnflameError as exc:
        print(f"onflame {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"onflame {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head/less that closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
