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
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class UnsafePickleError(InputError):
    """A pickle asked for a Python global that onflame will not import (it could run code)."""
