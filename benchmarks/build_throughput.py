#!/usr/bin/env python3
"""Scans per second of ``onflame build`` on synthetic raw releases: the local pool with 1 and 2 workers, and
with ``--ray`` a single-node Ray and a two-node Ray, beside the loop a user would otherwise write.

The peer is the plain serial loop over the same scans: read each one, bring it to metres and FLAME's
axes, :func:`onflame.registration.register` it and save the parameters and mesh, all in this process
(no manifest, no checksums, no pool). onflame's rows are full builds into fresh roots (workers started,
manifest, reports, summaries); their wall time includes starting the workers (and, for the single-node
Ray, starting Ray). The two-node Ray is a cluster of two ``ray start`` nodes on this machine, one CPU
each, started before the timing as a cluster would be; its tasks get their files through Ray's object
store and return their outputs to the build (``ray_files="ship"``), as on nodes without a shared file
system.

Columns: wall seconds and scans/s; per-scan seconds (mean wall time of one scan's task) and CPU seconds
(mean CPU time of one scan's task; for local rows also every process's CPU over the scans); scaling
efficiency = (scans/s with N workers) / (N x scans/s of the one-worker build); the checksum of the
dataset files written (parameters, meshes, reports), which must be the same on every onflame row.

usage: python benchmarks/build_throughput.py [--sources FRGC,STIRLING,...] [--actors 3] [--ray] [--write-docs]

The workload is the miniature raw release of each source (default: all eight, ``--actors`` each, 51
landmarks given as sidecar files), built in one run (one pool for all subsets), as ``onflame demo`` does.
Wall times depend on what else the machine runs; CPU seconds much less.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np


def write_releases(sources: list[str], raw: Path, actors: int, model) -> int:
    """The raw releases ``raw/<SUBSET>/``; returns the number of scans written."""
    from onflame.synthetic.raw_releases import write_raw_release

    return sum(len(write_raw_release(name, raw / name, model, n_actors=actors, seed=seed).scans)
               for seed, name in enumerate(sources))


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def serial_loop(sources: list[str], raw: Path, out: Path, model) -> dict:
    """What a user writes without onflame build: one register() after another, in this process."""
    from onflame.dataset.build_task import BuildTask, find_landmarks
    from onflame.mesh import write_obj
    from onflame.registration import register
    from onflame.sources import get_source

    os.environ["ONFLAME_THREADS"] = "1"  # as a build's workers: one core per scan
    t0, c0 = time.perf_counter(), time.process_time()
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
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    del os.environ["ONFLAME_THREADS"]
    return {"scans": n, "wall": wall, "task_s": wall / n, "task_cpu": cpu / n, "all_cpu": cpu / n, "checksum": ""}


def dataset_checksum(root: Path) -> str:
    """SHA-256 (first 12 hex digits) of every dataset file's path and bytes: parameters, meshes, reports."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and ("/FLAME_parameters/" in rel or "/registrations/" in rel or "/build/reports/" in rel):
            h.update(rel.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def onflame_build(sources: list[str], raw: Path, out: Path, model, **options) -> dict:
    from onflame.dataset.build import build

    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    reports = build([(name, raw / name) for name in sources], out, model, **options)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + _children_cpu() - k0  # local workers are children; Ray's are not all
    for rep in reports.values():
        assert rep.count("failed") == 0, rep.format_table()
    records = [r for rep in reports.values() for r in rep.records if not r.get("cached")]
    n = len(records)
    return {"scans": n, "wall": wall, "task_s": float(np.mean([r["timings_s"]["task"] for r in records])),
            "task_cpu": float(np.mean([r["timings_s"]["cpu"] for r in records])), "all_cpu": cpu / n,
            "checksum": dataset_checksum(out)}


@contextlib.contextmanager
def two_node_ray() -> Iterator[str]:
    """A Ray cluster of two nodes on this machine (one CPU each, each with its own temporary folder and
    process group); yields its address. Without token authentication: it lives for this run only."""
    work = Path(tempfile.mkdtemp(prefix="ofr-"))  # short: Ray's socket paths inside must stay under 108 bytes
    ray_bin = str(Path(sys.executable).with_name("ray"))
    os.environ["RAY_AUTH_MODE"] = "disabled"  # this process, too (Ray reads it once, when first imported)
    env = {**os.environ, "HOME": str(work)}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["--num-cpus=1", "--disable-usage-stats", "--object-store-memory=200000000", "--block"]
    nodes = []
    try:
        nodes.append(subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       f"--temp-dir={work / 'h'}", *common], env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray head did not start")
            time.sleep(0.1)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{port}", f"--temp-dir={work / 'n'}",
                                       *common], env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        import ray

        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False, configure_logging=False)
        while ray.cluster_resources().get("CPU", 0) < 2:  # both nodes up before the timing
            time.sleep(0.1)
        ray.shutdown()
        yield f"127.0.0.1:{port}"
    finally:
        for p in reversed(nodes):
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> tuple[int, list[tuple[str, int, dict]]]:
    from onflame.dataset.build import build  # noqa: F401  (import cost outside the timings)
    from onflame.sources import SOURCES, get_source
    from onflame.synthetic.head import make_head_model

    sources = list(SOURCES) if args.sources == "all" else [get_source(n).name for n in args.sources.split(",")]
    model = make_head_model()
    tmp = Path(tempfile.mkdtemp(prefix="onflame-build-bench-"))
    rows = []
    try:
        raw = tmp / "raw"
        scans = write_releases(sources, raw, args.actors, model)
        rows.append(("serial `register()` loop (the peer)", 1, serial_loop(sources, raw, tmp / "loop", model)))
        for workers in (1, 2):
            rows.append(("`onflame build`, local pool", workers,
                         onflame_build(sources, raw, tmp / f"build{workers}", model, workers=workers)))
        if args.ray:
            with two_node_ray() as address:
                two_nodes = onflame_build(sources, raw, tmp / "ray2", model, executor="ray", address=address,
                                          ray_files="ship")
            rows.append(("`onflame build`, Ray single node (its start included)", 2,
                         onflame_build(sources, raw, tmp / "ray1", model, workers=2, executor="ray")))
            rows.append(("`onflame build`, Ray two nodes, files shipped", 2, two_nodes))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return scans, rows


