"""A decoded cache of a subset's training crops: decode every JPEG once, then read rows of a memory map.

Decoding the K crops is most of what a MICA training sample costs. The cache holds, for every listed
photo, the 224×224 crop as uint8 and the ArcFace blob as float32, in two ``.npy`` files read through
``np.load(mmap_mode="r")``:

    <cache_dir>/<subset>-<list hash>/crops.npy   (N, 224, 224, 3) uint8
    <cache_dir>/<subset>-<list hash>/blobs.npy   (N, 3, 112, 112) float32
    <cache_dir>/<subset>-<list hash>/index.json  each photo's path, size and mtime (crop and blob)

The cache is rebuilt whenever any listed file's size or modification time differs from the index, so
it never serves stale pixels. Each file is written atomically and the index last, so an interrupted
build is simply redone. Disk cost: ~300 KB per photo.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..fileio import atomic_open, write_json

CROP_SHAPE = (224, 224, 3)
BLOB_SHAPE = (3, 112, 112)
_VERSION = 1


def _entries(paths: Sequence[Path], blob_of: Callable[[Path], Path]) -> list[list]:
    out = []
    for p in paths:
        a, b = p.stat(), blob_of(p).stat()
        out.append([str(p), a.st_size, a.st_mtime_ns, b.st_size, b.st_mtime_ns])
    return out


class DecodedCache:
    """Crops and blobs of ``paths`` (in that order), decoded once into memory-mapped arrays.

    Args:
        cache_dir: folder for caches (one sub-folder per subset and image list).
        key: names the sub-folder (e.g. subset name plus the image list's path).
        paths: the 224×224 crops; row ``i`` of the cache is ``paths[i]``.
        read_crop: path → (224, 224, 3) uint8; read_blob: path → (3, 112, 112) float32; blob_of: crop → blob path.
    """

    def __init__(self, cache_dir: str | os.PathLike, key: str, paths: Sequence[Path],
                 read_crop: Callable[[Path], np.ndarray], read_blob: Callable[[Path], np.ndarray],
                 blob_of: Callable[[Path], Path]):
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
        self.folder = Path(cache_dir) / f"{Path(key).name}-{digest}"
        entries = _entries(paths, blob_of)
        self.rebuilt = not self._matches(entries)
        if self.rebuilt:
            self._build(paths, entries, read_crop, read_blob, blob_of)
        self._crops: np.ndarray | None = None
        self._blobs: np.ndarray | None = None

    def _matches(self, entries: list[list]) -> bool:
        try:
            index = json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return index.get("version") == _VERSION and index.get("photos") == entries and all(
            (self.folder / f).is_file() for f in ("crops.npy", "blobs.npy"))

    def _build(self, paths: Sequence[Path], entries: list[list], read_crop: Callable, read_blob: Callable,
               blob_of: Callable) -> None:
        (self.folder / "index.json").unlink(missing_ok=True)  # invalid until the arrays are complete
        for name, shape, dtype, read in (("crops.npy", CROP_SHAPE, np.uint8, read_crop),
                                         ("blobs.npy", BLOB_SHAPE, np.float32, lambda p: read_blob(blob_of(p)))):
            with atomic_open(self.folder / name, "wb") as fh:
                np.lib.format.write_array_header_1_0(fh, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                    "shape": (len(paths), *shape)})
                for p in paths:  # row by row: the whole subset never sits in memory
                    fh.write(np.ascontiguousarray(read(p), dtype=dtype).tobytes())
        write_json(self.folder / "index.json", {"version": _VERSION, "photos": entries})

    def _open(self) -> None:
        self._crops = np.load(self.folder / "crops.npy", mmap_mode="r")
        self._blobs = np.load(self.folder / "blobs.npy", mmap_mode="r")

    def crops(self, rows: Sequence[int]) -> np.ndarray:
        """(k, 224, 224, 3) uint8 crops of ``rows`` (a copy)."""
        if self._crops is None:
            self._open()
        return self._crops[np.asarray(rows)]

    def blobs(self, rows: Sequence[int]) -> np.ndarray:
        """(k, 3, 112, 112) float32 blobs of ``rows`` (a copy)."""
        if self._blobs is None:
            self._open()
        return self._blobs[np.asarray(rows)]

    def __getstate__(self) -> dict:
        # DataLoader workers reopen the memory maps themselves rather than receive copies of the arrays
        return {**self.__dict__, "_crops": None, "_blobs": None}
