"""Errors raised for bad input.

Every error that comes from a user's file names that file and the problem in one line, so a batch job can
log it and move on to the next item.
"""
from __future__ import annotations

from os import PathLike


class OnflameError(Exception):
    """Base class of every error onflame raises on purpose."""


class InputError(OnflameError, ValueError):
    """A file (or other input) is missing, unreadable or malformed.

    ``str(err)`` is ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = one_line(problem)
        super().__init__(self.problem if path is None else f"{path}: {self.problem}")


class UnsafePickleError(InputError):
    """A pickle asked for a Python global that onflame will not import (it could run code)."""


class UsageError(InputError):
    """A value the caller chose that cannot work: an option out of range, an output location that cannot be
    written. The command line exits with 2 for it (bad usage), before any work is done."""


def one_line(text: str) -> str:
    """``text`` on one line: line breaks (a library's multi-line message) become ``"; "``."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about values read from a file (which may
    be huge, or an int too long to print at all)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  e.g. ValueError: an int of more than 4300 digits
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."
