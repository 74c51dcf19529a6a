"""Ends the processes of a build that died, however it died: run beside a build that started a local Ray.

``ray.init()`` without an address starts Ray's daemons as the build's children; Ray ties some of them to
the build's life, but its agents (dashboard and runtime-env agents) outlive a ``kill -9`` of the build
by a minute or more, and a task running then can keep writing. :func:`start_reaper` starts this file as
a separate small process (standard library only, in its own session so that the terminal's Ctrl-C does
not reach it) with a pipe from the build on its standard input. It notes the build's descendants twice a
second (from Linux's ``/proc``: each process's children); when the pipe ends without the build having said ``done`` (the build
is gone), it kills every process it noted that still runs (the same process: its start time is
checked), and their children.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

#: Seconds between two notes of the build's descendants.
INTERVAL_S = 0.5
#: Linux lists each thread's children in ``/proc/<pid>/task/<tid>/children`` (CONFIG_PROC_CHILDREN).
_CHILDREN_FILES = Path(f"/proc/self/task/{os.getpid()}/children").exists()


class Reaper:
    """The driver's end of a reaper process (:func:`start_reaper`)."""

    def __init__(self, proc: subprocess.Popen, pipe: int):
        self.proc, self.pipe = proc, pipe

    def done(self) -> None:
        """The build ends normally (its Ray is shut down): the reaper leaves without killing anything."""
        try:
            os.write(self.pipe, b"done\n")
            os.close(self.pipe)
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_reaper() -> Reaper | None:
    """A reaper watching this process (Linux; None elsewhere, where Ray's own fate-sharing is all)."""
    if not Path("/proc/self/stat").is_file():
        return None
    read, write = os.pipe()  # not inherited by the processes Ray starts (close-on-exec)
    try:
        proc = subprocess.Popen([sys.executable, "-S", os.path.abspath(__file__), str(os.getpid())], stdin=read,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write)
        return None
    finally:
        os.close(read)
    return Reaper(proc, write)


# --- the reaper process ------------------------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks after boot), which tells it from a later one with its pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` (started by any of its threads)."""
    if not _CHILDREN_FILES:  # a kernel without /proc/<pid>/task/<tid>/children: every process's parent
        out = []
        for d in os.listdir("/proc"):
            try:
                if d.isdigit() and int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                continue
        return out
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return out


def _descendants(roots: set[int]) -> dict[int, str]:
    """pid -> start time of the processes below ``roots``."""
    found: dict[int, str] = {}
    todo = list(roots)
    while todo:
        for child in _children(todo.pop()):
            start = _start_time(child)
            if child not in found and start is not None:
                found[child] = start
                todo.append(child)
    return found


def _watch(build_pid: int) -> int:
    noted: dict[int, str] = {}
    me = os.getpid()
    while True:
        ready, _, _ = select.select([0], [], [], INTERVAL_S)
        noted.update(_descendants({build_pid}))
        if ready:
            data = os.read(0, 64)
            if b"done" in data:
                return 0
            if not data:
                break
    for _ in range(2):  # their children too, then once more for any started meanwhile
        noted.update(_descendants(set(noted)))
        for pid, start in noted.items():
            if pid != me and _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(_watch(int(sys.argv[1])))
