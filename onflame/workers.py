"""Independent tasks in local worker processes: the one process pool the build, evaluation, the report
and prepare share.

:func:`run_in_processes` runs ``fn(task)`` for every task in ``spawn``-started processes
(``concurrent.futures.ProcessPoolExecutor``; no forked copies of the parent's torch, BLAS or MediaPipe
threads) and hands each outcome to a callback in the main process as soon as the task completes.

- **A worker that dies** (a crash in native code, the out-of-memory killer) breaks the pool: the tasks
  that were running are tried again one by one, each in a fresh worker, so that only the task that
  kills its worker too gets :class:`WorkerDied`; the rest go on in a new pool.
- **Ctrl-C**: workers ignore SIGINT; the main process stops submitting, lets the running tasks finish
  and hands them over, then returns True. A second Ctrl-C kills the workers at once.
- **The parent's death**: workers die with the process that started them, however it ends (``kill -9``
  included): on Linux the kernel kills them (``PR_SET_PDEATHSIG``), elsewhere they check their parent
  before each task.
- **Threads**: each worker starts with ``threads`` BLAS/OpenMP threads (N workers on N cores, not N × N).

At most ``workers`` tasks are submitted at a time, so a task in flight is a running one and memory held
by queued tasks stays with the caller.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerDied:
    """The outcome of a task whose worker process died while running it, twice: in the shared pool, then
    alone in a fresh worker."""

    reason: str = "worker process died (a crash or out of memory)"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


#: Thread-count variables of the BLAS/OpenMP libraries numpy, scipy and torch load.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: Linux's ``prctl`` option that sends the calling process a signal when its parent dies.
_PR_SET_PDEATHSIG = 1
#: In a worker: the process that started it; the worker ends when its parent is no longer that one.
_PARENT_PID: int | None = None


def _bootstrap(parent_pid: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """A worker's start: ignore Ctrl-C (the main process decides what stops), die with the parent, then
    the caller's ``initializer``."""
    global _PARENT_PID
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _PARENT_PID = parent_pid
    if sys.platform.startswith("linux"):  # prctl through ctypes: Python has no binding
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:  # no libc prctl: the check before each task remains
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    if initializer is not None:
        initializer(*initargs)


def _call(fn: Callable[[Any], Any], task: Any) -> Any:
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:  # the parent is gone: do nothing more
        os._exit(1)
    return fn(task)


@contextlib.contextmanager
def _children_threads(n: int) -> Iterator[None]:
    """Processes started inside the block load BLAS/OpenMP with ``n`` threads each.

    The libraries read these variables once, when a worker imports them (while it unpickles its
    arguments, before any initializer runs), so they must be in the environment it starts with.
    """
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(n) for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_in_processes(fn: Callable[[T], Any], tasks: Iterable[T], workers: int,
                     on_outcome: Callable[[T, Any], None], *, initializer: Callable[..., None] | None = None,
                     initargs: tuple = (), threads: int = 1) -> bool:
    """Run ``fn(task)`` for every task in ``workers`` processes (see the module's text).

    Args:
        fn: a module-level function (pickled by name for the workers).
        tasks: picklable task descriptions.
        workers: processes at most (fewer when there are fewer tasks).
        on_outcome: ``on_outcome(task, outcome)`` in this process as each task ends; the outcome is what
            ``fn`` returned, or a :class:`WorkerDied`. An exception ``fn`` raises reaches the caller
            through ``on_outcome`` never: catch it in ``fn`` and return it.
        initializer, initargs: run once in each worker before its first task.
        threads: BLAS/OpenMP threads per worker.

    Returns:
        True if interrupted (Ctrl-C): tasks not yet started have no outcome. False when every task has one.
    """
    queue, suspects = deque(tasks), deque()
    parent = os.getpid()

    def session(items: deque, n: int) -> tuple[bool, list]:
        pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_bootstrap,
                                   initargs=(parent, initializer, initargs))
        return _run_pool(pool, fn, items, on_outcome, n)

    with _children_threads(max(1, int(threads))):
        while queue or suspects:
            if suspects:  # alone in a fresh worker: if it kills this one too, it is the culprit
                task = suspects.popleft()
                interrupted, broken = session(deque([task]), 1)
                if broken:
                    on_outcome(task, WorkerDied())
            else:
                interrupted, broken = session(queue, max(1, min(int(workers), len(queue))))
                suspects.extend(broken)
            if interrupted:
                return True
    return False


def _run_pool(pool: ProcessPoolExecutor, fn: Callable, queue: deque, on_outcome: Callable, workers: int) -> tuple[bool, list]:
    """Run tasks from ``queue`` until it is empty, interrupted or the pool breaks; ``(interrupted, tasks
    that were running when the pool broke)``."""
    running: dict[Future, Any] = {}
    broken: list = []
    interrupted = False
    try:
        while queue or running:
            while queue and len(running) < workers and not broken:
                try:
                    fut = pool.submit(_call, fn, queue[0])
                except BrokenProcessPool:  # a worker died since the last wait: this task never started
                    break
                running[fut] = queue.popleft()
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                task = running.pop(fut)
                try:
                    outcome = fut.result()
                except BrokenProcessPool:
                    broken.append(task)
                    continue
                on_outcome(task, outcome)
            if broken or _is_broken(pool):
                # every future of a broken pool fails: collect the rest, then start afresh
                broken.extend(running.values())
                running.clear()
                break
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finishing the %d running task(s); Ctrl-C again to stop them now", len(running))
        try:
            for fut in list(running):
                try:
                    on_outcome(running[fut], fut.result())
                except BrokenProcessPool:
                    pass
                del running[fut]
        except KeyboardInterrupt:  # a second Ctrl-C: stop the workers now
            _kill_workers(pool)
    finally:
        if _is_broken(pool):
            # Python 3.11's pool can wait forever on a worker it started while breaking; none of its
            # workers has work left, so end them all before shutting it down
            _kill_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
    return interrupted, broken


def _is_broken(pool: ProcessPoolExecutor) -> bool:
    """True once a worker of ``pool`` has died (the executor's own flag: no public accessor exists)."""
    return bool(getattr(pool, "_broken", False))


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL a pool's worker processes. ProcessPoolExecutor has no public way to stop its workers before
    Python 3.14 (``terminate_workers``); its process table is the only handle on them."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.kill()
            proc.join(5)
        except (OSError, ValueError, AttributeError):  # already gone
            pass
