"""Build tasks on Ray: a cluster (``address``), or a single-node Ray started on this machine.

:class:`RayExecutor` runs each scan as a Ray task of one CPU (plus any custom ``resources``, which pin
the tasks to the nodes that have them). How tasks reach their files (``files``):

- ``"shared"``: in place, as the local pool: every node must see the driver's paths (one machine, or a
  cluster with a shared file system). Tasks write their outputs themselves.
- ``"ship"``: the driver reads each task's inputs and sends them through Ray's object store; the task
  returns its outputs' bytes and the driver writes them (:mod:`.build_ship`). No node opens a path of
  the driver's, so nodes need no shared file system.
- ``"auto"`` (default): ``shared`` when every node of the cluster is this machine, ``ship`` otherwise.

Either way the files are byte-identical to the local pool's and the manifest is kept by the driver, so a
build resumes the same way. The model goes once into the object store, and each Ray worker process
fetches it once (:func:`remote_task` keeps it between tasks). Tasks are submitted a few at a time (two
per CPU the cluster has for them), so the driver's memory and the object store hold a bounded number of
scans whatever the number of scans.

A node lost mid-build: Ray runs its tasks again elsewhere (once); when no live node can run the build's
tasks for :attr:`RayExecutor.unschedulable_s` seconds (all nodes with the tasks' resources are gone),
the tasks in flight fail ("no node of the Ray cluster can run it"; a re-run builds them) and the build
stops instead of waiting. A Ray started here ends with the build, ``kill -9`` included
(:mod:`.build_reaper`).
"""
from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from typing import Any, Callable, Iterable, Iterator

from ..errors import InputError, UsageError
from ..flame.model import FlameModel
from ..workers import available_cores, held_signals
from .build_reaper import start_reaper
from .build_ship import commit_shipped, run_shipped, ship_inputs
from .build_task import BuildTask, failure_record, run_task

log = logging.getLogger(__name__)

#: ``files=`` choices.
FILE_MODES = ("auto", "shared", "ship")
#: What the report calls each way of reaching the files.
MODE_NAMES = {"shared": "in place", "ship": "shipped"}
#: Reason recorded for a scan whose Ray worker or node died (after Ray's own retry).
RAY_WORKER_DIED = "the Ray worker or node running it died"
#: Reason recorded for a scan no live node could run.
UNSCHEDULABLE = "no node of the Ray cluster can run it (its node was lost?)"

# --- in a Ray worker process ------------------------------------------------------------------------------------

#: (token, model) of the last build this worker process ran tasks of.
_MODEL: tuple[str, FlameModel] | None = None


def _model(box: list) -> FlameModel:
    """The build's model, fetched from the object store on this worker's first task of the build.

    ``box``: ``[ObjectRef, token]``; a list, so that Ray does not fetch the model for every task.
    """
    global _MODEL
    ref, token = box
    if _MODEL is None or _MODEL[0] != token:
        import ray

        _MODEL = (token, ray.get(ref))
    return _MODEL[1]


def remote_task(task: BuildTask, box: list, shipment: Any) -> dict:
    """One build task on a Ray node: ``{"record"}`` in place, or :func:`.build_ship.run_shipped`'s result."""
    model = _model(box)
    if shipment is None:
        return {"record": run_task(task, model)}
    return run_shipped(task, model, shipment)


# --- on the driver ----------------------------------------------------------------------------------------------

