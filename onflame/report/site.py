"""``onflame report``: a built MICA root → a static site to review every registration in a browser.

>>> from onflame.report import write_report
>>> result = write_report("MICA", "MICA-report")        # subsets=["FRGC"], model="generic_model.pkl"
>>> result.index                                          # MICA-report/index.html: open it from the file system

Steps: read every subset (:mod:`.collect`); draw each subject's pictures in worker processes unless
pictures of the same content are already there, whole (:mod:`.pictures`, :mod:`.cache`); compute the
statistics and outliers (:mod:`.stats`); write the pages (:mod:`.pages`, all of them or, when the disk
fills, none: the last complete run's stay); remove
what an earlier run wrote and no page uses any more. The site is one folder (HTML, CSS, a small script,
JPEG/PNG pictures) that opens from the file system without a server or network. Bad data never stops
it: every problem is shown on the pages.

Everything the report writes or removes lies inside its folder: writes are confined to it
(:func:`onflame.fileio.confine_writes`), a folder holding a symbolic link is refused before any work,
and only the files the report's own record says it wrote are ever removed (:class:`.cache.SiteRecord`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ..dataset.layout import MicaRoot, Subset, open_root
from ..errors import InputError, UsageError
from ..fileio import all_or_none, confine_writes, write_text
from ..flame import FlameModel, load_model
from ..workers import WorkerDied, available_cores, run_in_processes
from . import pictures
from .cache import DigestIndex, SiteRecord, bytes_digest, value_key, whole_file
from .collect import SubjectInfo, SubsetInfo, collect_subset, judge_numbers
from .stats import SubsetStats, flame_vertices, subset_stats

log = logging.getLogger(__name__)

#: Marks a folder as an onflame report, so that a second run may replace its files.
MARKER = ".onflame-report"
#: Draw in the main process below this many jobs: starting workers costs more than it saves.
_POOL_MIN_JOBS = 4


@dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        out: the site folder; ``index``: its ``index.html``.
        counts: subset -> verdict counts (``ok``, ``suspect``, ``failed``, ``unknown``) and subjects.
        drawn: subjects whose pictures were drawn now; ``cached``: taken from an earlier run.
        problems: every problem line shown on the pages; ``subject_problems`` those of subjects the build did
            not fail (missing or unreadable files, implausible numbers: ``counts[subset]["problem"]`` counts
            these subjects).
        seconds: wall time.
    """

    out: Path
    index: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    drawn: int = 0
    cached: int = 0
    photos: int = 0
    problems: list[str] = field(default_factory=list)
    subject_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "index": str(self.index), "counts": self.counts, "drawn": self.drawn,
                "cached": self.cached, "photos_written": self.photos, "problems": self.problems,
                "seconds": round(self.seconds, 2)}


def _select(mica: MicaRoot, names: Iterable[str] | None) -> list[str]:
    if not names:
        return list(mica.subsets)
    by_upper = {n.upper(): n for n in mica.subsets}
    out = []
    for name in names:
        key = by_upper.get(str(name).upper().replace("-", ""))
        if key is None:
            raise InputError(mica.path, f"no subset {name!r} here; found {', '.join(mica.subsets) or 'none'}")
        out.append(key)
    return list(dict.fromkeys(out))


def _prepare_out(out: Path) -> None:
    """Create ``out``, or check that an existing folder is an earlier report (its files get replaced)
    holding no symbolic link (:class:`UsageError` naming it: the report never writes through one)."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise InputError(out, "folder is not empty and holds no onflame report; choose another --out")
    for folder, dirs, files in os.walk(out, followlinks=False):
        for name in dirs + files:
            if os.path.islink(os.path.join(folder, name)):
                raise UsageError(Path(folder) / name, "is a symbolic link inside the report folder; onflame "
                                                      "does not write or delete through links (remove it, or "
                                                      "choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, "written by onflame report; the folder's files are replaced on each run\n")


def _load_model(model: FlameModel | str | os.PathLike | None, mica: MicaRoot) -> tuple[FlameModel | None, str | None]:
    if model is None and mica.model_file is not None:  # a root built on another model says which
        model = mica.model_file
    if model is None:
        return None, None
    if isinstance(model, FlameModel):
        return model, f"{model.source or '<model>'} ({model.n_vertices} vertices)"
    loaded = load_model(model)
    return loaded, f"{model} ({loaded.n_vertices} vertices)"


# --- pictures ----------------------------------------------------------------------------------------------

@dataclass
class _Planned:
    subject: SubjectInfo
    job: pictures.PictureJob | None  # None: cached
    result: pictures.PictureResult | None = None
    drawn: bool = False


def _scan_spec(s: SubjectInfo) -> tuple[pictures.ScanSpec | None, str | None]:
    """Where the build's scan is and how the build placed it, or ``(None, why not)``."""
    if s.report is None:
        return None, None
    path, units = s.report.get("scan"), s.report.get("units_read")
    if not path:
        return None, None
    from ..sources import get_source
    from ..units import METRES_PER_UNIT

    try:
        source = get_source(s.subset)
    except KeyError:
        return None, f"no heat map: {s.subset} is not a known source, so the scan's axes are unknown"
    if units not in METRES_PER_UNIT:
        return None, f"no heat map: the build report gives no unit for {path}"
    return pictures.ScanSpec(str(path), np.asarray(source.rotation, dtype=np.float64), METRES_PER_UNIT[units]), None


