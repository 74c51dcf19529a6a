"""Why a pickle is refused, and messages that stay one short line."""
from __future__ import annotations

import pickle
from typing import Any, Callable


class _Refused(pickle.UnpicklingError):
    """A pickle asks for something a FLAME or MICA file never holds."""


class _TooLarge(_Refused):
    """A pickle asks for more than the file's format holds."""


def _clipped(value: Any, as_text: Callable[[Any], str], limit: int) -> str:
    """``as_text(value)`` cut to ``limit`` characters; the type's name where it cannot be made (an int too
    long to print): a message may hold the text of a huge value, or fail to."""
    try:
        text = as_text(value)
    except Exception:  # noqa: BLE001
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _short(value: Any) -> str:
    """A value as a message names it: its repr, at most 60 characters."""
    return _clipped(value, repr, 60)


def _text(exc: BaseException) -> str:
    """``str(exc)``, at most 200 characters."""
    return _clipped(exc, str, 200)


def _MiB(n: int) -> str:
    return f"{max(n, 0) / 2**20:.0f} MiB"
