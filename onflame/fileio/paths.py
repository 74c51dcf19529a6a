"""What a path is before it is opened, and where onflame may write.

Reads: :func:`open_regular` opens a path only when it is a regular file (checked on the open file, so a
path swapped between a check and the open is still caught), without blocking: a FIFO, a socket or a
device given where a file is expected is refused at once instead of hanging the command.
:func:`check_regular` does the same check for readers that open a path themselves (PIL, plyfile).

Writes: :func:`confine_writes` names a command's output folder(s); while it is in force, every atomic
write (:mod:`.write`) checks that its target lies inside one of them and that no folder between the two
is a symbolic link, so a link planted inside an output folder is never followed for writing or
deleting.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import stat
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

from ..errors import InputError, UsageError

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def file_kind(mode: int) -> str:
    """``"a FIFO (named pipe)"``, ``"a folder"``, ... for an ``st_mode`` that is not a regular file."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: str | os.PathLike, mode: int) -> InputError:
    if stat.S_ISDIR(mode):
        return InputError(path, "is a folder, not a file")
    return InputError(path, f"is {file_kind(mode)}, not a regular file; onflame reads files only")


def _missing(path: str | os.PathLike, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(path, "no such file")
    return InputError(path, f"cannot read ({exc.strerror or exc})")


def open_regular(path: str | os.PathLike, label: str | os.PathLike | None = None) -> IO[bytes]:
    """``path`` opened for binary reading, when it is a regular file (links are followed to one).

    Opened without blocking (a FIFO with no writer would block a plain ``open`` forever), then checked
    with ``fstat`` on the open descriptor. Raises :class:`InputError` naming ``label`` (default ``path``):
    missing, unreadable, a folder, a FIFO, a socket or a device.
    """
    label = path if label is None else label
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:
        raise InputError(label, "is a folder, not a file") from None
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is where it can be told
        try:
            mode = os.stat(path).st_mode
        except OSError:
            raise _missing(label, exc) from None
        raise (_not_regular(label, mode) if not stat.S_ISREG(mode) else _missing(label, exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(label, mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: str | os.PathLike, label: str | os.PathLike | None = None) -> os.stat_result:
    """The ``stat`` of ``path`` when it is a regular file; :class:`InputError` naming ``label`` otherwise
    (for readers that open the path themselves; :func:`open_regular` where the bytes are read here)."""
    label = path if label is None else label
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _missing(label, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(label, st.st_mode)
    return st


def check_folder(path: str | os.PathLike, label: str | os.PathLike | None = None) -> Path:
    """``path`` when it is a folder (a link to one included); :class:`InputError` naming it otherwise."""
    label = path if label is None else label
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(label, "no such folder") from None
    except OSError as exc:
        raise InputError(label, f"cannot open ({exc.strerror or exc})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(label, f"is {'a file' if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)}, not a folder")
    return Path(path)


# --- where writes may go -----------------------------------------------------------------------------------

_WRITE_ROOTS: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar("onflame_write_roots",
                                                                                       default=None)


@contextlib.contextmanager
def confine_writes(*roots: str | os.PathLike | None) -> Iterator[tuple[Path, ...]]:
    """Within the block, atomic writes and :func:`remove_file` act only inside ``roots`` (None entries
    are skipped) and refuse a path that reaches its target through a symbolic link below its root (a
    root itself may be a link: it is the folder the user named). Yields the roots as absolute paths."""
    absolute = tuple(Path(os.path.abspath(r)) for r in roots if r is not None)
    token = _WRITE_ROOTS.set(absolute)
    try:
        yield absolute
    finally:
        _WRITE_ROOTS.reset(token)


F = TypeVar("F", bound=Callable[..., Any])


def confined_to(*params: str) -> Callable[[F], F]:
    """Decorator: the function's writes are confined (:func:`confine_writes`) to the folders its
    arguments ``params`` name (arguments that are None are skipped); it holds in worker processes too,
    since each call sets it."""
    def wrap(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def confined(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with confine_writes(*(bound.arguments[p] for p in params)):
                return func(*args, **kwargs)
        return confined  # type: ignore[return-value]
    return wrap


def write_root() -> tuple[Path, ...] | None:
    """The folders writes are confined to (:func:`confine_writes`), or None."""
    return _WRITE_ROOTS.get()


def _inside(path: Path, roots: tuple[Path, ...]) -> tuple[Path, list[str]]:
    """The root holding ``path`` (the deepest) and the components of ``path`` below it (all absolute);
    UsageError if it lies outside every root."""
    for root in sorted(roots, key=lambda r: len(r.parts), reverse=True):
        try:
            return root, list(path.relative_to(root).parts)
        except ValueError:
            continue
    where = ", ".join(map(str, roots))
    raise UsageError(path, f"lies outside the output folder ({where}); onflame writes only inside it")


def confined_parent(path: str | os.PathLike) -> Path:
    """Create ``path``'s parent folders and return ``path`` (absolute where writes are confined).

    Where writes are confined (:func:`confine_writes`), ``path`` must lie inside the output folder, every
    folder between the two must be a real folder (not a link; missing ones are created one by one), and
    ``..`` is not allowed. Raises :class:`UsageError` naming the offending path.
    """
    path = Path(path)
    roots = _WRITE_ROOTS.get()
    if roots is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    path = Path(os.path.abspath(path))  # abspath removes '..' lexically, as the user's shell would
    root, parts = _inside(path, roots)
    if not parts:
        raise UsageError(path, "is the output folder itself, not a file inside it")
    folder = root
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts[:-1]:
        folder = folder / part
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder)
            mode = os.lstat(folder).st_mode
        if stat.S_ISLNK(mode):
            raise UsageError(folder, "is a symbolic link inside the output folder; onflame does not write "
                                     "through links (remove it or choose another output folder)")
        if not stat.S_ISDIR(mode):
            raise UsageError(folder, f"is {file_kind(mode) if not stat.S_ISREG(mode) else 'a file'}, not a folder")
    return path


def remove_file(path: str | os.PathLike) -> bool:
    """Remove the file ``path`` (a link is removed itself, never followed) where writes may go
    (:func:`confined_parent`'s checks on its folders); True if something was removed. A folder is left."""
    try:
        path = confined_parent_existing(path)
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def confined_parent_existing(path: str | os.PathLike) -> Path:
    """``path`` after :func:`confined_parent`'s checks, creating nothing (FileNotFoundError if a folder
    on the way is missing)."""
    path = Path(path)
    roots = _WRITE_ROOTS.get()
    if roots is None:
        return path
    path = Path(os.path.abspath(path))
    folder, parts = _inside(path, roots)
    for part in parts[:-1]:
        folder = folder / part
        if stat.S_ISLNK(os.lstat(folder).st_mode):
            raise UsageError(folder, "is a symbolic link inside the output folder; onflame does not delete "
                                     "through links")
    return path
