#!/usr/bin/env python3
"""Benchmark onflame's FLAME layer against smplx's FLAME layer, and model loading ``.pkl`` vs ``.npz``.

Both layers are built from the same model file (by default the synthetic FLAME-structured model made by
``../shared/tools/make_synthetic_flame.py``; pass ``--model`` for a real ``generic_model.pkl``), run on
the same random inputs (300 shape, 100 expression, all 5 joints rotated, translation), in float32 on the
CPU with ``--threads`` threads, and both compute vertices, joints, the 51 static landmarks and the 17
contour landmarks. "grad" times forward + backward of a loss on the vertices and landmarks with every
input requiring a gradient. Rounds alternate between the two layers and each keeps its fastest round,
so other load on the machine penalises neither side.

usage: python benchmarks/flame_layer.py [--model PKL] [--threads 2] [--seconds 0.5] [--batches 1 16 128] [--cpu-time]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from onflame import safepickle
from onflame.flame import FLAME, load_landmark_embedding, load_model, save_model

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"


def smplx_folder(model_pkl: Path, folder: Path) -> Path:
    """The folder layout smplx's FLAME reads: FLAME_NEUTRAL.pkl and the two landmark embeddings."""
    shutil.copy(model_pkl, folder / "FLAME_NEUTRAL.pkl")
    shutil.copy(FLAME_FIX / "flame_static_embedding.pkl", folder / "flame_static_embedding.pkl")
    mica = safepickle.load_npy_object(FLAME_FIX / "landmark_embedding.npy")
    dyn = {"lmk_face_idx": np.asarray(mica["dynamic_lmk_faces_idx"], dtype=np.int64),
           "lmk_b_coords": np.asarray(mica["dynamic_lmk_bary_coords"], dtype=np.float64)}
    np.save(folder / "flame_dynamic_embedding.npy", np.array(dyn, dtype=object), allow_pickle=True)
    return folder


def best_time(fn: Callable[[], None], seconds: float, clock: Callable[[], float]) -> float:
    """Fastest single call of ``fn`` (seconds, read on ``clock``) over calls lasting about ``seconds`` in all."""
    fn()
    best, start = float("inf"), time.perf_counter()
    while True:
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
        if time.perf_counter() - start >= seconds:
            return best


def interleaved(fns: dict[str, Callable[[], None]], seconds: float, clock: Callable[[], float],
                rounds: int = 5) -> dict[str, float]:
    """Best time per call of each function, measured in alternating rounds."""
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], best_time(fn, seconds / rounds, clock))
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="FLAME .pkl (default: build the synthetic model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=0.5, help="measuring time per layer and case")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--cpu-time", action="store_true",
                    help="time this thread's CPU time instead of wall time (needs --threads 1): steadier on a busy "
                         "machine, since time spent waiting for a core is not counted")
    a = ap.parse_args(argv)
    if a.cpu_time and a.threads != 1:
        ap.error("--cpu-time measures one thread: use it with --threads 1")
    clock = time.thread_time if a.cpu_time else time.perf_counter
    torch.set_num_threads(a.threads)
    import smplx  # test-only dependency: the reference layer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pkl = a.model
        if pkl is None:
            pkl = tmp / "generic_model.pkl"
            subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(pkl), "--plain"],
                           check=True, capture_output=True)

        # model loading: the official pickle vs onflame's pickle-free .npz
        npz = tmp / "model.npz"
        save_model(load_model(pkl), npz)
        load_pkl = interleaved({"pkl": lambda: load_model(pkl), "npz": lambda: load_model(npz)}, 4 * a.seconds, clock)
        print(f"model load, {'CPU' if a.cpu_time else 'wall'} time "
              f"({pkl.stat().st_size / 1e6:.0f} MB pkl, {npz.stat().st_size / 1e6:.0f} MB npz): "
              f"pkl {load_pkl['pkl'] * 1e3:.0f} ms, npz {load_pkl['npz'] * 1e3:.0f} ms, "
              f"npz {load_pkl['pkl'] / load_pkl['npz']:.1f}x faster\n")

        emb = load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl", FLAME_FIX / "landmark_embedding.npy")
        ours = FLAME(load_model(pkl, landmarks=emb), contour_joint=0)
        ref = smplx.FLAME(str(smplx_folder(pkl, tmp)), num_betas=300, num_expression_coeffs=100,
                          use_face_contour=True, create_betas=False, create_expression=False,
                          create_global_orient=False, create_neck_pose=False, create_jaw_pose=False,
                          create_leye_pose=False, create_reye_pose=False, create_transl=False)

    timing = "CPU time" if a.cpu_time else "wall time"
    print(f"FLAME layer, float32, CPU, {torch.get_num_threads()} threads, {timing}, meshes/s (higher is better)")
    print(f"{'batch':>6} {'grad':>5} {'onflame':>10} {'smplx':>10} {'ratio':>7}")
    for B in a.batches:
        g = torch.Generator().manual_seed(B)
        shape, expression = torch.randn(B, 300, generator=g), torch.randn(B, 100, generator=g)
        pose, trans = 0.3 * torch.randn(B, 15, generator=g), 0.05 * torch.randn(B, 3, generator=g)
        for grad in (False, True):
            inputs = [x.clone().requires_grad_(grad) for x in (shape, expression, pose, trans)]

            def run_ours(s=inputs[0], e=inputs[1], p=inputs[2], t=inputs[3], grad=grad):
                with torch.set_grad_enabled(grad):
                    out = ours(s, e, p, t)
                    if grad:
                        (out.vertices.square().sum() + out.landmarks.sum() + out.contour.sum()).backward()

            def run_ref(s=inputs[0], e=inputs[1], p=inputs[2], t=inputs[3], grad=grad):
                with torch.set_grad_enabled(grad):
                    out = ref(betas=s, expression=e, global_orient=p[:, :3], neck_pose=p[:, 3:6],
                              jaw_pose=p[:, 6:9], leye_pose=p[:, 9:12], reye_pose=p[:, 12:], transl=t)
                    if grad:
                        (out.vertices.square().sum() + out.joints[:, 5:].sum()).backward()

            best = interleaved({"ours": run_ours, "ref": run_ref}, 2 * a.seconds, clock)
            rate = {k: B / v for k, v in best.items()}
            print(f"{B:>6} {'yes' if grad else 'no':>5} {rate['ours']:>10.0f} {rate['ref']:>10.0f} "
                  f"{rate['ours'] / rate['ref']:>6.2f}x")


if __name__ == "__main__":
    main()
