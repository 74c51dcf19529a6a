"""Independent tasks in local worker processes: the one process pool the build, evaluation, the report
and prepare share.

:func:`run_in_processes` runs ``fn(task)`` for every task in ``spawn``-started processes
(``concurrent.futures.ProcessPoolExecutor``; no forked copies of the parent's torch, BLAS or MediaPipe
threads) and hands each outcome to a callback in the main process as soon as the task completes.

- **A worker that dies** (a crash in native code, the out-of-memory killer) breaks the pool: the tasks
  that were running are tried again one by one, each in a fresh worker, so that only the task that
  kills its worker too gets :class:`WorkerDied`; the rest go on in a new pool.
- **Ctrl-C**: workers ignore SIGINT (from their first instruction: it is blocked while they start, so a
  Ctrl-C during their imports prints nothing); the main process stops submitting, lets the running tasks
  finish and hands them over, then returns True. A second Ctrl-C kills the workers at once, and so does
  an interrupt whose exception has ``stop_now`` set (SIGTERM, as the build raises it).
- **The parent's death**: workers die with the process that started them, however it ends (``kill -9``
  included): on Linux the kernel kills them (``PR_SET_PDEATHSIG``), elsewhere they check their parent
  before each task.
- **Threads**: each worker starts with ``threads`` BLAS/OpenMP threads (N workers on N cores, not N × N).

Tasks are taken from their iterable one at a time, as workers become free: at most ``workers`` are in
flight, so memory stays bounded whatever the number of tasks, and an iterable that stops yielding (a
build that found its disk full) stops the run after the running tasks.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import operator
import os
import signal
import sys
import threading
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
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started this process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
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
def held_signals(deaf: bool = False) -> Iterator[None]:
    """Work that must not be cut short (starting a worker, shutting a pool down, writing a summary): a
    Ctrl-C or SIGTERM that arrives inside the block is handled when it ends, as if it came then (its
    handler runs: Python's Ctrl-C raises KeyboardInterrupt there), or ignored with ``deaf`` (after an
    interrupt, while tidying up). Only the main thread's handlers change (Python runs handlers there);
    a signal without a Python handler keeps its default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in saved.items():
        if deaf:
            signal.signal(sig, signal.SIG_IGN)
        elif callable(handler):
            signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(held):
            saved[signum](signum, None)


@contextlib.contextmanager
def _starting_workers() -> Iterator[None]:
    """Around ``submit`` (which may start a worker): the worker begins with SIGINT blocked (a new process
    inherits the mask of the thread that starts it), so a Ctrl-C while it imports reaches it not;
    :func:`_bootstrap` then ignores SIGINT and unblocks it. Here a Ctrl-C or SIGTERM is held until the
    worker is fully started: one cut short would leave it reading half a message (and printing a
    traceback about it)."""
    with held_signals():
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if hasattr(signal, "pthread_sigmask") else None
        try:
            yield
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


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
        tasks: picklable task descriptions, taken one at a time as workers become free (a list, or any
            iterable; ``len`` or ``__length_hint__`` caps the workers started).
        workers: processes at most (fewer when there are fewer tasks).
        on_outcome: ``on_outcome(task, outcome)`` in this process as each task ends; the outcome is what
            ``fn`` returned, or a :class:`WorkerDied`. An exception ``fn`` raises reaches the caller
            through ``on_outcome`` never: catch it in ``fn`` and return it.
        initializer, initargs: run once in each worker before its first task.
        threads: BLAS/OpenMP threads per worker.

    Returns:
        True if interrupted (Ctrl-C): tasks not yet started have no outcome. False otherwise.
    """
    feed = _Feed(tasks)
    suspects: deque = deque()
    parent = os.getpid()

    def session(items: _Feed, n: int) -> tuple[bool, list]:
        pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_bootstrap,
                                   initargs=(parent, initializer, initargs))
        return _run_pool(pool, fn, items, on_outcome, n)

    with _children_threads(max(1, int(threads))):
        try:
            while suspects or feed.more():
                if suspects:  # alone in a fresh worker: if it kills this one too, it is the culprit
                    task = suspects.popleft()
                    interrupted, broken = session(_Feed([task]), 1)
                    if broken:
                        on_outcome(task, WorkerDied())
                else:
                    interrupted, broken = session(feed, max(1, min(int(workers), feed.hint(workers))))
                    suspects.extend(broken)
                if interrupted:
                    return True
        except KeyboardInterrupt:  # it came while a pool was being shut down (held until it was)
            return True
    return False


class _Feed:
    """Tasks taken lazily from an iterable, with a look-ahead of one (to know whether more remain)."""

    _END = object()

    def __init__(self, tasks: Iterable):
        self._hint = operator.length_hint(tasks, -1)
        self._it = iter(tasks)
        self._next = self._END
        self._taken = 0

    def more(self) -> bool:
        if self._next is self._END:
            self._next = next(self._it, self._END)
        return self._next is not self._END

    def peek(self) -> Any:
        assert self.more()
        return self._next

    def take(self) -> Any:
        assert self.more()
        task, self._next = self._next, self._END
        self._taken += 1
        return task

    def hint(self, default: int) -> int:
        """Tasks left, as far as the iterable tells (``default`` when it does not)."""
        return default if self._hint < 0 else max(1, self._hint - self._taken)


def _run_pool(pool: ProcessPoolExecutor, fn: Callable, feed: _Feed, on_outcome: Callable, workers: int) -> tuple[bool, list]:
    """Run tasks from ``feed`` until it is empty, interrupted or the pool breaks; ``(interrupted, tasks
    that were running when the pool broke)``."""
    running: dict[Future, Any] = {}
    broken: list = []
    interrupted = False
    try:
        while running or feed.more():
            while len(running) < workers and not broken and feed.more():
                try:
                    with _starting_workers():  # a worker it starts begins deaf to Ctrl-C
                        fut = pool.submit(_call, fn, feed.peek())
                        running[fut] = feed.take()
                except BrokenProcessPool:  # a worker died since the last wait: this task never started
                    break
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
    except KeyboardInterrupt as exc:
        interrupted = True
        if getattr(exc, "stop_now", False):  # SIGTERM: no waiting for the running tasks
            _kill_workers(pool)
            running.clear()
        elif running:
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
        with held_signals(deaf=interrupted):  # the workers are ended whatever comes meanwhile
            if _is_broken(pool) or interrupted:
                # Python 3.11's pool can wait forever on a worker it started while breaking; none of its
                # workers has work left (and after an interrupt none may start another), so end them all
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
