"""``onflame build``: register a raw source release into a MICA subset, resumably and in parallel.

>>> from onflame.dataset.build import build_subset
>>> report = build_subset("FRGC", "/data/FRGC_v2", "MICA", "generic_model.pkl", workers=8)
>>> print(report.format_table()); report.exit_code

For every scan the source finds (:meth:`onflame.sources.Source.find_scans`) one task
(:mod:`.build_task`) registers it and writes, together or not at all, ``ROOT/<SUBSET>/FLAME_parameters/
<actor>/<stem>.npz``, ``registrations/<actor>/<stem>.obj`` and ``build/reports/<actor>/<stem>.json``.
Tasks run in a local process pool or on Ray (:mod:`.executors`, :mod:`.build_ray`). The main process
records each completed task in the subset's manifest (:mod:`.manifest`) and ends with
``build/summary.json`` and ``build/summary.txt`` (:mod:`.build_report`): registered / suspect / failed
scans, each with its reasons, and timings.

- Resumable: a re-run skips scans whose record, inputs and outputs are unchanged, and redoes changed,
  failed-by-accident or half-finished ones (temporaries of a killed run are removed; :mod:`.build_plan`).
- Deterministic: the same inputs give the same bytes, whatever the worker count or executor (torch
  threads per worker are fixed, see :class:`.build_task.BuildTask`); reports hold no timings.
- Failures are isolated: a bad scan is one ``failed`` line naming the file and the reason. A full disk
  (or quota) fails the scans being written, each with nothing of it left on disk, and stops the build
  from starting more. Exit code (:attr:`BuildReport.exit_code`): 1 when any scan failed, was skipped or
  not reached, 130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM).
- Bounded: tasks are handed to the workers a few at a time, so memory does not grow with the number
  of scans beyond their small records.
- A lock (``build/lock``, :mod:`.build_lock`) keeps two builds from writing one subset at once, and a
  new build from starting while a killed one's workers still run.
- A root built on a model that is not FLAME's topology gets that model as ``ROOT/model.npz``, so
  ``onflame validate`` checks the registrations against the right model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import InputError, UsageError
from ..fileio import check_output_dir, write_json, write_text
from ..flame.model import FlameModel, load_model_with_assets
from ..progress import Progress
from ..registration.fit import FitSettings
from ..registration.refine import RefineSettings
from ..sources import get_source
from ..workers import held_signals
from .build_plan import SubsetBuild, ensure_model_file, plan_subset, scan_size
from .build_report import BuildReport
from .build_task import BuildTask, check_landmark_option
from .executors import EXECUTORS, make_executor
from .names import BUILD_DIR
from .manifest import value_digest

__all__ = ["BuildReport", "build", "build_subset"]

log = logging.getLogger(__name__)


class BuildTerminated(KeyboardInterrupt):
    """SIGTERM during a build whose process had no handler of its own: stops the build like Ctrl-C, except
    that running scans are not waited for (``stop_now``: the workers are ended at once)."""

    stop_now = True


class _Tasks:
    """The tasks to build, handed out one at a time; :meth:`stop` ends the handing out (a full disk)."""

    def __init__(self, tasks: list[BuildTask]):
        self.tasks, self.stopped = tasks, None

    def __iter__(self) -> Iterator[BuildTask]:
        for task in self.tasks:
            if self.stopped:
                return
            yield task

    def __length_hint__(self) -> int:
        return len(self.tasks)

    def stop(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            log.warning("%s: no more scans are started", reason)


@contextlib.contextmanager
def _sigterm_stops_the_build(terminated: threading.Event) -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`BuildTerminated` (the build then stops as on Ctrl-C and
    ends with 143), unless the process has a SIGTERM handler of its own (the command line's), or this is
    not the main thread (Python delivers signals there only)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def handler(signum: int, frame: object) -> None:
        terminated.set()
        raise BuildTerminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _resolve_model(model: FlameModel | str | os.PathLike) -> FlameModel:
    if isinstance(model, FlameModel):
        return model
    if model is None:
        raise InputError(None, "no FLAME model given (a FlameModel or a model file)")
    return load_model_with_assets(model)


def _check_options(executor: str, landmarks: str, workers: int | None) -> None:
    if executor not in EXECUTORS:
        raise UsageError(None, f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)}")
    check_landmark_option(landmarks)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise UsageError(None, f"workers must be a whole number of at least 1, got {workers!r}")


def _announcer(echo: Callable[[str], None] | None, progress: Progress | None) -> Callable[[BuildTask, dict], None]:
    """What the build says as each scan completes: one echo line, and the progress line."""
    def announce(task: BuildTask, record: dict) -> None:
        why = record.get("error") if record["status"] == "failed" else "; ".join(record.get("reasons") or [])
        line = (f"{task.item.subset} {task.name}: {record['status']}" + (f" ({why})" if why else "")
                + f" [{record.get('timings_s', {}).get('task', 0.0):.1f} s]")
        if echo:
            echo(line)
        if progress is not None:
            if record["status"] == "failed":
                progress.note(f"build: {line}")
            progress.advance(f"{task.item.subset} {task.name}")
    return announce


def build(jobs: Sequence[tuple[str, str | os.PathLike]], out_root: str | os.PathLike,
          model: FlameModel | str | os.PathLike, *, workers: int | None = None,
          executor: str = "local", address: str | None = None, ray_files: str = "auto",
          landmarks: str = "auto", auto_landmarks: str = "auto", landmark_convention: str = "auto",
          only: Mapping[str, Mapping[str, str]] | None = None,
          require_texture: bool = False, retry_failed: bool = False, torch_threads: int = 1,
          fit_settings: FitSettings | None = None, refine_settings: RefineSettings | None = None,
          echo: Callable[[str], None] | None = None, progress: bool = False,
          executor_options: Mapping[str, Any] | None = None) -> dict[str, BuildReport]:
    """Build several subsets in one run (one pool for all their scans). See :func:`build_subset`.

    Args:
        jobs: ``(source name, raw release folder)`` pairs.
        only: subset name -> (actor -> stem) to keep, e.g. ``{"FRGC": mica_subjects(list)}``.
        executor_options: more options of the executor (:func:`.executors.make_executor`), e.g. Ray
            ``resources`` that pin the tasks to some nodes.

    Returns:
        subset name -> :class:`BuildReport`, in the order of ``jobs``.
    """
    t0 = time.perf_counter()
    _check_options(executor, landmarks, workers)
    runner = make_executor(executor, workers, address, torch_threads, ray_files=ray_files, **(executor_options or {}))
    check_output_dir(out_root)
    flame = _resolve_model(model)
    digest = value_digest(flame)
    out_root = Path(os.path.abspath(out_root))
    options = dict(landmarks=landmarks, auto_landmarks=auto_landmarks, landmark_convention=landmark_convention,
                   require_texture=require_texture, torch_threads=torch_threads, fit_settings=fit_settings,
                   refine_settings=refine_settings)
    sources = []
    for name, raw in jobs:
        try:  # absolute: what tasks name does not depend on where the build was started
            sources.append((get_source(name), Path(os.path.abspath(raw))))
        except KeyError as exc:
            raise InputError(None, exc.args[0]) from None
    subsets: dict[str, SubsetBuild] = {}
    terminated = threading.Event()
    try:
        for source, raw in sources:
            if source.name in subsets:
                raise InputError(raw, f"{source.name} is given twice")
            subsets[source.name] = plan_subset(source, raw, out_root, digest, (only or {}).get(source.name), options,
                                               retry_failed)
        model_problem = ensure_model_file(out_root, flame, digest)
        todo = _Tasks(sorted((t for s in subsets.values() for t in s.todo), key=scan_size, reverse=True))
        total = sum(len(s.tasks) for s in subsets.values())
        if echo:
            echo(f"{total} scan(s), {len(todo.tasks)} to build, {total - len(todo.tasks)} up to date")
        bar = Progress(len(todo.tasks), "build", enabled=progress) if progress else None
        announce = _announcer(echo, bar)

        def on_record(task: BuildTask, record: dict) -> None:
            subsets[task.item.subset].record(task, record)
            announce(task, record)
            if record.get("disk_full"):
                todo.stop(record["error"])

        with _sigterm_stops_the_build(terminated):
            interrupted = runner.run(todo, flame, on_record) if todo.tasks else False
            if bar is not None:
                bar.close()
            try:
                with held_signals(deaf=interrupted):  # manifests and summaries whole
                    reports = _finish(subsets, runner, executor, interrupted, terminated.is_set(),
                                      todo.stopped or getattr(runner, "stopped", None), model_problem, t0)
            except BuildTerminated:  # SIGTERM once every scan was done: the build ends as asked, with 143
                for rep in reports.values():
                    rep.terminated = True
        return reports
    finally:
        for s in subsets.values():
            s.manifest.close()
            s.lock.release()


def _finish(subsets: dict[str, SubsetBuild], runner: Any, executor: str, interrupted: bool, terminated: bool,
            stopped: str | None, model_problem: str | None, t0: float) -> dict[str, BuildReport]:
    """Save each subset's manifest and write its summaries; the reports."""
    reports = {}
    for name, s in subsets.items():
        if model_problem:
            s.problems.append(model_problem)
        s.finish()
        rep = s.report(executor, getattr(runner, "workers", 0) or 0, getattr(runner, "mode", "in place"),
                       time.perf_counter() - t0)
        rep.interrupted, rep.terminated, rep.stopped = interrupted and not terminated, terminated, stopped
        rep.built_together = len(subsets)
        for path, write in ((s.out / BUILD_DIR / "summary.json", lambda p: write_json(p, rep.to_dict())),
                            (s.out / BUILD_DIR / "summary.txt", lambda p: write_text(p, rep.format_table() + "\n"))):
            try:
                write(path)
            except OSError as exc:
                rep.problems.append(f"{path}: {exc.strerror or exc}; the summary was not written")
        reports[name] = rep
    return reports


