"""One build task: a raw scan in, its registration files out. Runs in a worker process (or a Ray task).

:func:`run_task` reads the scan (:meth:`ScanItem.read`, then :meth:`ScanItem.to_flame_frame`: metres,
FLAME's axes), reads its landmarks when there are any, registers it
(:func:`onflame.registration.register`) and writes the subject's files into the subset folder, together
or not at all (:func:`commit_outputs`)::

    FLAME_parameters/<actor>/<stem>.npz     MICA's parameter file (+ onflame's extras)
    registrations/<actor>/<stem>.obj        the registration mesh (metres)
    build/reports/<actor>/<stem>.json       what was read, landmark source, quality numbers, verdict

A registration whose verdict is ``failed`` is kept out of the dataset: its mesh goes to
``build/rejected/<actor>/<stem>.obj`` for inspection. It returns a small JSON-ready record (status,
verdict, reasons, input fingerprints, output checksums, timings) for the manifest. Nothing here raises
for a bad scan or a full disk: the error becomes a ``failed`` record naming the file and the problem,
and a subject whose files could not all be written has none of them on disk.

Reports hold no timings, so a build writes the same bytes whatever the machine's load; timings go to
the manifest and the summary. Inputs are read through a :class:`LocalFiles` view, which a Ray task that
received its files from the driver replaces (:mod:`.build_ship`).
"""
from __future__ import annotations

import errno
import logging
import os
import string
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, OnflameError, UsageError
from ..fileio import write_json, written_together
from ..flame.model import FlameModel
from ..mesh.landmark_files import ScanLandmarks
from ..registration.fit import FitSettings
from ..registration.plausibility import check_scan_extent
from ..registration.refine import RefineSettings
from ..mesh.scan_names import landmark_sidecar
from ..sources.base import ScanItem
from ..units import METRES_PER_UNIT
from .names import BUILD_DIR, PARAMS_DIR, REGISTRATIONS_DIR
from .manifest import file_sha256, fingerprint, output_stat

log = logging.getLogger(__name__)

#: ``--landmarks`` choices besides a file-name template.
LANDMARK_MODES = ("auto", "none")
#: The fields a landmark file-name template may use.
TEMPLATE_FIELDS = ("actor", "stem", "subset")
#: Record statuses: verdict ok -> registered, suspect -> suspect; failed verdicts and errors -> failed.
STATUS = {"ok": "registered", "suspect": "suspect", "failed": "failed"}
#: ``errno`` values that mean the output's file system is full: the build stops starting scans.
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
#: A writer of one output file: called with the (temporary) path to write.
Writer = Callable[[Path], None]


