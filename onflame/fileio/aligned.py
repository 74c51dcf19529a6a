"""``.npz`` files whose arrays are read with one read of the file and no copy of the data.

For a large file read on every run (a FLAME model's pickle-free copy, :mod:`onflame.flame.model_cache`):
:func:`write_aligned_npz` stores each member uncompressed, its array data on a 64-byte boundary of the
file; :func:`read_aligned_npz` reads the file whole into one buffer and hands out the arrays as views of
it. ``zipfile`` and ``np.load`` read each member through a stream and copy it into fresh memory (FLAME:
~55 ms, against ~10 ms here). The buffer is the process's own memory, not a map of the file, so a file
changed or cut short later cannot affect the arrays.

The file stays an ordinary ``.npz`` (``np.load`` reads it). :func:`read_aligned_npz` checks it as
:func:`.read.read_npz` does (a regular file, its size bounded before anything is read, ``.npy`` headers,
no pickled objects) and, as ``zipfile`` does, each member's CRC-32 against the zip's record: a damaged
or cut file is refused with an :class:`InputError` naming it, never used.
"""
from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from ..errors import InputError
from .paths import open_regular
from .read import MAX_READ_BYTES, _limit_text, npy_numeric_header
from .write import atomic_open

#: Array data starts on a multiple of this many bytes in the file (and so in the buffer it is read into).
ALIGN = 64
#: Zip extra-field id of the padding record that aligns the data (a reader skips ids it does not know).
_PAD_ID = 0xD935
#: Bytes of a zip local file header before its name and extra field.
_LOCAL_HEADER = 30
#: Most bytes of a member read as its ``.npy`` header (numpy's own reader stops at 10,000).
_NPY_HEADER_MAX = 1 << 16


def write_aligned_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to an ``.npz`` at ``path`` (atomically) that :func:`read_aligned_npz` reads without
    copying: members stored, not deflated, each array's data C-ordered at a multiple of :data:`ALIGN`
    bytes. Object arrays are refused (the file stays pickle-free)."""
    with atomic_open(path, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            arr = np.asarray(value)
            arr = arr if arr.flags.c_contiguous else arr.copy(order="C")  # (ascontiguousarray makes 0-d arrays 1-d)
            if arr.dtype.hasobject:
                raise TypeError(f"{path}: array {name!r} has dtype object; npz files here stay pickle-free")
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(arr))
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = header.tell() + arr.nbytes
            start = fh.tell() + _LOCAL_HEADER + len(info.filename.encode()) + header.tell()
            pad = -start % ALIGN
            pad += ALIGN if 0 < pad < 4 else 0  # a padding record takes at least its 4-byte id and length
            info.extra = struct.pack("<HH", _PAD_ID, pad - 4) + bytes(pad - 4) if pad else b""
            with zf.open(info, "w") as member:
                member.write(header.getvalue())
                member.write(memoryview(arr.reshape(-1)).cast("B"))


def read_aligned_npz(path: str | os.PathLike, label: str | os.PathLike | None = None,
                     limit: int = MAX_READ_BYTES) -> dict[str, np.ndarray]:
    """All arrays of the ``.npz`` at ``path`` (stored members only), as views of one buffer holding the file.

    The arrays behave as ``np.load``'s (writable, this process's own). A member whose data is not
    aligned for its type (a file :func:`write_aligned_npz` did not write) is copied out of the buffer.
    ``limit``: the most bytes the file may take. Raises :class:`InputError` naming ``label`` (default:
    the path) for a file that is not a readable ``.npz``, a deflated member, sizes that do not add up, a
    pickled member, or a member whose CRC-32 is not the one recorded (a damaged file).
    """
    label = path if label is None else label
    with open_regular(path, label) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size == 0:
                raise InputError(label, "is empty (0 bytes), not a .npz")
            if size > limit:
                raise InputError(label, f"is {size} bytes; onflame reads at most {_limit_text(limit)} from such a file")
            infos = [i for i in zipfile.ZipFile(fh).infolist() if not i.is_dir()]
            fh.seek(0)
            buf = _aligned_buffer(size)
            got = _read_into(fh, memoryview(buf))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
            raise InputError(label, f"not a readable .npz ({type(exc).__name__}: {exc})") from None
    if got != size:
        raise InputError(label, f"changed while read ({got} of {size} bytes)")
    arrays = {}
    for info in infos:
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        try:
            arrays[name] = _member(buf, info, label)
        except InputError as exc:
            raise InputError(label, f"member {info.filename!r}: {exc.problem}") from None
    return arrays


def _aligned_buffer(size: int) -> np.ndarray:
    """``size`` bytes of fresh memory (not zeroed: every byte is read into it) starting at a multiple of
    :data:`ALIGN`, so that the file's aligned data lands aligned in memory."""
    raw = np.empty(size + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip:skip + size]


def _read_into(fh: io.BufferedReader, view: memoryview) -> int:
    """Bytes read from ``fh`` into ``view``, until it is full or the file ends."""
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _member(buf: np.ndarray, info: zipfile.ZipInfo, label: str | os.PathLike) -> np.ndarray:
    """The array of one stored member, checked (see :func:`read_aligned_npz`), as a view of ``buf`` where aligned."""
    size = buf.size
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise InputError(label, "is compressed; only stored members are read here")
    at = info.header_offset
    if at < 0 or at + _LOCAL_HEADER > size or buf[at:at + 4].tobytes() != b"PK\x03\x04":
        raise InputError(label, "its local header is missing (a cut or damaged file)")
    name_len, extra_len = struct.unpack_from("<HH", buf, at + 26)
    start = at + _LOCAL_HEADER + name_len + extra_len
    end = start + info.file_size
    if end > size:
        raise InputError(label, f"its data runs past the end of the file ({end} > {size} bytes: cut short)")
    data = buf[start:end]
    if zlib.crc32(data) != info.CRC:
        raise InputError(label, "its CRC-32 is not the one recorded (a damaged file)")
    head = io.BytesIO(data[:_NPY_HEADER_MAX].tobytes())
    shape, fortran, dtype, need = npy_numeric_header(head, label)
    if need != data.size - head.tell():
        raise InputError(label, f"its header announces a {tuple(shape)} {dtype} array of {need} bytes, but the "
                                f"member holds {data.size - head.tell()} bytes after the header")
    payload = data[head.tell():]
    try:
        if need == 0:  # no elements, or elements of no bytes
            arr = np.zeros(math.prod(shape), dtype)
        else:
            arr = payload.view(dtype)
            if (start + head.tell()) % max(dtype.alignment, 1):
                arr = arr.copy()
        return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    except (ValueError, TypeError) as exc:
        raise InputError(label, f"not a .npy array ({type(exc).__name__}: {exc})") from None