def build_subset(source: str, raw_dir: str | os.PathLike, out_root: str | os.PathLike,
                 model: FlameModel | str | os.PathLike, *, only: Mapping[str, str] | None = None,
                 **options: Any) -> BuildReport:
    """Register every scan of a raw release into ``out_root/<SUBSET>/`` (see the module docstring).

    Args:
        source: MICA subset name (``"FRGC"``, ``"BU-3DFE"``, ...; :func:`onflame.sources.get_source`).
        raw_dir: the release's root folder.
        out_root: the MICA root to write into.
        model: a :class:`FlameModel` with landmark embedding and masks, or a model file (its embedding and
            masks found beside it); :func:`onflame.synthetic.head.make_head_model` gives onflame's
            procedural head.
        only: actor -> stem to keep (:func:`onflame.sources.mica_subjects` of MICA's image list).
        workers: processes (local) or CPUs of a local Ray (default: the cores available).
        executor: ``"local"`` (process pool) or ``"ray"``; ``address``: the Ray cluster (None: start one here).
        ray_files: how Ray tasks reach the scans and the outputs (``docs/build.md``): ``"shared"`` (in place:
            every node sees the driver's paths), ``"ship"`` (inputs through Ray's object store, outputs
            returned to this process, which writes them), ``"auto"`` (in place when every Ray node is
            this machine, shipped otherwise).
        landmarks: ``"auto"`` (a landmark file beside each scan, ``<scan stem>.lmk51.npy``, or shipped by the
            release, else ``auto_landmarks``), ``"none"``, or a file-name template with ``{actor}``, ``{stem}``,
            ``{subset}`` (any landmark file onflame reads: ``.npy``, ``.txt``, ``.pp``, ``.ljson``, ``.bnd``,
            ``.lnd``, ``.land``; points in the scan's units and axes).
        auto_landmarks: :func:`onflame.registration.register`'s mode for scans without landmarks.
        landmark_convention: the landmark files' convention (``auto``, ``mica``, ``flame``, ...; see
            :func:`onflame.registration.register`).
        require_texture: fail scans whose texture image is missing (default: a warning).
        retry_failed: also redo scans that failed on bad input last time (default: only if their input changed).
        torch_threads: torch threads per worker (fixed so that results do not depend on the worker count).
        fit_settings, refine_settings: registration settings (None: the defaults).
        echo: called with one line per completed scan.
        progress: report n/N and the time left on stderr (:class:`onflame.progress.Progress`).

    Returns:
        The :class:`BuildReport` (also written as ``build/summary.json`` and ``build/summary.txt``).

    Raises:
        UsageError: unknown executor, workers < 1, a landmark template with unknown fields, an output
            root that cannot be written (all before any work).
        InputError: unknown source, no raw folder or no scans in it, a build already running on this
            subset, an unreadable model. Bad scans never raise: they are failed records.
    """
    name = get_source(source).name if source else source
    return build([(source, raw_dir)], out_root, model, only=None if only is None else {name: only}, **options)[name]

