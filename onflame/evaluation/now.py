"""The NoW benchmark's evaluation (Sanyal et al. 2019), on numpy, scipy and libigl.

Layout, as NoW ships it and as methods write their predictions::

    GT/scans/<subject>/<scan>.obj                    ground-truth scans (mm), one per subject
    GT/scans_lmks_onlypp/<subject>/<scan>.pp         their 7 landmarks, MeshLab picked points
    GT/imagepathsvalidation.txt, imagepathstest.txt  <subject>/<challenge>/<image>.jpg per line
    PRED/<subject>/<challenge>/<image stem>.obj|.ply  one predicted mesh per image
    PRED/<subject>/<challenge>/<image stem>.npy|.txt  its 7 landmarks (7×3 or 1×7×3), NoW's order

Challenges: ``multiview_neutral``, ``multiview_expressions``, ``multiview_occlusions``, ``selfie``. Per
image: the scan is cropped to NoW's face ball, the prediction aligned by its landmarks and refined on
the scan's points (:mod:`.scan_to_mesh`); the errors are the cropped scan points' distances to the
prediction's surface in mm. Per method and challenge: median, mean and standard deviation of all points
of all images pooled, and the cumulative error curve. ``metrical`` scores the scale too (rigid alignment
after converting the prediction's unit to mm).

Bad input fails its image alone, with the file and the problem (wrong landmark count or order, mirrored
landmarks, NaN, a missing prediction); vertex colours, quads and degenerate triangles are read, split or
dropped and counted. Each image's distances go to ``OUT/items/<label>/<subject>/<challenge>/<stem>.npz``
with a key of its inputs and settings: a re-run reuses them and redoes only what changed.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError, OnflameError
from ..fileio import SIDE_FILE_MAX_BYTES, confined_to, read_npz, read_text, write_json, write_npz, write_text
from ..mesh import read_mesh, write_ply
from ..units import METRES_PER_UNIT, mm_per_unit
from . import now_landmarks
from .curves import cumulative_percentage, curve_axis
from .metrics import summary_mm
from .parallel import run_parallel
from .report import format_rows, method_name, mm, write_curve_files
from .scan_to_mesh import ScanTarget, check_prediction_landmarks, prepare_scan, score_prediction

log = logging.getLogger(__name__)

CHALLENGES = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")
IMAGE_LISTS = {"validation": "imagepathsvalidation.txt", "test": "imagepathstest.txt"}
SCANS_DIR, LANDMARKS_DIR = "scans", "scans_lmks_onlypp"
PRED_MESH_SUFFIXES = (".obj", ".ply")
PRED_LANDMARK_SUFFIXES = (".npy", ".txt")
#: A typical outer-eye-corner distance (mm), for ``pred_unit="auto"``.
TYPICAL_EYE_DISTANCE_MM = 95.0
#: Bumped when a change alters the numbers, so cached per-image results are redone.
RESULT_VERSION = 1
#: The largest per-image result file read back (a scan's cropped points' distances, float32).
CACHE_MAX_BYTES = 64 * 2**20
#: Images per work item at most (one scan per item: its crop is made once per item).
CHUNK = 24


@dataclass(frozen=True)
class NowSettings:
    """How predictions are scored.

    Attributes:
        metrical: rigid alignment (scale scored); otherwise a similarity.
        pred_unit: the predictions' unit when metrical: ``m``, ``cm``, ``mm`` or ``auto`` (the power of
            ten that makes the outer eye corners about 95 mm apart, per image).
        protocol: ``now`` (crop radius factor 1.4) or ``fg2018`` (1.2).
    """

    metrical: bool = False
    pred_unit: str = "auto"
    protocol: str = "now"


@dataclass(frozen=True)
class NowItem:
    """One image of one method, with the files it needs (None where missing)."""

    label: str
    subject: str
    challenge: str
    image: str
    pred_mesh: str | None
    pred_landmarks: str | None
    scan: str | None
    scan_landmarks: str | None
    problem: str | None = None

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.challenge}/{Path(self.image).stem}"


@dataclass
class ItemResult:
    """An image's outcome: its distances (mm, float32) and numbers, or the error that stopped it."""

    item: NowItem
    distances: np.ndarray | None = None
    details: dict = field(default_factory=dict)
    error: str | None = None
    cached: bool = False


