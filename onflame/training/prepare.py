"""``onflame prepare``: photos → MICA's aligned training inputs and image list.

For each selected photo (see :mod:`onflame.training.rules`): detect faces, keep the one nearest the image
centre, skip it below the subset's minimum score, align it to ArcFace's template and write

    ROOT/<SUBSET>/arcface_input/<actor>/<name>.npy   float32 (3, 112, 112) ArcFace blob
    ROOT/<SUBSET>/arcface_input/<actor>/<name>.jpg   224×224 aligned crop (.png for PNG sources)

then ``ROOT/image_paths/<SUBSET>.npy`` (+ ``.json``): actor → (crops relative to ``arcface_input/``, the
actor's ``.npz`` relative to ``FLAME_parameters/``). Every photo gets a record in
``ROOT/<SUBSET>/prepare_manifest.json`` (aligned, or skipped with its reason), saved as the run goes, so
an interrupted run resumes where it stopped and a re-run only redoes what changed.
"""
from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError
from ..fileio import SIDE_FILE_MAX_BYTES, atomic_open, check_output_dir, confine_writes, read_text, write_json
from ..workers import WorkerDied, run_in_processes
from .align import align_face
from .photos import output_names, read_photo, select_photos
from .rules import PhotoRules, photo_rules

log = logging.getLogger(__name__)

ALIGNED = "aligned"
UNREADABLE = "unreadable"
NO_FACE = "no face"
LOW_SCORE = "score below threshold"
SKIP_REASONS = (UNREADABLE, NO_FACE, LOW_SCORE)
MANIFEST_NAME = "prepare_manifest.json"
_SAVE_EVERY_S = 20.0  # manifest checkpoint interval: what a crash can cost


