"""``onflame build``: register a raw source release into a MICA subset, resumably and in parallel.

>>> from onflame.dataset.build import build_subset
>>> report = build_subset("FRGC", "/data/FRGC_v2", "MICA", "generic_model.pkl", workers=8)
>>> print(report.format_table()); report.exit_code

For every scan the source finds (:meth:`onflame.sources.Source.find_scans`) one task
(:mod:`.build_task`) registers it and writes, atomically, ``ROOT/<SUBSET>/FLAME_parameters/<actor>/
<stem>.npz``, ``registrations/<actor>/<stem>.obj`` and ``build/reports/<actor>/<stem>.json``. Tasks run
in a local process pool or on Ray (:mod:`.executors`). The main process records each completed task
in ``build/manifest.json`` (:mod:`.manifest`) and ends with ``build/summary.json`` and
``build/summary.txt``: registered / suspect / failed scans, each with its reasons, and timings.

- Resumable: a re-run skips scans whose record, inputs and outputs are unchanged, and redoes changed,
  failed-by-accident or half-finished ones (stray temporary files of a killed run are removed).
- Deterministic: the same inputs give the same bytes, whatever the worker count or executor (torch
  threads per worker are fixed, see :class:`.build_task.BuildTask`); reports hold no timings.
- Failures are isolated: a bad scan is one ``failed`` line naming the file and the reason; the exit
  code (:attr:`BuildReport.exit_code`) is 1 when any scan failed or was skipped, 130 when interrupted.
- A lock (``build/lock``, see :class:`_Lock`) keeps two builds from writing one subset at once, and a
  new build from starting while a killed one's workers still run.
- A root built on a model that is not FLAME's topology gets that model as ``ROOT/model.npz``, so
  ``onflame validate`` checks the registrations against the right model.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .. import __version__
from ..errors import InputError, UsageError
from ..fileio import check_output_dir, write_json, write_text
from ..flame.model import FlameModel, load_model, load_model_with_assets, save_model
from ..registration.fit import FitSettings
from ..registration.refine import RefineSettings
from ..sources import get_source
from ..sources.base import ScanItem, Source
from ..workers import available_cores
from .build_task import BUILD_DIR, WORKERS_LOCK, BuildTask, check_landmark_option
from .executors import EXECUTORS, make_executor
from .layout import MODEL_FILE
from .manifest import Manifest, value_digest
from .validate import FLAME_VERTICES

log = logging.getLogger(__name__)

#: Order of the statuses in summaries.
STATUSES = ("registered", "suspect", "failed", "pending")
#: Registration steps shown in the summary's timing line (seconds, from :attr:`Registration.timings`).
TIMING_STEPS = ("read", "landmarks", "rigid", "fit", "refine", "refit", "write", "task")


# --- the report --------------------------------------------------------------------------------------------

@dataclass
class BuildReport:
    """What one subset build did.

    Attributes:
        subset: MICA subset name; ``source_title`` the dataset's usual name.
        raw: the raw release folder; ``out``: the subset folder written.
        executor, workers: where the tasks ran.
        records: one per scan found, sorted by name: the manifest record plus ``cached`` (True: up to date
            from an earlier run, not built now). Scans not run because of an interruption have status
            ``pending``.
        problems: one line per input file that was not built as asked (failed scans, skipped duplicates).
        warnings: other notes (missing textures, an unreadable manifest, ...).
        interrupted: the build was stopped by Ctrl-C.
        wall_s: seconds the build took.
    """

    subset: str
    source_title: str
    raw: str
    out: str
    executor: str
    workers: int
    records: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def built(self) -> int:
        """Scans registered (or failed) by this run, not taken from an earlier one."""
        return sum(not r.get("cached") and r["status"] != "pending" for r in self.records)

    @property
    def exit_code(self) -> int:
        """0: every scan registered (suspects included); 1: some failed or were skipped; 130: interrupted."""
        if self.interrupted:
            return 130
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: counts, scans per second, mean step timings, records, problems and warnings."""
        return {
            "subset": self.subset, "source": self.source_title, "raw": self.raw, "out": self.out,
            "executor": self.executor, "workers": self.workers, "interrupted": self.interrupted,
            "exit_code": self.exit_code, "scans": len(self.records), "built_now": self.built,
            **{s: self.count(s) for s in STATUSES},
            "wall_s": round(self.wall_s, 3),
            "scans_per_s": round(self.built / self.wall_s, 4) if self.wall_s > 0 else None,
            "mean_timings_s": self.mean_timings(),
            "records": self.records, "problems": self.problems, "warnings": self.warnings,
        }

    def mean_timings(self) -> dict[str, float]:
        """Mean seconds per step over the scans built by this run."""
        rows = [r["timings_s"] for r in self.records if not r.get("cached") and r.get("timings_s")]
        out = {}
        for step in TIMING_STEPS:
            vals = [t[step] for t in rows if step in t]
            if vals:
                out[step] = round(float(np.mean(vals)), 3)
        return out

    def format_table(self) -> str:
        """One row per scan (name, status, verdict, seconds, landmark source, reasons), totals, problems."""
        head = ["scan", "status", "verdict", "time s", "landmarks", "reasons"]
        rows = []
        for r in self.records:
            t = r.get("timings_s", {}).get("task")
            lmk = r.get("landmarks") or "-"
            lmk = "file" if lmk not in ("-", "given", "detected", "geometry") else lmk
            reasons = "; ".join(r.get("reasons") or []) if r["status"] != "failed" else (r.get("error") or "")
            rows.append([r["name"], r["status"] + (" (up to date)" if r.get("cached") else ""), r.get("verdict") or "-",
                         "-" if t is None else f"{t:.2f}", lmk, reasons])
        widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head) - 1)]
        fmt = lambda x: "  ".join([c.ljust(w) for c, w in zip(x[:-1], widths)] + [x[-1]]).rstrip()  # noqa: E731
        lines = [f"build {self.subset} ({self.source_title}) from {self.raw} -> {self.out} "
                 f"[{self.executor}, {self.workers} worker(s)]", fmt(head), "  ".join("-" * w for w in widths)]
        lines += [fmt(x) for x in rows]
        lines.append("")
        counts = ", ".join(f"{s} {self.count(s)}" for s in STATUSES if s != "pending" or self.count(s))
        rate = f"; {self.built / self.wall_s:.3f} scans/s" if self.wall_s > 0 and self.built else ""
        lines.append(f"{counts} of {len(self.records)} scans ({self.built} built now, "
                     f"{len(self.records) - self.built - self.count('pending')} up to date) in {self.wall_s:.1f} s{rate}")
        if self.mean_timings():
            lines.append("mean s per scan built: " + ", ".join(f"{k} {v:.2f}" for k, v in self.mean_timings().items()))
        for w in self.warnings:
            lines.append(f"WARNING {w}")
        for p in self.problems:
            lines.append(f"ERROR   {p}")
        if self.interrupted:
            lines.append("INTERRUPTED: run the same command again to finish")
        return "\n".join(lines)


