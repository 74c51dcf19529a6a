"""Where build tasks run: a local process pool (the default) or a Ray cluster; both give the same files.

An executor runs :func:`onflame.dataset.build_task.run_task` on every task and hands each record to
``on_record`` in the main process as soon as the task completes (the build saves its manifest there).
Its ``run`` returns True if it was interrupted (Ctrl-C), False when every task has a record.

- :class:`LocalPool`: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn`` start method (no
  forked copies of the parent's torch/BLAS thread state). Workers ignore SIGINT: on Ctrl-C the main
  process stops submitting, lets the running scans finish and records them (a second Ctrl-C stops the
  workers at once; atomic writes keep every file whole either way). A worker that dies (a crash in
  native code, the out-of-memory killer) breaks the pool: the scans that were running are tried again
  one by one in a fresh worker, so only the one that kills its worker fails ("worker process died").
  Workers die with the build, however it ends (``kill -9`` included): on Linux the kernel kills them
  when their parent dies (``PR_SET_PDEATHSIG``), elsewhere they check their parent before each task;
  while they live they hold their subsets' ``build/workers.lock``, which a new build waits for.
- :class:`RayExecutor`: the same tasks as Ray tasks (one CPU each) on ``ray.init(address=...)``: an
  existing cluster (``"auto"`` or ``"ray://host:10001"``), or with no address a single-node Ray started
  on this machine. The model is put once in Ray's object store.
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
from typing import Callable, Iterable, Iterator

from ..errors import InputError
from ..flame.model import FlameModel
from .build_task import BUILD_DIR, WORKERS_LOCK, BuildTask, failure_record, run_task

try:
    import fcntl
except ImportError:  # Windows: no workers' lock (see onflame.dataset.build._Lock)
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

OnRecord = Callable[[BuildTask, dict], None]
Runner = Callable[[BuildTask, FlameModel], dict]
#: ``executor=`` choices.
EXECUTORS = ("local", "ray")
#: Reason recorded for a scan whose worker process died while building it.
WORKER_DIED = "worker process died while registering this scan (a crash or out of memory)"


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


# --- local process pool ------------------------------------------------------------------------------------

#: Thread-count variables of the BLAS/OpenMP libraries numpy, scipy and torch load.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_WORKER: tuple[FlameModel, Runner] | None = None
#: The build's process id, in a worker: the worker ends when its parent is no longer that process.
_PARENT_PID: int | None = None
#: Descriptors of the subsets' ``build/workers.lock`` files this worker holds (shared) while it lives.
_HELD_LOCKS: dict[str, int] = {}
#: Linux's ``prctl`` option that sends the calling process a signal when its parent dies.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker end when the build that started it ends, however it ends (``kill -9`` included).

    On Linux the kernel sends it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``, through
    ctypes: Python has no binding); elsewhere :func:`_run_in_worker` checks the parent before each task.
    A parent that died before the request took effect is caught by the check that follows it.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:  # no libc prctl: the check between tasks remains
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
    if os.getppid() != parent_pid:
        os._exit(1)


def _init_worker(model: FlameModel, runner: Runner, parent_pid: int | None = None) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the main process decides what stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _WORKER, _PARENT_PID
    _WORKER = (model, runner)
    if parent_pid is not None:
        _PARENT_PID = parent_pid
        _die_with_parent(parent_pid)


def _hold_workers_lock(task: BuildTask) -> None:
    """Hold the task's subset's ``build/workers.lock`` (shared) until this worker ends, so that a new build
    of the subset waits for it (see ``onflame.dataset.build._Lock``)."""
    if fcntl is None or task.subset_dir in _HELD_LOCKS:
        return
    path = os.path.join(task.subset_dir, BUILD_DIR, WORKERS_LOCK)
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_SH)  # the build only holds it exclusively while it checks, before any task
    except OSError as exc:
        log.debug("%s: cannot hold the workers' lock: %s", path, exc)
        return
    _HELD_LOCKS[task.subset_dir] = fd


def _run_in_worker(task: BuildTask) -> dict:
    assert _WORKER is not None, "worker not initialised"
    _hold_workers_lock(task)
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:  # the build is gone: write nothing more
        os._exit(1)
    model, runner = _WORKER
    return runner(task, model)


@contextlib.contextmanager
def _children_threads(n: int) -> Iterator[None]:
    """Processes started inside the block load BLAS/OpenMP with ``n`` threads each.

    The libraries read these variables once, when a worker imports them (while it unpickles its
    arguments, before any initializer runs), so they must be in the environment it starts with: without
    them every worker would start one BLAS thread per core, N workers × N threads on N cores.
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


