"""Where build tasks run: a local process pool (the default) or a Ray cluster; both give the same files.

An executor runs :func:`onflame.dataset.build_task.run_task` on every task and hands each record to
``on_record`` in the main process as soon as the task completes (the build saves its manifest there).
Its ``run`` returns True if it was interrupted (Ctrl-C), False when every task has a record.

- :class:`LocalPool`: onflame's process pool (:func:`onflame.workers.run_in_processes`). On Ctrl-C the
  running scans finish and are recorded (a second Ctrl-C stops the workers at once; atomic writes keep
  every file whole either way). A scan that kills its worker (a crash in native code, the out-of-memory
  killer) fails alone ("worker process died"); the others are built. Workers die with the build,
  however it ends (``kill -9`` included), and while they live they hold their subsets'
  ``build/workers.lock``, which a new build waits for.
- :class:`RayExecutor`: the same tasks as Ray tasks (one CPU each) on ``ray.init(address=...)``: an
  existing cluster (``"auto"`` or ``"ray://host:10001"``), or with no address a single-node Ray started
  on this machine. The model is put once in Ray's object store.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable

from ..errors import InputError
from ..flame.model import FlameModel
from ..workers import WorkerDied, available_cores, run_in_processes
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


# --- local process pool ------------------------------------------------------------------------------------

_WORKER: tuple[FlameModel, Runner] | None = None
#: Descriptors of the subsets' ``build/workers.lock`` files this worker holds (shared) while it lives.
_HELD_LOCKS: dict[str, int] = {}


def _init_worker(model: FlameModel, runner: Runner) -> None:
    global _WORKER
    _WORKER = (model, runner)


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
    model, runner = _WORKER
    return runner(task, model)


class LocalPool:
    """Tasks in ``workers`` local processes (:func:`onflame.workers.run_in_processes`; see the module
    docstring).

    Args:
        workers: processes.
        threads: BLAS/OpenMP threads per process.
        runner: the function run for each task (``run_task``; tests replace it).
    """

    def __init__(self, workers: int, threads: int = 1, runner: Runner = run_task):
        self.workers = max(1, int(workers))
        self.threads = max(1, int(threads))
        self.runner = runner

    def run(self, tasks: Iterable[BuildTask], model: FlameModel, on_record: OnRecord) -> bool:
        def outcome(task: BuildTask, record: dict | WorkerDied) -> None:
            on_record(task, failure_record(task, WORKER_DIED) if isinstance(record, WorkerDied) else record)

        return run_in_processes(_run_in_worker, tasks, self.workers, outcome, initializer=_init_worker,
                                initargs=(model, self.runner), threads=self.threads)


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