def check_landmark_option(landmarks: str) -> str:
    """``landmarks`` if it is one of :data:`LANDMARK_MODES` or a file-name template that uses only
    :data:`TEMPLATE_FIELDS` (``'lmk/{actor}/{stem}.npy'``); else :class:`UsageError` saying why."""
    if landmarks in LANDMARK_MODES:
        return landmarks
    if not landmarks:
        raise UsageError(None, f"--landmarks must be {', '.join(LANDMARK_MODES)} or a file-name template")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(landmarks) if f is not None]
    except ValueError as exc:  # unbalanced braces
        raise UsageError(None, f"--landmarks template {landmarks!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown:
        raise UsageError(None, f"--landmarks template {landmarks!r} has unknown field(s) "
                               f"{', '.join('{' + f + '}' for f in unknown)}; use {{actor}}, {{stem}} and {{subset}}")
    if not fields:
        raise UsageError(None, f"--landmarks {landmarks!r} is neither {' nor '.join(LANDMARK_MODES)} nor a template "
                               "with {actor}, {stem} or {subset}: one file cannot hold every scan's landmarks")
    return landmarks


class LocalFiles:
    """How a task reaches its input files: here, at the paths the driver names (a shared file system).

    :meth:`locate` gives the path to open for an input path; :meth:`shown` turns text that names opened
    paths back into the input paths (identity here).
    """

    def locate(self, path: Path) -> Path:
        return path

    def shown(self, text: str) -> str:
        return text


@dataclass(frozen=True)
class BuildTask:
    """Everything a worker needs to build one scan (picklable, model excluded).

    Attributes:
        item: the scan and its names.
        subset_dir: output folder ``ROOT/<SUBSET>``.
        landmarks: ``"auto"`` (a landmark file beside the scan or shipped by the release, else
            ``auto_landmarks``), ``"none"`` (no landmark files), or a file-name template with ``{actor}``,
            ``{stem}`` and ``{subset}`` fields (any landmark file :func:`read_landmark_file` reads; the
            scan's units and axes) that must exist for every scan.
        landmark_convention: the convention of the landmark files (``auto``: decided per scan by fitting).
        auto_landmarks: :func:`register`'s mode for scans without a landmark file (``auto``, ``detect``,
            ``geometry``).
        require_texture: a scan whose texture image is missing fails (otherwise it is a warning).
        torch_threads: threads per task (registration's own, BLAS/OpenMP, torch where loaded); fixed, not
            derived from the worker count, so that N workers on N cores do not oversubscribe them and
            1 and N workers write the same bytes.
        fit_settings, refine_settings: registration settings (None: the defaults).
        key: the configuration digest recorded in the manifest (see :mod:`.build_plan`).
    """

    item: ScanItem
    subset_dir: str
    landmarks: str = "auto"
    auto_landmarks: str = "auto"
    landmark_convention: str = "auto"
    require_texture: bool = False
    torch_threads: int = 1
    fit_settings: FitSettings | None = None
    refine_settings: RefineSettings | None = None
    key: str = ""

    @property
    def name(self) -> str:
        return self.item.name

    def outputs(self) -> dict[str, str]:
        """Output paths relative to ``subset_dir``: ``params``, ``registration``, ``report``, ``rejected``."""
        it = self.item
        return {"params": f"{PARAMS_DIR}/{it.params_relpath}",
                "registration": f"{REGISTRATIONS_DIR}/{it.registration_relpath}",
                "report": f"{BUILD_DIR}/reports/{it.actor}/{it.stem}.json",
                "rejected": f"{BUILD_DIR}/rejected/{it.registration_relpath}"}

    def landmark_candidates(self, files: LocalFiles | None = None) -> list[Path]:
        """Landmark files to try, in order (existing files only, except a template's, which must exist).

        ``files``: where the files are looked for (default: where they are named).
        """
        it = self.item
        files = files or LocalFiles()
        if self.landmarks == "none":
            return []
        if self.landmarks == "auto":
            sidecar = landmark_sidecar(files.locate(it.scan_path))  # looked for where the scan is read
            if sidecar is not None:
                sidecar = Path(files.shown(str(sidecar)))
            found = [p for p in (sidecar, it.landmarks_path) if p is not None and files.locate(p).is_file()]
            return list(dict.fromkeys(found))
        return [Path(self.landmarks.format(actor=it.actor, stem=it.stem, subset=it.subset))]


# --- landmarks -----------------------------------------------------------------------------------------------

def read_landmark_file(path: Path, scan_raw) -> ScanLandmarks | None:
    """Landmarks from a file, in the scan's units and axes; None for a ``.land`` of 2D image points.

    Any file :func:`onflame.mesh.landmark_files.read_landmarks` reads (``.npy``, ``.txt``, ``.pp``,
    ``.ljson``, ``.bnd``, ``.lnd``), and FaceWarehouse's ``.land`` files of vertex ids or 3D points
    (:func:`onflame.mesh.facewarehouse.read_land`; 7, 51 or 68 of them in iBUG order). Raises
    :class:`InputError` naming the file.
    """
    from ..fileio import check_regular
    from ..mesh.facewarehouse import landmarks_3d, read_land
    from ..mesh.landmark_files import landmarks_from_array, read_landmarks

    check_regular(path)  # missing, a folder, a FIFO or a device: said as what it is, never opened
    if path.suffix.lower() != ".land":
        return read_landmarks(path)
    land = read_land(path)
    if land.image_points is not None:  # FaceWarehouse's release: pixels in the photo, no depth
        return None
    return landmarks_from_array(landmarks_3d(land, scan_raw), str(path))


def find_landmarks(task: BuildTask, scan_raw, flame_frame,
                   files: LocalFiles | None = None) -> tuple[ScanLandmarks | None, Path | None]:
    """The scan's landmarks in metres and FLAME's axes (like ``flame_frame``, the scan as
    :meth:`ScanItem.to_flame_frame` returns it) and the file they came from; ``(None, None)`` without one.

    ``scan_raw`` is the scan as read (its units and axes), for ``.land`` files that hold vertex ids.
    """
    files = files or LocalFiles()
    for path in task.landmark_candidates(files):
        raw = read_landmark_file(files.locate(path), scan_raw)
        if raw is None:
            continue
        unit = flame_frame.meta.get("units_read") or task.item.units
        return raw.with_points(METRES_PER_UNIT[unit] * raw.points @ np.asarray(task.item.rotation).T), path
    return None, None


# --- records ---------------------------------------------------------------------------------------------------

def new_record(task: BuildTask) -> dict:
    """A record with every field the manifest checks (see :func:`.manifest.record_usable`), status failed."""
    return {"name": task.name, "key": task.key, "status": "failed", "verdict": None, "reasons": [], "error": None,
            "retry": False, "warnings": [], "landmarks": None, "inputs": {}, "outputs": {}, "timings_s": {}}


def failure_record(task: BuildTask, reason: str, retry: bool = True) -> dict:
    """The record of a task that produced no record of its own (its worker died, it was cancelled)."""
    return {**new_record(task), "reasons": [reason], "error": f"{task.item.scan_path}: {reason}", "retry": retry}


def _fingerprints(paths: list[Path], files: LocalFiles) -> tuple[dict, bool]:
    """``({path: fingerprint}, all_readable)`` of the input files (duplicates once)."""
    out, complete = {}, True
    for p in dict.fromkeys(paths):
        try:
            out[str(p)] = fingerprint(files.locate(p))
        except OSError:
            complete = False
    return out, complete


def _set_threads(n: int) -> None:
    """``n`` threads for this task: registration's own (:mod:`onflame.registration.threads`) and BLAS/OpenMP
    read the variables; torch, where something loaded it, is set."""
    for var in ("ONFLAME_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


# --- the task ------------------------------------------------------------------------------------------------

@dataclass
class TaskOutputs:
    """What a task wants on disk: files to write together (relative path -> writer), files to remove."""

    write: dict[str, Writer]
    remove: list[str]


def run_task(task: BuildTask, model: FlameModel, files: LocalFiles | None = None) -> dict:
    """Build one scan in place (see the module docstring) and return its manifest record.

    The record: ``name, status ("registered" | "suspect" | "failed"), verdict, reasons, error, retry,
    warnings, landmarks, inputs {path: fingerprint}, outputs {relpath: sha256}, output_stat {relpath:
    [size, mtime_ns]}, timings_s, key``. ``retry`` is False when the failure comes from the input (an
    :class:`InputError`: the same input fails again) and True for anything else.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    record, outputs = compute_task(task, model, files)
    t_write = time.perf_counter()
    commit_outputs(task, Path(task.subset_dir), outputs, record)
    finish_timings(record, t0, c0, t_write)
    return record


def finish_timings(record: dict, t0: float, c0: float, t_write: float) -> None:
    """Add ``write``, ``task`` (wall seconds) and ``cpu`` (this process's CPU seconds) to the record."""
    record["timings_s"]["write"] = time.perf_counter() - t_write
    record["timings_s"]["task"] = time.perf_counter() - t0
    record["timings_s"]["cpu"] = time.process_time() - c0
    record["timings_s"] = {k: round(float(v), 4) for k, v in record["timings_s"].items()}


def compute_task(task: BuildTask, model: FlameModel, files: LocalFiles | None = None) -> tuple[dict, TaskOutputs]:
    """Read and register one scan: its record (outputs not yet filled in) and the files it wants written."""
    from ..registration import register

    files = files or LocalFiles()
    _set_threads(task.torch_threads)
    t0 = time.perf_counter()
    item = task.item
    record = new_record(task)
    inputs = [item.scan_path]
    reg = scan = lmk_path = None
    try:
        local_item = replace(item, scan_path=files.locate(item.scan_path))
        scan_raw = local_item.read(require_texture=task.require_texture)
        if item.texture_expected and scan_raw.texture is None:
            bad = scan_raw.meta.get("texture_problem")
            record["warnings"].append(f"{bad[0]}: {bad[1]}; registered without texture" if bad
                                      else f"{item.scan_path}: texture image not found")
        if isinstance(scan_raw.texture, Path) and scan_raw.texture.is_file():
            inputs.append(Path(files.shown(str(scan_raw.texture))))
        scan = local_item.to_flame_frame(scan_raw)
        lmk, lmk_path = find_landmarks(task, scan_raw, scan, files)
        if lmk_path is not None:
            inputs.append(lmk_path)
        check_scan_extent(scan.vertices, item.scan_path, f"{scan.meta.get('units_read')}, the release's")
        record["timings_s"]["read"] = time.perf_counter() - t0
        reg = register(scan, model, landmarks=lmk, units="m", auto_landmarks=task.auto_landmarks,
                       landmark_convention=task.landmark_convention, fit_settings=task.fit_settings,
                       refine_settings=task.refine_settings)
    except OnflameError as exc:
        record.update(error=str(exc), reasons=[str(exc)], retry=not isinstance(exc, InputError))
    except Exception as exc:  # noqa: BLE001  one scan's unexpected error must not stop the build
        log.debug("%s: %s", item.name, traceback.format_exc())
        record.update(error=f"{item.scan_path}: {type(exc).__name__}: {exc}", reasons=[f"{type(exc).__name__}: {exc}"],
                      retry=True)
    _set_threads(task.torch_threads)  # torch loaded by this first registration keeps the count for the next
    record["inputs"], complete = _fingerprints(inputs, files)
    if not complete:  # an input that cannot be read cannot be checked for changes: try it again next time
        record["retry"] = True
    return record, _outputs(task, record, reg, scan, lmk_path)


def _outputs(task: BuildTask, record: dict, reg, scan, lmk_path: Path | None) -> TaskOutputs:
    from ..mesh import write_obj

    rel, item = task.outputs(), task.item
    if reg is None:  # a failed scan has no place in the dataset: stale files of an earlier build of it go
        report = {"name": item.name, "subset": item.subset, "scan": str(item.scan_path), "status": "failed",
                  "error": record["error"]}
        return TaskOutputs({rel["report"]: _json_writer(report)}, [rel["params"], rel["registration"], rel["rejected"]])
    record.update(status=STATUS.get(reg.verdict, "failed"), verdict=reg.verdict, reasons=list(reg.quality.reasons),
                  landmarks=(str(lmk_path) if lmk_path is not None else reg.landmark_info.get("source")))
    record["timings_s"].update(reg.timings)
    report = {"name": item.name, "subset": item.subset, "scan": str(item.scan_path),
              "units_read": scan.meta.get("units_read"), "status": record["status"],
              "landmarks_file": None if lmk_path is None else str(lmk_path), "warnings": record["warnings"],
              **{k: v for k, v in reg.report().items() if k != "timings_s"}}
    mesh_writer = lambda path: write_obj(path, reg.mesh)  # noqa: E731
    if record["status"] == "failed":
        return TaskOutputs({rel["rejected"]: mesh_writer, rel["report"]: _json_writer(report)},
                           [rel["params"], rel["registration"]])
    # the report is renamed into place last: a reader that finds it finds the whole set
    return TaskOutputs({rel["params"]: reg.params.save, rel["registration"]: mesh_writer,
                        rel["report"]: _json_writer(report)}, [rel["rejected"]])


def _json_writer(obj: dict) -> Writer:
    return lambda path: write_json(path, obj)


def commit_outputs(task: BuildTask, root: Path, outputs: TaskOutputs, record: dict) -> None:
    """Write a task's files into ``root`` together or not at all, and fill the record's ``outputs``.

    On a write error (a full disk, a quota, an I/O error) nothing of the set is left: the files of an
    earlier build of this scan are removed too, and the record becomes a failed one that a re-run
    retries, with one line naming the file and the error (``disk_full`` set for a full disk or quota).
    """
    try:
        _remove(root, outputs.remove)
        rels = list(outputs.write)
        with written_together(*(root / r for r in rels)) as temps:
            for rel, tmp in zip(rels, temps):
                outputs.write[rel](tmp)
        record["outputs"] = {r: file_sha256(root / r) for r in rels}
        record["output_stat"] = {r: output_stat(root / r) for r in rels}
    except OSError as exc:
        _remove(root, list(task.outputs().values()), quiet=True)
        written_failed(record, task, exc)


def written_failed(record: dict, task: BuildTask, exc: OSError) -> None:
    """Turn ``record`` into the failed record of a scan whose files could not be written."""
    where = exc.filename or task.subset_dir
    line = f"{where}: {exc.strerror or exc}; nothing of {task.name} was written"
    record.update(status="failed", verdict=None, reasons=[line], error=line, retry=True, outputs={})
    record.pop("output_stat", None)
    if exc.errno in DISK_FULL:
        record["disk_full"] = True


def _remove(root: Path, rels: list[str], quiet: bool = False) -> None:
    for rel in rels:
        try:
            (root / rel).unlink()
        except FileNotFoundError:
            pass
        except OSError:
            if not quiet:
                raise
