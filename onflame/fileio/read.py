"""Bounded reads: a file is read only when it is a regular file, and never beyond what its format can hold.

Every limit is checked before memory is spent: a regular file by its size, a gzip stream while it
inflates (:func:`gunzip_bounded` stops one byte past the limit), an ``.npz`` or zip member by the size
it declares (``zipfile`` never inflates a member past it), a ``.npy`` array by the shape its header
announces. A file that asks for more is refused with an :class:`InputError` naming it.
"""
from __future__ import annotations

import io
import os
import zipfile
import zlib
from tokenize import TokenError
from typing import IO

import numpy as np

from ..errors import InputError
from .paths import open_regular

#: Most bytes onflame reads whole into memory from one file or zip member when the format sets no
#: smaller bound (model pickles and ``.npz`` models: FLAME's largest, 300 + 100 components, is ~60 MB).
MAX_READ_BYTES = 256 * 2**20
#: A FLAME parameter ``.npz`` (MICA's keys and onflame's extras take a few kB).
PARAMS_MAX_BYTES = 16 * 2**20
#: A scan or registration mesh, after decompression (a head scan of a few million vertices).
MESH_MAX_BYTES = 256 * 2**20
#: Small side files: material libraries, landmark files, text image lists.
SIDE_FILE_MAX_BYTES = 16 * 2**20

#: Errors numpy's ``.npy`` header parser raises on a header that is not what it should be.
_HEADER_ERRORS = (ValueError, EOFError, OSError, SyntaxError, TypeError, TokenError, RecursionError, MemoryError,
                  KeyError, AttributeError, OverflowError)


def _limit_text(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 and limit % 2**20 == 0 else f"{limit} bytes"


def read_bounded(path: str | os.PathLike, limit: int | None = None, label: str | os.PathLike | None = None) -> bytes:
    """The bytes of the regular file ``path``, refusing a file larger than ``limit`` (default
    :data:`MAX_READ_BYTES`) by its size before reading it.

    A FIFO, socket, device (a link to ``/dev/zero``) or folder is refused without blocking
    (:func:`~.paths.open_regular`). Raises :class:`InputError` naming ``label`` (default ``path``).
    """
    limit = MAX_READ_BYTES if limit is None else int(limit)
    label = path if label is None else label
    with open_regular(path, label) as fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise InputError(label, f"is {size} bytes; onflame reads at most {_limit_text(limit)} from such a file")
            data = fh.read(size + 1)  # read(n) allocates n bytes first: ask for what the file holds, not the bound
            if len(data) > size:  # grown since, or a size the system does not know (/proc): on, a chunk at a time
                chunks, total = [data], len(data)
                while total <= limit and (chunk := fh.read(1 << 20)):
                    chunks.append(chunk)
                    total += len(chunk)
                data = b"".join(chunks)
        except OSError as exc:
            raise InputError(label, f"cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:  # grew while read
        raise InputError(label, f"holds more than {_limit_text(limit)}; refused")
    return data


def read_text(path: str | os.PathLike, limit: int = SIDE_FILE_MAX_BYTES, label: str | os.PathLike | None = None,
              errors: str = "replace") -> str:
    """The UTF-8 text of ``path`` (:func:`read_bounded`; undecodable bytes per ``errors``)."""
    data = read_bounded(path, limit, label)
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError:
        raise InputError(path if label is None else label, "not a text file (bytes that are not UTF-8)") from None


def gunzip_bounded(data: bytes, limit: int, label: str | os.PathLike) -> bytes:
    """``data`` (gzip, one member or several) inflated, refusing it once it passes ``limit`` bytes.

    Inflation stops one chunk past the limit, so a decompression bomb costs at most ``limit`` bytes of
    memory. Raises :class:`InputError` naming ``label`` for a bomb, corrupt or truncated data.
    """
    chunks: list[bytes] = []
    total = 0
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            while True:
                chunk = inflater.decompress(rest, 1 << 20)
                total += len(chunk)
                if total > limit:
                    raise InputError(label, f"inflates to more than {_limit_text(limit)} (a decompression bomb?); "
                                            "refused")
                chunks.append(chunk)
                rest = inflater.unconsumed_tail
                if inflater.eof or not rest:
                    break
        except zlib.error as exc:
            raise InputError(label, f"corrupt gzip data ({exc})") from None
        if not inflater.eof:
            raise InputError(label, "truncated gzip data (the stream ends before its end mark)")
        rest = inflater.unused_data
        if rest[:2] != b"\x1f\x8b":  # trailing padding after the last member, as gzip itself allows
            break
    return b"".join(chunks)


def read_maybe_gzip(path: str | os.PathLike, limit: int, label: str | os.PathLike | None = None) -> bytes:
    """The bytes of ``path``, inflated when they are gzip data, at most ``limit`` bytes either way."""
    label = path if label is None else label
    data = read_bounded(path, limit, label)
    return gunzip_bounded(data, limit, label) if data[:2] == b"\x1f\x8b" else data


def zip_member_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, label: str | os.PathLike) -> bytes:
    """The bytes of a zip member, refused by the size it declares when that passes ``limit`` (``zipfile``
    inflates no further than the declared size). Raises :class:`InputError` naming ``label``."""
    if info.file_size > limit:
        raise InputError(label, f"inflates to {info.file_size} bytes; onflame reads at most {_limit_text(limit)} "
                                "from such a file")
    try:
        return zf.read(info)
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, NotImplementedError, zlib.error) as exc:
        raise InputError(label, f"cannot read zip member ({exc})") from None


