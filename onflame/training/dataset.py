"""MICA's training ``Dataset``: per actor, K aligned photos and the actor's FLAME targets.

One item is one actor:

    image       (K, 3, 224, 224) float32 in [0, 1], the 224×224 aligned crops
    arcface     (K, 3, 112, 112) float32, the stored ArcFace blobs
    flame       {shape_params (K, 300), expression_params (K, 100), pose_params (K, 6)} float32
    imagename   the actor
    dataset     the subset name

Training draws K photos without replacement (torch's RNG, which ``DataLoader`` seeds per worker); the
evaluation mode takes the first ``min(200, smallest K in the subset)`` photos of each list. Parameter
files are read and checked once, when the dataset is built, through :func:`onflame.flame.read_params`.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, WeightedRandomSampler, get_worker_info

from ..dataset.image_paths import read_image_paths
from ..errors import InputError
from ..fileio import read_npy
from ..flame import mica_training_params, read_params
from ..mesh.images import open_image
from .cache import DecodedCache

log = logging.getLogger(__name__)

IMAGE_FOLDER = "arcface_input"
PARAMS_FOLDER = "FLAME_parameters"
_MAX_LISTED = 5


def arcface_path(image_path: Path) -> Path:
    """The ``.npy`` blob stored beside a crop (``x.jpg`` → ``x.npy``, ``x.png`` → ``x.npy``)."""
    return image_path.with_suffix(".npy")


class MicaDataset(Dataset):
    """One MICA subset as MICA's trainer reads it (see the module docstring).

    Args:
        root: dataset root holding ``<subset>/arcface_input``, ``<subset>/FLAME_parameters``.
        subset: subset name (folder under ``root``).
        K: photos per actor in training mode.
        mode: ``"train"`` (random K) or ``"eval"`` (first ``min(max_eval_K, smallest K)``, deterministic).
        image_list: the list to read; default ``root/image_paths/<subset>.npy``.
        on_problem: ``"raise"``: an :class:`InputError` listing every actor with too few photos, missing
            files or a bad parameter file; ``"skip"``: leave those photos/actors out (see ``skipped``).
        check_files: check at start that every listed crop and blob exists.
        max_eval_K: the evaluation cap (MICA: 200).
        cache_dir: keep decoded crops and blobs in a memory-mapped cache there
            (:class:`~onflame.training.cache.DecodedCache`; built or refreshed here, ~300 KB per photo):
            samples then cost a few row reads instead of K JPEG decodes. Same values as without it.
    """

    def __init__(self, root: str | os.PathLike, subset: str, K: int = 4, mode: str = "train",
                 image_list: str | os.PathLike | None = None, on_problem: str = "raise", check_files: bool = True,
                 max_eval_K: int = 200, cache_dir: str | os.PathLike | None = None):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', not {mode!r}")
        if on_problem not in ("raise", "skip"):
            raise ValueError(f"on_problem must be 'raise' or 'skip', not {on_problem!r}")
        if K < 1:
            raise ValueError(f"K must be at least 1, got {K}")
        self.root, self.name, self.K, self.mode = Path(root), subset, int(K), mode
        self.list_path = Path(image_list) if image_list else self.root / "image_paths" / f"{subset}.npy"
        image_dir = self.root / subset / IMAGE_FOLDER
        params_dir = self.root / subset / PARAMS_FOLDER
        listing = read_image_paths(self.list_path)

        #: actor -> why it (or some of its photos) was left out
        self.skipped: dict[str, str] = {}
        problems: list[str] = []
        self.actors: list[str] = []
        self._images: list[list[Path]] = []
        self._targets: list[dict[str, torch.Tensor]] = []
        for actor, (images, npz) in listing.items():
            paths = [image_dir / p for p in images]
            if check_files:
                missing = [p for p in paths if not (p.is_file() and arcface_path(p).is_file())]
                if missing:
                    msg = f"{len(missing)} of {len(paths)} photos missing (crop or .npy), e.g. {missing[0]}"
                    problems.append(f"actor {actor}: {msg}")
                    self.skipped[actor] = msg
                    gone = set(missing)
                    paths = [p for p in paths if p not in gone]
            try:
                params = read_params(params_dir / npz)
            except InputError as exc:
                problems.append(f"actor {actor}: {exc}")
                self.skipped[actor] = str(exc)
                continue
            if mode == "train" and len(paths) < self.K:
                msg = f"has {len(paths)} photos, fewer than K={self.K}"
                problems.append(f"actor {actor}: {msg}")
                self.skipped[actor] = msg
                continue
            if not paths:
                continue
            targets = mica_training_params(params.betas, params.pose)
            self.actors.append(actor)
            self._images.append(paths)
            self._targets.append({k: torch.as_tensor(np.asarray(v, dtype=np.float32))[None]
                                  for k, v in targets.items()})
        if problems and on_problem == "raise":
            more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
            raise InputError(self.list_path, "; ".join(problems[:_MAX_LISTED]) + more)
        if problems:
            log.warning("%s: left out or trimmed %d actors: %s", self.list_path, len(problems), "; ".join(problems[:3]))
        if not self.actors:
            raise InputError(self.list_path, "no usable actor in the image list")
        counts = [len(p) for p in self._images]
        #: smallest / largest number of photos per actor
        self.min_K, self.max_K = min(counts), max(counts)
        self.eval_K = max(0, min(max_eval_K, self.min_K))
        self.total_images = sum(counts)
        self._cache: DecodedCache | None = None
        if cache_dir is not None:
            flat = [p for paths in self._images for p in paths]
            starts = np.cumsum([0] + counts)
            self._rows = [np.arange(a, b) for a, b in zip(starts[:-1], starts[1:])]
            self._cache = DecodedCache(cache_dir, f"{subset}:{self.list_path.resolve()}", flat,
                                       _read_crop, _read_blob, arcface_path)

    def __len__(self) -> int:
        return len(self.actors)

    def __getitem__(self, index: int) -> dict[str, Any]:
        paths = self._images[index]
        if self.mode == "eval":
            chosen = range(self.eval_K)
        else:
            chosen = torch.randperm(len(paths))[: self.K].tolist()
        k = len(chosen)
        if self._cache is not None:
            rows = self._rows[index][list(chosen)]
            images = torch.from_numpy(self._cache.crops(rows)).permute(0, 3, 1, 2)
            images = images.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)
            arcface = torch.from_numpy(self._cache.blobs(rows))
        else:
            images = torch.empty((k, 3, 224, 224), dtype=torch.float32)
            arcface = torch.empty((k, 3, 112, 112), dtype=torch.float32)
            for slot, i in enumerate(chosen):
                images[slot] = torch.from_numpy(_read_crop(paths[i])).permute(2, 0, 1)  # uint8 → float32 copy
                arcface[slot] = torch.from_numpy(_read_blob(arcface_path(paths[i])))
            images.div_(255.0)
        flame = {key: value.expand(k, -1).clone() for key, value in self._targets[index].items()}
        return {"image": images, "arcface": arcface, "flame": flame, "imagename": self.actors[index],
                "dataset": self.name}


def _read_crop(path: Path) -> np.ndarray:
    with open_image(path) as im:
        pixels = np.array(im if im.mode == "RGB" else im.convert("RGB"))  # writable, as torch wants
    if pixels.shape != (224, 224, 3):
        raise InputError(path, f"crop is {pixels.shape[1]}×{pixels.shape[0]}, expected 224×224 RGB")
    return pixels


def _read_blob(path: Path) -> np.ndarray:
    blob = read_npy(path, limit=2**20)  # a (3, 112, 112) float32 blob takes 150 kB
    if blob.shape != (3, 112, 112):
        raise InputError(path, f"ArcFace blob has shape {blob.shape}, expected (3, 112, 112)")
    return blob


def mix_subsets(datasets: Sequence[MicaDataset], weights: Sequence[float] | None = None,
                num_samples: int | None = None, generator: torch.Generator | None = None
                ) -> tuple[ConcatDataset, WeightedRandomSampler]:
    """Several subsets as one dataset and a sampler that draws subset ``i`` with probability ∝ ``weights[i]``.

    ``weights=None`` makes every actor equally likely (MICA's plain concatenation). Actors within a
    subset are equally likely. ``num_samples`` (default: all actors) is one epoch's length. Use as
    ``DataLoader(dataset, sampler=sampler, ...)``.
    """
    if not datasets:
        raise ValueError("no datasets to mix")
    if weights is None:
        weights = [float(len(d)) for d in datasets]
    if len(weights) != len(datasets) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need one non-negative weight per dataset with a positive sum, got {list(weights)}")
    per_actor = torch.cat([torch.full((len(d),), float(w) / len(d), dtype=torch.float64)
                           for d, w in zip(datasets, weights)])
    total = sum(len(d) for d in datasets)
    sampler = WeightedRandomSampler(per_actor, num_samples or total, replacement=True, generator=generator)
    return ConcatDataset(list(datasets)), sampler


_TENSOR_KEYS = (("image",), ("arcface",), ("flame", "shape_params"), ("flame", "expression_params"),
                ("flame", "pose_params"))


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`MicaDataset` samples: the same batch as ``default_collate``, built faster.

    ``image`` (B, K, 3, 224, 224), ``arcface`` (B, K, 3, 112, 112), ``flame`` {name: (B, K, n)},
    ``imagename`` and ``dataset`` lists. In a ``DataLoader`` worker all tensors are views of one
    shared-memory block, so a batch crosses to the main process as one block rather than five; that
    hand-over, not reading the crops, limits a cached dataset. Use ``DataLoader(..., collate_fn=collate_samples)``.
    """
    def get(sample: dict[str, Any], key: tuple[str, ...]) -> torch.Tensor:
        return sample[key[0]] if len(key) == 1 else sample[key[0]][key[1]]

    b = len(samples)
    shapes = [get(samples[0], key).shape for key in _TENSOR_KEYS]
    sizes = [b * int(np.prod(shape)) for shape in shapes]
    flat = torch.empty(0, dtype=torch.float32)
    if get_worker_info() is not None:  # as default_collate does: allocate straight in shared memory
        flat = flat.new(flat._typed_storage()._new_shared(sum(sizes), device="cpu"))
    else:
        flat = torch.empty(sum(sizes), dtype=torch.float32)
    out: dict[str, Any] = {"flame": {}}
    start = 0
    for key, shape, size in zip(_TENSOR_KEYS, shapes, sizes):
        block = flat[start:start + size].view(b, *shape)
        start += size
        torch.stack([get(sample, key) for sample in samples], out=block)
        if len(key) == 1:
            out[key[0]] = block
        else:
            out["flame"][key[1]] = block
    out["imagename"] = [sample["imagename"] for sample in samples]
    out["dataset"] = [sample["dataset"] for sample in samples]
    return out
