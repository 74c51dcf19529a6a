"""``build/lock``: one build of a subset at a time, and none while an earlier build's workers still write.

>>> lock = BuildLock(subset_dir / "build" / "lock"); lock.acquire()   # InputError if another build holds it
>>> ...; lock.release()
"""
from __future__ import annotations

import logging
import os
import socket
import time

try:
    import fcntl
except ImportError:  # Windows: the lock falls back to the holder's pid
    fcntl = None  # type: ignore[assignment]
from pathlib import Path

from ..errors import InputError
from .names import BUILD_DIR

log = logging.getLogger(__name__)

#: Lock file in ``BUILD_DIR`` that a build's local workers hold (shared) while they live.
WORKERS_LOCK = "workers.lock"


class BuildLock:
    """``build/lock``: one build per subset at a time, and none while an earlier build's workers still write.

    The build holds an exclusive ``flock`` on ``build/lock`` (which names it: ``host pid``) for its whole
    run; each local worker holds a shared one on ``build/workers.lock`` from its first task of the subset
    until it ends (:mod:`.executors`: :func:`hold_workers_lock`). The kernel drops a lock when its holder dies, however it dies, so
    a ``kill -9``'d build's lock is free at once while its workers, as long as any lives, keep
    ``workers.lock`` held: a new build waits up to :data:`WORKER_GRACE_S` for them (they die with their
    build on Linux and stop before their next task elsewhere) and never races them. Without ``fcntl``
    (Windows) the lock is the file's existence and a dead ``pid`` is taken over.
    """

    #: Seconds a new build waits for an earlier build's workers to end.
    WORKER_GRACE_S = 60.0

    def __init__(self, path: Path):
        self.path = path
        self.workers_path = path.with_name(WORKERS_LOCK)
        self.held = False
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self._acquire_by_pid()
        self._fd = _flock(self.path, fcntl.LOCK_EX)
        if self._fd is None:
            raise InputError(self.path, f"another build is writing this subset ({self._holder()}); wait for it to end")
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        self.held = True
        deadline = time.monotonic() + self.WORKER_GRACE_S
        while (fd := _flock(self.workers_path, fcntl.LOCK_EX)) is None:
            if time.monotonic() > deadline:
                self.release()
                raise InputError(self.workers_path, "workers of an earlier build of this subset are still running; "
                                                    "stop them, then build again")
            time.sleep(0.2)
        os.close(fd)  # free for this build's own workers (shared locks)

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown process"
        except OSError:
            return "unknown process"

    def _acquire_by_pid(self) -> None:
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    raise InputError(self.path, f"another build is writing this subset ({self._holder()}); "
                                                "wait for it, or delete this file if that build is gone") from None
                self.path.unlink(missing_ok=True)  # a killed build's lock
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(me + "\n")
            self.held = True
            return
        raise InputError(self.path, "could not take the build lock")

    def _holder_alive(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
            pid_n = int(pid)
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return True  # another machine's build on a shared disk: cannot tell, so do not take it
        try:
            os.kill(pid_n, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.workers_path.unlink(missing_ok=True)  # this build's workers have ended
            self.held = False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _flock(path: Path, mode: int) -> int | None:
    """An open descriptor of ``path`` (created if missing) holding ``flock(mode)``, or None if another holds it.

    The lock is taken without waiting, and only on the file that still has this name (a file removed
    by its holder between our open and our lock is retried), so two processes never both hold it.
    """
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def hold_workers_lock(subset_dir: str, held: dict[str, int]) -> None:
    """In a worker: hold ``<subset_dir>/build/workers.lock`` (shared) until the worker ends, so that a new
    build of the subset waits for it (see :class:`BuildLock`). ``held``: the worker's descriptors by subset."""
    if fcntl is None or subset_dir in held:
        return
    path = os.path.join(subset_dir, BUILD_DIR, WORKERS_LOCK)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # the build only holds it exclusively while it checks, before any task
    except OSError as exc:
        log.debug("%s: cannot hold the workers' lock: %s", path, exc)
        return
    held[subset_dir] = fd
