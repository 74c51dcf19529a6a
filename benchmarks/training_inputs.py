#!/usr/bin/env python3
"""Benchmark MICA's training inputs: ``prepare`` photos/s, and the training Dataset beside MICA's loader.

Builds a synthetic tree from the real photos in ../shared/fixtures/images (augmented copies, longer side
≤ 1024 px, ``--actors`` × ``--photos`` of them) and random FLAME parameters, then

1. runs ``prepare_subset`` with ``--workers`` processes and reports photos/s (wall clock, detector start-up
   included);
2. reads the prepared subset with onflame's ``MicaDataset`` and with a faithful re-implementation of
   MICA's loader logic (``datasets/base.py``: per sample load the npz, read each crop and scale it in
   float64, load each ``.npy``; ``skimage.io.imread`` replaced by Pillow, which is what it calls for JPEG),
   both through ``DataLoader(num_workers=--loader-workers, batch_size=--batch)`` with K = ``--K``.
   Rounds alternate between the two and each keeps its best round, so other load on the machine
   penalises neither side. Samples/s = actors delivered per second, worker start-up excluded.

usage: python benchmarks/training_inputs.py [--actors 8] [--photos 25] [--workers 2] [--K 4] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from onflame.flame import FlameParams
from onflame.training import prepare_subset
from onflame.training.phototree import make_photo_tree

# torch is imported inside the functions below: prepare's spawned workers re-import this script, and
# should start as light as they do under ``onflame prepare``

SHARED = Path(__file__).resolve().parents[2] / "shared"
IMAGES = SHARED / "fixtures" / "images"
SUBSET = "SYNTH"


def mica_loader_reference(root: Path, name: str, face_dict: dict, K: int):
    """MICA's ``BaseDataset.__getitem__`` logic, step for step, on an onflame-prepared subset."""
    import torch
    from PIL import Image
    from torch.utils.data import Dataset

    class MicaLoaderReference(Dataset):
        """MICA's ``BaseDataset.__getitem__`` logic, step for step, on an onflame-prepared subset."""

        def __init__(self, root: Path, name: str, face_dict: dict, K: int):
            self.root, self.name, self.K = root, name, K
            self.face_dict = face_dict
            self.imagepaths = list(face_dict)

        def __len__(self) -> int:
            return len(self.imagepaths)

        def __getitem__(self, index: int) -> dict:
            actor = self.imagepaths[index]
            images, params_path = self.face_dict[actor]
            images = [Path(self.root, self.name, "arcface_input", path) for path in images]
            sample_list = np.array(np.random.choice(range(len(images)), size=self.K, replace=False))
            K = self.K
            params = np.load(os.path.join(self.root, self.name, "FLAME_parameters", params_path))
            pose = torch.tensor(params["pose"]).float()
            betas = torch.tensor(params["betas"]).float()
            flame = {
                "shape_params": torch.cat(K * [betas[:300][None]], dim=0),
                "expression_params": torch.cat(K * [betas[300:][None]], dim=0),
                "pose_params": torch.cat(K * [torch.cat([pose[:3], pose[6:9]])[None]], dim=0),
            }
            images_list, arcface_list = [], []
            for i in sample_list:
                image_path = images[i]
                image = np.array(Image.open(image_path))  # skimage.io.imread
                image = image / 255.
                image = image.transpose(2, 0, 1)
                arcface_image = np.load(re.sub("png|jpg", "npy", str(image_path)))
                images_list.append(image)
                arcface_list.append(torch.tensor(arcface_image))
            images_array = torch.from_numpy(np.array(images_list)).float()
            arcface_array = torch.stack(arcface_list).float()
            return {"image": images_array, "arcface": arcface_array, "imagename": actor, "dataset": self.name,
                    "flame": flame}

    return MicaLoaderReference(root, name, face_dict, K)


def _seed_numpy(worker_id: int) -> None:  # MICA's seed_worker
    import torch

    np.random.seed(torch.initial_seed() % 2 ** 32)


