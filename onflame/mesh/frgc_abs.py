"""FRGC v2 range images (``.abs`` / ``.abs.gz``) as textured triangle meshes.

The format (Minolta Vivid 910 scans of the Face Recognition Grand Challenge) is ASCII::

    480 rows
    640 columns
    pixels (flag X Y Z):
    <R*C flags>      1 = valid point, 0 = no measurement
    <R*C X values>   millimetres; invalid points hold -999999
    <R*C Y values>
    <R*C Z values>

in row-major pixel order, rows top to bottom. The colour photo of the same capture is the ``.ppm`` with
the same name, on the same R×C pixel grid (a photo of another size is mapped by scaling).

The mesh joins valid neighbouring pixels: each 2×2 cell gives two triangles when all four points are
valid, one when three are. Triangles with an edge much longer than the grid spacing bridge a depth jump
(nose over cheek, hair, chin over neck) and are dropped; points left in no triangle are dropped too.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import read_maybe_gzip
from .images import image_size
from .mesh import Mesh
from .numbers import parse_numbers

log = logging.getLogger(__name__)

#: X, Y and Z of a pixel without a measurement.
INVALID = -999999.0
#: Default long-edge limit, in multiples of the median grid spacing.
MAX_EDGE_FACTOR = 8.0
#: The largest range image read: FRGC's are 480 x 640 (about 10 MB of text); a file or its inflated
#: gzip larger than this, or a header announcing more pixels, is refused before it is parsed.
MAX_BYTES = 64 * 2**20
MAX_PIXELS = 4 * 2**20
#: Photo suffixes looked for beside a range image, in order.
PHOTO_SUFFIXES = (".ppm", ".PPM", ".png", ".jpg")

_HEADER = re.compile(r"\s*(\d+)\s+rows\s*\n\s*(\d+)\s+columns\s*\n[^\n]*\n", re.IGNORECASE)


def abs_stem(path: str | os.PathLike) -> str:
    """Capture id of a range file: ``02463d546`` for ``02463d546.abs`` or ``02463d546.abs.gz``."""
    name = Path(path).name
    return re.sub(r"\.abs(\.gz)?$", "", name, flags=re.IGNORECASE)


def read_abs(path: str | os.PathLike, photo: str | os.PathLike | None | bool = True,
             max_edge: float | None = None, max_edge_factor: float = MAX_EDGE_FACTOR) -> Mesh:
    """Read an FRGC range image as a triangle mesh in millimetres (the file's unit).

    Args:
        path: ``.abs`` or ``.abs.gz`` file.
        photo: the capture's colour photo: True looks for ``<capture>.ppm`` (or ``.png``/``.jpg``) beside
            the file and goes on without texture if there is none or it does not decode (then
            ``meta["texture_problem"]`` says why); a path names it (it must exist and decode); False/None
            reads geometry only.
        max_edge: drop triangles with an edge longer than this (mm); default ``max_edge_factor`` times
            the median distance between valid horizontal neighbours.
        max_edge_factor: see ``max_edge``.

    Returns:
        A :class:`Mesh` whose vertices are the valid points used by some triangle, in pixel order, with
        per-vertex ``uv`` (``face_uv`` = ``faces``) into the photo (``texture``) when there is one.
        ``meta["grid_shape"]`` is (R, C) and ``meta["pixel_index"]`` (V,) each vertex's row-major pixel.

    Raises:
        InputError: naming the file if it is missing, truncated, malformed or has no valid point, or
            naming the photo if a photo given is missing or corrupt.
    """
    path = Path(path)
    R, C, flags, xyz = _read_grid(path)
    valid = (flags != 0) & np.isfinite(xyz).all(1) & (xyz > INVALID + 1).all(1)
    if not valid.any():
        raise InputError(path, "range image has no valid point (every pixel is flagged invalid)")
    faces = _grid_triangles(valid.reshape(R, C))
    if len(faces):
        faces = _drop_long_edges(xyz, faces, valid.reshape(R, C), max_edge, max_edge_factor)
    if not len(faces):
        raise InputError(path, "range image has no two adjacent valid pixels to join into a surface")
    used = np.unique(faces)
    remap = np.full(R * C, -1, np.int64)
    remap[used] = np.arange(len(used))
    rows, cols = np.divmod(used, C)
    uv = np.stack([(cols + 0.5) / C, 1.0 - (rows + 0.5) / R], 1)  # OBJ convention: v = 0 at the bottom
    faces = remap[faces]

    texture = _photo(path, photo)
    meta = {"grid_shape": (R, C), "pixel_index": used}
    if texture is not None:
        try:
            meta["photo_size"] = image_size(texture)
        except InputError as exc:
            if photo is not True:  # a photo the caller named must decode
                raise
            # the photo found beside the file is treated as every reader treats a texture that does not
            # decode: read on without it (see onflame.mesh.read_mesh)
            log.warning("%s: photo %s; reading without texture", path, exc)
            meta["texture_problem"] = (exc.path, exc.problem)
            texture = None
    return Mesh(xyz[used], faces, uv if texture is not None else None, faces.copy() if texture is not None else None,
                texture, None, str(path), meta)


def _read_grid(path: Path) -> tuple[int, int, np.ndarray, np.ndarray]:
    data = read_maybe_gzip(path, MAX_BYTES)  # gzip inflated within the same bound
    text = data.decode("ascii", errors="replace")
    m = _HEADER.match(text)
    if m is None:
        raise InputError(path, "not an FRGC range image (expected '<R> rows', '<C> columns', 'pixels ...' lines)")
    R, C = int(m.group(1)), int(m.group(2))
    if R < 2 or C < 2:
        raise InputError(path, f"range image of {R}x{C} pixels is too small")
    if R * C > MAX_PIXELS:
        raise InputError(path, f"range image of {R}x{C} pixels; onflame reads at most {MAX_PIXELS} pixels")
    values = parse_numbers(text[m.end():], path, "pixel data")
    n = R * C
    if values.size != 4 * n:
        state = "truncated" if values.size < 4 * n else "too long"
        raise InputError(path, f"{state}: {R} rows x {C} columns need 4 x {n} values, found {values.size}")
    values = values.reshape(4, n)
    return R, C, values[0], np.ascontiguousarray(values[1:].T)


def _grid_triangles(valid: np.ndarray) -> np.ndarray:
    """(T, 3) pixel-index triangles over valid grid cells, counter-clockwise seen from the scanner (+z)."""
    R, C = valid.shape
    idx = np.arange(R * C).reshape(R, C)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]  # a b / c d: row r above row r+1
    va, vb, vc, vd = valid[:-1, :-1], valid[:-1, 1:], valid[1:, :-1], valid[1:, 1:]
    # rows grow downwards (Y decreases), so (a, c, b) turns counter-clockwise seen from +z
    candidates = (
        (va & vb & vc, (a, c, b)),
        (vb & vc & vd, (b, c, d)),
        (va & vc & vd & ~vb, (a, c, d)),   # cells with one corner missing keep the other diagonal's triangle
        (va & vb & vd & ~vc, (a, d, b)),
    )
    return np.concatenate([np.stack([x[m] for x in tri], 1) for m, tri in candidates]).astype(np.int64)


def _drop_long_edges(xyz: np.ndarray, faces: np.ndarray, valid: np.ndarray, max_edge: float | None,
                     factor: float) -> np.ndarray:
    if max_edge is None:
        R, C = valid.shape
        left = np.arange(R * C).reshape(R, C)[:, :-1][valid[:, :-1] & valid[:, 1:]]
        spacing = np.linalg.norm(xyz[left + 1] - xyz[left], axis=1)
        spacing = spacing[spacing > 0]
        if not len(spacing):
            return faces
        max_edge = factor * float(np.median(spacing))
    p = xyz[faces]
    longest = np.max([np.linalg.norm(p[:, i] - p[:, (i + 1) % 3], axis=1) for i in range(3)], axis=0)
    return faces[longest <= max_edge]


def _photo(path: Path, photo: str | os.PathLike | None | bool) -> Path | None:
    if photo is None or photo is False:
        return None
    if photo is True:
        stem = abs_stem(path)
        return next((p for s in PHOTO_SUFFIXES if (p := path.with_name(stem + s)).is_file()), None)
    photo = Path(photo)
    if not photo.is_file():
        raise InputError(photo, f"no such file (the photo of range image {path.name})")
    return photo