class LocalPool:
    """Tasks in ``workers`` local processes (see the module docstring).

    Args:
        workers: processes.
        threads: BLAS/OpenMP threads per process.
        runner: the function run for each task (``run_task``; tests replace it).
    """

    def __init__(self, workers: int, threads: int = 1, runner: Runner = run_task):
        self.workers = max(1, int(workers))
        self.threads = max(1, int(threads))
        self.runner = runner

    def _pool(self, model: FlameModel, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(model, self.runner, os.getpid()))

    def run(self, tasks: Iterable[BuildTask], model: FlameModel, on_record: OnRecord) -> bool:
        queue = deque(tasks)
        suspects: deque[BuildTask] = deque()
        while queue or suspects:
            if suspects:  # alone in a fresh worker: if it kills this one too, it is the culprit
                task = suspects.popleft()
                interrupted, broken = self._session(deque([task]), model, on_record, workers=1)
                if broken:
                    on_record(task, failure_record(task, WORKER_DIED))
            else:
                interrupted, broken = self._session(queue, model, on_record, self.workers)
                suspects.extend(broken)
            if interrupted:
                return True
        return False

    def _session(self, queue: deque, model: FlameModel, on_record: OnRecord,
                 workers: int) -> tuple[bool, list[BuildTask]]:
        """Run tasks from ``queue`` until it is empty, interrupted or the pool breaks.

        Returns ``(interrupted, tasks that were running when the pool broke)``. At most ``workers`` tasks
        are submitted at a time, so every submitted task is a running one.
        """
        with _children_threads(self.threads):
            return self._run_pool(self._pool(model, workers), queue, on_record, workers)

    def _run_pool(self, pool: ProcessPoolExecutor, queue: deque, on_record: OnRecord,
                  workers: int) -> tuple[bool, list[BuildTask]]:
        running: dict[Future, BuildTask] = {}
        broken: list[BuildTask] = []
        interrupted = False
        try:
            while queue or running:
                while queue and len(running) < workers and not broken:
                    try:
                        fut = pool.submit(_run_in_worker, queue[0])
                    except BrokenProcessPool:  # a worker died since the last wait: this task never started
                        break
                    running[fut] = queue.popleft()
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = running.pop(fut)
                    try:
                        record = fut.result()
                    except BrokenProcessPool:
                        broken.append(task)
                        continue
                    on_record(task, record)
                if broken or _is_broken(pool):
                    # every future of a broken pool fails: collect the rest, then start afresh
                    broken.extend(running.values())
                    running.clear()
                    break
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: finishing the %d running scan(s); Ctrl-C again to stop them now", len(running))
            try:
                for fut in list(running):
                    try:
                        on_record(running[fut], fut.result())
                    except BrokenProcessPool:
                        pass
                    del running[fut]
            except KeyboardInterrupt:
                # a second Ctrl-C: stop the workers now. ProcessPoolExecutor has no public way before
                # Python 3.14 (terminate_workers); its process table is the only handle on them
                _kill_workers(pool)
        finally:
            if _is_broken(pool):
                # Python 3.11's pool can wait forever on a worker it started while breaking; none of
                # its workers has work left, so end them all before shutting it down
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


# --- Ray ------------------------------------------------------------------------------------------------------

class RayExecutor:
    """Tasks as Ray tasks (see the module docstring).

    Args:
        workers: CPUs of the single-node Ray started when ``address`` is None (default: all cores);
            ignored for an existing cluster, whose CPUs decide.
        address: a Ray cluster address for ``ray.init`` (``"auto"``, ``"ray://head:10001"``), or None.
        init_options: more ``ray.init`` keyword arguments (e.g. ``object_store_memory``).
    """

    def __init__(self, workers: int | None = None, address: str | None = None, init_options: dict | None = None):
        self.workers = workers
        self.address = address
        self.init_options = dict(init_options or {})

    def run(self, tasks: Iterable[BuildTask], model: FlameModel, on_record: OnRecord) -> bool:
        try:
            import ray
        except ImportError:
            raise InputError(None, "the Ray executor needs Ray: pip install 'onflame[ray]'") from None
        started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                       **self.init_options}
            if self.address is None:
                options.setdefault("num_cpus", self.workers or available_cores())
            ray.init(address=self.address, **options)
            started = True
        remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        pending: dict = {}
        try:
            model_ref = ray.put(model)
            pending = {remote.remote(task, model_ref): task for task in tasks}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died or Ray failed the task
                        record = failure_record(task, f"{WORKER_DIED} ({type(exc).__name__})")
                    on_record(task, record)
            return False
        except KeyboardInterrupt:
            # queued tasks are dropped, running ones interrupted; their files are whole or absent and
            # they have no record, so a re-run builds them
            for ref in pending:
                ray.cancel(ref)
            return True
        finally:
            if started:
                ray.shutdown()


def make_executor(kind: str, workers: int | None = None, address: str | None = None,
                  threads: int = 1) -> LocalPool | RayExecutor:
    """The executor called ``kind`` (``"local"`` or ``"ray"``); ``workers`` default: all cores."""
    if kind == "local":
        return LocalPool(workers or available_cores(), threads)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise InputError(None, f"unknown executor {kind!r}; use {' or '.join(EXECUTORS)}")
