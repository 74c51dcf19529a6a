"""Synthetic photo folders for tests, benchmarks and demos: real photos, augmented, laid out per actor.

``make_photo_tree(sources, out, actors=4, per_actor=10)`` writes ``out/<actor>/<actor>_<i>.jpg``: each
photo a source photo (cycled) flipped, rotated, scaled, shifted and re-lit at random (seeded), so
detection and alignment see many different but realistic faces.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from ..fileio import write_bytes
from .photos import read_photo


def augment(photo: Image.Image, rng: np.random.Generator, max_side: int = 1024) -> Image.Image:
    """A randomly flipped (50 %), rotated (±8°), scaled (0.85–1.15), shifted (±4 %) and re-lit (±20 %) copy,
    its longer side at most ``max_side`` pixels."""
    scale_down = min(1.0, max_side / max(photo.size))
    if scale_down < 1.0:
        size = (round(photo.width * scale_down), round(photo.height * scale_down))
        photo = photo.resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    w, h = photo.size
    angle = np.deg2rad(rng.uniform(-8, 8))
    s = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-0.04, 0.04, 2) * (w, h)
    # inverse map (output → input) about the image centre, as PIL's affine transform wants it
    c, si = np.cos(angle) / s, np.sin(angle) / s
    cx, cy = w / 2, h / 2
    ox, oy = cx + shift[0], cy + shift[1]
    data = (c, -si, cx - c * ox + si * oy, si, c, cy - si * ox - c * oy)
    out = photo.transform((w, h), Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR,
                          fillcolor=(0, 0, 0))
    return ImageEnhance.Brightness(out).enhance(rng.uniform(0.8, 1.2))


def make_photo_tree(sources: Sequence[str | os.PathLike], out: str | os.PathLike, actors: int = 4,
                    per_actor: int = 10, seed: int = 0, max_side: int = 1024) -> dict[str, list[Path]]:
    """Write ``actors`` folders of ``per_actor`` augmented photos each; returns ``{actor: [paths]}``.

    Actor ``i`` starts at source ``i`` and cycles through ``sources``.
    """
    if not sources:
        raise ValueError("no source photos")
    rng = np.random.default_rng(seed)
    originals = [read_photo(p) for p in sources]
    tree: dict[str, list[Path]] = {}
    for a in range(actors):
        actor = f"actor{a:03d}"
        for i in range(per_actor):
            photo = augment(originals[(a + i) % len(originals)], rng, max_side)
            buf = io.BytesIO()
            photo.save(buf, format="JPEG", quality=92)
            path = Path(out, actor, f"{actor}_{i:04d}.jpg")
            write_bytes(path, buf.getvalue())
            tree.setdefault(actor, []).append(path)
    return tree
