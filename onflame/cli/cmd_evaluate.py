"""``evaluate now`` (the NoW protocol) and ``evaluate flame`` (FLAME meshes against a MICA root)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from .common import chatty, print_json, say_error
from .options import Parser, add_json, add_model, add_subsets, add_workers, check_subsets, subset_list

NOW_EXAMPLES = """examples:
  onflame evaluate now --pred pred/mica --gt NoW_Dataset/final_release_version --out results
  onflame evaluate now --pred pred/mica pred/deca --label MICA DECA --gt NoW --metrical --pred-unit m

exit codes: 0 every image scored, 1 an image could not be scored (each named; the others are), 2 bad usage,
130 interrupted."""

FLAME_EXAMPLES = """examples:
  onflame evaluate flame --pred predictions --ref MICA --out results
  onflame evaluate flame --pred mine --ref MICA --subset BU3DFE --scans /data/BU-3DFE --model FLAME2020/

exit codes: 0 every prediction scored, 1 a prediction could not be scored (each named), 2 bad usage (an
unknown --subset, --workers 0, ...), 130 interrupted."""


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("evaluate", parents=parents,
                       help="score face reconstructions: the NoW protocol (evaluate now), or FLAME meshes against a "
                            "MICA root (evaluate flame)",
                       description="Score face reconstructions metrically, in millimetres.")
    kinds = p.add_subparsers(dest="protocol_kind", metavar="now|flame", required=True)
    common = Parser(add_help=False)
    common.add_argument("--pred", type=Path, nargs="+", required=True, help="prediction folder(s), one per method")
    common.add_argument("--label", nargs="+", help="method names, one per --pred (default: the folder names)")
    common.add_argument("--out", type=Path, default=Path("onflame-evaluation"),
                        help="output folder: results JSON, table, cumulative curves (default ./onflame-evaluation)")
    add_workers(common, "processes")
    common.add_argument("--protocol", default="now", choices=["now", "fg2018"],
                        help="scan crop radius factor: now 1.4, fg2018 (Stirling/ESRC) 1.2")
    add_json(common)
    e = kinds.add_parser("now", parents=[common, *parents],
                         help="the NoW protocol: <pred>/<subject>/<challenge>/<image>.obj + 7 landmarks",
                         description="The NoW benchmark's evaluation: each listed image's prediction is placed on "
                                     "its scan by 7 landmarks and the scan's surface, and the scan points' distances "
                                     "to it are pooled per challenge (median, mean, std in mm).",
                         epilog=NOW_EXAMPLES)
    e.add_argument("--gt", type=Path, required=True, help="NoW dataset folder: scans/, scans_lmks_onlypp/, image lists")
    e.add_argument("--split", default="validation", choices=["validation", "test"], help="image list imagepaths<split>.txt")
    e.add_argument("--image-list", type=Path, help="another image list (<subject>/<challenge>/<image> per line)")
    e.add_argument("--metrical", action="store_true", help="rigid alignment: the prediction's scale is scored")
    e.add_argument("--pred-unit", default="auto", choices=["auto", "m", "cm", "mm"],
                   help="predictions' unit with --metrical (auto: from the eye-corner distance)")
    e.add_argument("--check-alignment", type=Path, help="write each image's cropped scan and aligned prediction here")
    e.set_defaults(run=cmd_evaluate, main_input="pred")
    e = kinds.add_parser("flame", parents=[common, *parents],
                         help="FLAME-topology meshes or parameter files against a MICA root",
                         description="FLAME-topology meshes or parameter files against a MICA root's registrations: "
                                     "per-vertex error (mm) after a face-region alignment, per region, subject and "
                                     "subset; with the raw releases also the scan-to-mesh error.",
                         epilog=FLAME_EXAMPLES)
    e.add_argument("--ref", type=Path, required=True, help="MICA root whose registrations are the reference")
    add_subsets(e)
    add_model(e, needed=False, what="the reference root's model.npz (or a prediction root's)")
    e.add_argument("--align", default="rigid", choices=["rigid", "similarity"], help="alignment on the face region")
    e.add_argument("--pred-unit", default="m", choices=["m", "cm", "mm"], help="predicted meshes' unit (default m)")
    e.add_argument("--pred-files", default="auto", choices=["auto", "meshes", "params"],
                   help="which predictions to score where a subject has a mesh and a parameter file")
    e.add_argument("--scans", nargs="+", metavar="[SUBSET=]RAW",
                   help="raw release folder(s) for the scan-to-mesh variant (read as onflame build reads them)")
    e.set_defaults(run=cmd_evaluate, main_input="pred")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..fileio import check_output_dir, refuse_links
    from ..workers import available_cores

    labels = args.label or [Path(p).resolve().name or str(p) for p in args.pred]
    if len(labels) != len(args.pred) or len(set(labels)) != len(labels):
        raise UsageError(None, f"give one distinct --label per --pred ({len(args.pred)} folder(s); labels: "
                               f"{', '.join(labels)})")
    subsets = _reference_subsets(args) if args.protocol_kind == "flame" else None
    check_output_dir(args.out)
    if getattr(args, "check_alignment", None) is not None:
        check_output_dir(args.check_alignment)
    for folder in (args.out, getattr(args, "check_alignment", None)):  # onflame's own folders: no link inside
        if folder is not None and Path(folder).is_dir():
            refuse_links(*sorted(Path(folder).iterdir()))
    preds = list(zip(labels, args.pred))
    workers = args.workers or available_cores()
    echo = (lambda line: print(line, file=sys.stderr, flush=True)) if chatty(args) else None
    if args.protocol_kind == "now":
        from ..evaluation.now import NowSettings, evaluate_now

        settings = NowSettings(metrical=args.metrical, pred_unit=args.pred_unit, protocol=args.protocol)
        report = evaluate_now(preds, args.gt, args.out, settings, split=args.split, image_list=args.image_list,
                              workers=workers, check_alignment=args.check_alignment, echo=echo)
    else:
        report = _evaluate_flame(args, preds, subsets, workers, echo)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format_table())
        print(f"\nwrote {args.out}: " + ", ".join(Path(v).name for v in report.outputs.values()))
    for lines in report.failures.values():
        for line in lines:
            say_error(None, line)
    return report.exit_code


def _reference_subsets(args: argparse.Namespace) -> list[str] | None:
    """``--subset`` as the reference root spells it (a usage error for one it does not have)."""
    from ..dataset.layout import open_root

    names = subset_list(args.subset)
    if names is None:
        return None
    with open_root(args.ref) as root:
        return check_subsets(names, list(root.subsets), args.ref)


def _evaluate_flame(args: argparse.Namespace, preds: list, subsets: list[str] | None, workers: int, echo):
    from ..dataset.names import SUBSETS
    from ..evaluation.flame_scoring import FlameSettings
    from ..evaluation.flame_topology import evaluate_flame
    from .model import load, model_option

    scans: dict[str, Path] = {}
    for spec in args.scans or []:
        subset, sep, folder = spec.rpartition("=")
        if not sep and (not subsets or len(subsets) != 1):
            raise UsageError(spec, "--scans DIR needs --subset with one subset; or write --scans SUBSET=DIR")
        subset = (subset if sep else subsets[0]).upper()
        if subset not in SUBSETS:
            raise UsageError(spec, f"unknown subset {subset!r} (MICA's are {', '.join(SUBSETS)})")
        scans[subset] = Path(folder)
    model = masks = embedding = None
    value = model_option(args) if args.model is not None or not _has_model_file(args) else None
    if value is not None:
        model = load(value, args.embedding, args.masks)
    else:  # the root's model.npz, with these masks / landmarks if given
        from ..flame import load_landmark_embedding, load_masks

        masks = load_masks(args.masks) if args.masks else None
        embedding = load_landmark_embedding(*args.embedding) if args.embedding else None
    settings = FlameSettings(align=args.align, pred_unit=args.pred_unit, pred_files=args.pred_files,
                             protocol=args.protocol)
    return evaluate_flame(preds, args.ref, args.out, model=model, masks=masks, embedding=embedding,
                          settings=settings, subset=",".join(subsets) if subsets else None, scans=scans,
                          workers=workers, echo=echo)


def _has_model_file(args: argparse.Namespace) -> bool:
    """Whether the reference or a prediction root carries its model (``model.npz``), which then wins over
    ``$ONFLAME_MODEL``."""
    from ..dataset.names import MODEL_FILE

    return any((Path(folder) / MODEL_FILE).is_file() for folder in [args.ref, *args.pred])