# --- planning ----------------------------------------------------------------------------------------------

class _Lock:
    """``build/lock``: one build per subset at a time, and none while an earlier build's workers still write.

    The build holds an exclusive ``flock`` on ``build/lock`` (which names it: ``host pid``) for its whole
    run; each local worker holds a shared one on ``build/workers.lock`` from its first task of the subset
    until it ends (:mod:`.executors`). The kernel drops a lock when its holder dies, however it dies, so
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


def _remove_stray_temporaries(folder: Path) -> int:
    """Delete ``.<name>.<random>.tmp`` files that a killed build's atomic writes left behind."""
    n = 0
    if folder.is_dir():
        for p in folder.rglob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n


def _found_duplicates(source: Source, raw: Path, kept: list[ScanItem]) -> list[str]:
    """Lines for scans :meth:`Source.find_scans` dropped because another scan has the same name."""
    by_name = {it.name: it for it in kept}
    lines = []
    for it in source.finder(raw, source):
        first = by_name.get(it.name)
        if first is not None and it.scan_path != first.scan_path:
            lines.append(f"{it.scan_path}: skipped: {it.name} is also {first.scan_path} (duplicate actor/capture; "
                         "the first is built)")
    return lines


def _several_captures(items: list[ScanItem]) -> list[str]:
    actors: dict[str, list[str]] = {}
    for it in items:
        actors.setdefault(it.actor, []).append(it.stem)
    return [f"actor {a} has {len(s)} captures ({', '.join(s)}); all are built, MICA keeps one "
            "(pass only=mica_subjects(image list) / --image-list to keep MICA's)" for a, s in actors.items() if len(s) > 1]


