"""The raw files of the synthetic releases, in their formats: small photos, textured OBJs, 3dMD-style
VRML, and FRGC's range images (a frontal grid of the surface, written as ``.abs`` text).

:mod:`.raw_releases` puts them into each source's layout. Lengths are in the unit the caller scaled the
points to; grids are computed in metres.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import write_bytes
from ..mesh import Mesh, write_obj


def image_bytes(fmt: str, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """A small smooth colour image (W, H = ``size``) encoded as ``fmt`` (PIL format name)."""
    from PIL import Image

    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.uniform(60, 200, 3)
    img = np.stack([base[0] + 40 * x / w, base[1] + 40 * y / h, base[2] + 20 * (x + y) / (w + h)], -1)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


IMAGE_FORMATS = {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".ppm": "PPM"}


def write_image(path: Path, rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> Path:
    """Write a small image (W, H = ``size``) in the format its suffix names; returns ``path``."""
    write_bytes(path, image_bytes(IMAGE_FORMATS[path.suffix.lower()], size, rng))
    return path


def write_photos(folder: Path, names: tuple[str, ...], rng: np.random.Generator, suffix: str | None = None) -> None:
    """Write one small image per name into ``folder`` (under ``suffix`` instead of the name's own, if given)."""
    for n in names:
        write_image(folder / (Path(n).stem + (suffix or Path(n).suffix)), rng)


def planar_uv(v: np.ndarray) -> np.ndarray:
    """(N, 2) texture coordinates from a frontal projection of (N, 3) points."""
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    return (v[:, :2] - lo) / np.where(hi > lo, hi - lo, 1.0)


def write_textured_obj(path: Path, v_raw: np.ndarray, faces: np.ndarray, uv: np.ndarray, texture_suffix: str,
                        rng: np.random.Generator) -> Path:
    tex = path.with_suffix(texture_suffix)
    write_image(tex, rng, (64, 64))
    write_obj(path, Mesh(v_raw, faces, uv=uv, face_uv=faces, texture=Path(tex.name)))
    return path


def wrl_text(shapes: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]]) -> str:
    """VRML 2.0 text of textured IndexedFaceSets, as 3dMD software writes them."""
    out = ["#VRML V2.0 utf8\n", "# 3dMD-style export (onflame synthetic release)\n", "Transform {\n  children [\n"]
    for v, f, uv, tex in shapes:
        out.append(f'    Shape {{\n      appearance Appearance {{\n        texture ImageTexture {{ url "{tex}" }}\n'
                   "      }\n      geometry IndexedFaceSet {\n        creaseAngle 0.5\n        solid FALSE\n"
                   "        coord Coordinate { point [\n")
        out.append(("          %.4f %.4f %.4f,\n" * len(v)) % tuple(v.ravel()))
        out.append("        ] }\n        coordIndex [\n")
        out.append(("          %d, %d, %d, -1,\n" * len(f)) % tuple(f.ravel()))
        out.append("        ]\n        texCoord TextureCoordinate { point [\n")
        out.append(("          %.6f %.6f,\n" * len(uv)) % tuple(uv.ravel()))
        out.append("        ] }\n        texCoordIndex [\n")
        out.append(("          %d, %d, %d, -1,\n" * len(f)) % tuple(f.ravel()))
        out.append("        ]\n      }\n    }\n")
    out.append("  ]\n}\n")
    return "".join(out)


def compact(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices (N, 3) that faces ``f`` (F, 3) use, and the faces renumbered to them."""
    used = np.unique(f)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


@dataclass
class RangeGrid:
    """A frontal range image of a surface: the front-most surface point in each pixel (metres)."""

    rows: int
    cols: int
    valid: np.ndarray   # (R*C,) bool
    xyz: np.ndarray     # (R*C, 3), rows top to bottom
    x0: float           # left edge of column 0
    y0: float           # top edge of row 0
    pixel: float        # pixel size (m)


def range_grid(v: np.ndarray, f: np.ndarray, cols: int, rng: np.random.Generator) -> RangeGrid:
    """A frontal range image ``cols`` pixels wide of the surface (``v`` (N, 3) metres, ``f`` (F, 3)),
    sampled densely enough that hardly a pixel over the surface stays empty."""
    lo, hi = v.min(0), v.max(0)
    pixel = (hi[0] - lo[0]) / (cols - 4)
    rows = int(np.ceil((hi[1] - lo[1]) / pixel)) + 4
    x0, y0 = lo[0] - 2 * pixel, hi[1] + 2 * pixel
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    n = int(12 * area.sum() / pixel**2)  # ~12 samples per pixel-sized patch of surface: hardly a pixel left empty
    pick = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    pts = (1 - r1)[:, None] * tri[pick, 0] + (r1 * (1 - r2))[:, None] * tri[pick, 1] + (r1 * r2)[:, None] * tri[pick, 2]
    col = np.floor((pts[:, 0] - x0) / pixel).astype(np.int64)
    row = np.floor((y0 - pts[:, 1]) / pixel).astype(np.int64)
    pix = row * cols + col
    order = np.lexsort((pts[:, 2], pix))  # by pixel, then depth: the last of each pixel is the front-most
    last = np.r_[pix[order][1:] != pix[order][:-1], True]
    front = order[last]
    valid = np.zeros(rows * cols, bool)
    xyz = np.zeros((rows * cols, 3))
    valid[pix[front]] = True
    xyz[pix[front]] = pts[front]
    return RangeGrid(rows, cols, valid, xyz, x0, y0, pixel)



def abs_text(grid: RangeGrid, scale: float) -> str:
    """FRGC's ``.abs`` text of ``grid``: the size, the valid flags, then X, Y and Z rows (× ``scale``;
    -999999 where no surface was seen)."""
    xyz = np.where(grid.valid[:, None], grid.xyz * scale, -999999.0)
    n = len(xyz)
    lines = [f"{grid.rows} rows", f"{grid.cols} columns", "pixels (flag X Y Z):",
             " ".join(["%d"] * n) % tuple(grid.valid.astype(int))]
    lines += [" ".join(["%.4f"] * n) % tuple(xyz[:, k]) for k in range(3)]
    return "\n".join(lines) + "\n"