def table(rows: list[tuple[str, int, dict]]) -> tuple[list[str], list[list[str]]]:
    head = ["method", "workers", "wall s", "scans/s", "s per scan", "CPU s per scan (task)",
            "CPU s per scan (all processes)", "vs the `register()` loop", "scaling efficiency", "checksum"]
    peer = rows[0][2]["scans"] / rows[0][2]["wall"]
    one = next(r[2]["scans"] / r[2]["wall"] for r in rows if r[1] == 1 and "local" in r[0])
    out = []
    for name, workers, m in rows:
        rate = m["scans"] / m["wall"]
        onflame = "onflame" in name
        all_cpu = f"{m['all_cpu']:.2f}" if not onflame or "local" in name else "-"
        out.append([name, str(workers), f"{m['wall']:.1f}", f"{rate:.3f}", f"{m['task_s']:.2f}", f"{m['task_cpu']:.2f}",
                    all_cpu, f"{rate / peer:.2f}×", f"{rate / (workers * one):.2f}" if onflame else "",
                    m["checksum"] or "-"])
    return head, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="all", help="comma-separated MICA subset names, or all")
    ap.add_argument("--actors", type=int, default=3, help="actors per source (1-3)")
    ap.add_argument("--ray", action="store_true", help="also a single-node Ray and a two-node Ray")
    ap.add_argument("--write-docs", action="store_true", help="rewrite this benchmark's section of docs/benchmarks.md")
    args = ap.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    scans, rows = run(args)
    head, cells = table(rows)
    checksums = {m["checksum"] for name, _, m in rows if "onflame" in name}
    print(f"{scans} synthetic scans ({args.sources} source(s) x {args.actors} actors, native formats), "
          f"51 landmarks given; {os.cpu_count()} cores, load average {load:.1f} at the start")
    widths = [max(len(r[i]) for r in [head] + cells) for i in range(len(head))]
    for r in [head] + cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("same files on every onflame row:", "yes" if len(checksums) == 1 else f"NO ({', '.join(sorted(checksums))})")
    if args.write_docs:
        from doc_tables import markdown_table, write_section

        note = (f"{scans} scans (the eight synthetic releases × {args.actors} actors, 51 landmarks given as sidecar "
                f"files) on {os.cpu_count()} cores at a load average of {load:.1f} when it started (wall times "
                "depend on it, CPU seconds much less); every onflame row wrote the same files"
                + ("" if len(checksums) == 1 else " — NOT: see the checksums"))
        write_section("build_throughput", note + ".\n\n" + markdown_table(head, cells))


if __name__ == "__main__":
    main()
