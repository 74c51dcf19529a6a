"""Where build tasks run: a local process pool (the default) or a Ray cluster; both give the same files.

An executor runs :func:`onflame.dataset.build_task.run_task` on every task it takes from the build's
iterable (a few at a time, as workers become free) and hands each record to ``on_record`` in the main
process as soon as the task completes (the build journals it there). Its ``run`` returns True if it was
interrupted (Ctrl-C), False otherwise; ``mode`` says how tasks reach their files.

- :class:`LocalPool`: onflame's process pool (:func:`onflame.workers.run_in_processes`). On Ctrl-C the
  running scans finish and are recorded (a second Ctrl-C stops the workers at once; the subject's files
  are written together or not at all either way). A scan that kills its worker (a crash in native code,
  the out-of-memory killer) fails alone ("worker process died"); the others are built. Workers die with
  the build, however it ends (``kill -9`` included), and while they live they hold their subsets'
  ``build/workers.lock``, which a new build waits for. Each worker loads the model once, when it starts,
  from a pickle-free copy the pool writes in the temporary folder (``onflame-model-<host>-<pid>-…``,
  removed at the end, or by a later build if this one is killed): a worker that dies while it starts
  then leaves no large message half-sent, which would hang the pool.
- :class:`~.build_ray.RayExecutor`: the same tasks as Ray tasks (:mod:`.build_ray`).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import UsageError
from ..fileio import confine_writes
from ..flame.model import FlameModel, load_model, save_model
from ..workers import WorkerDied, available_cores, run_in_processes
from .build_lock import hold_workers_lock
from .build_ship import private_temporary, remove_abandoned
from .build_task import BuildTask, failure_record, run_task

log = logging.getLogger(__name__)

OnRecord = Callable[[BuildTask, dict], None]
Runner = Callable[[BuildTask, FlameModel], dict]
#: ``executor=`` choices.
EXECUTORS = ("local", "ray")
#: Start of the name of the model's temporary copy.
MODEL_PREFIX = "onflame-model-"
#: Reason recorded for a scan whose worker process died while building it.
WORKER_DIED = "worker process died while registering this scan (a crash or out of memory)"

# --- in a worker of the local pool --------------------------------------------------------------------------

_WORKER: tuple[FlameModel, Runner] | None = None
#: Descriptors of the subsets' ``build/workers.lock`` files this worker holds (shared) while it lives.
_HELD_LOCKS: dict[str, int] = {}


def _init_worker(model: FlameModel | str, runner: Runner) -> None:
    global _WORKER
    _WORKER = (load_model(model) if isinstance(model, str) else model, runner)


def _run_in_worker(task: BuildTask) -> dict:
    assert _WORKER is not None, "worker not initialised"
    hold_workers_lock(task.subset_dir, _HELD_LOCKS)
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

    mode = "in place"

    def __init__(self, workers: int, threads: int = 1, runner: Runner = run_task):
        self.workers = max(1, int(workers))
        self.threads = max(1, int(threads))
        self.runner = runner

    def run(self, tasks: Iterable[BuildTask], model: FlameModel, on_record: OnRecord) -> bool:
        def outcome(task: BuildTask, record: dict | WorkerDied) -> None:
            on_record(task, failure_record(task, WORKER_DIED) if isinstance(record, WorkerDied) else record)

        with _model_file(model) as path:
            return run_in_processes(_run_in_worker, tasks, self.workers, outcome, initializer=_init_worker,
                                    initargs=(model if path is None else str(path), self.runner),
                                    threads=self.threads)


@contextlib.contextmanager
def _model_file(model: FlameModel) -> Iterator[Path | None]:
    """The model as a temporary ``.npz`` for the workers (see the module docstring); None where the
    temporary folder cannot take it (the workers then receive the model itself)."""
    remove_abandoned(MODEL_PREFIX)
    path = None
    try:
        path = private_temporary(MODEL_PREFIX, ".npz", folder=False)
        with confine_writes(path.parent):  # the build's own temporary, outside the output folder it confines
            save_model(model, path)
    except OSError as exc:
        log.info("no temporary copy of the model for the workers (%s); they receive it whole", exc)
        if path is not None:
            path.unlink(missing_ok=True)
        path = None
    try:
        yield path
    finally:
        if path is not None:
            path.unlink(missing_ok=True)


def make_executor(kind: str, workers: int | None = None, address: str | None = None, threads: int = 1,
                  ray_files: str = "auto", **options: Any) -> Any:
    """The executor called ``kind`` (``"local"`` or ``"ray"``).

    ``workers`` default: all cores (local) or, for a Ray started here, its CPUs. ``ray_files`` and
    ``options`` (``resources``, ``unschedulable_s``, ``init_options``, ``task_fn``) are the Ray
    executor's (:class:`~.build_ray.RayExecutor`); a local pool takes none of them.
    """
    if kind == "local":
        if options or ray_files != "auto":
            named = sorted(options) + (["ray_files"] if ray_files != "auto" else [])
            raise UsageError(None, f"{', '.join(named)}: options of the Ray executor (add --executor ray)")
        return LocalPool(workers or available_cores(), threads)
    if kind == "ray":
        from .build_ray import RayExecutor

        return RayExecutor(workers, address, files=ray_files, threads=threads, **options)
    raise UsageError(None, f"unknown executor {kind!r}; use {' or '.join(EXECUTORS)}")