@dataclass
class PhotoRecord:
    """What happened to one photo.

    ``source`` is relative to the photo folder; ``name`` the crop path relative to ``arcface_input/``;
    ``kps5`` (5, 2) pixels in the photo; ``signature`` (size, mtime_ns) of the photo when it was processed.
    """

    actor: str
    source: str
    name: str
    status: str
    score: float | None = None
    kps5: list[list[float]] | None = None
    detail: str = ""
    signature: list[int] = field(default_factory=list)


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_subset`; ``format_table()`` for people, ``to_dict()`` for JSON."""

    subset: str
    root: str
    detector: str
    min_score: float
    records: list[PhotoRecord]
    image_list: dict[str, tuple[list[str], str]]
    actors_left_out: dict[str, str]
    processed: int
    seconds: float

    @property
    def counts(self) -> dict[str, int]:
        out = {ALIGNED: 0, **{r: 0 for r in SKIP_REASONS}}
        for rec in self.records:
            out[rec.status] = out.get(rec.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        """No unreadable photo and no actor left out of the image list."""
        return self.counts[UNREADABLE] == 0 and not self.actors_left_out

    def to_dict(self) -> dict[str, Any]:
        ks = [len(images) for images, _ in self.image_list.values()]
        return {
            "subset": self.subset, "root": self.root, "detector": self.detector, "min_score": self.min_score,
            "photos_in": len(self.records), "counts": self.counts, "processed_now": self.processed,
            "seconds": round(self.seconds, 3),
            "photos_per_second": round(self.processed / self.seconds, 2) if self.seconds > 0 else None,
            "actors_listed": len(self.image_list), "min_K": min(ks) if ks else 0, "max_K": max(ks) if ks else 0,
            "actors_left_out": self.actors_left_out,
            "skipped": [asdict(r) for r in self.records if r.status != ALIGNED],
        }

    def format_table(self) -> str:
        c = self.counts
        ks = {actor: len(images) for actor, (images, _) in self.image_list.items()}
        rows = [
            ("subset", self.subset), ("detector", self.detector), ("min score", f"{self.min_score:g}"),
            ("photos in", len(self.records)), ("aligned", c[ALIGNED]),
            *[(f"skipped: {r}", c[r]) for r in SKIP_REASONS],
            ("processed this run", self.processed),
            ("photos/s this run",
             f"{self.processed / self.seconds:.1f}" if self.seconds > 0 and self.processed else "-"),
            ("actors listed", len(ks)),
            ("K per actor (min/max)", f"{min(ks.values())}/{max(ks.values())}" if ks else "-"),
            ("actors left out", len(self.actors_left_out)),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k:<{width}}  {v}" for k, v in rows]
        for actor, why in sorted(self.actors_left_out.items()):
            lines.append(f"  left out {actor}: {why}")
        for rec in self.records:
            if rec.status == UNREADABLE:
                lines.append(f"  unreadable {rec.source}: {rec.detail}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- workers

_DETECTOR: Any = None


def _init_worker(detector_name: str, detector_options: dict[str, Any]) -> None:
    global _DETECTOR
    from ..detection import get_detector

    _DETECTOR = get_detector(detector_name, **detector_options)


@dataclass
class _Task:
    actor: str
    source: str
    path: str
    name: str
    out_dir: str
    min_score: float
    signature: list[int]


def _process(task: _Task, detector: Any = None) -> PhotoRecord:
    """Detect, choose, check, align and write one photo. Never raises for bad input: the record says why."""
    from ..detection import nearest_to_centre

    detector = detector or _DETECTOR
    rec = PhotoRecord(task.actor, task.source, task.name, ALIGNED, signature=task.signature)
    try:
        photo = read_photo(task.path)
    except InputError as exc:
        rec.status, rec.detail = UNREADABLE, exc.problem
        return rec
    pixels = np.asarray(photo)
    face = nearest_to_centre(detector.detect(pixels), pixels.shape)
    if face is None:
        rec.status = NO_FACE
        return rec
    rec.score = round(float(face.score), 6)
    rec.kps5 = np.round(face.kps5, 3).tolist()
    if face.score < task.min_score:
        rec.status = LOW_SCORE
        return rec
    aligned = align_face(photo, face.kps5)
    crop_path = Path(task.out_dir, task.name)
    with confine_writes(Path(task.out_dir).parent):  # in a worker too: never through a link in the subset
        with atomic_open(crop_path.with_suffix(".npy"), "wb") as fh:
            np.save(fh, aligned.blob)
        _write_image(crop_path, aligned.crop224)
    return rec


def _write_image(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    if path.suffix.lower() == ".png":
        Image.fromarray(pixels).save(buf, format="PNG")
    else:
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)  # OpenCV's imwrite default, as MICA wrote them
    with atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())


def _process_batch(tasks: list[_Task]) -> list[PhotoRecord]:
    return [_process(task) for task in tasks]


def _run_tasks(tasks: list[_Task], detector: Any, detector_name: str, detector_options: dict[str, Any],
               workers: int, on_record: Callable[[PhotoRecord], None], batch: int = 8) -> None:
    """``on_record`` for each photo's record, in this process or in ``workers`` processes (spawned:
    MediaPipe's graph threads do not survive a fork), ``batch`` photos per task. A batch whose worker
    dies is tried photo by photo; the photo that kills its worker is recorded unreadable."""
    if workers <= 1 or len(tasks) < 2:
        for task in tasks:
            on_record(_process(task, detector))
        return

    def outcome(chunk: list[_Task], records: list[PhotoRecord] | WorkerDied) -> None:
        if not isinstance(records, WorkerDied):
            for rec in records:
                on_record(rec)
        elif len(chunk) > 1:  # find the photo: each alone
            _run_tasks(chunk, detector, detector_name, detector_options, workers, on_record, batch=1)
        else:
            on_record(PhotoRecord(chunk[0].actor, chunk[0].source, chunk[0].name, UNREADABLE,
                                  detail=f"{records.reason} while reading it", signature=chunk[0].signature))

    chunks = [tasks[i:i + batch] for i in range(0, len(tasks), batch)]
    if run_in_processes(_process_batch, chunks, workers, outcome, initializer=_init_worker,
                        initargs=(detector_name, detector_options)):
        raise KeyboardInterrupt


# -------------------------------------------------------------------------------------------- manifest

def _signature(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _load_manifest(path: Path, detector: str) -> dict[tuple[str, str], PhotoRecord]:
    """Earlier records made with the same detector, or nothing if there are none or the file is damaged."""
    if not os.path.lexists(path):
        return {}
    try:  # a bounded regular file (InputError, a ValueError, otherwise)
        data = json.loads(read_text(path, SIDE_FILE_MAX_BYTES, errors="strict"))
        if data.get("detector") != detector:
            return {}
        records = [PhotoRecord(**r) for r in data.get("photos", [])]
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        log.warning("%s: ignoring unreadable manifest (%s); every photo is processed again", path, exc)
        return {}
    return {(r.actor, r.source): r for r in records}


def _save_manifest(path: Path, subset: str, detector: str, rules: PhotoRules, records: Iterable[PhotoRecord]) -> None:
    write_json(path, {"subset": subset, "detector": detector, "rules": asdict(rules),
                      "photos": [asdict(r) for r in records]})


def _reusable(old: PhotoRecord | None, signature: list[int], name: str, out_dir: Path, min_score: float) -> bool:
    if old is None or old.signature != signature or old.name != name:
        return False
    if old.status in (UNREADABLE, NO_FACE):
        return True
    if old.score is None:
        return False
    crop = out_dir / name
    if old.status == ALIGNED:
        return old.score >= min_score and crop.is_file() and crop.with_suffix(".npy").is_file()
    return old.status == LOW_SCORE and old.score < min_score


def _demote(rec: PhotoRecord, out_dir: Path, min_score: float) -> PhotoRecord:
    """An aligned record whose score is now under the minimum: skipped, its crops removed."""
    if rec.status == ALIGNED and rec.score is not None and rec.score < min_score:
        for p in ((out_dir / rec.name), (out_dir / rec.name).with_suffix(".npy")):
            p.unlink(missing_ok=True)
        rec.status = LOW_SCORE
    return rec


# ------------------------------------------------------------------------------------------ image list

def find_params(params_dir: Path, actor: str) -> str | None:
    """The actor's parameter file relative to ``FLAME_parameters/`` (first ``.npz`` by name), or ``None``."""
    files = sorted((params_dir / actor).glob("*.npz")) if (params_dir / actor).is_dir() else []
    return f"{actor}/{files[0].name}" if files else None


def build_image_list(records: list[PhotoRecord], actors: list[str], params_dir: Path
                     ) -> tuple[dict[str, tuple[list[str], str]], dict[str, str]]:
    """Image list from the records (photo order kept) and the actors left out of it, with why."""
    by_actor: dict[str, list[str]] = {a: [] for a in actors}
    for rec in records:
        if rec.status == ALIGNED:
            by_actor[rec.actor].append(rec.name)
    listed, left_out = {}, {}
    for actor in actors:
        npz = find_params(params_dir, actor)
        if not by_actor[actor]:
            left_out[actor] = "no photo aligned"
        elif npz is None:
            left_out[actor] = f"no .npz under FLAME_parameters/{actor}/"
        else:
            listed[actor] = (by_actor[actor], npz)
    return listed, left_out


# ------------------------------------------------------------------------------------------------ main

def _plan(selection: dict[str, list[Path]], photos: Path, rules: PhotoRules,
          previous: dict[tuple[str, str], PhotoRecord], out_dir: Path
          ) -> tuple[dict[tuple[str, str], PhotoRecord | None], list[_Task]]:
    """What a run does per photo, in photo order: the previous run's record where it still holds (same file,
    same name, its crop in place and above the score), else a task (its record None until it runs)."""
    records: dict[tuple[str, str], PhotoRecord | None] = {}
    tasks: list[_Task] = []
    for actor, paths in selection.items():
        actor_root = photos if rules.actor_from == "filename" else photos / actor
        for path, name in zip(paths, output_names(actor, paths, actor_root, rules.crop_suffix)):
            source = path.relative_to(photos).as_posix()
            signature = _signature(path)
            old = previous.get((actor, source))
            if old is not None and old.status == ALIGNED and old.signature == signature and old.name == name:
                old = _demote(old, out_dir, rules.min_score)
            if _reusable(old, signature, name, out_dir, rules.min_score):
                records[(actor, source)] = old
            else:
                records[(actor, source)] = None
                tasks.append(_Task(actor, source, str(path), name, str(out_dir), rules.min_score, signature))
    return records, tasks


def prepare_subset(root: str | os.PathLike, subset: str, photos: str | os.PathLike, detector: str = "auto",
                   workers: int = 1, min_score: float | None = None, rules: PhotoRules | None = None,
                   detector_options: dict[str, Any] | None = None, progress: bool = True) -> PrepareReport:
    """Align a subset's photos and write its MICA training inputs (see the module docstring).

    Args:
        root: dataset root (holds ``<subset>/`` and ``image_paths/``).
        subset: subset name, e.g. ``FLORENCE``; selects the photo rules (:func:`~onflame.training.rules.photo_rules`).
        photos: the raw photo folder (``<actor>/...`` per actor, or flat for filename-named sources).
        detector: a name from :func:`onflame.detection.available_detectors`.
        workers: processes running detection and alignment.
        min_score: override the subset's minimum detection score.
        rules: override the subset's rules entirely.
        detector_options: passed to the detector (e.g. ``model_dir`` for insightface).
        progress: report n/N and the time left on standard error (:class:`onflame.progress.Progress`).

    Returns a :class:`PrepareReport`. Raises :class:`~onflame.errors.UsageError` for workers < 1, a score
    outside [0, 1] or a root that cannot be written, :class:`InputError` when the photo folder is missing
    and :class:`~onflame.detection.DetectorUnavailable` when the detector cannot run; a bad photo only adds
    a record. ``subset`` may be any name here (the command line takes MICA's eight).
    """
    from ..dataset.image_paths import write_image_paths
    from ..detection import get_detector
    from ..progress import Progress

    t0 = time.perf_counter()
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(None, f"workers must be a whole number of at least 1, got {workers!r}")
    if min_score is not None and not 0.0 <= min_score <= 1.0:  # NaN fails too
        raise UsageError(None, f"min_score must be a score from 0 to 1, got {min_score!r}")
    root, photos = check_output_dir(root), Path(photos)
    rules = (rules or photo_rules(subset)).with_overrides(min_score=min_score)
    selection = select_photos(photos, rules)
    detector_options = dict(detector_options or {})
    det = get_detector(detector, **detector_options)  # fails early, before any file is touched
    det_name = det.name
    out_dir = root / subset / "arcface_input"
    manifest = root / subset / MANIFEST_NAME
    previous = _load_manifest(manifest, det_name)

    records, tasks = _plan(selection, photos, rules, previous, out_dir)
    if workers > 1 and len(tasks) > 1 and hasattr(det, "close"):
        det.close()  # the workers build their own
    processed = 0
    last_save = time.monotonic()
    with Progress(len(tasks), f"prepare {subset}", enabled=progress) as bar:
        def record(rec: PhotoRecord) -> None:
            nonlocal processed, last_save
            records[(rec.actor, rec.source)] = rec
            processed += 1
            bar.advance(rec.source)
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                _save_manifest(manifest, subset, det_name, rules, (r for r in records.values() if r is not None))
                last_save = time.monotonic()

        _run_tasks(tasks, det, detector if detector != "auto" else det_name, detector_options, workers, record)
    if hasattr(det, "close"):
        det.close()

    done = [r for r in records.values() if r is not None]
    _save_manifest(manifest, subset, det_name, rules, done)
    image_list, left_out = build_image_list(done, list(selection), root / subset / "FLAME_parameters")
    write_image_paths(root / "image_paths" / f"{subset}.npy", image_list, json_copy=True)
    report = PrepareReport(subset=subset, root=str(root), detector=det_name, min_score=rules.min_score, records=done,
                           image_list=image_list, actors_left_out=left_out, processed=processed,
                           seconds=time.perf_counter() - t0)
    return report
