"""Finding a subset's photos, applying its rules, and reading a photo safely."""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError
from ..mesh.images import open_image
from .rules import PhotoRules


def select_photos(photo_dir: str | os.PathLike, rules: PhotoRules) -> dict[str, list[Path]]:
    """Photos per actor under ``photo_dir``, after the subset's rules (exclusions, extension, sampling).

    Returns ``{actor: [photo paths]}``, actors sorted, each list sorted by path (a sampled list keeps
    that order). Raises :class:`InputError` if ``photo_dir`` is not a folder.
    """
    root = Path(photo_dir)
    if not root.is_dir():
        raise InputError(root, "photo folder not found")
    found: dict[str, list[Path]] = {}
    if rules.actor_from == "filename":
        for path in _photos_under(root, root, rules):
            found.setdefault(path.stem.split("_")[0].upper(), []).append(path)
    elif rules.actor_from == "folder":
        for actor_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            photos = _photos_under(actor_dir, root, rules)
            if photos:
                found[actor_dir.name] = photos
    else:
        raise ValueError(f"unknown actor_from rule {rules.actor_from!r}")
    return {actor: _sample(actor, sorted(paths), rules) for actor, paths in sorted(found.items())}


def _photos_under(folder: Path, root: Path, rules: PhotoRules) -> list[Path]:
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue  # hidden files and our own temporary files
        if path.suffix.lower() not in rules.extensions or not path.is_file():
            continue
        if any(word in rel for word in rules.exclude):
            continue
        out.append(path)
    return out


def _sample(actor: str, paths: list[Path], rules: PhotoRules) -> list[Path]:
    n = rules.sample_per_actor
    if n is None or len(paths) <= n:
        return paths
    # seeded by the actor's name too, so each actor's draw is the same whatever other actors exist
    rng = np.random.default_rng([rules.seed, zlib.crc32(actor.encode("utf-8"))])
    keep = np.sort(rng.choice(len(paths), size=n, replace=False))
    return [paths[i] for i in keep]


def output_names(actor: str, photos: list[Path], actor_root: Path, suffix: str) -> list[str]:
    """Crop names ``<actor>/<stem><suffix>`` (relative to ``arcface_input/``), one per photo.

    Photos of one actor whose stems collide (the same frame name in two session folders) are named
    after their path below ``actor_root`` instead, ``/`` replaced by ``_``.
    """
    stems = [p.stem for p in photos]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    names = []
    for path, stem in zip(photos, stems):
        if counts[stem] > 1:
            try:
                stem = path.relative_to(actor_root).with_suffix("").as_posix().replace("/", "_")
            except ValueError:
                stem = f"{path.parent.name}_{stem}"
        names.append(f"{actor}/{stem}{suffix}")
    return names


def read_photo(path: str | os.PathLike) -> Image.Image:
    """An 8-bit RGB photo, EXIF orientation applied (as OpenCV's ``imread`` does). :class:`InputError` if unreadable."""
    with open_image(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            im = im.point(lambda v: v / 256)  # 16-bit grey to 8-bit
        return im.convert("RGB")
