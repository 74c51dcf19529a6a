"""The ``onflame`` command line.

Each sub-command is a thin wrapper: it parses arguments, calls the library function that does the work,
and prints a table (or JSON with ``--json``). Every command ends in its result or in one line
``onflame: <file>: <problem>`` on stderr (one per failed item of a batch, which goes on with the next).

Exit codes: 0 success; 1 failure (bad input, a failed item or a ``failed`` registration verdict: the run
still went through every item); 2 bad usage (an invalid option, an unusable output location; refused
before any work); 130 interrupted. An error nobody foresaw is one line too, with a hint to rerun with
``--debug``, which shows its traceback.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .errors import OnflameError, UsageError, one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Appended to the line of an error onflame did not foresee.
DEBUG_HINT = "rerun with --debug for the traceback"


def _say_error(where: object, problem: str) -> None:
    """Print ``onflame: <where>: <problem>`` (one line) on stderr; ``where`` None prints the problem alone."""
    text = one_line(problem) if where is None else f"{where}: {one_line(problem)}"
    print(f"onflame: {text}", file=sys.stderr, flush=True)


def _say_exception(exc: BaseException, where: object) -> None:
    """One line for an exception met while working on ``where`` (the item's file)."""
    if isinstance(exc, OnflameError):
        _say_error(None, str(exc))
    elif isinstance(exc, OSError):  # disk full, permission denied, ...: name the file the system names
        _say_error(exc.filename or where, exc.strerror or str(exc))
    else:
        _say_error(where, f"unexpected {type(exc).__name__}: {exc}; {DEBUG_HINT}")


def _item_failed(exc: Exception, where: object, debug: bool) -> None:
    """A batch item failed: one line naming it (re-raised with ``--debug``, for the traceback)."""
    if debug and not isinstance(exc, OnflameError):
        raise exc
    _say_exception(exc, where)


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
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .dataset.validate import validate_root

    report = validate_root(args.root, model=args.model, check_images=not args.no_images)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    if report.ok:
        return EXIT_OK
    first, more = report.errors[0], len(report.errors) - 1
    _say_error(first.file, first.problem + (f" (and {more} more error(s): see the report)" if more else ""))
    return EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from .dataset.export import export_params

    result = export_params(args.root, args.out)
    if args.json:
        _print_json(result)
    else:
        print(f"wrote {result['subjects']} subjects from {len(result['subsets'])} subsets to {args.out}")
    for problem in result.get("skipped", []):
        _say_error(None, f"{problem} (skipped)")
    return EXIT_OK if not result.get("skipped") else EXIT_FAILED


def _model(args: argparse.Namespace):
    if args.model is None:  # onflame's procedural head, which carries its landmarks and masks
        from .synthetic.head import make_head_model

        return make_head_model()
    from .flame import load_model_with_assets

    return load_model_with_assets(args.model, args.embedding, args.masks)


def _start_up_done(args: argparse.Namespace) -> None:
    """The command's imports and model are loaded: in the ``onflame`` executable, collect garbage from
    now on, and never again through what start-up made (see :func:`run`)."""
    if getattr(args, "owns_process", False) and not gc.isenabled():
        gc.freeze()
        gc.enable()


def cmd_register(args: argparse.Namespace) -> int:
    from .fileio import check_output_dir
    from .registration import register, save_registration

    if args.landmarks is not None and len(args.scans) != 1:
        raise UsageError(None, "--landmarks needs exactly one scan")
    check_output_dir(args.out)
    model = _model(args)
    _start_up_done(args)
    results, failed = [], 0
    for scan in args.scans:
        try:  # one bad scan never stops the others
            reg = register(scan, model, landmarks=args.landmarks, units=args.units, auto_landmarks=args.auto_landmarks,
                           landmark_convention=args.landmark_convention)
            paths = save_registration(reg, args.out, Path(scan).name.split(".")[0], picture=args.picture)
        except Exception as exc:  # noqa: BLE001  reported as the item's one line (with --debug: the traceback)
            _item_failed(exc, scan, args.debug)
            failed += 1
            results.append({"scan": str(scan), "verdict": "failed", "error": one_line(str(exc))})
            continue
        results.append({"scan": str(scan), **reg.report(), "outputs": paths})
        if reg.verdict == "failed":  # written for inspection, but a failure
            failed += 1
            _say_error(scan, f"registration failed its quality checks ({'; '.join(reg.quality.reasons)}); "
                             f"outputs kept for inspection in {args.out}")
        if not args.json:
            q = reg.quality.numbers
            print(f"{scan}: {reg.verdict} ({', '.join(reg.quality.reasons) or 'all checks passed'}); units {reg.report()['units']}; "
                  f"landmarks {_landmark_note(reg.landmark_info)}; scan-to-mesh median {q['scan_to_mesh_median_mm']:.3f} mm; "
                  f"{reg.timings['total']:.2f} s -> {paths['params']}")
            if args.verbose:  # the detail: every quality number and where the time went
                print("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items()))
                print("  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in reg.timings.items()))
    if args.json:
        _print_json(results)
    return EXIT_FAILED if failed else EXIT_OK


def _landmark_note(info: dict) -> str:
    """``given (flame, chosen by fit: flame 1.2 mm, mica 4.8 mm)``: where a registration's landmarks came from."""
    note = info.get("source", "?")
    if info.get("convention"):
        note += f" ({info['convention']}"
        if "convention_residuals_mm" in info:
            note += ", chosen by fit: " + ", ".join(f"{k} {v:.1f} mm" for k, v in info["convention_residuals_mm"].items())
        note += ")"
    return note


def cmd_fit_mesh(args: argparse.Namespace) -> int:
    from .fileio import check_output_dir
    from .registration import fit_mesh

    check_output_dir(args.out)
    model = _model(args)
    _start_up_done(args)
    results, failed = [], 0
    for mesh in args.meshes:
        out = Path(args.out) / (Path(mesh).name.split(".")[0] + ".npz")
        try:
            fit = fit_mesh(mesh, model, units=args.units)
            fit.params.save(out)
        except Exception as exc:  # noqa: BLE001  as in register: one line per bad mesh, the others go on
            _item_failed(exc, mesh, args.debug)
            failed += 1
            results.append({"mesh": str(mesh), "error": one_line(str(exc))})
            continue
        results.append({"mesh": str(mesh), "params": str(out), **fit.summary()})
        if not args.json:
            s = fit.summary()
            print(f"{mesh}: FLAME(params) vs mesh: mean {s['mean_mm']:.3f} mm, max {s['max_mm']:.3f} mm -> {out}")
    if args.json:
        _print_json(results)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_build(args: argparse.Namespace) -> int:
    from .dataset.build import build_subset
    from .fileio import check_output_dir
    from .sources import mica_subjects

    check_output_dir(args.out)
    only = mica_subjects(args.image_list) if args.image_list else None
    echo = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    report = build_subset(args.source, args.raw, args.out, _model(args), only=only, workers=args.workers,
                          executor=args.executor, address=args.address, landmarks=args.landmarks,
                          auto_landmarks=args.auto_landmarks, landmark_convention=args.landmark_convention,
                          require_texture=args.require_texture, retry_failed=args.retry_failed, echo=echo)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    for problem in report.problems:
        _say_error(None, problem)
    return report.exit_code


def cmd_prepare(args: argparse.Namespace) -> int:
    from .training.prepare import UNREADABLE, prepare_subset

    options = {"model_dir": str(args.detector_models)} if args.detector_models else {}
    report = prepare_subset(args.root, args.subset, args.photos, detector=args.detector, workers=args.workers,
                            min_score=args.min_score, detector_options=options, progress=not args.json)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format_table())
    unreadable = [rec for rec in report.records if rec.status == UNREADABLE]
    for rec in unreadable:
        _say_error(Path(args.photos) / rec.source, rec.detail or "unreadable photo")
    if report.actors_left_out and not unreadable:
        actor, why = sorted(report.actors_left_out.items())[0]
        more = len(report.actors_left_out) - 1
        _say_error(Path(args.photos) / actor, f"left out of the image list: {why}"
                   + (f" (and {more} more actor(s): see the report)" if more else ""))
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_image_paths(args: argparse.Namespace) -> int:
    from .training.lists import diff_image_paths, format_diff

    diff = diff_image_paths(args.a, args.b)
    if args.json:
        _print_json(diff)
    else:
        print(format_diff(diff))
    return EXIT_OK if diff["same"] else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    result = write_report(args.root, args.out, subsets=args.subset, model=args.model, workers=args.workers,
                          heatmaps=not args.no_heatmaps, progress=not args.json)
    if args.json:
        _print_json(result.to_dict())
        return 0
    for name, c in result.counts.items():
        print(f"{name}: {c['subjects']} subjects: registered {c['ok']}, suspect {c['suspect']}, failed {c['failed']}"
              + (f", no build record {c['unknown']}" if c["unknown"] else ""))
    print(f"pictures drawn {result.drawn}, reused {result.cached}; {len(result.problems)} problem(s) shown in the "
          f"report; {result.seconds:.1f} s")
    print(result.index.resolve())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .fileio import check_output_dir
    from .synthetic.demo import run_demo

    check_output_dir(args.out)
    return run_demo(Path(args.out), json_output=args.json)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .fileio import check_output_dir

    labels = args.label or [Path(p).resolve().name or str(p) for p in args.pred]
    if len(labels) != len(args.pred) or len(set(labels)) != len(labels):
        raise UsageError(None, f"give one distinct --label per --pred ({len(args.pred)} folder(s); labels: "
                               f"{', '.join(labels)})")
    check_output_dir(args.out)
    if getattr(args, "check_alignment", None) is not None:
        check_output_dir(args.check_alignment)
    preds = list(zip(labels, args.pred))
    echo = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    if args.protocol_kind == "now":
        from .evaluation.now import NowSettings, evaluate_now

        settings = NowSettings(metrical=args.metrical, pred_unit=args.pred_unit, protocol=args.protocol)
        report = evaluate_now(preds, args.gt, args.out, settings, split=args.split, image_list=args.image_list,
                              workers=args.workers, check_alignment=args.check_alignment, echo=echo)
    else:
        from .dataset.layout import SUBSETS
        from .evaluation.flame_topology import FlameSettings, evaluate_flame

        scans: dict[str, Path] = {}
        for spec in args.scans or []:
            subset, sep, folder = spec.rpartition("=")
            if not sep and (not args.subset or "," in args.subset):
                raise UsageError(spec, "--scans DIR needs --subset with one subset; or write --scans SUBSET=DIR")
            subset = (subset if sep else args.subset).upper()
            if subset not in SUBSETS:
                raise UsageError(spec, f"unknown subset {subset!r} (MICA's are {', '.join(SUBSETS)})")
            scans[subset] = Path(folder)
        model = masks = embedding = None
        if args.model is not None:
            model = _model(args)
        else:  # the root's model.npz, with these masks / landmarks if given
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
    for lines in report.failures.values():
        for line in lines:
            _say_error(None, line)
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
    "report": (cmd_report, "write a static site to review a built root: gallery, subject pages, statistics, outliers"),
    "demo": (cmd_demo, "run the main job on the embedded synthetic default"),
    "evaluate": (cmd_evaluate, "score face reconstructions: the NoW protocol (evaluate now), or FLAME meshes against "
                               "a MICA root (evaluate flame)"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with bad usage reported in one line (``onflame: <problem> (see ... --help)``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"onflame: {one_line(message)} (see '{self.prog} --help')\n")


def _at_least_one(text: str) -> int:
    """``--workers``: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _score(text: str) -> float:
    """``--min-score``: a detection score in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails both comparisons
        raise argparse.ArgumentTypeError(f"must be a score from 0 to 1, got {text!r}")
    return value


def _subset(text: str) -> str:
    """``--subset``: one of MICA's subsets, any case, as its canonical name."""
    from .dataset.layout import SUBSETS

    if text.upper() not in SUBSETS:
        raise argparse.ArgumentTypeError(f"unknown subset {text!r} (MICA's are {', '.join(SUBSETS)})")
    return text.upper()


def _source(text: str) -> str:
    """``build --source``: a known source dataset, as its MICA subset name."""
    from .sources import get_source

    try:
        return get_source(text).name
    except KeyError as exc:
        raise argparse.ArgumentTypeError(str(exc.args[0])) from None


def _landmark_option(text: str) -> str:
    """``build --landmarks``: auto, none, or a file-name template with known fields only."""
    from .dataset.build_task import check_landmark_option

    try:
        return check_landmark_option(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(exc.problem) from None


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="onflame", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"onflame {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress and warnings")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error (and debug logs)")
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
    p.add_argument("--landmarks", type=Path, help="landmarks on the scan, in its units: .npy/.txt (51 or 68 rows in iBUG "
                                                  "order, or NoW's 7), MeshLab .pp, menpo .ljson, BU-3DFE .bnd, .lnd")
    p.add_argument("--landmark-convention", default="auto", metavar="NAME",
                   help="convention the landmarks were clicked in: auto (decided by fitting), mica (MICA/DECA's "
                        "landmark_embedding.npy), flame (FLAME's flame_static_embedding.pkl), or a name like flame51")
    p.add_argument("--units", default="auto", choices=["auto", "m", "cm", "mm"])
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="without --landmarks: detect them on a render (auto falls back to geometry), or geometry only")
    p.add_argument("--picture", action="store_true",
                   help="also write <name>_report.png: scan, registration and error heat map (about a second more)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("fit-mesh", help=COMMANDS["fit-mesh"][1])
    p.add_argument("meshes", type=Path, nargs="+", help="meshes in the model's topology")
    model_args(p)
    p.add_argument("--out", type=Path, default=Path("."), help="output folder for <name>.npz (default: .)")
    p.add_argument("--units", default="m", choices=["auto", "m", "cm", "mm"])
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("build", help=COMMANDS["build"][1])
    p.add_argument("--source", required=True, type=_source, help="source dataset: BP4D, BU3DFE, D3DFACS, FACEWAREHOUSE, FLORENCE, "
                                                   "FRGC, LYHM, STIRLING (any case, BU-3DFE and FRGCv2 work too)")
    p.add_argument("--raw", type=Path, required=True, help="the raw release's root folder")
    p.add_argument("--out", type=Path, required=True, help="MICA root to write <SUBSET>/ into")
    model_args(p)
    p.add_argument("--workers", type=_at_least_one, help="processes (local) or CPUs of a local Ray (default: all cores)")
    p.add_argument("--executor", default="local", choices=["local", "ray"], help="local process pool or Ray")
    p.add_argument("--address", help="Ray cluster address (auto, ray://head:10001); default: start Ray here")
    p.add_argument("--landmarks", default="auto", type=_landmark_option,
                   help="auto (a <scan stem>.lmk51.npy/.txt beside each scan or the release's own, else detected), "
                        "none, or a file template with {actor} {stem} {subset}, e.g. 'lmk/{actor}/{stem}.pp' "
                        "(.npy .txt .pp .ljson .bnd .lnd .land)")
    p.add_argument("--auto-landmarks", default="auto", choices=["auto", "detect", "geometry"],
                   help="for scans without a landmark file: detect on a render (auto falls back to geometry)")
    p.add_argument("--landmark-convention", default="auto", metavar="NAME",
                   help="convention of the landmark files: auto (decided by fitting per scan), mica, flame")
    p.add_argument("--image-list", type=Path, help="MICA's image_paths/<SUBSET>.npy: build only its subjects")
    p.add_argument("--require-texture", action="store_true", help="fail scans whose texture image is missing")
    p.add_argument("--retry-failed", action="store_true", help="also redo scans that failed on bad input before")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("prepare", help=COMMANDS["prepare"][1])
    p.add_argument("root", type=Path, help="dataset root (gets <SUBSET>/arcface_input and image_paths/<SUBSET>.npy)")
    p.add_argument("--subset", required=True, type=_subset, help="MICA subset name, e.g. FLORENCE (selects the photo rules)")
    p.add_argument("--photos", type=Path, required=True, help="raw photo folder: <actor>/... (flat for STIRLING)")
    p.add_argument("--detector", default="auto", help="face detector: auto (MediaPipe if installed), mediapipe, insightface")
    p.add_argument("--detector-models", type=Path, help="insightface model folder (antelopev2 or buffalo_l)")
    p.add_argument("--workers", type=_at_least_one, default=1, help="processes (default 1)")
    p.add_argument("--min-score", type=_score, help="override the subset's minimum detection score (0 to 1)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("image-paths", help=COMMANDS["image-paths"][1])
    actions = p.add_subparsers(dest="action", required=True)
    d = actions.add_parser("diff", help="actors and photos only in one of two image lists")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    d.add_argument("--json", action="store_true")

    p = sub.add_parser("report", help=COMMANDS["report"][1])
    p.add_argument("root", type=Path, help="MICA root (onflame build's output, or MICA's folders or zips)")
    p.add_argument("--subset", nargs="+", action="extend", help="subsets to include (default: all)")
    p.add_argument("--out", type=Path, default=Path("onflame-report"), help="site folder (default ./onflame-report); "
                                                                           "a second run reuses its pictures")
    p.add_argument("--model", type=Path, help="FLAME model of the registrations, to compare them with FLAME(params) "
                                              "(default: the root's model.npz if it has one)")
    p.add_argument("--workers", type=int, help="drawing processes (default: all cores)")
    p.add_argument("--no-heatmaps", action="store_true", help="do not read the build's scans for heat maps")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("demo", help=COMMANDS["demo"][1])
    p.add_argument("--out", type=Path, default=Path("onflame-demo"), help="output folder (default ./onflame-demo)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"][1])
    kinds = p.add_subparsers(dest="protocol_kind", metavar="now|flame", required=True)
    common = _Parser(add_help=False)
    common.add_argument("--pred", type=Path, nargs="+", required=True, help="prediction folder(s), one per method")
    common.add_argument("--label", nargs="+", help="method names, one per --pred (default: the folder names)")
    common.add_argument("--out", type=Path, default=Path("onflame-evaluation"),
                        help="output folder: results JSON, table, cumulative curves (default ./onflame-evaluation)")
    common.add_argument("--workers", type=_at_least_one, default=1, help="processes (default 1)")
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
    e.add_argument("--model", type=Path, help="FLAME model (.pkl or onflame .npz): layer for parameter files, masks, "
                                              "landmarks; default: the reference root's model.npz (or a prediction root's)")
    e.add_argument("--embedding", type=Path, nargs="+", help="landmark embedding file(s); default: the model's")
    e.add_argument("--masks", type=Path, help="FLAME_masks.pkl; default: the model's")
    e.add_argument("--align", default="rigid", choices=["rigid", "similarity"], help="alignment on the face region")
    e.add_argument("--pred-unit", default="m", choices=["m", "cm", "mm"], help="predicted meshes' unit (default m)")
    e.add_argument("--pred-files", default="auto", choices=["auto", "meshes", "params"],
                   help="which predictions to score where a subject has a mesh and a parameter file")
    e.add_argument("--scans", nargs="+", metavar="[SUBSET=]RAW",
                   help="raw release folder(s) for the scan-to-mesh variant (read as onflame build reads them)")
    return ap


_MAIN_INPUT = {"info": "path", "validate": "root", "export": "root", "register": "scans", "fit-mesh": "meshes",
               "build": "raw", "prepare": "photos", "image-paths": "a", "demo": "out"}


def _main_input(args: argparse.Namespace) -> object:
    """The command's main input, named in the line of an error that does not name its own file."""
    value = getattr(args, _MAIN_INPUT.get(args.command, ""), None)
    return value[0] if isinstance(value, list) and len(value) == 1 else value


#: Commands that call :func:`_start_up_done` once their imports and model are loaded.
_QUICK_START = ("register", "fit-mesh")


def main(argv: list[str] | None = None, owns_process: bool = False) -> int:
    """Run one ``onflame`` command; returns its exit code.

    ``owns_process``: called as the executable (:func:`run`), so the command may tune this process's
    garbage collector; never from a library or a test.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # bad usage (2, one line already printed), --help or --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    args.owns_process = owns_process and args.command in _QUICK_START
    if args.owns_process:
        gc.disable()  # start-up's imports allocate ~200k objects that live as long as the process
    try:
        return COMMANDS[args.command][0](args)
    except UsageError as exc:
        _say_error(None, str(exc))
        return EXIT_USAGE
    except OnflameError as exc:
        _say_error(None, str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say_error(None, f"{args.command}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into head/less that closed early: not an error
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001  the last net: one line, never a traceback unless asked for
        if args.debug:
            raise
        _say_exception(exc, _main_input(args) or args.command)
        return EXIT_FAILED
    finally:
        gc.enable()


def run() -> None:
    """The ``onflame`` executable: :func:`main`, then the exit.

    Start-up and exit cost a one-scan ``onflame register`` about 0.6 s beyond its imports: the garbage
    collector walking the ~200k objects that importing torch makes (several full passes while they
    are made, one more during the registration; :func:`main` holds it until the command's start-up is
    done, then freezes what start-up made), and tearing the interpreter down (modules and tensors
    freed one by one). Where the command left nothing to tidy (no worker process, no Python thread, no
    Ray), its outputs are already renamed into place, so the process flushes its streams and leaves.
    """
    code = main(owns_process=True)
    if "torch" in sys.modules and _nothing_left_to_tidy():
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed (a pipe's reader left): nothing more to say
                pass
        os._exit(code)
    sys.exit(code)


def _nothing_left_to_tidy() -> bool:
    import multiprocessing
    import threading

    return (not multiprocessing.active_children() and threading.active_count() == 1
            and "ray" not in sys.modules)


if __name__ == "__main__":
    run()
