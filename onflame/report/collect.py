"""Gather what a report shows about one subset: subjects, build records, image lists, and what is missing.

Reads only the dataset layer's files (nothing is rendered or computed here)::

    <SUBSET>/FLAME_parameters/<actor>/<stem>.npz     the subjects
    <SUBSET>/registrations/<actor>/<stem>.obj        their meshes
    <SUBSET>/build/reports/<actor>/<stem>.json       the build's per-scan report (numbers, verdict, scan path)
    <SUBSET>/build/rejected/<actor>/<stem>.obj       registrations the build refused (verdict failed)
    <SUBSET>/build/summary.json, manifest.json       the build's counts and per-scan timings
    image_paths/<SUBSET>.npy, <SUBSET>/arcface_input/ the photos MICA trains on

A subject is any name found in the parameter files, the build reports or the build's records, so a
scan that failed (no parameters) is shown too. Every file that cannot be read becomes a problem line
naming it, and so does every number beyond the thresholds ``validate`` judges by
(:mod:`onflame.dataset.plausible`: parameter lengths and magnitudes here, the registration's distance to
FLAME(params) in :func:`judge_numbers` once it is measured); nothing here raises for bad data.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..dataset.layout import Subset
from ..dataset.names import BUILD_DIR, PARAMS_DIR, REGISTRATIONS_DIR
from ..dataset.plausible import distance_problems, length_problems, magnitude_problems
from ..errors import InputError
from ..fileio import read_npz, safe_name
from ..flame import FlameParams, params_from_arrays

#: Verdict categories shown, best first: the build's statuses, and subjects no build recorded.
VERDICTS = ("ok", "suspect", "failed", "unknown")
#: Build status -> verdict category.
STATUS_VERDICT = {"registered": "ok", "suspect": "suspect", "failed": "failed"}
#: Numbers a build report holds that the report shows (millimetres, or a fraction for coverage).
REPORT_NUMBERS = ("scan_to_mesh_median_mm", "scan_to_mesh_p95_mm", "coverage", "landmark_median_mm")


@dataclass
class Photo:
    """One listed image of an actor: its path in the image folder, whether it exists, its ArcFace blob."""

    name: str
    rel: str
    exists: bool
    blob_rel: str | None


@dataclass
class SubjectInfo:
    """One subject of a subset and everything known about it before rendering.

    Attributes:
        subset, actor, stem: names; ``name`` is ``<actor>/<stem>``, ``slug`` its page's file stem.
        verdict: ``ok`` / ``suspect`` / ``failed`` / ``unknown`` (no build record).
        reasons: the build's reasons for its verdict (or its error).
        report: the build report (JSON dict) or None; ``numbers`` the numbers shown (mm / fractions).
        params: the parameters, or None (missing or unreadable: see ``problems``).
        params_rel, registration_rel, rejected_rel: paths inside the subset (None when absent).
        timings: seconds per registration step from the build's manifest.
        problems: what is missing or unreadable about this subject, one line each; ``notes``: lesser
            remarks (e.g. why there is no heat map).
        images: site-relative pictures (``thumb``, ``views``, ``heat``, ``fit``), filled by the report.
        outliers: why the statistics flag it, filled by the report.
    """

    subset: str
    actor: str
    stem: str
    slug: str = ""
    verdict: str = "unknown"
    reasons: list[str] = field(default_factory=list)
    report: dict | None = None
    report_rel: str | None = None
    params: FlameParams | None = None
    params_rel: str | None = None
    registration_rel: str | None = None
    rejected_rel: str | None = None
    timings: dict = field(default_factory=dict)
    photos: list[Photo] = field(default_factory=list)
    numbers: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    outliers: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.actor}/{self.stem}"

    @property
    def mesh_rel(self) -> str | None:
        """The mesh to draw: the registration, else the build's rejected one."""
        return self.registration_rel or self.rejected_rel

    @property
    def scan(self) -> str | None:
        """The raw scan the build registered (from its report), or None."""
        return None if self.report is None else self.report.get("scan")


@dataclass
class SubsetInfo:
    """One subset: its subjects, the build's summary, image-list counts and the problems found.

    Attributes:
        summary: ``build/summary.json`` (None without one); ``build_counts`` its registered/suspect/failed.
        has_reports: the subset has a ``build/reports/`` folder.
        listed_actors, listed_images, found_images, images_per_actor: from the image list (None without).
        registration_s: seconds of registration summed over the manifest's records.
        input_fingerprints: path -> ``{size, mtime_ns, sha256}`` of the files the build read (its manifest).
    """

    name: str
    location: str
    subset: Subset
    subjects: list[SubjectInfo] = field(default_factory=list)
    summary: dict | None = None
    has_reports: bool = False
    image_folder: str | None = None
    image_list: str | None = None
    listed_actors: int | None = None
    listed_images: int | None = None
    found_images: int | None = None
    images_per_actor: tuple[int, float, int] | None = None
    registration_s: float | None = None
    input_fingerprints: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, verdict: str) -> int:
        return sum(s.verdict == verdict for s in self.subjects)

    @property
    def build_counts(self) -> dict[str, int] | None:
        if self.summary is None:
            return None
        return {k: int(self.summary.get(k, 0)) for k in ("registered", "suspect", "failed")}


