"""Atomic writes: every file onflame writes appears whole or not at all, with the mode the umask gives.

A writer opens a temporary sibling and renames it over the target when the block ends without an
exception; a crash or Ctrl-C leaves the old file (or nothing). Temporaries are created with mode 0666
and the process's umask applied by the kernel (a plain ``open`` of a new file; ``mkstemp`` would give
0600), and named ``.<name>.<host>-<pid>-<n>.tmp``: the process that wrote one can be told, so a later
run removes those whose process is gone (:func:`sweep_temporaries`) even after ``kill -9``.
:func:`written_together` does the same for a set of files that belong together, and
:func:`all_or_none` for every atomic write made within a block (a site's pages).

Where writes are confined to an output folder (:func:`~.paths.confine_writes`), every target is checked
to lie inside it, reached through real folders only.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import itertools
import json
import os
import re
import socket
import stat
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from ..errors import UsageError
from .paths import confined_parent, file_kind

#: This machine's name as temporaries carry it (letters, digits, _ and + only).
HOST = re.sub(r"[^A-Za-z0-9_+]", "_", socket.gethostname() or "host")
_COUNTER = itertools.count()
#: ``.<name>.<host>-<pid>-<n>.tmp`` plus, for :func:`written_together`, the target's own suffix after it
_TEMP = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9_+]+)-(?P<pid>\d+)-\d+\.tmp(\.[A-Za-z0-9]+)?$")


#: The renames :func:`all_or_none` holds back until its block ends (None: rename at once).
_HELD: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("onflame_held", default=None)


def _owner() -> str:
    return f"{HOST}-{os.getpid()}-{next(_COUNTER)}"


def temporary_name(path: Path, suffix: str = "") -> Path:
    """The temporary sibling this process writes ``path`` through (``suffix`` appended after ``.tmp``)."""
    return path.with_name(f".{path.name}.{_owner()}.tmp{suffix}")


def _create(tmp: Path) -> int:
    """A new file at ``tmp`` for writing: mode 0666 less the umask, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(tmp, flags, 0o666)
    except FileExistsError:  # left by an earlier process that had this pid: ours to replace
        os.unlink(tmp)
        return os.open(tmp, flags, 0o666)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open ``path`` for writing through a temporary sibling that replaces it on success.

    Parent folders are created (inside the confined output folder, see the module docstring). ``mode``
    is ``"wb"`` or ``"w"`` (text, UTF-8). The file gets the umask's mode, like any new file.
    """
    path = confined_parent(path)
    tmp = temporary_name(path)
    try:
        fd = _create(tmp)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        held = _HELD.get()
        if held is None:
            os.replace(tmp, path)
        else:
            held.append((tmp, path))
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.errno is not None and exc.filename in (None, str(tmp)):  # name the target, not its temporary
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
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


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

    Yields one temporary path per final path (a hidden ``.<name>.<host>-<pid>-<n>.tmp<suffix>`` sibling,
    which :func:`sweep_temporaries` recognises); the caller writes each. When the block ends without an
    exception they are renamed to their final names in the order given (put the file readers take as the
    sign of completion, e.g. a report, last); on an exception, or when a rename fails, no final name is
    touched (those already renamed are removed) and every temporary is deleted. Parent folders are created.
    """
    finals = [confined_parent(p) for p in paths]
    temps = [temporary_name(p.with_suffix(""), p.suffix) for p in finals]
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


@contextlib.contextmanager
def all_or_none() -> Iterator[None]:
    """Every atomic write made in the block appears at its end, or none does.

    Each file is written whole to its temporary as usual, but the renames into place wait for the block
    to end without an exception, and then happen in the order the files were written (renaming needs no
    space, so a full disk stops the block before any file is replaced). On an exception every temporary
    is removed and no final name is touched. Blocks do not nest.
    """
    held: list[tuple[Path, Path]] = []
    token = _HELD.set(held)
    try:
        try:
            yield
        finally:
            _HELD.reset(token)
        for k, (tmp, path) in enumerate(held):
            os.replace(tmp, path)
            held[k] = (path, path)
    finally:
        for tmp, path in held:
            if tmp != path:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


# --- temporaries of processes that are gone ---------------------------------------------------------------

def process_gone(host: str, pid: int) -> bool:
    """True when process ``pid`` of ``host`` (as :data:`HOST` names it) no longer runs: never for another
    host's (it cannot be told), this process or another user's live one."""
    if host != HOST:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's live process
        return False
    return False


def sweep_temporaries(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Remove the temporaries (``.<name>.<host>-<pid>-<n>.tmp…``) that processes no longer running left
    in ``folder`` (and its sub-folders, links not followed, with ``recursive``); returns what was removed.

    A write cut short by ``kill -9`` or a power cut leaves its temporary; the next run that writes into
    the same folder calls this first. Temporaries of live processes, and of other hosts, are kept.
    """
    removed: list[Path] = []
    folder = Path(folder)
    walker = os.walk(folder, followlinks=False) if recursive else [(str(folder), [], _names(folder))]
    for dirpath, _, names in walker:
        for name in names:
            m = _TEMP.match(name)
            if m is None or not process_gone(m["host"], int(m["pid"])):
                continue
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
                    removed.append(path)
    return removed


def _names(folder: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(folder)]
    except OSError:
        return []


# --- output checks -------------------------------------------------------------------------------------------

def check_output_dir(path: str | os.PathLike) -> Path:
    """Make sure ``path`` is a folder onflame can write into, or can be created as one; nothing is created.

    The folder (or, if it does not exist yet, its nearest existing ancestor) must be a folder in which a
    probe file can be created and removed. Temporaries that earlier runs killed mid-write left in the
    folder are removed (:func:`sweep_temporaries`). Raises :class:`UsageError` naming ``path``: it is a
    file, a part of it is a file, or the folder is not writable (read-only, no permission, no space).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(path, "exists and is not a folder")
    _check_writable_folder(path, path)
    if path.is_dir():
        sweep_temporaries(path)
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
        kind = "a file" if existing.is_file() else file_kind(existing.stat().st_mode)
        raise UsageError(named, f"cannot be created: {existing} is {kind}, not a folder")
    probe = existing / f".onflame-probe.{_owner()}.tmp"
    try:
        os.close(_create(probe))
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return
        where = "" if existing == folder else f" ({existing}, where it would be created)"
        raise UsageError(named, f"cannot write into its folder{where}: {exc.strerror or exc}") from None


def json_default(obj: Any) -> Any:
    """JSON for numpy scalars and arrays and paths (``json.dumps(default=...)``)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