def _digest(subset: Subset, rel: str, digests: DigestIndex) -> tuple[str, bytes | None]:
    """``(SHA-256, bytes)`` of a file inside a subset: a folder's file through the digest index (bytes None),
    a zip member read (its bytes returned, so it is not read twice). :class:`InputError` if unreadable."""
    if not subset.is_zip:
        digest = digests.digest(Path(subset.location) / rel)
        if digest is None:
            raise InputError(subset.label(rel), "cannot be read")
        return digest, None
    data = subset.read_bytes(rel)
    return bytes_digest(data), data


def _plan(info: SubsetInfo, out: Path, digests: DigestIndex, model_digest: str | None, heatmaps: bool) -> list[_Planned]:
    """A picture job per subject with a mesh, or its cached result when one with the same key is on disk."""
    subset = info.subset
    folder = None if subset.is_zip else Path(subset.location)
    planned = []
    for s in info.subjects:
        rel = s.mesh_rel
        if rel is None:
            continue
        try:
            mesh_digest, mesh_bytes = _digest(subset, rel, digests)
            params_digest = None
            if s.params is not None and s.params_rel is not None:
                params_digest, _ = _digest(subset, s.params_rel, digests)
        except InputError as exc:
            s.problems.append(str(exc))
            continue
        scan, note = _scan_spec(s) if heatmaps else (None, None)
        if note:
            s.notes.append(note)
        scan_key = None
        if scan is not None:
            scan_key = [digests.digest(scan.path), scan.rotation.round(12).tolist(), scan.scale]
            if scan_key[0] is None:
                s.notes.append(f"no heat map: scan {scan.path} not found")
                scan, scan_key = None, None
        key = value_key({"v": pictures.PICTURES_VERSION, "thumb": pictures.THUMB, "view": pictures.VIEW,
                         "heat": pictures.HEAT_MAX_MM, "fit": pictures.FIT_MAX_MM, "mesh": mesh_digest,
                         "params": params_digest, "model": model_digest if params_digest else None, "scan": scan_key})
        cached = _cached(out, key)
        if cached is not None:
            planned.append(_Planned(s, None, cached))
            continue
        to_flame = None
        if s.params is not None and "scan_to_flame" in s.params.extras:
            m = np.asarray(s.params.extras["scan_to_flame"], dtype=np.float64)
            to_flame = m if m.shape == (4, 4) and np.isfinite(m).all() else None
        job = pictures.PictureJob(key, subset.label(rel), str(out), str(folder / rel) if folder is not None else None,
                                  mesh_bytes, Path(rel).suffix or ".obj", to_flame, None, scan)
        planned.append(_Planned(s, job))
    return planned


def _cached(out: Path, key: str) -> pictures.PictureResult | None:
    """The result of an earlier run with this key, when it and its pictures are whole (regular files of
    the sizes written); None otherwise, and the subject is drawn again."""
    import json

    from ..fileio import read_text

    path = pictures.result_path(out, key)
    try:
        res = pictures.PictureResult.from_dict(json.loads(read_text(path, errors="strict")))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # InputError is a ValueError
        return None
    if res.key != key or not all(whole_file(out / rel, res.sizes.get(kind)) for kind, rel in res.images.items()):
        return None
    return res


def _attach_params_vertices(jobs: list[_Planned], model: FlameModel | None) -> None:
    """FLAME(params) for the jobs to draw, evaluated here in batches (workers never load torch)."""
    todo = [p for p in jobs if p.job is not None and p.subject.params is not None]
    if model is None or not todo:
        return
    verts = flame_vertices(model, [p.subject.params for p in todo])
    for p, v in zip(todo, verts):
        p.job.params_vertices = v


