"""``report``: a built root as a static site to review in a browser."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import EXIT_FAILED, EXIT_OK, chatty, print_json, say_error
from .model import MODEL_VARIABLE
from .options import add_json, add_model, add_subsets, add_workers, check_subsets, subset_list

REPORT_EXAMPLES = f"""examples:
  onflame report MICA --out MICA-report                   every subset; open MICA-report/index.html
  onflame report MICA --subset FRGC LYHM --model FLAME2020/ --out FRGC-report

The model (--model, else the root's model.npz, else ${MODEL_VARIABLE}) compares each registration with
FLAME(params). A subject is shown as a problem where a file is missing or unreadable, or where its
numbers pass the thresholds validate judges by (docs/validate.md).
exit codes: 0 written, no subject with a problem; 1 written, with subjects shown as problems (the first
named on stderr); 2 bad usage (an unknown --subset, --workers 0, an unwritable --out); 130 interrupted."""


def add_parsers(sub: argparse._SubParsersAction, parents: list) -> None:
    p = sub.add_parser("report", parents=parents,
                       help="write a static site to review a built root: gallery, subject pages, statistics, outliers",
                       description="Write a folder of HTML pages to review a MICA root in a browser from the file "
                                   "system (no server, no network): an overview with counts and worst cases, a "
                                   "sortable and filterable gallery per subset, a page per subject, and parameter "
                                   "statistics with outliers. Pictures are drawn in parallel and reused while their "
                                   "inputs are unchanged.",
                       epilog=REPORT_EXAMPLES)
    p.add_argument("root", type=Path, help="MICA root (onflame build's output, or MICA's folders or zips)")
    add_subsets(p)
    p.add_argument("--out", type=Path, default=Path("onflame-report"),
                   help="site folder (default ./onflame-report); a second run reuses its pictures")
    add_model(p, needed=False, what="no comparison")
    add_workers(p, "drawing processes")
    p.add_argument("--no-heatmaps", action="store_true", help="do not read the build's scans for heat maps")
    add_json(p)
    p.set_defaults(run=cmd_report, main_input="root")


def cmd_report(args: argparse.Namespace) -> int:
    from ..dataset.layout import open_root
    from ..fileio import check_output_dir
    from ..report import write_report
    from .model import describe, load, model_option

    with open_root(args.root) as mica:
        subsets = check_subsets(subset_list(args.subset), list(mica.subsets), args.root)
        root_model = mica.model_file
        unreadable = list(mica.problems)  # subsets the root names but that cannot be read
    check_output_dir(args.out)
    # --model, else the root's own model.npz, else $ONFLAME_MODEL
    value = args.model if args.model is not None else str(root_model) if root_model is not None else model_option(args)
    model = None if value is None else load(value, args.embedding, args.masks)
    result = write_report(args.root, args.out, subsets=subsets, model=model, workers=args.workers,
                          heatmaps=not args.no_heatmaps, progress=chatty(args))
    flagged = sum(c.get("problem", 0) for c in result.counts.values())
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"model: {describe(model, value)}" if model is not None else
              "model: none (registrations not compared with FLAME(params); give --model)")
        for name, c in result.counts.items():
            print(f"{name}: {c['subjects']} subjects: registered {c['ok']}, suspect {c['suspect']}, failed "
                  f"{c['failed']}" + (f", no build record {c['unknown']}" if c["unknown"] else "")
                  + (f"; {c['problem']} with a problem" if c.get("problem") else ""))
        print(f"pictures drawn {result.drawn}, reused {result.cached}; {len(result.problems)} problem(s) shown in the "
              f"report; {result.seconds:.1f} s")
        print(result.index.resolve())
    for exc in unreadable:
        say_error(exc.path, exc.problem)
    if not flagged:
        return EXIT_FAILED if unreadable else EXIT_OK
    say_error(None, f"{result.subject_problems[0]} ({flagged} subject(s) shown as problems: see {result.index})")
    return EXIT_FAILED