class RayExecutor:
    """Tasks as Ray tasks (see the module docstring).

    Args:
        workers: CPUs of the single-node Ray started when ``address`` is None (default: all cores);
            ignored for an existing cluster, whose CPUs decide.
        address: a Ray cluster address for ``ray.init`` (``"auto"``, ``"ray://head:10001"``), or None.
        files: ``"auto"``, ``"shared"`` or ``"ship"`` (see the module docstring).
        threads: torch/BLAS threads per task (the tasks' own setting; Ray reserves one CPU each).
        resources: custom Ray resources each task needs (e.g. ``{"scanner_nodes": 1}``).
        unschedulable_s: seconds without any live node able to run a task before the tasks in flight fail.
        init_options: more ``ray.init`` keyword arguments (e.g. ``object_store_memory``).
        task_fn: the remote function (``remote_task``; tests wrap it).

    After :meth:`run`: ``mode`` (``"in place"`` or ``"shipped"``) and ``stopped`` (why it stopped early).
    """

    def __init__(self, workers: int | None = None, address: str | None = None, files: str = "auto",
                 threads: int = 1, resources: dict[str, float] | None = None, unschedulable_s: float = 300.0,
                 init_options: dict | None = None, task_fn: Callable | None = None):
        if files not in FILE_MODES:
            raise UsageError(None, f"unknown Ray file mode {files!r}; use {', '.join(FILE_MODES)}")
        self.workers, self.address, self.files, self.threads = workers, address, files, threads
        self.resources = dict(resources or {})
        self.unschedulable_s = float(unschedulable_s)
        self.init_options = dict(init_options or {})
        self.task_fn = task_fn or remote_task
        self.mode = MODE_NAMES["shared" if files == "auto" else files]
        self.stopped: str | None = None

    def run(self, tasks: Iterable[BuildTask], model: FlameModel, on_record: Callable[[BuildTask, dict], None]) -> bool:
        try:
            import ray
        except ImportError:
            raise InputError(None, "the Ray executor needs Ray: pip install 'onflame[ray]'") from None
        started = not ray.is_initialized()
        reaper = start_reaper() if started and self.address is None else None
        try:
            with _quiet_ray():
                try:
                    if started:
                        options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                                   **self.init_options}
                        if self.address is None:
                            options.setdefault("num_cpus", self.workers or available_cores())
                        ray.init(address=self.address, **options)
                    shipped = self._ships(ray)
                    self.mode = MODE_NAMES["ship" if shipped else "shared"]
                    self.workers = self.workers or int(ray.cluster_resources().get("CPU", 0))
                    return _Run(self, ray, shipped, model, on_record).run(tasks)
                finally:
                    with held_signals():  # Ray (and the reaper) shut down whatever comes meanwhile
                        if started:
                            ray.shutdown()
                        if reaper is not None:
                            reaper.done()
        except KeyboardInterrupt:  # while Ray started, or held while it shut down
            return True

    def _ships(self, ray: Any) -> bool:
        """True when tasks get their files through the object store (see the module docstring)."""
        if self.files != "auto":
            return self.files == "ship"
        here = {ray.util.get_node_ip_address(), socket.gethostname()}
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return not all(n.get("NodeManagerAddress") in here or n.get("NodeManagerHostname") in here for n in nodes)

    def demand(self) -> dict[str, float]:
        """What one task reserves on a node."""
        return {"CPU": 1.0, **self.resources}


class _Run:
    """One run of a :class:`RayExecutor` (the driver's loop)."""

    def __init__(self, ex: RayExecutor, ray: Any, shipped: bool, model: FlameModel, on_record: Callable):
        self.ex, self.ray, self.shipped, self.on_record = ex, ray, shipped, on_record
        self.remote = ray.remote(ex.task_fn).options(num_cpus=1, max_retries=1, resources=ex.resources or None)
        self.box = [ray.put(model), uuid.uuid4().hex]
        self.in_flight: dict[Any, BuildTask] = {}
        self._slots_at, self._slots = -1e9, 1
        self._unschedulable_since: float | None = None

    def run(self, tasks: Iterable[BuildTask]) -> bool:
        feed = iter(tasks)
        try:
            more = True
            while True:
                while more and len(self.in_flight) < max(2, 2 * self.slots()):
                    task = next(feed, None)
                    if task is None:
                        more = False
                        break
                    self.in_flight[self.remote.remote(task, self.box, ship_inputs(task) if self.shipped else None)] = task
                if not self.in_flight:
                    return False
                done, _ = self.ray.wait(list(self.in_flight), num_returns=1, timeout=2.0)
                for ref in done:
                    task = self.in_flight.pop(ref)
                    self.on_record(task, self.outcome(ref, task))
                if not done and self.cluster_lost():
                    return False
        except KeyboardInterrupt:
            # queued tasks are dropped, running ones interrupted; they have no record, so a re-run builds them
            for ref in self.in_flight:
                with contextlib.suppress(Exception):
                    self.ray.cancel(ref)
            return True

    def outcome(self, ref: Any, task: BuildTask) -> dict:
        try:
            result = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:  # the worker or its node died, or Ray failed the task
            return failure_record(task, f"{RAY_WORKER_DIED} ({type(exc).__name__})")
        return commit_shipped(task, result) if self.shipped else result["record"]

    def slots(self) -> int:
        """Tasks the live nodes can run at once (refreshed every few seconds)."""
        now = time.monotonic()
        if now - self._slots_at > 5.0:
            total = self.ray.cluster_resources()
            self._slots = min(int(total.get(k, 0) // v) for k, v in self.ex.demand().items())
            self._slots_at = now
        return self._slots

    def cluster_lost(self) -> bool:
        """True (and every task in flight failed) once no live node could run a task for too long."""
        self._slots_at = -1e9
        if self.slots() > 0:
            self._unschedulable_since = None
            return False
        now = time.monotonic()
        self._unschedulable_since = self._unschedulable_since or now
        if now - self._unschedulable_since < self.ex.unschedulable_s:
            return False
        self.ex.stopped = (f"no node of the Ray cluster can run the build's tasks (needs {self.ex.demand()}) "
                           f"for {self.ex.unschedulable_s:.0f} s")
        for ref, task in list(self.in_flight.items()):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
            self.on_record(task, failure_record(task, UNSCHEDULABLE))
        self.in_flight.clear()
        return True


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's own warnings (token authentication, ...) are no lines of onflame's: shown with ``-v`` only."""
    logger = logging.getLogger("ray")
    level = logger.level
    if not logging.getLogger().isEnabledFor(logging.INFO):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