def _failed(job: pictures.PictureJob, exc: BaseException) -> pictures.PictureResult:
    return pictures.PictureResult(job.key, problems=[f"{job.label}: pictures failed ({type(exc).__name__}: {exc})"])


#: A job for a worker (:func:`pictures.run_job`) and what to do with its outcome (a result or an exception).
_Work = tuple[Any, Callable[[Any], None]]


def _outcome(job: Any) -> Any:
    try:
        return pictures.run_job(job)
    except Exception as exc:  # noqa: BLE001  one subject's crash must not stop the report
        return exc


def _run_jobs(work: list[_Work], workers: int, progress: Any) -> None:
    """Run every job (in ``workers`` processes when there are enough, :func:`onflame.workers.run_in_processes`)
    and hand each outcome to its callback; a job whose worker died gets that as its exception."""
    if workers <= 1 or len(work) < _POOL_MIN_JOBS:
        for job, done in work:
            done(_outcome(job))
            progress.advance()
        return

    callbacks = {id(job): done for job, done in work}  # the callbacks stay here; the jobs travel

    def outcome(job: Any, result: Any) -> None:
        callbacks[id(job)](RuntimeError(result.reason) if isinstance(result, WorkerDied) else result)
        progress.advance()

    if run_in_processes(_outcome, [job for job, _ in work], workers, outcome):
        raise KeyboardInterrupt


def _picture_work(planned: list[_Planned]) -> list[_Work]:
    def callback(p: _Planned) -> Callable[[Any], None]:
        def done(outcome: Any) -> None:
            p.result = _failed(p.job, outcome) if isinstance(outcome, BaseException) else outcome
            p.job, p.drawn = None, True  # frees the mesh it carried

        return done

    return [(p.job, callback(p)) for p in planned if p.job is not None]


def _photos(info: SubsetInfo, out: Path, digests: DigestIndex,
            record: SiteRecord) -> tuple[dict[tuple[str, str], dict], list[_Work]]:
    """Where each subject's listed photos and their ArcFace blobs go in the site (named by content), and
    the jobs that put the ones not there yet.

    Returns ``({(subject name, photo name): {"crop": rel | None, "blob": rel | None}}, jobs)``.
    """
    subset = info.subset
    folder = None if subset.is_zip else Path(subset.location)
    found: dict[tuple[str, str], dict] = {}
    work: list[_Work] = []

    def callback(s: SubjectInfo, entry: dict, kind: str, label: str) -> Callable[[Any], None]:
        def done(outcome: Any) -> None:
            if isinstance(outcome, BaseException):
                s.problems.append(str(outcome) if isinstance(outcome, InputError) else
                                  f"{label}: {type(outcome).__name__}: {outcome}")
                entry[kind] = None

        return done

    for s in info.subjects:
        for ph in s.photos:
            entry: dict = {"crop": None, "blob": None}
            found[(s.name, ph.name)] = entry
            for kind, rel in (("crop", ph.rel if ph.exists else None), ("blob", ph.blob_rel)):
                if rel is None:
                    continue
                try:
                    digest, data = _digest(subset, rel, digests)
                except InputError as exc:
                    s.problems.append(str(exc))
                    continue
                blob = kind == "blob"
                entry[kind] = pictures.photo_rel(digest, ".png" if blob else Path(rel).suffix)
                if not record.whole(entry[kind]):  # missing, cut short or not recorded: put there again
                    job = pictures.PhotoJob(str(out), entry[kind], subset.label(rel), blob,
                                            None if folder is None else str(folder / rel), data)
                    work.append((job, callback(s, entry, kind, job.label)))
    return found, work


def _apply_result(s: SubjectInfo, res: pictures.PictureResult | None) -> None:
    if res is None:
        return
    s.images.update(res.images)
    s.numbers.update(res.numbers)
    s.notes.extend(res.notes)
    s.problems.extend(res.problems)


def _stats(info: SubsetInfo) -> SubsetStats:
    """The subset's statistics; each subject gets its shape distance and outlier reasons."""
    with_params = [s for s in info.subjects if s.params is not None]
    st = subset_stats([s.name for s in with_params], [s.params for s in with_params],
                      {"params_mean_mm": [s.numbers.get("params_mean_mm") for s in with_params]})
    for i, s in enumerate(with_params):
        s.numbers["shape_distance"] = None if st.shape_distance is None else float(st.shape_distance[i])
        s.outliers = st.outliers.get(s.name, [])
    return st


# --- the report ----------------------------------------------------------------------------------------------

