"""Atomic file writes, output checks and bounded reads.

Writes: every file onflame writes appears whole or not at all. Writers open a temporary file in the
destination folder and rename it over the target when the block ends without an exception; a crash or
Ctrl-C leaves the old file (or nothing) and a ``*.tmp`` that a re-run ignores and overwrites.
:func:`written_together` does the same for a set of files that belong together.

Output checks (:func:`check_output_dir`, :func:`check_output_file`) refuse an unusable output location
before any work is done. Reads (:func:`read_bounded`, :func:`read_npy`, :func:`read_npz`) check sizes
before allocating: a file that claims or streams more than a limit is refused, not read until memory
runs out.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from .errors import InputError, UsageError

#: Most bytes onflame reads whole into memory from one file or zip member (pickles, ``.npy``/``.npz``
#: arrays). FLAME's largest model pickle (300 + 100 components) is about 60 MB.
MAX_READ_BYTES = 256 * 2**20


def safe_name(label: str, fallback: str = "_") -> str:
    """``label`` as one file-name component: runs of anything but letters, digits, ``.``, ``_``, ``+``
    and ``-`` become ``_``, leading and trailing dots and underscores go; ``fallback`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", label).strip("._") or fallback


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary sibling that replaces it on success.

    Parent folders are created. ``mode`` is ``"wb"`` or ``"w"`` (text, UTF-8).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is None and exc.errno is not None:  # a full disk names no file: say which one it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npz(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` atomically (``np.savez``; never pickles: object arrays are refused)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"{path}: array {name!r} has dtype object; npz files here stay pickle-free")
    save = np.savez_compressed if compressed else np.savez
    with atomic_open(path, "wb") as fh:
        save(fh, **arrays)


