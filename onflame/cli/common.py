"""What every command shares: exit codes, the one-line error, JSON output and the console's verbosity."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import OnflameError, one_line

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: 128 + the signal's number, as shells report a process a signal ended: SIGINT (Ctrl-C) and SIGTERM.
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
#: Appended to the line of an error onflame did not foresee.
DEBUG_HINT = "rerun with --debug for the traceback"


def say_error(where: object, problem: str) -> None:
    """Print ``onflame: <where>: <problem>`` (one line) on stderr; ``where`` None prints the problem alone.

    Line breaks inside ``where`` (a folder named with one) are written as ``\\n``, so the line stays one."""
    text = one_line(problem) if where is None else f"{_one_line_name(where)}: {one_line(problem)}"
    print(f"onflame: {text}", file=sys.stderr, flush=True)


def _one_line_name(where: object) -> str:
    return str(where).replace("\r", "\\r").replace("\n", "\\n")


def say_exception(exc: BaseException, where: object) -> None:
    """One line for an exception met while working on ``where`` (the item's file)."""
    if isinstance(exc, OnflameError):
        say_error(None, _one_line_name(exc))
    elif isinstance(exc, OSError):  # disk full, permission denied, ...: name the file the system names
        say_error(exc.filename or where, exc.strerror or str(exc))
    else:
        say_error(where, f"unexpected {type(exc).__name__}: {exc}; {DEBUG_HINT}")


def item_failed(exc: Exception, where: object, args: argparse.Namespace) -> None:
    """A batch item failed: one line naming it (re-raised with ``--debug``, for the traceback)."""
    if args.debug and not isinstance(exc, OnflameError):
        raise exc
    say_exception(exc, where)


def print_json(obj: Any) -> None:
    from ..fileio import _json_default

    print(json.dumps(obj, indent=2, default=_json_default))


def chatty(args: argparse.Namespace) -> bool:
    """Whether progress and notes go to stderr: not with ``-q`` and not with ``--json``."""
    return not args.quiet and not getattr(args, "json", False)


def note(args: argparse.Namespace, line: str) -> None:
    """A note on stderr (what the command is doing), unless :func:`chatty` says no."""
    if chatty(args):
        print(line, file=sys.stderr, flush=True)


def start_up_done(args: argparse.Namespace) -> None:
    """The command's imports and model are loaded: in the ``onflame`` executable, collect garbage from
    now on, and never again through what start-up made (see :mod:`onflame.cli.runner`); BLAS's thread
    variable set for start-up goes (:func:`onflame.cli.blas_start_done`)."""
    import gc

    from . import blas_start_done

    blas_start_done()
    if getattr(args, "owns_process", False) and not gc.isenabled():
        gc.freeze()
        gc.enable()


def batch_progress(args: argparse.Namespace, total: int, label: str):
    """n/N and the time left of a batch whose every item prints its own result line on stdout: redrawn on
    stderr when it is a terminal (a log already has one result line per item)."""
    from ..progress import Progress

    return Progress(total, label, enabled=chatty(args) and total > 1 and sys.stderr.isatty())