def _read_json(subset: Subset, rel: str) -> tuple[Any, str | None]:
    """``(data, None)`` or ``(None, problem line)``."""
    try:
        return json.loads(subset.read_bytes(rel).decode("utf-8")), None
    except InputError as exc:
        return None, str(exc)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{subset.label(rel)}: not readable JSON ({exc})"


def _names(files: dict[tuple[str, str], str]) -> dict[str, str]:
    return {f"{a}/{s}": rel for (a, s), rel in files.items()}


def collect_subset(subset: Subset, max_photos: int = 8) -> SubsetInfo:
    """Everything the report shows about ``subset`` that can be read without rendering (see the module docstring).

    Args:
        subset: an opened subset (folder or zip).
        max_photos: listed photos kept per subject for its page.
    """
    info = SubsetInfo(subset.name, str(subset.location), subset)
    info.problems.extend(str(p) for p in subset.problems)  # zip members left out as unsafe
    params, regs = _names(subset.params_files()), _names(subset.registration_files())
    reports = {str(PurePosixPath(rel).relative_to(f"{BUILD_DIR}/reports").with_suffix("")): rel
               for rel in subset.files(f"{BUILD_DIR}/reports") if rel.endswith(".json")}
    rejected = {str(PurePosixPath(rel).relative_to(f"{BUILD_DIR}/rejected").with_suffix("")): rel
                for rel in subset.files(f"{BUILD_DIR}/rejected") if rel.endswith((".obj", ".ply"))}
    info.has_reports = bool(reports)
    records = _build_records(subset, info)
    names = sorted(set(params) | set(reports) | set(records))
    slugs: set[str] = set()
    for name in names:
        actor, _, stem = name.partition("/")
        s = SubjectInfo(subset.name, actor, stem, params_rel=params.get(name), registration_rel=regs.get(name),
                        rejected_rel=rejected.get(name), report_rel=reports.get(name))
        s.slug = _unique(safe_name(name.replace("/", "__")), slugs)
        _add_record(s, subset, records.get(name))
        _add_params(s, subset)
        info.subjects.append(s)
    if not info.has_reports:
        info.problems.append(f"{subset.label(BUILD_DIR + '/reports')}: no build reports: verdicts, scan numbers and "
                             "heat maps are unknown (a root made by `onflame build` has them)")
    elif missing := [s.name for s in info.subjects if s.report is None]:
        info.problems.append(f"{len(missing)} subject(s) without a build report, first {missing[0]}")
    _add_photos(info, max_photos)
    _compare_counts(info)
    return info


def _unique(slug: str, taken: set[str]) -> str:
    out, i = slug, 1
    while out.lower() in taken:  # case-insensitive file systems
        i += 1
        out = f"{slug}-{i}"
    taken.add(out.lower())
    return out


def _build_records(subset: Subset, info: SubsetInfo) -> dict[str, dict]:
    """The build's records by name: the manifest's (timings) updated by the summary's (statuses)."""
    records: dict[str, dict] = {}
    names = set(subset.files(BUILD_DIR))
    manifest_rel, summary_rel = f"{BUILD_DIR}/manifest.json", f"{BUILD_DIR}/summary.json"
    if manifest_rel in names:
        data, problem = _read_json(subset, manifest_rel)
        if problem or not isinstance(data, dict) or not isinstance(data.get("records"), dict):
            info.problems.append(problem or f"{subset.label(manifest_rel)}: not a build manifest")
        else:
            records.update({k: dict(v) for k, v in data["records"].items() if isinstance(v, dict)})
            tasks = [float(v.get("timings_s", {}).get("task", 0.0)) for v in records.values()]
            info.registration_s = float(sum(tasks))
            for rec in records.values():
                info.input_fingerprints.update({p: fp for p, fp in (rec.get("inputs") or {}).items()
                                                if isinstance(fp, dict)})
    if summary_rel in names:
        data, problem = _read_json(subset, summary_rel)
        if problem or not isinstance(data, dict):
            info.problems.append(problem or f"{subset.label(summary_rel)}: not a build summary")
        else:
            info.summary = data
            for rec in data.get("records") or []:
                if isinstance(rec, dict) and "name" in rec:
                    records[rec["name"]] = {**records.get(rec["name"], {}), **rec}
    return records


