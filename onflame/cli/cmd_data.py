"""Commands that read what exists: ``info``, ``validate``, ``export``, ``image-paths diff``."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, print_json, say_error
from .model import MODEL_VARIABLE
from .options import add_json, add_model

INFO_EXAMPLES = """examples:
  onflame info FLAME2020/                      the model in a FLAME folder, its landmarks and masks
  onflame info MICA/FRGC/FLAME_parameters/02463/02463d546.npz
  onflame info image_paths/FRGC.npy --json
  onflame info scans/james.ljson               a landmark file: its layout, points per group, likely unit"""

VALIDATE_EXAMPLES = f"""examples:
  onflame validate MICA/
  onflame validate MICA/ --model FLAME2020/ --json

The model (--model, else the root's model.npz, else ${MODEL_VARIABLE}) turns on the registration-to-
FLAME(params) distance. Thresholds (docs/validate.md): parameter files hold exactly betas (400), pose (15)
and trans (3); no shape or expression coefficient beyond 100 in absolute value; no joint rotated by more
than 2 pi (global) or pi/2 (neck, jaw, eyes); a translation under 10 m; with a model, each registration
within a mean 5 mm and a maximum 50 mm of FLAME(params).
exit codes: 0 no error (warnings allowed), 1 errors found (the first is named on stderr), 2 bad usage."""


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("info", parents=parents, help="summarise a model, embedding, masks, params npz, image list, mesh, "
                                                     "landmark file or dataset root",
                       description="Recognise a file or folder and summarise it: a FLAME model (.pkl/.npz or its "
                                   "folder, with the landmark embeddings and masks beside it), a landmark embedding, "
                                   "FLAME_masks.pkl, a parameter .npz, a MICA image list, a mesh, a 3D landmark file "
                                   "(.npy, .txt, .pp, .ljson, .bnd, .lnd, .land), or a MICA root.",
                       epilog=INFO_EXAMPLES + "\nexit codes: 0 recognised, 1 unreadable or unknown, 2 bad usage.")
    p.add_argument("path", type=Path)
    add_json(p)
    p.set_defaults(run=cmd_info, main_input="path")

    p = sub.add_parser("validate", parents=parents, help="check a MICA dataset root and report every problem with its file",
                       description="Check every subset of a MICA root (folders or <SUBSET>.zip): parameter files "
                                   "(keys, lengths, finite and plausible values), registrations (readable, the model's "
                                   "vertex count, near FLAME(params)), counterparts, and image lists against files.",
                       epilog=VALIDATE_EXAMPLES)
    p.add_argument("root", type=Path, help="MICA root (subset folders or subset .zip files)")
    add_model(p, needed=False, what="no distance check")
    p.add_argument("--no-images", action="store_true", help="skip checking image lists against files")
    add_json(p)
    p.set_defaults(run=cmd_validate, main_input="root")

    p = sub.add_parser("export", parents=parents, help="write all subjects' FLAME parameters to one file",
                       description="Write every subject's FLAME parameters into one .npz (arrays with subset, "
                                   "actor and name columns) or .csv (one row per subject).",
                       epilog="examples:\n  onflame export MICA/ --out all.npz\n  onflame export MICA/ --out all.csv\n"
                              "exit codes: 0 written, 1 some subjects skipped (each named), 2 bad usage.")
    p.add_argument("root", type=Path)
    p.add_argument("--out", type=Path, required=True, help=".npz (arrays) or .csv (one row per subject)")
    add_json(p)
    p.set_defaults(run=cmd_export, main_input="root")

    p = sub.add_parser("image-paths", parents=parents, help="compare two MICA image lists (image-paths diff A.npy B.npy)",
                       description="Work with MICA's image lists (image_paths/<SUBSET>.npy).")
    actions = p.add_subparsers(dest="action", required=True, metavar="diff")
    d = actions.add_parser("diff", parents=parents, help="actors and photos only in one of two image lists",
                           description="List the actors and photos that only one of two image lists has.",
                           epilog="example:\n  onflame image-paths diff MICA/image_paths/FRGC.npy mine/image_paths/FRGC.npy\n"
                                  "exit codes: 0 the lists are the same, 1 they differ (or one is unreadable), 2 bad usage.")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    add_json(d)
    d.set_defaults(run=cmd_image_paths, main_input="a")


def cmd_info(args: argparse.Namespace) -> int:
    from ..info import describe, format_summary

    summary = describe(args.path)
    if args.json:
        print_json(summary)
    else:
        print(format_summary(summary))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from ..dataset.validate import validate_root
    from .model import load, model_option

    model = None
    if args.model is not None:
        model = load(args.model, args.embedding, args.masks)
    fallback = model_option(args) if model is None else None  # $ONFLAME_MODEL, where the root names none
    report = validate_root(args.root, model=model, check_images=not args.no_images,
                           default_model=(lambda: load(fallback, args.embedding, args.masks)) if fallback else None)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.format_table())
    if report.ok:
        return EXIT_OK
    first, more = report.errors[0], len(report.errors) - 1
    say_error(first.file, first.problem + (f" (and {more} more error(s): see the report)" if more else ""))
    return EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    from ..dataset.export import export_params
    from ..fileio import confine_writes, refuse_links

    refuse_links(args.out)
    with confine_writes(Path(args.out).parent):
        result = export_params(args.root, args.out)
    if args.json:
        print_json(result)
    else:
        print(f"wrote {result['subjects']} subjects from {len(result['subsets'])} subsets to {args.out}")
    for problem in result.get("skipped", []):
        say_error(None, f"{problem} (skipped)")
    return EXIT_OK if not result.get("skipped") else EXIT_FAILED


def cmd_image_paths(args: argparse.Namespace) -> int:
    from ..training.lists import diff_image_paths, format_diff

    diff = diff_image_paths(args.a, args.b)
    if args.json:
        print_json(diff)
    else:
        print(format_diff(diff))
    return EXIT_OK if diff["same"] else EXIT_FAILED