# --- layout ---------------------------------------------------------------------------------------------------

def read_image_list(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """``(subject, challenge, image file)`` per line of a NoW image list (its last three path parts)."""
    path = Path(path)
    lines = read_text(path, SIDE_FILE_MAX_BYTES).splitlines()  # a bounded regular file (not a FIFO)
    out = []
    for n, line in enumerate(lines, 1):
        parts = [p for p in re.split(r"[\\/]", line.strip()) if p]
        if not parts:
            continue
        if len(parts) < 3:
            raise InputError(path, f"line {n} {line.strip()!r} is not <subject>/<challenge>/<image>")
        out.append((parts[-3], parts[-2], parts[-1]))
    if not out:
        raise InputError(path, "the image list is empty")
    return out


def find_image_list(gt: Path, split: str) -> Path:
    """``GT/imagepaths<split>.txt`` (InputError naming what is missing)."""
    path = gt / IMAGE_LISTS[split]
    if not path.is_file():
        raise InputError(path, f"no {split} image list (give --image-list, or --split with a list in {gt})")
    return path


def _single(folder: Path, suffixes: tuple[str, ...], what: str) -> str:
    found = sorted(p for p in folder.glob("*") if p.suffix.lower() in suffixes) if folder.is_dir() else []
    if not found:
        raise InputError(folder, f"no {what} ({'/'.join(suffixes)}) found")
    if len(found) > 1:
        raise InputError(folder, f"{len(found)} {what} files; NoW has one per subject: {', '.join(p.name for p in found[:4])}")
    return str(found[0])


def _first(stem: Path, suffixes: tuple[str, ...]) -> str | None:
    return next((str(stem.with_name(stem.name + s)) for s in suffixes if stem.with_name(stem.name + s).is_file()), None)


def plan(preds: list[tuple[str, Path]], gt: Path, image_list: Path) -> list[NowItem]:
    """One :class:`NowItem` per method and listed image, with its files (missing ones as a ``problem``)."""
    entries = read_image_list(image_list)
    truth: dict[str, tuple[str | None, str | None, str | None]] = {}
    for subject in sorted({e[0] for e in entries}):
        try:
            truth[subject] = (_single(gt / SCANS_DIR / subject, (".obj", ".ply"), "scan"),
                              _single(gt / LANDMARKS_DIR / subject, (".pp",), "landmark"), None)
        except InputError as exc:
            truth[subject] = (None, None, str(exc))
    items = []
    for label, pred in preds:
        for subject, challenge, image in entries:
            scan, pp, problem = truth[subject]
            stem = pred / subject / challenge / Path(image).stem
            mesh, lmk = _first(stem, PRED_MESH_SUFFIXES), _first(stem, PRED_LANDMARK_SUFFIXES)
            if problem is None and mesh is None:
                problem = f"{stem}.obj: no predicted mesh (.obj or .ply)"
            elif problem is None and lmk is None:
                problem = f"{stem}.npy: no landmark file (.npy or .txt) beside {Path(mesh).name}"
            items.append(NowItem(label, subject, challenge, image, mesh, lmk, scan, pp, problem))
    return items


# --- one image ------------------------------------------------------------------------------------------------

def _input_key(item: NowItem, settings: NowSettings) -> str:
    """What a cached result depends on: the settings and each input's size and modification time."""
    stats = []
    for p in (item.pred_mesh, item.pred_landmarks, item.scan, item.scan_landmarks):
        st = os.stat(p)
        stats.append([p, st.st_size, st.st_mtime_ns])
    return json.dumps({"version": RESULT_VERSION, "settings": asdict(settings), "inputs": stats}, sort_keys=True)


def item_file(out: Path, item: NowItem) -> Path:
    return out / "items" / method_name(item.label) / item.subject / item.challenge / f"{Path(item.image).stem}.npz"


def _pred_scale(settings: NowSettings, lmk: np.ndarray) -> tuple[float, str | None]:
    if not settings.metrical:
        return 1.0, None
    if settings.pred_unit != "auto":
        return mm_per_unit(settings.pred_unit), settings.pred_unit
    d = now_landmarks.outer_eye_distance(lmk)
    unit = min(METRES_PER_UNIT, key=lambda u: abs(np.log(max(d, 1e-300) * mm_per_unit(u) / TYPICAL_EYE_DISTANCE_MM)))
    return mm_per_unit(unit), unit


_SCANS: dict[tuple[str, str, str], ScanTarget | InputError] = {}


def _scan_target(item: NowItem, settings: NowSettings) -> ScanTarget:
    """The item's cropped scan, made once per worker and scan (the last few are kept)."""
    key = (item.scan, item.scan_landmarks, settings.protocol)
    if key not in _SCANS:
        if len(_SCANS) >= 4:
            _SCANS.pop(next(iter(_SCANS)))
        try:
            lmk = now_landmarks.read_landmarks(item.scan_landmarks)
            _SCANS[key] = prepare_scan(read_mesh(item.scan), lmk, settings.protocol)
        except InputError as exc:
            _SCANS[key] = exc
    got = _SCANS[key]
    if isinstance(got, InputError):
        raise got
    return got


def _cached_result(cache: Path, key: str, item: NowItem) -> ItemResult | None:
    """The image's result kept by an earlier run, when it is whole and made from the same inputs; None
    otherwise (no file, another key, a file cut short or damaged: the image is scored again and the
    file rewritten)."""
    if not cache.is_file():
        return None
    try:
        z = read_npz(cache, limit=CACHE_MAX_BYTES)
        distances, details = z["distances"], json.loads(str(z["details"]))
        if str(z["key"]) != key or distances.ndim != 1 or distances.dtype.kind != "f" or not isinstance(details, dict):
            return None
    except (InputError, KeyError, ValueError):
        log.info("%s: cached result unreadable; scoring the image again", cache)
        return None
    return ItemResult(item, distances, details, cached=True)


@confined_to("out", "check_alignment")
def evaluate_item(item: NowItem, settings: NowSettings, out: Path | None = None,
                  check_alignment: Path | None = None) -> ItemResult:
    """Score one image (or reuse its cached result in ``out``); errors become the result's ``error``."""
    if item.problem:
        return ItemResult(item, error=item.problem)
    t0 = time.perf_counter()
    try:
        key = _input_key(item, settings)
        cache = None if out is None else item_file(out, item)
        if cache is not None and check_alignment is None:
            cached = _cached_result(cache, key, item)
            if cached is not None:
                return cached
        target = _scan_target(item, settings)
        pred = read_mesh(item.pred_mesh)
        lmk = now_landmarks.read_landmarks(item.pred_landmarks)
        check_prediction_landmarks(pred, lmk, target, item.pred_landmarks)
        scale, unit = _pred_scale(settings, lmk)
        score = score_prediction(target, pred, lmk, settings.metrical, scale, item.pred_mesh)
        d = score.distances.astype(np.float32)
        details = {"points": int(d.size), "median_mm": float(np.median(d)), "mean_mm": float(d.mean()),
                   "scan_degenerate_triangles": target.degenerate, "pred_unit": unit, **score.details(),
                   "seconds": round(time.perf_counter() - t0, 4)}
        if cache is not None:
            write_npz(cache, distances=d, key=np.array(key), details=np.array(json.dumps(details)))
        if check_alignment is not None:
            base = check_alignment / method_name(item.label) / item.subject / item.challenge / Path(item.image).stem
            write_ply(base.with_name(base.name + "_scan.ply"), target.mesh)
            write_ply(base.with_name(base.name + "_prediction.ply"), pred.with_vertices(score.transform.apply(pred.vertices)))
        return ItemResult(item, d, details)
    except OnflameError as exc:
        return ItemResult(item, error=str(exc))
    except Exception as exc:  # noqa: BLE001  one image's unexpected error must not stop the others
        log.debug("%s: %s", item.key, traceback.format_exc())
        return ItemResult(item, error=f"{item.pred_mesh}: {type(exc).__name__}: {exc}")


def _run_chunk(task: tuple[list[NowItem], NowSettings, Path | None, Path | None]) -> list[ItemResult]:
    items, settings, out, check = task
    return [evaluate_item(it, settings, out, check) for it in items]


# --- the run --------------------------------------------------------------------------------------------------

@dataclass
class NowReport:
    """A NoW evaluation of one or more methods.

    Attributes:
        labels: method names, in the order given.
        challenges: the challenges present, in NoW's order, then ``all``.
        stats: label -> challenge -> :func:`summary_mm` of the pooled errors, plus ``images``.
        failures: label -> one line per image that could not be scored.
        items: label -> per-image numbers (``image``, ``challenge``, ``median_mm``, ...).
        curves: challenge -> label -> cumulative percentages at :attr:`thresholds`.
        outputs: files written.
        settings, seconds: how it ran.
    """

    labels: list[str]
    challenges: list[str]
    stats: dict[str, dict[str, dict]]
    failures: dict[str, list[str]]
    items: dict[str, list[dict]]
    curves: dict[str, dict[str, np.ndarray]]
    thresholds: np.ndarray
    outputs: dict[str, str]
    settings: dict
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 when every image of every method was scored, else 1."""
        return 1 if any(self.failures.values()) else 0

    def to_dict(self, with_items: bool = True) -> dict:
        out = {"settings": self.settings, "labels": self.labels, "stats": self.stats,
               "failures": self.failures, "outputs": self.outputs, "seconds": self.seconds}
        if with_items:
            out["items"] = self.items
        return out

    def format_table(self) -> str:
        """One row per method and challenge: images scored, pooled median / mean / std (mm)."""
        rows = [("method", "challenge", "images", "median mm", "mean mm", "std mm", "failed")]
        for label in self.labels:
            for ch in self.challenges:
                s = self.stats[label].get(ch)
                if s is None:
                    continue
                rows.append((label, ch, str(s["images"]), mm(s["median_mm"]), mm(s["mean_mm"]), mm(s["std_mm"]),
                             str(len(self.failures[label])) if ch == "all" else ""))
        return format_rows(rows)


@confined_to("out", "check_alignment")
def evaluate_now(preds: list[tuple[str, str | os.PathLike]], gt: str | os.PathLike, out: str | os.PathLike,
                 settings: NowSettings = NowSettings(), split: str = "validation",
                 image_list: str | os.PathLike | None = None, workers: int = 1,
                 check_alignment: str | os.PathLike | None = None,
                 echo: Callable[[str], None] | None = None) -> NowReport:
    """Run the NoW evaluation of one or more methods and write its outputs.

    Args:
        preds: ``(label, prediction folder)`` per method.
        gt: the NoW dataset folder (``scans/``, ``scans_lmks_onlypp/``, image lists).
        out: output folder: ``now_results.json``, ``now_table.txt``, ``cumulative_<challenge>.png/.csv``
            (one curve per method), ``items/`` (per-image distances, reused by a re-run).
        settings: :class:`NowSettings`.
        split: ``validation`` or ``test`` (the image list ``GT/imagepaths<split>.txt``).
        image_list: another image list instead.
        workers: processes.
        check_alignment: a folder for each image's cropped scan and aligned prediction (PLY, mm).
        echo: called with a progress line after each batch of images.

    Returns:
        A :class:`NowReport`. Raises :class:`InputError` only for a missing ``gt`` / prediction folder or
        image list; everything per image is a failure in the report.
    """
    t0 = time.perf_counter()
    gt, out = Path(gt), Path(out)
    if not gt.is_dir():
        raise InputError(gt, "no such folder (expected NoW's dataset folder with scans/ and scans_lmks_onlypp/)")
    preds = [(label, Path(p)) for label, p in preds]
    for label, p in preds:
        if not p.is_dir():
            raise InputError(p, "no such prediction folder")
    if len({label for label, _ in preds}) != len(preds):
        raise InputError(None, "method labels must differ: " + ", ".join(label for label, _ in preds))
    listing = Path(image_list) if image_list is not None else find_image_list(gt, split)
    items = plan(preds, gt, listing)
    check = None if check_alignment is None else Path(check_alignment)
    by_scan: dict[str | None, list[NowItem]] = {}
    for it in items:
        by_scan.setdefault(it.scan, []).append(it)
    tasks = [(group[i:i + CHUNK], settings, out, check) for group in by_scan.values() for i in range(0, len(group), CHUNK)]
    tasks.sort(key=lambda t: -len(t[0]))  # the longest first: workers finish together

    results: list[ItemResult] = []
    say = echo or (lambda line: None)
    def done(batch: list[ItemResult]) -> None:
        results.extend(batch)
        say(f"{len(results)}/{len(items)} images done")

    run_parallel(_run_chunk, tasks, workers, done,
                 on_broken=lambda task, why: [ItemResult(it, error=f"{it.pred_mesh}: {why}") for it in task[0]])
    return _report(preds, items, results, listing, gt, out, settings, time.perf_counter() - t0)


def _report(preds, items: list, results: list[ItemResult], listing: Path, gt: Path, out: Path, settings: NowSettings,
            seconds: float) -> NowReport:
    order = {(it.label, it.key): n for n, it in enumerate(items)}  # the plan's order, not completion's
    results.sort(key=lambda r: order[(r.item.label, r.item.key)])
    labels = [label for label, _ in preds]
    present = {r.item.challenge for r in results}
    challenges = [c for c in CHALLENGES if c in present] + sorted(present - set(CHALLENGES)) + ["all"]
    x = curve_axis()
    stats: dict = {label: {} for label in labels}
    curves: dict = {ch: {} for ch in challenges}
    failures: dict = {label: [] for label in labels}
    per_item: dict = {label: [] for label in labels}
    for label in labels:
        mine = [r for r in results if r.item.label == label]
        for r in mine:
            if r.error:
                failures[label].append(f"{r.item.key}: {r.error}")
            else:
                per_item[label].append({"image": r.item.key, "challenge": r.item.challenge, **r.details})
        for ch in challenges:
            d = [r.distances for r in mine if r.distances is not None and (ch == "all" or r.item.challenge == ch)]
            pooled = np.concatenate(d) if d else np.zeros(0, np.float32)
            stats[label][ch] = {**summary_mm(pooled), "images": len(d),
                                "images_listed": sum(1 for r in mine if ch == "all" or r.item.challenge == ch)}
            curves[ch][label] = cumulative_percentage(pooled, x)
    outputs = {"json": str(out / "now_results.json"), "table": str(out / "now_table.txt")}
    for ch in challenges:
        outputs.update(write_curve_files(out, ch, x, curves[ch], f"NoW {listing.stem.replace('imagepaths', '')}: {ch}"))
    report = NowReport(labels, challenges, stats, failures, per_item, curves, x, outputs,
                       {**asdict(settings), "gt": str(gt), "image_list": str(listing),
                        "predictions": {label: str(p) for label, p in preds}}, round(seconds, 3))
    write_json(out / "now_results.json", report.to_dict())
    write_text(out / "now_table.txt", report.format_table() + "\n")
    return report