def _task_key(task: BuildTask, model_digest: str) -> str:
    """Digest of everything that decides a task's outputs besides its input files' contents."""
    it = task.item
    return value_digest({
        "onflame": __version__, "model": model_digest,
        "item": [it.subset, it.actor, it.stem, str(it.scan_path), it.units, np.asarray(it.rotation, np.float64),
                 it.texture_expected],
        "landmarks": task.landmarks, "auto_landmarks": task.auto_landmarks,
        **({"landmark_convention": task.landmark_convention} if task.landmark_convention != "auto" else {}),
        "landmark_files": [(str(p), p.is_file()) for p in task.landmark_candidates()],
        "require_texture": task.require_texture,
        "fit": task.fit_settings or FitSettings(), "refine": task.refine_settings or RefineSettings(),
    })


@dataclass
class _SubsetBuild:
    """The main process's state for one subset during a build."""

    source: Source
    raw: Path
    out: Path
    manifest: Manifest
    lock: _Lock
    tasks: list[BuildTask]
    todo: list[BuildTask]
    problems: list[str]
    warnings: list[str]
    seen: set = field(default_factory=set)

    def record(self, task: BuildTask, record: dict) -> None:
        self.manifest.records[task.name] = record
        self.manifest.save()
        self.seen.add(task.name)

    def report(self, executor: str, workers: int, interrupted: bool, wall_s: float) -> BuildReport:
        rep = BuildReport(self.source.name, self.source.title, str(self.raw), str(self.out), executor, workers,
                          problems=list(self.problems), warnings=list(self.warnings), interrupted=interrupted,
                          wall_s=wall_s)
        for task in self.tasks:
            rec = self.manifest.records.get(task.name)
            if rec is None or rec.get("key") != task.key:
                rec = {"name": task.name, "status": "pending", "verdict": None, "reasons": [], "timings_s": {}}
            rep.records.append({**rec, "cached": task.name not in self.seen and rec["status"] != "pending"})
            if rec["status"] == "failed":
                rep.problems.append(rec.get("error") or f"{task.item.scan_path}: registration failed the quality "
                                                        f"checks ({'; '.join(rec.get('reasons') or [])})")
            rep.warnings.extend(rec.get("warnings") or [])
        return rep


def _plan(source: Source, raw: Path, out_root: Path, model_digest: str, only: Mapping[str, str] | None,
          options: dict, retry_failed: bool) -> _SubsetBuild:
    items = source.find_scans(raw, only)
    problems = _found_duplicates(source, raw, items)
    warnings = [] if only is not None else _several_captures(items)
    out = out_root / source.name
    lock = _Lock(out / BUILD_DIR / "lock")
    lock.acquire()
    try:
        manifest, note = Manifest.load(out / BUILD_DIR / "manifest.json")
        if note:
            warnings.append(note)
        removed = sum(_remove_stray_temporaries(out / d) for d in ("FLAME_parameters", "registrations", BUILD_DIR))
        if removed:
            log.info("%s: removed %d temporary file(s) of an interrupted build", out, removed)
        tasks = []
        for it in items:
            task = BuildTask(it, str(out), **options)
            tasks.append(BuildTask(it, str(out), key=_task_key(task, model_digest), **options))
        todo = [t for t in tasks if not manifest.finished(t.name, t.key, out, retry_failed)]
        names = {t.name for t in tasks}
        for name in sorted(set(manifest.records) - names):
            warnings.append(f"{name}: built earlier but no longer found in {raw}; its files are kept")
        manifest.header = {"subset": source.name, "source": source.title, "raw": str(raw), "model": model_digest,
                           "onflame": __version__}
    except BaseException:
        lock.release()
        raise
    return _SubsetBuild(source, raw, out, manifest, lock, tasks, todo, problems, warnings)


def _ensure_model_file(out_root: Path, model: FlameModel, digest: str) -> str | None:
    """Write ``ROOT/model.npz`` for a model not in FLAME's topology; a problem line if another is there."""
    if model.n_vertices == FLAME_VERTICES:
        return None
    path = out_root / MODEL_FILE
    if path.is_file():
        try:
            same = value_digest(load_model(path)) == digest
        except InputError:
            same = False
        if not same:
            return (f"{path}: holds another model than the one this build used; registrations of different "
                    "models in one root cannot be validated together (use another --out)")
        return None
    save_model(model, path)
    return None


