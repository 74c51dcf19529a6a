#!/usr/bin/env python3
"""Benchmark onflame's VRML 2.0 reader against PyVRML97, and time the FRGC range-image reader.

The VRML file is a 3dMD-style export written for the run: two textured ``IndexedFaceSet`` shapes (one
per camera pod) of ``--vertices`` points each, triangles and texture coordinates with their indices,
numbers as 3dMD writes them. onflame's side reads it into a :class:`onflame.mesh.Mesh` (vertices,
triangles, uv, per-corner uv indices, texture paths); PyVRML97's side parses it into its scene graph
(numpy arrays of points and indices, no triangulation), so the peer does strictly less work. PyVRML97
is not an onflame dependency: give a Python that has it (``pip install pyvrml97``) with ``--peer-python``;
it runs in a subprocess on the same file in the same run. Each side's fastest of ``--repeat`` runs is kept.

The FRGC ``.abs`` row reads a full-size 480 x 640 range image (no peer reads this format).

usage: python benchmarks/scan_readers.py [--vertices 150000] [--repeat 3] [--peer-python /path/to/python]
"""
from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from onflame.mesh.frgc_abs import read_abs
from onflame.mesh.wrl import read_wrl

PEER = r"""
import sys, time
from vrml.vrml97 import parser
best = float("inf")
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    text = open(sys.argv[1]).read()
    ok, result, end = parser.buildParser().parse(text)
    shapes = result[1].children[0].children
    n = sum(len(s.geometry.coord.point) for s in shapes)
    best = min(best, time.perf_counter() - t)
assert ok and end == len(text), "PyVRML97 did not parse the whole file"
print(best, n)
"""


def grid_surface(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A wavy (side x side) grid of about ``n`` points in mm, its triangles and planar uv."""
    side = int(np.sqrt(n))
    y, x = np.mgrid[0:side, 0:side].astype(float)
    v = np.stack([x, y, 5 * np.sin(x / 7) * np.cos(y / 9)], -1).reshape(-1, 3) * 0.5
    v += rng.normal(0, 0.01, v.shape)
    i = np.arange(side * side).reshape(side, side)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    uv = (v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], 0)
    return v, f, uv


def write_wrl(path: Path, n: int) -> tuple[int, int]:
    from onflame.synthetic.raw_formats import wrl_text  # the synthetic releases' 3dMD-style writer

    rng = np.random.default_rng(0)
    shapes = []
    for k in range(2):
        v, f, uv = grid_surface(n, rng)
        shapes.append((v, f, uv, f"tex_{k}.bmp"))
        Image.new("RGB", (1, 1)).save(path.parent / f"tex_{k}.bmp")  # the textures the file names
    path.write_text(wrl_text(shapes))
    return sum(len(s[0]) for s in shapes), sum(len(s[1]) for s in shapes)


def write_abs(path: Path) -> None:
    R, C = 480, 640
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:R, 0:C]
    valid = ((rows - R / 2) / (R * 0.45)) ** 2 + ((cols - C / 2) / (C * 0.3)) ** 2 < 1
    xyz = np.stack([cols * 0.6, -rows * 0.6, -1000 + 30 * np.cos(cols / 60.0) + rng.normal(0, 0.05, (R, C))], -1)
    xyz = np.where(valid[..., None], xyz, -999999.0).reshape(-1, 3)
    lines = [f"{R} rows", f"{C} columns", "pixels (flag X Y Z):", " ".join(["%d"] * (R * C)) % tuple(valid.ravel())]
    lines += [" ".join(["%.6f"] * (R * C)) % tuple(xyz[:, k]) for k in range(3)]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=6))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vertices", type=int, default=150_000, help="points per shape (two shapes)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-python", help="a Python interpreter with pyvrml97 installed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wrl = Path(tmp) / "scan.wrl"
        nv, nf = write_wrl(wrl, args.vertices)
        size_mb = wrl.stat().st_size / 1e6
        ours = best(lambda: read_wrl(wrl), args.repeat)
        peer = None
        if args.peer_python:
            out = subprocess.run([args.peer_python, "-c", PEER, str(wrl), str(args.repeat)], capture_output=True,
                                 text=True, check=True).stdout.split()
            peer = float(out[0])
            assert int(out[1]) == nv
        absf = Path(tmp) / "04200d74.abs.gz"
        write_abs(absf)
        t_abs = best(lambda: read_abs(absf, photo=False), args.repeat)
        m = read_abs(absf, photo=False)

    print(f"{'file':44s} {'onflame (s)':>12s} {'peer (s)':>10s} {'peer/onflame':>13s}")
    label = f".wrl {nv:,} verts {nf:,} tris ({size_mb:.0f} MB)"
    if peer is None:
        print(f"{label:44s} {ours:12.3f} {'-':>10s} {'-':>13s}   (PyVRML97: pass --peer-python)")
    else:
        print(f"{label:44s} {ours:12.3f} {peer:10.3f} {peer / ours:12.1f}x   (peer: PyVRML97 parse only)")
    label = f".abs.gz 480x640 -> {m.n_vertices:,} verts {m.n_faces:,} tris"
    print(f"{label:44s} {t_abs:12.3f} {'-':>10s} {'-':>13s}   (no peer reads .abs)")


if __name__ == "__main__":
    sys.exit(main())
