"""Fast parsing of the big blocks of ASCII numbers that scanner formats (VRML, FRGC ``.abs``) hold."""
from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import InputError


def parse_numbers(text: str | bytes, path: str | os.PathLike, what: str, dtype: type = np.float64) -> np.ndarray:
    """(N,) numbers from whitespace- or comma-separated text (or its ASCII bytes), parsed in C by numpy.

    ``dtype`` ``np.int64`` reads integers (index lists) several times faster than floats. Raises
    :class:`InputError` naming ``path`` and ``what`` (e.g. ``"coordIndex"``) when a token is not a number
    of that kind. Older numpy only warns on such a token and returns what it read so far; the warning is
    made an error so the result is never silently short.
    """
    comma = b"," if isinstance(text, bytes) else ","
    if comma in text:
        text = text.replace(comma, b" " if isinstance(text, bytes) else " ")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            return np.fromstring(text, dtype=dtype, sep=" ")
    except (ValueError, DeprecationWarning):
        kind = "an integer" if np.issubdtype(dtype, np.integer) else "a number"
        bad = _first_bad(text, dtype)
        raise InputError(path, f"{what}: {bad[:40]!r} is not {kind}") from None


def _first_bad(text: str | bytes, dtype: type) -> str:
    """The first token that is not a number of ``dtype``, looked for a megabyte at a time."""
    step, at = 1 << 20, 0
    while at < len(text):
        end = at + step
        while end < len(text) and not text[end:end + 1].isspace():  # whole tokens only
            end += 1
        piece = text[at:end]
        if isinstance(piece, bytes):
            piece = piece.decode("ascii", "replace")
        bad = next((t for t in piece.split() if not _parses(t, dtype)), None)
        if bad is not None:
            return bad
        at = end
    return "?"


def _parses(token: str, dtype: type) -> bool:
    try:
        int(token) if np.issubdtype(dtype, np.integer) else float(token)
    except ValueError:
        return False
    return True


# --- line-structured text (OBJ, ASCII PLY) without a Python object per line -----------------------------------

class Lines:
    """The lines of a text file's bytes, located with numpy: ``starts[i]:ends[i]`` is line ``i`` (no newline).

    Big scans hold millions of lines; a Python string per line or per token costs ten times the file
    in memory, so lines are selected and parsed as byte arrays.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.bytes = np.frombuffer(data, dtype=np.uint8)
        newlines = np.flatnonzero(self.bytes == 10)
        self.starts = np.concatenate([[0], newlines + 1])
        self.ends = np.concatenate([newlines, [len(data)]])
        if len(self.starts) > 1 and self.starts[-1] == len(data):  # the file ends with a newline
            self.starts, self.ends = self.starts[:-1], self.ends[:-1]

    def __len__(self) -> int:
        return len(self.starts)

    def char(self, k: int) -> np.ndarray:
        """(L,) uint8: the ``k``-th byte of every line (0 where the line is shorter)."""
        at = self.starts + k
        out = np.zeros(len(self.starts), dtype=np.uint8)
        ok = at < self.ends
        out[ok] = self.bytes[at[ok]]
        return out

    def tagged(self, tag: bytes) -> np.ndarray:
        """(L,) bool: lines that start with ``tag`` followed by a space or a tab (``v``, ``vt``, ``f``)."""
        hit = np.ones(len(self.starts), dtype=bool)
        for k, c in enumerate(tag):
            hit &= self.char(k) == c
        after = self.char(len(tag))
        return hit & ((after == 32) | (after == 9))

    def select(self, which: np.ndarray, skip: int) -> "Block":
        """The lines where ``which`` is set, each without its first ``skip`` bytes (its tag), as a :class:`Block`."""
        starts, ends = self.starts[which] + skip, self.ends[which]
        lengths = ends - starts + 1  # each line keeps one separator
        keep = np.zeros(len(self.bytes) + 1, dtype=np.int8)  # +1 / -1 at each line's bounds, summed below
        keep[starts] += 1  # lines never overlap: no index repeats within one of these two
        keep[np.minimum(ends + 1, len(self.bytes))] -= 1
        np.cumsum(keep, out=keep)
        body = self.bytes[keep[:-1].view(bool)]
        del keep
        if len(body) < int(lengths.sum()):  # the last line has no newline of its own
            body = np.concatenate([body, np.array([10], np.uint8)])
        return Block(body, np.cumsum(lengths) - lengths, np.flatnonzero(which))


class Block:
    """Selected lines as one byte array: ``body[offsets[i]:]`` starts line ``i`` (file line ``line_numbers[i]``,
    counted from 0), lines separated by one byte (a newline)."""

    def __init__(self, body: np.ndarray, offsets: np.ndarray, line_numbers: np.ndarray):
        self.body, self.offsets, self.line_numbers = body, offsets, line_numbers

    def __len__(self) -> int:
        return len(self.offsets)

    def tokens_per_line(self) -> np.ndarray:
        """(N,) int64: the whitespace-separated tokens on each line."""
        space = self.body <= 32
        starts = ~space
        starts[1:] &= space[:-1]
        return self._per_line(np.flatnonzero(starts))

    def count_per_line(self, byte: int) -> np.ndarray:
        """(N,) int64: how often ``byte`` occurs on each line."""
        return self._per_line(np.flatnonzero(self.body == byte))

    def _per_line(self, positions: np.ndarray) -> np.ndarray:
        bounds = np.append(self.offsets, len(self.body))
        return np.diff(np.searchsorted(positions, bounds))

    def line_text(self, k: int) -> str:
        """Line ``k`` of the block (without its tag)."""
        end = self.offsets[k + 1] if k + 1 < len(self) else len(self.body)
        return bytes(self.body[self.offsets[k]:end]).decode("utf-8", "replace").strip()

    def numbers(self, path: str | os.PathLike, what: str, dtype: type = np.float64, blank: bytes = b"") -> np.ndarray:
        """Every number of the block in order (``blank`` bytes read as spaces, e.g. the ``/`` of OBJ faces)."""
        body = self.body
        for b in blank:
            body = np.where(body == b, np.uint8(32), body)
        return parse_numbers(body.tobytes(), path, what, dtype)