def _resolve_model(model: FlameModel | str | os.PathLike) -> FlameModel:
    if isinstance(model, FlameModel):
        return model
    if model is None:
        raise InputError(None, "no FLAME model given (a FlameModel or a model file)")
    return load_model_with_assets(model)


# --- the build ---------------------------------------------------------------------------------------------

def build(jobs: Sequence[tuple[str, str | os.PathLike]], out_root: str | os.PathLike,
          model: FlameModel | str | os.PathLike, *, workers: int | None = None,
          executor: str = "local", address: str | None = None, landmarks: str = "auto",
          auto_landmarks: str = "auto", landmark_convention: str = "auto",
          only: Mapping[str, Mapping[str, str]] | None = None,
          require_texture: bool = False, retry_failed: bool = False, torch_threads: int = 1,
          fit_settings: FitSettings | None = None, refine_settings: RefineSettings | None = None,
          echo: Callable[[str], None] | None = None) -> dict[str, BuildReport]:
    """Build several subsets in one run (one pool for all their scans). See :func:`build_subset`.

    Args:
        jobs: ``(source name, raw release folder)`` pairs.
        only: subset name -> (actor -> stem) to keep, e.g. ``{"FRGC": mica_subjects(list)}``.

    Returns:
        subset name -> :class:`BuildReport`, in the order of ``jobs``.
    """
    t0 = time.perf_counter()
    if executor not in EXECUTORS:
        raise UsageError(None, f"unknown executor {executor!r}; use {' or '.join(EXECUTORS)}")
    check_landmark_option(landmarks)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(None, f"workers must be a whole number of at least 1, got {workers!r}")
    check_output_dir(out_root)
    flame = _resolve_model(model)
    digest = value_digest(flame)
    out_root = Path(out_root)
    options = dict(landmarks=landmarks, auto_landmarks=auto_landmarks, landmark_convention=landmark_convention,
                   require_texture=require_texture,
                   torch_threads=torch_threads, fit_settings=fit_settings, refine_settings=refine_settings)
    sources = []
    for name, raw in jobs:
        try:
            sources.append((get_source(name), Path(raw)))
        except KeyError as exc:
            raise InputError(None, exc.args[0]) from None
    n_workers = workers or (available_cores() if executor == "local" else None)
    subsets: dict[str, _SubsetBuild] = {}
    try:
        for source, raw in sources:
            if source.name in subsets:
                raise InputError(raw, f"{source.name} is given twice")
            subsets[source.name] = _plan(source, raw, out_root, digest, (only or {}).get(source.name), options,
                                         retry_failed)
        model_problem = _ensure_model_file(out_root, flame, digest)
        todo = [t for s in subsets.values() for t in s.todo]
        if echo:
            total = sum(len(s.tasks) for s in subsets.values())
            echo(f"{total} scan(s), {len(todo)} to build, {total - len(todo)} up to date")

        def on_record(task: BuildTask, record: dict) -> None:
            subsets[task.item.subset].record(task, record)
            if echo:
                why = record.get("error") if record["status"] == "failed" else "; ".join(record.get("reasons") or [])
                echo(f"{task.item.subset} {task.name}: {record['status']}" + (f" ({why})" if why else "")
                     + f" [{record.get('timings_s', {}).get('task', 0.0):.1f} s]")

        runner = make_executor(executor, n_workers, address, torch_threads)
        interrupted = runner.run(todo, flame, on_record) if todo else False
        wall = time.perf_counter() - t0
        reports = {}
        for name, s in subsets.items():
            if model_problem:
                s.problems.append(model_problem)
            rep = s.report(executor, n_workers or 0, interrupted, wall)
            write_json(s.out / BUILD_DIR / "summary.json", rep.to_dict())
            write_text(s.out / BUILD_DIR / "summary.txt", rep.format_table() + "\n")
            reports[name] = rep
        return reports
    finally:
        for s in subsets.values():
            s.lock.release()


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
        echo: called with one line per completed scan (progress).

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