# --- .npy and .npz -------------------------------------------------------------------------------------------

def npy_header(fh: IO[bytes], label: str | os.PathLike) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` header at ``fh`` (left at the start of the data).

    Raises :class:`InputError` naming ``label`` when it is not a ``.npy`` header (format 1.0 or 2.0)
    holding a shape of non-negative integers.
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except _HEADER_ERRORS as exc:
        raise InputError(label, f"not a .npy array ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not all(isinstance(n, int) and n >= 0 for n in shape) or len(shape) > 32:
        raise InputError(label, "not a .npy array (its header's shape is not a list of sizes)")
    return shape, fortran, dtype


def npy_numeric_header(fh: IO[bytes], label: str | os.PathLike) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data bytes)`` of the ``.npy`` stream ``fh`` (left at its data);
    :class:`InputError` for an array of Python objects (a pickle), which onflame never reads this way."""
    shape, fortran, dtype = npy_header(fh, label)
    if dtype.hasobject:
        raise InputError(label, "holds pickled Python objects, not numbers")
    count = 1
    for n in shape:
        count *= int(n)
    return shape, fortran, dtype, count * dtype.itemsize


def _npy_payload(fh: IO[bytes], label: str | os.PathLike, available: int | None, limit: int) -> np.ndarray:
    """The numeric array of the ``.npy`` stream ``fh``, its announced size checked before it is read.

    ``available``: the bytes the stream holds in all (None: unknown; the read then stops at the size the
    header announces and a short read is reported).
    """
    shape, fortran, dtype, need = npy_numeric_header(fh, label)
    if need > limit:
        raise InputError(label, f"its header announces a {tuple(shape)} {dtype} array of {need} bytes; "
                                f"onflame reads at most {_limit_text(limit)} here")
    if available is not None and need > available - fh.tell():
        raise InputError(label, f"its header announces a {tuple(shape)} {dtype} array of {need} bytes, "
                                f"but only {available - fh.tell()} bytes follow (truncated or forged)")
    try:
        data = fh.read(need)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(label, f"cannot read the array data ({type(exc).__name__}: {exc})") from None
    if len(data) != need:
        raise InputError(label, f"truncated: the header announces {need} bytes of data, {len(data)} follow")
    arr = np.frombuffer(data, dtype=dtype).copy()  # a writable array of its own, as np.load gives
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npy(source: str | os.PathLike | bytes, label: str | os.PathLike | None = None,
             limit: int = MAX_READ_BYTES) -> np.ndarray:
    """A numeric ``.npy`` array, its size checked against the file before anything is allocated.

    ``source``: a path (read with :func:`read_bounded`) or the file's bytes. Object arrays (pickled
    payloads) are refused: read those with :func:`onflame.safepickle.load_npy_object`. Raises
    :class:`InputError` naming the file (``label``, default the path).
    """
    label = label if label is not None else str(source)
    data = source if isinstance(source, bytes) else read_bounded(source, limit, label)
    if not data:
        raise InputError(label, "is empty (0 bytes), not a .npy array")
    return _npy_payload(io.BytesIO(data), label, len(data), limit)


def read_npz(source: str | os.PathLike | IO[bytes], label: str | os.PathLike | None = None,
             limit: int = MAX_READ_BYTES) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles), the members' sizes checked before they are allocated.

    ``source``: a path (a regular file, :func:`~.paths.open_regular`) or an open binary file (e.g. a zip
    member's bytes). ``limit``: the most bytes the arrays may take together (what the format can hold).
    Raises :class:`InputError` naming ``label`` (default: the path) for a file that is not a zip of
    ``.npy`` arrays (a ``.npy`` saved under an ``.npz`` name included), a corrupt one, or members larger
    than they declare or than ``limit``.
    """
    if label is None:
        label = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<npz>")
    if isinstance(source, (str, os.PathLike)):
        with open_regular(source, label) as fh:
            return read_npz(fh, label, limit)
    try:
        with zipfile.ZipFile(source) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            declared = sum(i.file_size for i in infos)
            if declared > limit:
                big = max(infos, key=lambda i: i.file_size)
                raise InputError(label, f"its arrays inflate to {declared} bytes (member {big.filename!r}: "
                                        f"{big.file_size}); onflame reads at most {_limit_text(limit)} from such a file")
            arrays = {}
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as member:
                    try:
                        arrays[name] = _npy_payload(member, label, info.file_size, limit)
                    except InputError as exc:
                        raise InputError(label, f"member {info.filename!r}: {exc.problem}") from None
            return arrays
    except InputError:
        raise
    except zipfile.BadZipFile as exc:
        kind = "a .npy array saved under an .npz name" if _starts_with(source, b"\x93NUMPY") else f"{exc}"
        raise InputError(label, f"not a readable .npz ({kind})") from None
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError, zlib.error) as exc:
        raise InputError(label, f"not a readable .npz ({type(exc).__name__}: {exc})") from None


def _starts_with(source: IO[bytes], magic: bytes) -> bool:
    try:
        source.seek(0)
        return source.read(len(magic)) == magic
    except (OSError, ValueError, AttributeError):
        return False
