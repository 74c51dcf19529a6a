"""Progress of a batch: ``n/N``, elapsed and time left, the same way in every command.

On a terminal the line is redrawn in place (``\\r``); in a log (stderr not a terminal) each report is a
plain line of its own, at most one every ``min_interval`` seconds plus the last, so a log of a long build
stays readable and a log of a short one shows every item.

>>> with Progress(24, "build BU3DFE") as progress:
...     for scan in scans:
...         ...
...         progress.advance(scan.name)
"""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3 min 05 s`` or ``2 h 04 min``: a duration as people read it."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Reports ``label: n/N (elapsed, about T left) [item]`` on ``stream`` (stderr by default).

    Args:
        total: the number of items, N.
        label: what is being done (``"build BU3DFE"``).
        stream: where to write; a terminal gets one line redrawn in place, anything else plain lines.
        min_interval: seconds between plain lines (the first and the last item are always reported).
        enabled: False makes every call a no-op (``-q``).
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None, min_interval: float = 5.0,
                 enabled: bool = True):
        self.total, self.label, self.done = int(total), label, 0
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval, self.enabled = min_interval, enabled and total > 0
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self._last_line = -float("inf")
        self._width = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def time_left(self) -> float | None:
        """Seconds left at the mean pace so far; None before the first item."""
        if self.done == 0:
            return None
        return (time.monotonic() - self.start) / self.done * (self.total - self.done)

    def line(self, item: str = "") -> str:
        """The text of the current report (without line ending)."""
        elapsed = format_seconds(time.monotonic() - self.start)
        left = self.time_left()
        pace = "" if left is None or self.done >= self.total else f", about {format_seconds(left)} left"
        text = f"{self.label}: {self.done}/{self.total} ({elapsed}{pace})"
        return f"{text} {item}" if item else text

    def advance(self, item: str = "", n: int = 1) -> None:
        """``n`` more items are done (``item``: the last one's name, shown beside the count)."""
        self.done = min(self.done + n, self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        last = self.done >= self.total
        if self.terminal:
            text = self.line(item)
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            if last:
                self.stream.write("\n")
                self._width = 0
            self.stream.flush()
        elif last or self.done == 1 or now - self._last_line >= self.min_interval:
            self.stream.write(self.line(item) + "\n")
            self.stream.flush()
            self._last_line = now

    def clear(self) -> None:
        """Wipe the redrawn line (on a terminal), so that a line printed elsewhere (a result on stdout, an
        error) starts at the left margin; the next :meth:`advance` draws it again."""
        if self.terminal and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def note(self, text: str) -> None:
        """A line of its own (an item's error, say) that does not tangle with the redrawn one."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a redrawn line that did not reach N (an interrupted batch)."""
        if self.enabled and self.terminal and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
