"""Surface colour and light: texture lookup, Lambert shading, colour maps for per-vertex values."""
from __future__ import annotations

import os

import numpy as np

#: A plausible skin albedo (RGB in [0, 1]) for scans without colour. What lets a photo-trained face
#: detector find a face on a render is the shading, not the colour: on the FLAME fixtures MediaPipe
#: scores shaded grey and shaded skin renders alike (~0.8-0.95 up to 60° yaw) and never finds a face on
#: an unlit, flat-coloured one.
SKIN_ALBEDO = (0.80, 0.60, 0.50)


def load_texture(texture: np.ndarray | str | os.PathLike) -> np.ndarray:
    """A texture as (H, W, 3) float64 RGB in [0, 1], from an array (uint8 or float) or an image file."""
    if isinstance(texture, (str, os.PathLike)):
        from ..mesh.images import open_image

        with open_image(texture) as im:
            texture = np.asarray(im.convert("RGB"))
    tex = np.asarray(texture)
    if tex.ndim == 2:
        tex = np.repeat(tex[:, :, None], 3, axis=2)
    tex = tex[:, :, :3]
    return tex / 255.0 if tex.dtype == np.uint8 else tex.astype(np.float64)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``texture`` (H, W, C) at ``uv`` (N, 2); OBJ convention: v = 0 is the image's bottom row.

    Coordinates outside [0, 1] are clamped to the border.
    """
    H, W = texture.shape[:2]
    x = np.clip(uv[:, 0], 0.0, 1.0) * W - 0.5
    y = (1.0 - np.clip(uv[:, 1], 0.0, 1.0)) * H - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    xa, xb = np.clip(x0, 0, W - 1).astype(np.int64), np.clip(x0 + 1, 0, W - 1).astype(np.int64)
    ya, yb = np.clip(y0, 0, H - 1).astype(np.int64), np.clip(y0 + 1, 0, H - 1).astype(np.int64)
    top = texture[ya, xa] * (1 - fx) + texture[ya, xb] * fx
    bottom = texture[yb, xa] * (1 - fx) + texture[yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def lambert(normals: np.ndarray, view_dir: np.ndarray, lights: np.ndarray, ambient: float) -> np.ndarray:
    """(N,) brightness ``ambient + Σ max(0, n·l)`` (capped at 1), two-sided.

    Args:
        normals: (N, 3) unit surface normals.
        view_dir: (N, 3) or (3,) direction from the surface towards the camera; normals facing away from
            it are flipped, so open scans seen from behind and inconsistently wound triangles are lit too.
        lights: (L, 3) unit directions from the surface towards each light, each of unit intensity
            scaled by ``(1 - ambient) / L``.
        ambient: light reaching every surface regardless of its orientation.
    """
    n = np.asarray(normals, dtype=np.float64)
    towards = np.where((n * view_dir).sum(-1) < 0, -1.0, 1.0)  # +1 where the normal faces the camera
    cosines = n @ np.ascontiguousarray(np.asarray(lights, dtype=np.float64).T)  # (N, L)
    diffuse = np.clip(cosines * towards[:, None], 0.0, None).mean(1)
    return np.clip(ambient + (1.0 - ambient) * diffuse, 0.0, 1.0)


def colormap(values: np.ndarray, vmin: float, vmax: float, name: str = "turbo") -> np.ndarray:
    """(N, 3) RGB in [0, 1] for ``values`` (N,) on matplotlib's colour map ``name`` (a built-in ramp
    from blue to red when matplotlib is not installed); NaN values are grey."""
    v = np.asarray(values, dtype=np.float64)
    s = np.clip((v - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    try:
        from matplotlib import colormaps

        rgb = colormaps[name](np.nan_to_num(s))[:, :3]
    except ImportError:
        stops = np.array([[0.19, 0.07, 0.23], [0.16, 0.55, 0.94], [0.33, 0.98, 0.42], [0.98, 0.73, 0.22],
                          [0.48, 0.02, 0.01]])  # a few points of a blue-green-yellow-red ramp
        pos = np.nan_to_num(s) * (len(stops) - 1)
        i = np.minimum(pos.astype(np.int64), len(stops) - 2)
        f = (pos - i)[:, None]
        rgb = stops[i] * (1 - f) + stops[i + 1] * f
    rgb[~np.isfinite(v)] = 0.6
    return rgb
