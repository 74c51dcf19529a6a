#!/usr/bin/env python3
"""Seconds of ``onflame report`` on the demo's tree and on a larger synthetic build, first run and re-run.

Trees (built once into ``--work``, resumably, by ``onflame build`` itself):

- ``demo``: the eight miniature raw releases, three actors each (24 scans), as ``onflame demo`` builds them;
- ``synthetic-N``: a BP4D-style release of N made-up actors (default 200), of which a few have their
  landmark clicks scattered (the build calls them suspect) and two a truncated scan (failed).

For each tree: a report into a fresh folder (every picture drawn, ``--workers`` processes), then the same
report again (an unchanged root: nothing drawn). No tool does this job to compare with; the heat maps'
distances are :mod:`onflame.mesh.distance`'s, compared with trimesh's in ``benchmarks/evaluation.py``.

usage: python benchmarks/report_site.py [--subjects 200] [--workers 2] [--work DIR]
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np


def demo_tree(work: Path, model, workers: int) -> Path:
    from onflame.synthetic.raw_releases import build_all_synthetic

    build_all_synthetic(work / "demo", model, n_actors=3, workers=workers)
    return work / "demo" / "mica"


def synthetic_tree(work: Path, model, n: int, workers: int) -> Path:
    from onflame.dataset.build import build
    from onflame.synthetic.raw_releases import write_raw_release

    top = work / f"synthetic-{n}"
    facts = [(f"{'FM'[i % 2]}{i + 1:03d}", f"{'FM'[i % 2]}{i + 1:03d}", ("0001.jpg",)) for i in range(n)]
    rel = write_raw_release("BP4D", top / "raw", model, n_actors=n, seed=0, facts=facts)
    rng = np.random.default_rng(0)
    for scan in rel.scans[5:: max(1, n // 6)]:  # scattered clicks: suspect
        clicks = scan.path.with_name(f"{scan.stem}.lmk51.npy")
        np.save(clicks, np.load(clicks) + rng.normal(0.0, 6.0, (51, 3)))
    for scan in rel.scans[3:5]:  # truncated scans: failed
        scan.path.write_bytes(scan.path.read_bytes()[:300])
    build([("BP4D", top / "raw")], top / "mica", model, workers=workers)
    return top / "mica"


def site_bytes(out: Path) -> int:
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("report-bench"), help="trees and sites (kept between runs)")
    args = ap.parse_args()

    from onflame.report import write_report
    from onflame.synthetic.head import make_head_model

    model = make_head_model()
    t0 = time.perf_counter()
    trees = {"demo": demo_tree(args.work, model, args.workers),
             f"synthetic-{args.subjects}": synthetic_tree(args.work, model, args.subjects, args.workers)}
    print(f"trees ready in {time.perf_counter() - t0:.0f} s (built once, resumable) under {args.work}\n")

    rows = []
    for name, root in trees.items():
        out = args.work / f"site-{name}"
        shutil.rmtree(out, ignore_errors=True)
        first = write_report(root, out, workers=args.workers)
        again = write_report(root, out, workers=args.workers)
        subjects = sum(c["subjects"] for c in first.counts.values())
        rows.append([name, subjects, first.drawn, f"{first.seconds:.1f}", f"{first.seconds / subjects:.2f}",
                     again.drawn, f"{again.seconds:.1f}", f"{site_bytes(out) / 1e6:.1f}"])
    head = ["tree", "subjects", "drawn", "first run s", "s/subject", "re-run drawn", "re-run s", "site MB"]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    print(f"onflame report, {args.workers} worker(s)")
    for r in [head] + rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))



if __name__ == "__main__":
    main()
