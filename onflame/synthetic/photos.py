"""Synthetic face photos of FLAME subjects: rendered from their parameters, for the training-input step.

Each photo renders the subject's own FLAME mesh (so photo and parameters agree) with a random head
turn, jaw opening, light direction and skin tone, as a JPEG in a raw-photo folder laid out per actor
(``<out>/<actor>/<nnn>.jpg``), which :func:`onflame.training.prepare.prepare_subset` reads like any
photo collection.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ..fileio import write_bytes
from ..flame.model import FlameModel
from ..flame.params import FlameParams


def render_photos(model: FlameModel, params: FlameParams, out_dir: str | os.PathLike, n: int = 6, seed: int = 0,
                  size: int = 320) -> list[Path]:
    """Write ``n`` JPEG photos of the subject ``params`` into ``out_dir``; existing photos are kept.

    Returns the photo paths. Deterministic for a given ``seed``.
    """
    import torch
    from PIL import Image

    from ..flame.layer import FLAME
    from ..render import DEFAULT_LIGHTS, SKIN_ALBEDO, framing, render_mesh

    out_dir = Path(out_dir)
    paths = [out_dir / f"{k:03d}.jpg" for k in range(n)]
    if all(p.exists() for p in paths):
        return paths
    rng = np.random.default_rng(seed)
    layer = FLAME(model, dtype=torch.float64)
    for path in paths:
        pose = params.pose.copy()
        pose[:3] += rng.uniform(-0.25, 0.25, 3) * np.array([0.6, 1.0, 0.4])  # pitch, yaw, roll
        pose[6] = max(pose[6] + rng.uniform(-0.05, 0.1), 0.0)
        p = FlameParams(params.shape, params.expression, pose, np.zeros(3))
        with torch.no_grad():
            v = layer(p).vertices[0].numpy()
        # camera coordinates (x right, y down, z into the scene), from the surface towards the light
        light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.1), -1.0])
        tone = np.clip(np.array(SKIN_ALBEDO) * rng.uniform(0.75, 1.15), 0, 1)
        image = render_mesh(v, model.faces, framing(v, facing=[0, 0, 1], up=[0, 1, 0], size=size),
                            albedo=tuple(tone), lights=np.vstack([light / np.linalg.norm(light), DEFAULT_LIGHTS[1:]])).image
        if path.exists():
            continue
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=92)
        write_bytes(path, buf.getvalue())
    return paths
