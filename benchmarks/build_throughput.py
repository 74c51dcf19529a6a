#!/usr/bin/env python3
"""Scans per second of ``onflame build`` on synthetic raw releases, with 1 and 2 workers (and Ray), beside the
loop a user would otherwise write.

The peer is the plain serial loop over the same scans: read each one, bring it to metres and FLAME's
axes, :func:`onflame.registration.register` it and save the parameters and mesh, all in this process
(no manifest, no checksums, no pool). onflame's rows are full builds into fresh roots (spawned
workers, manifest, reports, summaries); their wall time includes starting the workers. Scaling
efficiency = (scans/s with N workers) / (N × scans/s with 1 worker).

usage: python benchmarks/build_throughput.py [--sources FRGC,STIRLING,...] [--actors 3] [--ray]

The workload is the miniature raw release of each source (default: all eight, ``--actors`` each, 51
landmarks given as sidecar files), built in one run (one pool for all subsets), as ``onflame demo`` does.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def write_releases(sources: list[str], raw: Path, actors: int, model) -> int:
    """The raw releases ``raw/<SUBSET>/``; returns the number of scans written."""
    from onflame.synthetic.raw_releases import write_raw_release

    return sum(len(write_raw_release(name, raw / name, model, n_actors=actors, seed=seed).scans)
               for seed, name in enumerate(sources))


def serial_loop(sources: list[str], raw: Path, out: Path, model) -> tuple[int, float]:
    """What a user writes without onflame build: one register() after another, in this process."""
    import torch

    from onflame.dataset.build_task import BuildTask, find_landmarks
    from onflame.mesh import write_obj
    from onflame.registration import register
    from onflame.sources import get_source

    torch.set_num_threads(1)  # as a build's workers: one core per scan
    t0 = time.perf_counter()
    n = 0
    for name in sources:
        for item in get_source(name).find_scans(raw / name):
            raw_mesh = item.read()
            scan = item.to_flame_frame(raw_mesh)
            lmk, _ = find_landmarks(BuildTask(item, str(out)), raw_mesh, scan)  # the sidecar, as a build reads it
            reg = register(scan, model, landmarks=lmk, units="m")
            reg.params.save(out / name / item.actor / f"{item.stem}.npz")
            write_obj(out / name / item.actor / f"{item.stem}.obj", reg.mesh)
            n += 1
    return n, time.perf_counter() - t0


def onflame_build(sources: list[str], raw: Path, out: Path, model, workers: int, executor: str) -> tuple[int, float]:
    from onflame.dataset.build import build

    t0 = time.perf_counter()
    reports = build([(name, raw / name) for name in sources], out, model, workers=workers, executor=executor)
    wall = time.perf_counter() - t0
    for rep in reports.values():
        assert rep.count("failed") == 0, rep.format_table()
    return sum(rep.built for rep in reports.values()), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="all", help="comma-separated MICA subset names, or all")
    ap.add_argument("--actors", type=int, default=3, help="actors per source (1-3)")
    ap.add_argument("--ray", action="store_true", help="also run the Ray executor (single-node Ray here)")
    args = ap.parse_args()

    from onflame.dataset.build import build  # noqa: F401  (import cost outside the timings)
    from onflame.sources import SOURCES, get_source
    from onflame.synthetic.head import make_head_model

    sources = list(SOURCES) if args.sources == "all" else [get_source(n).name for n in args.sources.split(",")]
    model = make_head_model()
    tmp = Path(tempfile.mkdtemp(prefix="onflame-build-bench-"))
    try:
        raw = tmp / "raw"
        scans = write_releases(sources, raw, args.actors, model)
        rows = []
        n, s = serial_loop(sources, raw, tmp / "loop", model)
        rows.append(("serial register() loop (peer)", 1, n, s))
        for workers in (1, 2):
            n, s = onflame_build(sources, raw, tmp / f"build{workers}", model, workers, "local")
            rows.append(("onflame build, local pool", workers, n, s))
        if args.ray:
            n, s = onflame_build(sources, raw, tmp / "ray", model, 2, "ray")
            rows.append(("onflame build, Ray (single node)", 2, n, s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    peer_rate = rows[0][2] / rows[0][3]
    one_worker = rows[1][2] / rows[1][3]
    print(f"{scans} synthetic scans ({len(sources)} source(s) x {args.actors} actors, native formats), 51 landmarks given")
    head = f"{'method':<36} {'workers':>7} {'scans':>5} {'wall s':>7} {'scans/s':>8} {'vs peer':>8} {'efficiency':>10}"
    print(head)
    print("-" * len(head))
    for name, workers, n, s in rows:
        rate = n / s
        eff = rate / (workers * one_worker) if name.startswith("onflame") else float("nan")
        print(f"{name:<36} {workers:>7} {n:>5} {s:>7.2f} {rate:>8.3f} {rate / peer_rate:>7.2f}x "
              f"{'' if eff != eff else f'{eff:.2f}':>10}")


if __name__ == "__main__":
    main()
