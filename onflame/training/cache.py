"""A decoded cache of a subset's training crops: decode every JPEG once, then read rows of a memory map.

Decoding the K crops is most of what a MICA training sample costs. The cache holds, for every listed
photo, the 224×224 crop as uint8 and the ArcFace blob as float32, in two ``.npy`` files read through
``np.load(mmap_mode="r")``:

    <cache_dir>/<subset>-<list hash>/crops.npy   (N, 224, 224, 3) uint8
    <cache_dir>/<subset>-<list hash>/blobs.npy   (N, 3, 112, 112) float32
    <cache_dir>/<subset>-<list hash>/index.json  each photo's path, size and mtime (crop and blob)

The cache is rebuilt whenever any listed file's size or modification time differs from the index, so
it never serves stale pixels. Each file is written atomically and the index last, so an interrupted
build is simply redone. Its files are read as what they must be, or the cache is built again: the index
a bounded regular file of JSON, each array a regular ``.npy`` file whose header announces exactly the
shape and dtype above for the listed photos and whose size holds them (a file cut short, replaced by a
FIFO or by a pickle is never loaded; the arrays are mapped with ``np.memmap``, never ``np.load``).
Disk cost: ~300 KB per photo.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_open, npy_header, open_regular, read_text, write_json

CROP_SHAPE = (224, 224, 3)
BLOB_SHAPE = (3, 112, 112)
_VERSION = 1
#: The index lists each photo's path, sizes and times (~150 bytes a photo).
_INDEX_MAX_BYTES = 256 * 2**20
#: The arrays: file name, row shape, dtype.
_ARRAYS = (("crops.npy", CROP_SHAPE, np.dtype(np.uint8)), ("blobs.npy", BLOB_SHAPE, np.dtype(np.float32)))


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
        self.rows = len(entries)
        self.rebuilt = not self._matches(entries)
        if self.rebuilt:
            self._build(paths, entries, read_crop, read_blob, blob_of)
        self._crops: np.ndarray | None = None
        self._blobs: np.ndarray | None = None

    def _matches(self, entries: list[list]) -> bool:
        """The cache on disk is whole and is of these photos: the index lists them, the arrays hold them."""
        try:
            index = json.loads(read_text(self.folder / "index.json", _INDEX_MAX_BYTES, errors="strict"))
            for name, shape, dtype in _ARRAYS:
                _array_offset(self.folder / name, (len(entries), *shape), dtype)
        except (InputError, ValueError, RecursionError):  # missing, damaged, cut short, not ours: build it again
            return False
        return isinstance(index, dict) and index.get("version") == _VERSION and index.get("photos") == entries

    def _build(self, paths: Sequence[Path], entries: list[list], read_crop: Callable, read_blob: Callable,
               blob_of: Callable) -> None:
        (self.folder / "index.json").unlink(missing_ok=True)  # invalid until the arrays are complete
        readers = (read_crop, lambda p: read_blob(blob_of(p)))
        for (name, shape, dtype), read in zip(_ARRAYS, readers):
            with atomic_open(self.folder / name, "wb") as fh:
                np.lib.format.write_array_header_1_0(fh, {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                    "shape": (len(paths), *shape)})
                for p in paths:  # row by row: the whole subset never sits in memory
                    fh.write(np.ascontiguousarray(read(p), dtype=dtype).tobytes())
        write_json(self.folder / "index.json", {"version": _VERSION, "photos": entries})

    def _open(self) -> None:
        self._crops, self._blobs = (_mapped(self.folder / name, (self.rows, *shape), dtype)
                                    for name, shape, dtype in _ARRAYS)

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


def _array_offset(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Where the data of the ``.npy`` file ``path`` starts, when it is a regular file whose header announces
    exactly ``shape`` and ``dtype`` (C order) and whose size holds that data; :class:`InputError` otherwise."""
    with open_regular(path) as fh:
        found, fortran, found_dtype = npy_header(fh, path)
        offset, size = fh.tell(), os.fstat(fh.fileno()).st_size
    if tuple(found) != tuple(shape) or fortran or found_dtype != dtype:
        raise InputError(path, f"holds a {tuple(found)} {found_dtype} array, not the cache's {tuple(shape)} {dtype}")
    if size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise InputError(path, f"is {size} bytes, not the {offset + int(np.prod(shape)) * dtype.itemsize} its header announces")
    return offset


def _mapped(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of a checked cache file, mapped read-only (no pickle can be in it: nothing is unpickled)."""
    offset = _array_offset(path, shape, dtype)
    if not int(np.prod(shape)):  # an empty list: nothing to map (mmap refuses a length of 0)
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
