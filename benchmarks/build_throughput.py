#!/usr/bin/env python3
"""Scans per second of ``onflame build`` on a synthetic subset, with 1 and 2 workers (and Ray), beside the loop
a user would otherwise write.

The peer is the plain serial loop over the same scans: read each one, bring it to metres and FLAME's
axes, :func:`onflame.registration.register` it and save the parameters and mesh, all in this process
(no manifest, no checksums, no pool). onflame's rows are full builds into fresh roots (spawned
workers, manifest, reports, summaries); their wall time includes starting the workers. Scaling
efficiency = (scans/s with N workers) / (N × scans/s with 1 worker).

usage: python benchmarks/build_throughput.py [--source FRGC] [--actors 3] [--copies 3] [--ray]

``--copies`` repeats each synthetic actor under new capture names (different random heads), so a
subset of ``actors × copies`` scans is built.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def write_release(source: str, raw: Path, actors: int, copies: int, model) -> int:
    """``copies`` miniature releases of ``actors`` actors each, side by side in ``raw/<k>/``; scans written."""
    from onflame.synthetic.raw_releases import write_raw_release

    n = 0
    for k in range(copies):
        n += len(write_raw_release(source, raw / f"copy{k}", model, n_actors=actors, seed=100 + k).scans)
    return n


def serial_loop(source: str, raw: Path, out: Path, model) -> tuple[int, float]:
    """What a user writes without onflame build: one register() after another."""
    import torch

    from onflame.dataset.build_task import read_landmark_file
    from onflame.mesh import write_obj
    from onflame.registration import register
    from onflame.sources import get_source
    from onflame.sources.base import METRES_PER_UNIT

    torch.set_num_threads(1)  # as a build's workers: one core per scan
    t0 = time.perf_counter()
    n = 0
    for copy in sorted(raw.iterdir()):
        for item in get_source(source).find_scans(copy):
            raw_mesh = item.read()
            scan = item.to_flame_frame(raw_mesh)
            lmk = None
            if item.landmarks_path is not None:
                lmk = METRES_PER_UNIT[scan.meta["units_read"]] * read_landmark_file(item.landmarks_path, raw_mesh) @ item.rotation.T
            reg = register(scan, model, landmarks=lmk, units="m")
            reg.params.save(out / copy.name / f"{item.stem}.npz")
            write_obj(out / copy.name / f"{item.stem}.obj", reg.mesh)
            n += 1
    return n, time.perf_counter() - t0


def onflame_build(source: str, raw: Path, out: Path, model, workers: int, executor: str) -> tuple[int, float]:
    from onflame.dataset.build import build

    jobs = sorted(raw.iterdir())
    t0 = time.perf_counter()
    n = 0
    for copy in jobs:  # one root per copy: the copies reuse MICA's actor ids
        rep = build([(source, copy)], out / copy.name, model, workers=workers, executor=executor)[source]
        assert rep.exit_code == 0, rep.format_table()
        n += rep.built
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="FRGC")
    ap.add_argument("--actors", type=int, default=3, help="actors per copy (1-3)")
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--ray", action="store_true", help="also run the Ray executor (single-node Ray here)")
    args = ap.parse_args()

    from onflame.dataset.build import build  # noqa: F401  (import cost outside the timings)
    from onflame.sources import get_source
    from onflame.synthetic.head import make_head_model

    source = get_source(args.source).name
    model = make_head_model()
    tmp = Path(tempfile.mkdtemp(prefix="onflame-build-bench-"))
    try:
        raw = tmp / "raw"
        scans = write_release(source, raw, args.actors, args.copies, model)
        rows = []
        n, s = serial_loop(source, raw, tmp / "loop", model)
        rows.append(("serial register() loop (peer)", 1, n, s))
        for workers in (1, 2):
            n, s = onflame_build(source, raw, tmp / f"build{workers}", model, workers, "local")
            rows.append((f"onflame build, local pool", workers, n, s))
        if args.ray:
            n, s = onflame_build(source, raw, tmp / "ray", model, 2, "ray")
            rows.append(("onflame build, Ray (single node)", 2, n, s))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    peer_rate = rows[0][2] / rows[0][3]
    one_worker = rows[1][2] / rows[1][3]
    print(f"{source}: {scans} synthetic scans ({args.copies} copies x {args.actors} actors), 51 landmarks given")
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