def loader_rate(dataset, batch: int, workers: int, samples: int, collate=None) -> float:
    """Samples (actors) per second through a DataLoader, after its first batch (worker start-up)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, worker_init_fn=_seed_numpy,
                        persistent_workers=workers > 0, collate_fn=collate)
    it = iter(loader)
    next(it)
    n, t0 = 0, time.perf_counter()
    while n < samples:
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += b["image"].shape[0]
    return n / (time.perf_counter() - t0)


def build_tree(work: Path, actors: int, photos: int) -> tuple[Path, Path]:
    sources = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not sources:
        sys.exit(f"no photos in {IMAGES}")
    photo_dir, root = work / "photos", work / "root"
    make_photo_tree(sources, photo_dir, actors=actors, per_actor=photos, seed=0)
    rng = np.random.default_rng(0)
    for actor in sorted(p.name for p in photo_dir.iterdir()):
        FlameParams.from_mica(rng.normal(size=400), rng.normal(size=15) * 0.1, rng.normal(size=3) * 0.01).save(
            root / SUBSET / "FLAME_parameters" / actor / f"{actor}.npz")
    return photo_dir, root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=8)
    ap.add_argument("--photos", type=int, default=25, help="photos per actor")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="prepare processes (one run each)")
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2, help="actors per batch")
    ap.add_argument("--loader-workers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=200, help="actors read per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--detector", default="auto")
    args = ap.parse_args()
    import torch

    from onflame.training import MicaDataset, collate_samples

    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photo_dir, root = build_tree(work, args.actors, args.photos)
        n_photos = args.actors * args.photos
        prep = {}
        for workers in args.workers:
            shutil.rmtree(root / SUBSET / "arcface_input", ignore_errors=True)
            (root / SUBSET / "prepare_manifest.json").unlink(missing_ok=True)
            t0 = time.perf_counter()
            report = prepare_subset(root, SUBSET, photo_dir, detector=args.detector, workers=workers, progress=False)
            prep[workers] = time.perf_counter() - t0
        counts = report.counts

        t0 = time.perf_counter()
        cached = MicaDataset(root, SUBSET, K=args.K, cache_dir=work / "cache")
        cache_s = time.perf_counter() - t0
        uncached = MicaDataset(root, SUBSET, K=args.K)
        setups = {  # name: (dataset, collate_fn)
            "onflame, cache+collate": (cached, collate_samples),
            "onflame, decoded cache": (cached, None),
            "onflame, no cache": (uncached, None),
            "MICA loader logic": (mica_loader_reference(root, SUBSET, dict(report.image_list), args.K), None),
        }
        best = {name: 0.0 for name in setups}
        for _ in range(args.rounds):
            for name, (ds, collate) in setups.items():
                best[name] = max(best[name], loader_rate(ds, args.batch, args.loader_workers, args.samples, collate))

    print(f"prepare: {n_photos} photos ({args.actors} actors, longer side <= 1024 px), detector {report.detector}, "
          f"{os.cpu_count()} CPUs; wall clock incl. start-up")
    print(f"  aligned {counts['aligned']}, skipped {n_photos - counts['aligned']} "
          f"({', '.join(f'{k}: {v}' for k, v in counts.items() if k != 'aligned')})")
    for workers, seconds in prep.items():
        print(f"  --workers {workers}: {seconds:5.1f} s  ->  {n_photos / seconds:5.1f} photos/s  (goal >= 20)")
    print()
    print(f"training samples (one actor, K={args.K}), DataLoader batch {args.batch}, {args.loader_workers} workers, "
          f"best of {args.rounds} rounds of {args.samples} samples")
    mica_rate = best["MICA loader logic"]
    print(f"{'loader':<24}{'samples/s':>12}{'photos/s':>12}{'ratio':>9}")
    for name, rate in best.items():
        print(f"{name:<24}{rate:>12.1f}{rate * args.K:>12.1f}{rate / mica_rate:>9.2f}")
    print(f"(decoded cache built in {cache_s:.2f} s for {cached.total_images} photos)")
    print(f"onflame (decoded cache, collate_samples) / MICA = {best['onflame, cache+collate'] / mica_rate:.2f}x"
          "  (goal >= 2)")


if __name__ == "__main__":
    main()