def _add_record(s: SubjectInfo, subset: Subset, record: dict | None) -> None:
    """Verdict, reasons, numbers and timings from the build report (first) and the build's record."""
    if record is not None:
        s.verdict = STATUS_VERDICT.get(record.get("status"), "unknown")
        s.reasons = list(record.get("reasons") or [])
        s.timings = dict(record.get("timings_s") or {})
    if s.report_rel is not None:
        data, problem = _read_json(subset, s.report_rel)
        if problem or not isinstance(data, dict):
            s.problems.append(problem or f"{subset.label(s.report_rel)}: not a build report")
        else:
            s.report = data
            s.verdict = STATUS_VERDICT.get(data.get("status"), s.verdict)
            s.reasons = list(data.get("reasons") or ([data["error"]] if data.get("error") else s.reasons))
    for key in REPORT_NUMBERS:
        v = None if s.report is None else s.report.get(key)
        s.numbers[key] = float(v) if isinstance(v, (int, float)) else None


def _add_params(s: SubjectInfo, subset: Subset) -> None:
    """Parameters read (or the problem), and what is missing for a subject the build says it registered."""
    if s.params_rel is not None:
        try:
            s.params, judged = _read_params(subset, s.params_rel)
            s.problems.extend(judged)
        except InputError as exc:
            s.problems.append(str(exc))
    elif s.verdict in ("ok", "suspect"):
        s.problems.append(f"{subset.label(f'{PARAMS_DIR}/{s.name}.npz')}: parameters missing")
    if s.params_rel is not None and s.registration_rel is None:
        s.problems.append(f"{subset.label(f'{REGISTRATIONS_DIR}/{s.name}.obj')}: registration missing")
    if s.verdict == "failed" and s.params_rel is None and s.mesh_rel is None:
        s.problems.append(f"{s.subset}/{s.name}: no registration: the build failed on this scan" +
                          (f" ({s.scan})" if s.scan else ""))


def _read_params(subset: Subset, rel: str) -> tuple[FlameParams, list[str]]:
    """The parameters, and a problem line for each length or magnitude beyond the plausible."""
    label = subset.label(rel)
    arrays = read_npz(io.BytesIO(subset.read_bytes(rel)), label)
    p = params_from_arrays(arrays, label)
    judged = length_problems(arrays) + magnitude_problems(p.shape, p.expression, p.pose, p.trans)
    return p, [f"{label}: {problem}" for problem in judged]


def judge_numbers(info: SubsetInfo) -> None:
    """A problem line for each subject whose registration lies beyond the thresholds from FLAME(params)
    (``params_mean_mm`` / ``params_max_mm``, measured by the pictures' step)."""
    for s in info.subjects:
        if s.params_rel is None:
            continue
        for problem in distance_problems(s.numbers.get("params_mean_mm"), s.numbers.get("params_max_mm")):
            s.problems.append(f"{info.subset.label(s.params_rel)}: {problem}")


def _add_photos(info: SubsetInfo, max_photos: int) -> None:
    """Image-list counts, found images, and each subject's first listed photos (with their ArcFace blobs)."""
    subset = info.subset
    if subset.image_list is None:
        return
    info.image_list = str(subset.image_list)
    try:
        mapping = subset.read_image_paths()
    except InputError as exc:
        info.problems.append(str(exc))
        return
    folder = subset.image_folder()
    info.image_folder = folder
    present = set(subset.files(folder)) if folder else set()
    counts = [len(images) for images, _ in mapping.values()]
    info.listed_actors, info.listed_images = len(mapping), int(sum(counts))
    if counts:
        info.images_per_actor = (min(counts), float(sum(counts)) / len(counts), max(counts))
    if folder is None:
        info.problems.append(f"{subset.label('arcface_input')}: missing: the image list {subset.image_list} names "
                             f"{info.listed_images} images")
    else:
        missing = [im for images, _ in mapping.values() for im in images if f"{folder}/{im}" not in present]
        info.found_images = info.listed_images - len(missing)
        if missing:
            info.problems.append(f"{len(missing)} of {info.listed_images} images listed in {subset.image_list} are "
                                 f"missing from {subset.label(folder)}, first {missing[0]}")
    by_actor = {s.actor: s for s in info.subjects if s.params_rel is not None}
    for actor, (images, npz) in mapping.items():
        s = next((x for x in info.subjects if x.actor == actor and f"{PARAMS_DIR}/{npz}" == x.params_rel),
                 by_actor.get(actor))
        if s is None:
            continue
        for im in images[:max_photos]:
            rel = f"{folder}/{im}" if folder else im
            blob = str(PurePosixPath(rel).with_suffix(".npy"))
            s.photos.append(Photo(im, rel, rel in present, blob if blob in present else None))


def _compare_counts(info: SubsetInfo) -> None:
    """A problem line when the files' verdicts disagree with the build summary's counts."""
    counts = info.build_counts
    if counts is None:
        return
    mine = {"registered": info.count("ok"), "suspect": info.count("suspect"), "failed": info.count("failed")}
    if mine != counts:
        info.problems.append(f"{info.subset.label(BUILD_DIR + '/summary.json')}: counts {counts} but the build "
                             f"reports on disk give {mine} (a build still running, or files changed since)")