def write_report(root: str | os.PathLike, out: str | os.PathLike | None = None, subsets: Iterable[str] | None = None,
                 model: FlameModel | str | os.PathLike | None = None, workers: int | None = None,
                 heatmaps: bool = True, progress: bool = False) -> ReportResult:
    """Write the review site of a MICA root (see the module docstring).

    Args:
        root: a MICA root, subset folder or subset zip (``onflame build``'s output, or MICA's release).
        out: the site's folder (default ``./onflame-report``); an earlier report there is updated.
        subsets: subset names to include (default: all).
        model: the FLAME model the registrations use (file or :class:`FlameModel`), to compare each
            registration with FLAME(params); default: the root's ``model.npz`` if it has one, else no comparison.
        workers: drawing processes (default: the cores available).
        heatmaps: read the build's scans for the scan → registration heat maps (the slowest part on
            large scans; the pictures are cached either way).
        progress: report n/N and the time left on standard error (:class:`onflame.progress.Progress`).

    Returns:
        :class:`ReportResult`. Raises :class:`InputError` only when ``root`` or ``model`` cannot be opened,
        a subset is not in the root, or ``out`` is a folder of other files; :class:`UsageError` when
        ``out`` holds a symbolic link.
    """
    t0 = time.perf_counter()
    out = Path(out) if out is not None else Path("onflame-report")
    mica = open_root(root)
    try:
        names = _select(mica, subsets)
        _prepare_out(out)
        with confine_writes(out):
            return _write(mica, out, names, model, workers, heatmaps, progress, t0)
    finally:
        mica.close()


def _write(mica: MicaRoot, out: Path, names: list[str], model: FlameModel | str | os.PathLike | None,
           workers: int | None, heatmaps: bool, progress: bool, t0: float) -> ReportResult:
    """:func:`write_report`'s work, once ``out`` is checked; writes confined to it."""
    from ..dataset.manifest import value_digest
    from ..progress import Progress
    from .pages import write_pages

    flame_model, model_label = _load_model(model, mica)
    model_digest = value_digest(flame_model) if flame_model is not None else None
    infos = [collect_subset(mica.subsets[n]) for n in names]
    digests = DigestIndex(out / ".cache")
    for info in infos:
        for path, fp in info.input_fingerprints.items():
            digests.seed(path, fp)
    result = ReportResult(out, out / "index.html")
    planned = {info.name: _plan(info, out, digests, model_digest, heatmaps) for info in infos}
    every = [p for ps in planned.values() for p in ps]
    _attach_params_vertices(every, flame_model)
    photos: dict[str, dict] = {}
    work = _picture_work(every)
    record = SiteRecord(out)
    for info in infos:
        photos[info.name], photo_work = _photos(info, out, digests, record)
        work += photo_work
    result.photos = len(work) - sum(p.job is not None for p in every)
    with Progress(len(work), "report: pictures", enabled=progress) as bar:
        _run_jobs(work, workers or available_cores(), bar)
    result.drawn = sum(p.drawn for p in every)
    result.cached = len(every) - result.drawn
    stats: dict[str, SubsetStats] = {}
    for info in infos:
        for p in planned[info.name]:
            _apply_result(p.subject, p.result)
        judge_numbers(info)
        stats[info.name] = _stats(info)
    with all_or_none():  # a run cut short (a full disk) leaves the last complete run's pages, not half a site
        used = write_pages(out, mica, infos, stats, photos, {"model": model_label, "heatmaps": heatmaps,
                                                             "drawn": result.drawn, "cached": result.cached,
                                                             "seconds": time.perf_counter() - t0})
    keep = {p.relative_to(out).as_posix() for p in used}
    keep |= {rel for p in every if p.result is not None for rel in p.result.images.values()}
    keep |= {pictures.result_path(out, p.result.key).relative_to(out).as_posix() for p in every if p.result is not None}
    keep |= {rel for found in photos.values() for entry in found.values() for rel in entry.values() if rel}
    digests.save()
    keep |= {MARKER, digests.path.relative_to(out).as_posix()}
    record.prune(keep)  # what an earlier run wrote that no page uses now
    record.save(keep)
    for info in infos:
        result.counts[info.name] = {v: info.count(v) for v in ("ok", "suspect", "failed", "unknown")}
        result.counts[info.name]["subjects"] = len(info.subjects)
        troubled = [s for s in info.subjects if s.problems and s.verdict != "failed"]  # failed: the build's
        result.counts[info.name]["problem"] = len(troubled)
        result.subject_problems += [p for s in troubled for p in s.problems]
        result.problems += info.problems + [p for s in info.subjects for p in s.problems]
    result.problems += [str(p) for p in mica.problems]
    result.seconds = time.perf_counter() - t0
    return result
