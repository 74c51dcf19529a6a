"""Planning a subset build: which scans there are, which are up to date, and the state kept while it runs.

:func:`plan_subset` takes the subset's lock, reads its manifest, removes what a killed build left (stray
temporaries), makes one :class:`~.build_task.BuildTask` per scan with its configuration key, and keeps
those not finished (:meth:`Manifest.finished`) in ``todo``. The build starts them largest scan file first
(:func:`scan_size`: the longest tasks first, so that the pool's last minutes are not one long scan on
one worker).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import __version__
from ..errors import InputError
from ..flame.model import FlameModel, load_model, save_model
from ..registration.fit import FitSettings
from ..registration.refine import RefineSettings
from ..sources.base import ScanItem, Source
from .build_lock import BuildLock
from .build_report import BuildReport
from .build_task import BuildTask
from .names import BUILD_DIR, MODEL_FILE, PARAMS_DIR, REGISTRATIONS_DIR
from .manifest import Manifest, value_digest
from .validate import FLAME_VERTICES

log = logging.getLogger(__name__)

#: Temporaries of onflame's atomic writes (``.<name>.<token>.tmp``, ``.<name>.<token>.tmp.<suffix>`` for files
#: written together) that a killed build may leave in its output folders.
_TEMPORARY = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def remove_stray_temporaries(folder: Path) -> int:
    """Delete the temporaries a killed build's writes left in ``folder`` (the build's lock is held, so no
    live writer owns them); returns how many."""
    n = 0
    if folder.is_dir():
        for dirpath, _, names in os.walk(folder):
            for name in names:
                if _TEMPORARY.match(name):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                        n += 1
                    except OSError:
                        pass
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


def task_key(task: BuildTask, model_digest: str) -> str:
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


def scan_size(task: BuildTask) -> int:
    """Bytes of the task's scan file (0 if it cannot be read): the order tasks start in, largest first."""
    try:
        return os.stat(task.item.scan_path).st_size
    except OSError:
        return 0


@dataclass
class SubsetBuild:
    """The main process's state for one subset during a build."""

    source: Source
    raw: Path
    out: Path
    manifest: Manifest
    lock: BuildLock
    tasks: list[BuildTask]
    todo: list[BuildTask]
    problems: list[str]
    warnings: list[str]
    seen: set = field(default_factory=set)
    journal_problem: str | None = None

    def record(self, task: BuildTask, record: dict) -> None:
        """Keep a completed task's record (journalled at once; a journal that cannot be written is noted
        once, and the record is saved with the manifest at the end)."""
        self.seen.add(task.name)
        try:
            self.manifest.add(task.name, record)
        except OSError as exc:
            if self.journal_problem is None:
                self.journal_problem = f"{self.manifest.journal_path}: {exc.strerror or exc}"
                log.warning("%s; records are kept in memory until the build ends", self.journal_problem)

    def finish(self) -> None:
        """Fold the journal into ``manifest.json`` (a problem line if it cannot be written)."""
        try:
            self.manifest.save()
        except OSError as exc:
            self.manifest.close()
            self.problems.append(f"{self.manifest.path}: {exc.strerror or exc}; the scans built now are "
                                 "recorded only in its journal (or built again by the next run)")

    def report(self, executor: str, workers: int, mode: str, wall_s: float) -> BuildReport:
        rep = BuildReport(self.source.name, self.source.title, str(self.raw), str(self.out), executor, workers, mode,
                          problems=list(self.problems), warnings=list(self.warnings), wall_s=wall_s)
        for task in self.tasks:
            rec = self.manifest.records.get(task.name)
            if rec is None or rec["key"] != task.key:
                rec = {"name": task.name, "status": "pending", "verdict": None, "reasons": [], "timings_s": {}}
            rep.records.append({**rec, "cached": task.name not in self.seen and rec["status"] != "pending"})
            if rec["status"] == "failed":
                rep.problems.append(rec.get("error") or f"{task.item.scan_path}: registration failed the quality "
                                                        f"checks ({'; '.join(rec.get('reasons') or [])})")
            rep.warnings.extend(rec.get("warnings") or [])
        return rep


def plan_subset(source: Source, raw: Path, out_root: Path, model_digest: str, only: Mapping[str, str] | None,
                options: dict, retry_failed: bool) -> SubsetBuild:
    """Lock ``out_root/<SUBSET>`` and plan its build (see the module docstring)."""
    items = source.find_scans(raw, only)
    problems = _found_duplicates(source, raw, items)
    warnings = [] if only is not None else _several_captures(items)
    out = out_root / source.name
    lock = BuildLock(out / BUILD_DIR / "lock")
    lock.acquire()
    try:
        manifest, notes = Manifest.load(out / BUILD_DIR / "manifest.json")
        warnings += notes
        removed = sum(remove_stray_temporaries(out / d) for d in (PARAMS_DIR, REGISTRATIONS_DIR, BUILD_DIR))
        if removed:
            log.info("%s: removed %d temporary file(s) of an interrupted build", out, removed)
        tasks = []
        for it in items:
            task = BuildTask(it, str(out), **options)
            tasks.append(BuildTask(it, str(out), key=task_key(task, model_digest), **options))
        todo = [t for t in tasks if not manifest.finished(t.name, t.key, out, retry_failed)]
        names = {t.name for t in tasks}
        for name in sorted(set(manifest.records) - names):
            warnings.append(f"{name}: built earlier but no longer found in {raw}; its files are kept")
        manifest.header = {"subset": source.name, "source": source.title, "raw": str(raw), "model": model_digest,
                           "onflame": __version__}
        if manifest.journal_path.exists():  # a killed build's journal, folded in before this build appends
            try:
                manifest.save()
            except OSError as exc:
                warnings.append(f"{manifest.path}: {exc.strerror or exc}; its journal is kept")
    except BaseException:
        lock.release()
        raise
    return SubsetBuild(source, raw, out, manifest, lock, tasks, todo, problems, warnings)


def ensure_model_file(out_root: Path, model: FlameModel, digest: str) -> str | None:
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
