"""Fast parsing of the big blocks of ASCII numbers that scanner formats (VRML, FRGC ``.abs``) hold."""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import InputError


def parse_numbers(text: str, path: str | os.PathLike, what: str, dtype: type = np.float64) -> np.ndarray:
    """(N,) numbers from whitespace- or comma-separated text, parsed in C by numpy.

    ``dtype`` ``np.int64`` reads integers (index lists) several times faster than floats. Raises
    :class:`InputError` naming ``path`` and ``what`` (e.g. ``"coordIndex"``) when a token is not a number
    of that kind. Older numpy only warns on such a token and returns what it read so far; the warning is
    made an error so the result is never silently short.
    """
    if "," in text:
        text = text.replace(",", " ")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            return np.fromstring(text, dtype=dtype, sep=" ")
    except (ValueError, DeprecationWarning):
        kind = "an integer" if np.issubdtype(dtype, np.integer) else "a number"
        bad = next((t for t in text.split() if not _parses(t, dtype)), "?")
        raise InputError(path, f"{what}: {bad[:40]!r} is not {kind}") from None


def _parses(token: str, dtype: type) -> bool:
    try:
        int(token) if np.issubdtype(dtype, np.integer) else float(token)
    except ValueError:
        return False
    return True