@contextlib.contextmanager
def written_together(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Temporaries for files that must appear together or not at all.

    Yields one temporary path per final path (a hidden ``.<name>.<token>.tmp<suffix>`` sibling); the
    caller writes each. When the block ends without an exception they are renamed to their final names
    in the order given (put the file readers take as the sign of completion, e.g. a report, last); on
    an exception, or when a rename fails, no final name is touched (those already renamed are removed)
    and every temporary is deleted. Parent folders are created.
    """
    finals = [Path(p) for p in paths]
    token = secrets.token_hex(4)
    temps = [p.with_name(f".{p.stem}.{token}.tmp{p.suffix}") for p in finals]
    for p in finals:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            yield temps
        except OSError as exc:  # name the file being written, not its temporary
            named = {str(t): f for t, f in zip(temps, finals)}
            if exc.filename in named:
                raise OSError(exc.errno, exc.strerror, str(named[exc.filename])) from exc
            raise
        missing = [str(t) for t in temps if not t.is_file()]
        if missing:
            raise RuntimeError(f"written_together: not written: {', '.join(missing)}")
        done: list[Path] = []
        try:
            for tmp, final in zip(temps, finals):
                os.replace(tmp, final)
                done.append(final)
        except BaseException:
            for final in done:
                with contextlib.suppress(OSError):
                    final.unlink()
            raise
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()


# --- output checks -------------------------------------------------------------------------------------------

def check_output_dir(path: str | os.PathLike) -> Path:
    """Make sure ``path`` is a folder onflame can write into, or can be created as one; nothing is created.

    The folder (or, if it does not exist yet, its nearest existing ancestor) must be a folder in which a
    probe file can be created and removed. Raises :class:`UsageError` naming ``path``: it is a file, a
    part of it is a file, or the folder is not writable (read-only, no permission, no space).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(path, "exists and is not a folder")
    _check_writable_folder(path, path)
    return path


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> Path:
    """Make sure ``path`` can be written as a file (its folder as in :func:`check_output_dir`).

    Raises :class:`UsageError` naming ``path`` if it is a folder, has none of ``suffixes`` (when given),
    or its folder cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(path, "is a folder; give a file name")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise UsageError(path, f"unknown output format {path.suffix!r} (use {' or '.join(suffixes)})")
    _check_writable_folder(path.parent, path)
    return path


def _check_writable_folder(folder: Path, named: Path) -> None:
    """Raise :class:`UsageError` naming ``named`` unless ``folder`` is, or can be created as, a writable folder."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(named, f"cannot be created: {existing} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".onflame-probe.", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        where = "" if existing == folder else f" ({existing}, where it would be created)"
        raise UsageError(named, f"cannot write into its folder{where}: {exc.strerror or exc}") from None


# --- bounded reads -------------------------------------------------------------------------------------------

def read_bounded(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of ``path``, refusing more than ``limit`` (default :data:`MAX_READ_BYTES`).

    A regular file is refused by its size before it is read; anything else (a link to ``/dev/zero``, a
    FIFO that never ends) is read up to the limit and then refused, so memory stays bounded. Raises
    :class:`InputError` naming ``path``.
    """
    limit = MAX_READ_BYTES if limit is None else int(limit)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise InputError(path, f"is {st.st_size} bytes; onflame reads at most {limit} bytes from such a file")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        kind = "" if stat.S_ISREG(st.st_mode) else " (not a regular file: a device or an endless stream?)"
        raise InputError(path, f"holds more than {limit} bytes{kind}; refused")
    return data


def npy_header(fh: IO[bytes], label: str | os.PathLike) -> tuple[tuple, bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` header at ``fh`` (left at the start of the data).

    Raises :class:`InputError` naming ``label`` when it is not a ``.npy`` header (format 1.0 or 2.0).
    """
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(fh)
        raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        raise InputError(label, f"not a .npy array ({type(exc).__name__}: {exc})") from None


def _npy_payload(fh: IO[bytes], label: str | os.PathLike, available: int | None) -> np.ndarray:
    """The numeric array of the ``.npy`` stream ``fh``, its announced size checked before it is read.

    ``available``: the bytes the stream holds in all (None: unknown; the read then stops at the size the
    header announces and a short read is reported).
    """
    shape, fortran, dtype = npy_header(fh, label)
    if dtype.hasobject:
        raise InputError(label, "holds pickled Python objects, not numbers")
    count = 1
    for n in shape:
        count *= int(n)
    need = count * dtype.itemsize
    if need > MAX_READ_BYTES:
        raise InputError(label, f"its header announces a {tuple(shape)} {dtype} array of {need} bytes; "
                                f"onflame reads at most {MAX_READ_BYTES}")
    if available is not None and need > available - fh.tell():
        raise InputError(label, f"its header announces a {tuple(shape)} {dtype} array of {need} bytes, "
                                f"but only {available - fh.tell()} bytes follow (truncated or forged)")
    try:
        data = fh.read(need)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(label, f"cannot read the array data ({type(exc).__name__}: {exc})") from None
    if len(data) != need:
        raise InputError(label, f"truncated: the header announces {need} bytes of data, {len(data)} follow")
    arr = np.frombuffer(data, dtype=dtype).copy()  # a writable array of its own, as np.load gives
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def read_npy(source: str | os.PathLike | bytes, label: str | os.PathLike | None = None) -> np.ndarray:
    """A numeric ``.npy`` array, its size checked against the file before anything is allocated.

    ``source``: a path (read with :func:`read_bounded`) or the file's bytes. Object arrays (pickled
    payloads) are refused: read those with :func:`onflame.safepickle.load_npy_object`. Raises
    :class:`InputError` naming the file (``label``, default the path).
    """
    label = label if label is not None else str(source)
    data = source if isinstance(source, bytes) else read_bounded(source)
    if not data:
        raise InputError(label, "is empty (0 bytes), not a .npy array")
    return _npy_payload(io.BytesIO(data), label, len(data))


def read_npz(source: str | os.PathLike | IO[bytes], label: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` (no pickles), each member's size checked before it is allocated.

    ``source``: a path or an open binary file (e.g. a zip member's bytes). Raises :class:`InputError`
    naming ``label`` (default: the path) for a file that is not a zip of ``.npy`` arrays (a ``.npy``
    saved under an ``.npz`` name included), a corrupt one, or a member larger than it declares or than
    :data:`MAX_READ_BYTES`.
    """
    if label is None:
        label = str(source) if isinstance(source, (str, os.PathLike)) else getattr(source, "name", "<npz>")
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        raise InputError(label, "is a folder, not an .npz file")
    try:
        with zipfile.ZipFile(source) as zf:
            arrays = {}
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if info.file_size > MAX_READ_BYTES:
                    raise InputError(label, f"member {info.filename!r} is {info.file_size} bytes uncompressed; "
                                            f"onflame reads at most {MAX_READ_BYTES}")
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with zf.open(info) as member:
                    try:
                        arrays[name] = _npy_payload(member, label, info.file_size)
                    except InputError as exc:
                        raise InputError(label, f"member {info.filename!r}: {exc.problem}") from None
            return arrays
    except InputError:
        raise
    except zipfile.BadZipFile as exc:
        kind = "a .npy array saved under an .npz name" if _starts_with(source, b"\x93NUMPY") else f"{exc}"
        raise InputError(label, f"not a readable .npz ({kind})") from None
    except (OSError, ValueError, EOFError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise InputError(label, f"not a readable .npz ({type(exc).__name__}: {exc})") from None


def _starts_with(source: str | os.PathLike | IO[bytes], magic: bytes) -> bool:
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return fh.read(len(magic)) == magic
        source.seek(0)
        return source.read(len(magic)) == magic
    except (OSError, ValueError, AttributeError):
        return False


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
