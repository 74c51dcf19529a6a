"""Why a pickle is refused, and messages that stay one short line."""
from __future__ import annotations

import pickle
from typing import Any


class _Refused(pickle.UnpicklingError):
    """A pickle asks for something a FLAME or MICA file never holds."""


class _TooLarge(_Refused):
    """A pickle asks for more than the file's format holds."""


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  e.g. an int too long to print
        text = type(value).__name__
    return text if len(text) <= 60 else text[:60] + "..."


def _MiB(n: int) -> str:
    return f"{max(n, 0) / 2**20:.0f} MiB"


def _text(exc: BaseException) -> str:
    """``str(exc)``, at most 200 characters (a message may hold the repr of a huge value, or fail to)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001  e.g. an int too long to print
        text = type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."
