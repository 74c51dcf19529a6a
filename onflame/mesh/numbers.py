"""Fast parsing of the big blocks of ASCII numbers that scanner formats (VRML, FRGC ``.abs``) hold."""
from __future__ import annotations

import os

import numpy as np

from ..errors import InputError


def parse_numbers(text: str | bytes, path: str | os.PathLike, what: str, dtype: type = np.float64) -> np.ndarray:
    """(N,) numbers from whitespace- or comma-separated text (or its ASCII bytes), parsed in C by numpy.

    ``dtype`` ``np.int64`` reads integers (index lists) several times faster than floats. Raises
    :class:`InputError` naming ``path`` and ``what`` (e.g. ``"coordIndex"``) when a token is not a number
    of that kind. numpy stops at such a token and only warns (a DeprecationWarning, which the command
    line's filters silence); the numbers read are counted against the tokens, so the result is never
    silently short. (Turning the warning into an error would need ``warnings.catch_warnings``, which is
    not safe while other threads run.)
    """
    comma = b"," if isinstance(text, bytes) else ","
    if comma in text:
        text = text.replace(comma, b" " if isinstance(text, bytes) else " ")
    try:
        numbers = np.fromstring(text, dtype=dtype, sep=" ")
    except (ValueError, DeprecationWarning):  # DeprecationWarning: where the filters make it an error
        numbers = None
    if numbers is None or len(numbers) != _count_tokens(text):
        kind = "an integer" if np.issubdtype(dtype, np.integer) else "a number"
        bad = _first_bad(text, dtype)
        raise InputError(path, f"{what}: {bad[:40]!r} is not {kind}")
    return numbers


def _count_tokens(text: str | bytes, step: int = 1 << 24) -> int:
    """Whitespace-separated tokens in ``text`` (bytes of at most 32 separate), counted a chunk at a time."""
    data = np.frombuffer(text.encode("latin1", "replace") if isinstance(text, str) else text, dtype=np.uint8)
    count, after_space = 0, True
    for at in range(0, len(data), step):
        solid = data[at:at + step] > 32
        starts = solid.copy()
        starts[1:] &= ~solid[:-1]
        starts[0] &= after_space
        count += int(np.count_nonzero(starts))
        after_space = not solid[-1]
    return count


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
        # offsets as int32 where they fit (files of up to 2 GB): a scan's tens of millions of lines
        kind = np.int32 if len(data) < 2**31 - 1 else np.int64
        newlines = np.flatnonzero(self.bytes == 10).astype(kind)
        self.starts = np.empty(len(newlines) + 1, kind)
        self.starts[0], self.starts[1:] = 0, newlines + 1
        self.ends = np.append(newlines, kind(len(data)))
        del newlines
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
        solid = self.body > 32
        starts = solid.copy()
        starts[1:] &= ~solid[:-1]
        del solid
        return self._per_line(starts)

    def count_per_line(self, byte: int) -> np.ndarray:
        """(N,) int64: how often ``byte`` occurs on each line."""
        return self._per_line(self.body == byte)

    def _per_line(self, hits: np.ndarray) -> np.ndarray:
        """(N,) int64 sums of the (len(body),) bool ``hits`` over each line (every line holds at least its
        separator, so no segment is empty; no array of positions, which would take 8 bytes a hit)."""
        n = len(self.offsets)
        out = np.zeros(n, np.int64)
        bounds = np.append(self.offsets, len(self.body))
        step = 1 << 20  # lines at a time: reduceat casts its input to the sum's type, 8 bytes a byte
        for a in range(0, n, step):
            b = min(a + step, n)
            segment = hits[bounds[a]:bounds[b]].view(np.uint8)
            out[a:b] = np.add.reduceat(segment, self.offsets[a:b] - self.offsets[a], dtype=np.int64)
        return out

    def line_text(self, k: int) -> str:
        """Line ``k`` of the block (without its tag)."""
        end = self.offsets[k + 1] if k + 1 < len(self) else len(self.body)
        return bytes(self.body[self.offsets[k]:end]).decode("utf-8", "replace").strip()

    def numbers(self, path: str | os.PathLike, what: str, dtype: type = np.float64, blank: bytes = b"") -> np.ndarray:
        """Every number of the block in order (``blank`` bytes read as spaces, e.g. the ``/`` of OBJ faces)."""
        body = self.body
        if blank:
            body = body.copy()
            for b in blank:
                body[body == b] = 32
        return parse_numbers(body.tobytes(), path, what, dtype)
