"""Check a MICA root and report every problem with its file.

What is checked, per subset:

- every ``FLAME_parameters/<actor>/<name>.npz``: keys, dtypes and finiteness (via
  :func:`onflame.flame.params_from_arrays`, which lists every problem of a file in one message), MICA's
  exact lengths (``betas`` 400, ``pose`` 15, ``trans`` 3) and plausible magnitudes
  (:mod:`.plausible`);
- actors present in both ``FLAME_parameters/`` and ``registrations/``, and each ``.npz`` with an ``.obj``
  of the same name (and the other way round);
- every registration: readable, and with the model's vertex and triangle counts (FLAME's 5023 / 9976 when
  no model is given);
- with a model: the distance between each registration and FLAME(params) (shape, expression, full
  pose, translation), computed in float64 in batches; mean and max per subset in millimetres, and an
  error for each subject beyond :data:`.plausible.PARAMS_MEAN_MM_MAX` / :data:`.plausible.PARAMS_MAX_MM_MAX`;
- the image list (``image_paths/<SUBSET>.npy``): readable, its actors and parameter files exist, actors
  on disk that it leaves out (a warning: MICA will not train on them), and, when an ``arcface_input/`` (or
  ``images/``) folder is present, that every listed image exists.

Nothing stops the run: a corrupt file is one problem line and the next file is checked.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from ..errors import InputError
from ..flame import FlameModel, FlameParams, load_model, params_from_arrays
from .image_paths import read_image_paths
from .layout import MicaRoot, Subject, Subset, open_root
from .names import PARAMS_DIR, REGISTRATIONS_DIR
from .plausible import distance_problems, length_problems, magnitude_problems

#: FLAME's topology, checked when no model is given.
FLAME_VERTICES = 5023
FLAME_TRIANGLES = 9976

ERROR = "error"
WARNING = "warning"


@dataclass
class Problem:
    """One problem: its severity (``"error"`` or ``"warning"``), subset, file and what is wrong."""

    severity: str
    subset: str
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {one_line_name(self.file)}: {self.problem}"


def one_line_name(name: str) -> str:
    """A file name as one line: a line break inside it (a folder named so) is written ``\\n``."""
    return str(name).replace("\r", "\\r").replace("\n", "\\n")


@dataclass
class SubsetStats:
    """Counts for one subset. Distances are in millimetres; None where not measured.

    Attributes:
        images_listed: images in the subset's image list (None without a list).
        images_found: of those, how many exist (None when images were not checked).
        compared: subjects whose registration was compared with FLAME(params).
        mean_mm: mean over those subjects of the mean per-vertex distance.
        max_mm: largest per-vertex distance over those subjects; ``worst`` names that subject.
    """

    name: str
    location: str
    actors: int = 0
    subjects: int = 0
    registrations: int = 0
    images_listed: int | None = None
    images_found: int | None = None
    compared: int = 0
    mean_mm: float | None = None
    max_mm: float | None = None
    worst: str | None = None
    errors: int = 0
    warnings: int = 0


@dataclass
class ValidationReport:
    """Everything :func:`validate_root` found. ``ok`` is True when there is no error (warnings allowed)."""

    root: str
    model: str | None
    subsets: dict[str, SubsetStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, severity: str, subset: str, file: str | os.PathLike, problem: str) -> None:
        self.problems.append(Problem(severity, subset, str(file), problem))
        stats = self.subsets.get(subset)
        if stats is not None:
            if severity == ERROR:
                stats.errors += 1
            else:
                stats.warnings += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``root, model, ok, errors, warnings, subsets {name: counts}, problems [...]``."""
        return {
            "root": self.root,
            "model": self.model,
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "subsets": {name: asdict(s) for name, s in self.subsets.items()},
            "problems": [asdict(p) for p in self.problems],
        }

    def format_table(self, max_problems: int = 200) -> str:
        """One aligned row per subset, a total row, then the problems (the first ``max_problems``)."""
        head = ["subset", "actors", "subjects", "regs", "images", "found", "compared", "mean mm", "max mm",
                "errors", "warnings"]

        def cell(v: Any, mm: bool = False) -> str:
            return "-" if v is None else (f"{v:.3f}" if mm else str(v))

        rows = [[s.name, cell(s.actors), cell(s.subjects), cell(s.registrations), cell(s.images_listed),
                 cell(s.images_found), cell(s.compared), cell(s.mean_mm, True), cell(s.max_mm, True),
                 cell(s.errors), cell(s.warnings)] for s in self.subsets.values()]
        stats = list(self.subsets.values())
        rows.append(["total", str(sum(s.actors for s in stats)), str(sum(s.subjects for s in stats)),
                     str(sum(s.registrations for s in stats)), "", "", str(sum(s.compared for s in stats)),
                     "", "", str(len(self.errors)), str(len(self.warnings))])
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(r, widths)))
        lines = [f"MICA root {self.root}" + (f" (model {self.model})" if self.model else ""), fmt(head),
                 "  ".join("-" * w for w in widths)]
        lines += [fmt(r) for r in rows]
        if self.problems:
            lines.append("")
            lines += [str(p) for p in self.problems[:max_problems]]
            if len(self.problems) > max_problems:
                lines.append(f"... and {len(self.problems) - max_problems} more problems (use --json for all)")
        lines.append("")
        lines.append("OK" if self.ok else f"{len(self.errors)} errors, {len(self.warnings)} warnings")
        return "\n".join(lines)


def validate_root(root: str | os.PathLike | MicaRoot, model: str | os.PathLike | FlameModel | None = None,
                  check_images: bool = True, batch_size: int = 64,
                  default_model: Callable[[], FlameModel] | None = None) -> ValidationReport:
    """Check every subset of a MICA root (see the module docstring) and return the report.

    Args:
        root: a MICA root folder, subset folder or subset zip (or an opened :class:`MicaRoot`).
        model: a FLAME model (file or :class:`FlameModel`): sets the expected vertex and triangle counts
            and turns on the registration-to-FLAME(params) distance. Default: the root's ``model.npz``
            if it has one, else FLAME's counts (5023 vertices) without the distance.
        check_images: check the image lists' entries against the image folders.
        batch_size: subjects per FLAME evaluation.
        default_model: gives the model to use when ``model`` is None and the root carries none (the
            command line's ``$ONFLAME_MODEL``).

    Raises :class:`InputError` only if ``root`` or ``model`` cannot be opened at all.
    """
    mica = root if isinstance(root, MicaRoot) else open_root(root)
    if model is None and mica.model_file is not None:  # a dataset built on another model says which
        model = mica.model_file
    elif model is None and default_model is not None:
        model = default_model()
    flame_model = load_model(model) if isinstance(model, (str, os.PathLike)) else model
    label = None if flame_model is None else (
        f"{model if isinstance(model, (str, os.PathLike)) else (model.source or '<model>')} "
        f"({flame_model.n_vertices} vertices)")
    report = ValidationReport(str(mica.path), label)
    for exc in mica.problems:
        report.add(ERROR, Path(exc.path or "").stem, exc.path or mica.path, exc.problem)
    checker = _RegistrationChecker(flame_model, batch_size)
    try:
        for subset in mica.subsets.values():
            report.subsets[subset.name] = SubsetStats(subset.name, str(subset.location))
            for exc in subset.problems:
                report.add(ERROR, subset.name, exc.path or subset.location, exc.problem)
            _check_files(subset, report, checker)
            _check_image_list(subset, report, check_images)
    finally:
        if not isinstance(root, MicaRoot):
            mica.close()
    return report


class _RegistrationChecker:
    """Vertex/triangle counts, and registration-to-FLAME(params) distances in batches, judged per subject."""

    def __init__(self, model: FlameModel | None, batch_size: int):
        self.n_vertices = FLAME_VERTICES if model is None else model.n_vertices
        self.n_triangles = FLAME_TRIANGLES if model is None else int(model.faces.shape[0])
        self.layer = None
        if model is not None:
            import torch

            from ..flame.layer import FLAME

            self.layer = FLAME(model, dtype=torch.float64)
        self.batch_size = batch_size
        self.pending: list[tuple[str, str, FlameParams, np.ndarray]] = []
        self.means: list[float] = []
        self.max_mm: float | None = None
        self.worst: str | None = None

    def start(self, report: ValidationReport, subset: str) -> None:
        self.pending, self.means, self.max_mm, self.worst = [], [], None, None
        self.report, self.subset = report, subset

    def counts_problem(self, n_vertices: int, n_triangles: int) -> str | None:
        if n_vertices != self.n_vertices:
            return f"registration has {n_vertices} vertices, expected {self.n_vertices}"
        if n_triangles != self.n_triangles:
            return f"registration has {n_triangles} triangles, expected {self.n_triangles}"
        return None

    def add(self, subject: Subject, params: FlameParams, vertices: np.ndarray) -> None:
        """Queue a subject (its parameter file is named in a problem line)."""
        if self.layer is None:
            return
        self.pending.append((subject.params_path, subject.key, params, vertices))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending or self.layer is None:
            return
        verts = self.layer.vertices_of([p for _, _, p, _ in self.pending])
        d = np.linalg.norm(verts - np.stack([v for _, _, _, v in self.pending]), axis=-1) * 1000.0
        means, maxima = d.mean(1), d.max(1)
        self.means.extend(means.tolist())
        for (label, _, _, _), mean_mm, max_mm in zip(self.pending, means, maxima):
            for problem in distance_problems(float(mean_mm), float(max_mm)):
                self.report.add(ERROR, self.subset, label, problem)
        worst = int(maxima.argmax())
        if self.max_mm is None or maxima[worst] > self.max_mm:
            self.max_mm, self.worst = float(maxima[worst]), self.pending[worst][1]
        self.pending = []

    def finish(self, stats: SubsetStats) -> None:
        self.flush()
        stats.compared = len(self.means)
        if self.means:
            stats.mean_mm, stats.max_mm, stats.worst = float(np.mean(self.means)), self.max_mm, self.worst


def _check_files(subset: Subset, report: ValidationReport, checker: _RegistrationChecker) -> None:
    """Counterparts, parameter files and registrations of one subset."""
    name, stats = subset.name, report.subsets[subset.name]
    params, regs = subset.params_files(), subset.registration_files()
    p_actors, r_actors = {a for a, _ in params}, {a for a, _ in regs}
    stats.actors, stats.subjects, stats.registrations = len(p_actors | r_actors), len(params), len(regs)
    for actor in sorted(p_actors - r_actors):
        report.add(ERROR, name, subset.label(f"{PARAMS_DIR}/{actor}"),
                   f"actor has parameter files but no {REGISTRATIONS_DIR}/{actor}/*.obj")
    for actor in sorted(r_actors - p_actors):
        report.add(ERROR, name, subset.label(f"{REGISTRATIONS_DIR}/{actor}"),
                   f"actor has registrations but no {PARAMS_DIR}/{actor}/*.npz")
    for (actor, stem) in sorted(regs.keys() - params.keys()):
        if actor in p_actors:
            report.add(ERROR, name, subset.label(regs[(actor, stem)]),
                       f"no matching {PARAMS_DIR}/{actor}/{stem}.npz")

    checker.start(report, name)
    for subject in subset.subjects():
        if subject.registration_path is None and subject.actor in r_actors:
            report.add(ERROR, name, subject.params_path,
                       f"no matching {REGISTRATIONS_DIR}/{subject.actor}/{subject.name}.obj")
        p = _judged_params(report, name, subject)
        if subject.registration_path is None:
            continue
        mesh = _read(report, name, subject.registration_path, subject.registration)
        if mesh is None:
            continue
        problem = checker.counts_problem(mesh.n_vertices, mesh.n_faces)
        if problem:
            report.add(ERROR, name, subject.registration_path, problem)
        elif p is not None:
            checker.add(subject, p, mesh.vertices)
    checker.finish(stats)


def _judged_params(report: ValidationReport, subset: str, subject: Subject) -> FlameParams | None:
    """The subject's parameters, each problem of their file recorded: unreadable, MICA's keys and lengths,
    implausible magnitudes (:mod:`.plausible`). None when they cannot be read."""
    label = subject.params_path
    arrays = _read(report, subset, label, subject.params_arrays)
    if arrays is None:
        return None
    p = _read(report, subset, label, lambda: params_from_arrays(arrays, label))
    if p is not None:  # the reader takes 300 to 400 betas; MICA's trainer needs 400
        for problem in length_problems(arrays) + magnitude_problems(p.shape, p.expression, p.pose, p.trans):
            report.add(ERROR, subset, label, problem)
    return p


def _read(report: ValidationReport, subset: str, label: str, read: Any) -> Any:
    """``read()``, or None with the problem recorded.

    The readers raise :class:`InputError` for bad files; anything else they raise is recorded too,
    because one odd file must not stop the check of all the others.
    """
    try:
        return read()
    except InputError as exc:
        report.add(ERROR, subset, exc.path or label, exc.problem)
    except Exception as exc:  # noqa: BLE001 (see docstring)
        report.add(ERROR, subset, label, f"unreadable ({type(exc).__name__}: {exc})")
    return None


def _check_image_list(subset: Subset, report: ValidationReport, check_images: bool) -> None:
    """The subset's image list against its actors, parameter files and (optionally) image files."""
    if subset.image_list is None:
        return
    name, stats, list_path = subset.name, report.subsets[subset.name], str(subset.image_list)
    try:
        mapping = read_image_paths(subset.image_list)
    except InputError as exc:
        report.add(ERROR, name, list_path, exc.problem)
        return
    params = subset.params_files()
    p_actors, p_rels = {a for a, _ in params}, set(params.values())
    stats.images_listed = sum(len(images) for images, _ in mapping.values())
    for actor, (_, npz) in mapping.items():
        if actor not in p_actors:
            report.add(ERROR, name, list_path, f"actor {actor!r} is listed but has no {PARAMS_DIR}/{actor}/ files")
        elif f"{PARAMS_DIR}/{npz}" not in p_rels:
            report.add(ERROR, name, list_path, f"actor {actor!r}: listed parameter file {PARAMS_DIR}/{npz} is missing")
    for actor in sorted(p_actors - mapping.keys()):
        report.add(WARNING, name, list_path, f"actor {actor!r} has parameters but is not listed (MICA will not "
                                             "train on it)")
    folder = subset.image_folder() if check_images else None
    if folder is None:
        return
    present = set(subset.files(folder))
    found, no_blob = 0, []
    for actor, (images, _) in mapping.items():
        for image in images:
            rel = f"{folder}/{image}"
            if rel not in present:
                report.add(ERROR, name, subset.label(rel), f"listed for actor {actor!r} in {list_path} but missing")
                continue
            found += 1
            blob = str(PurePosixPath(rel).with_suffix(".npy"))
            if folder == "arcface_input" and blob not in present:
                no_blob.append(blob)
    stats.images_found = found
    if no_blob:  # one line, not one per image: a tree without the blobs would otherwise flood the report
        report.add(WARNING, name, subset.label(no_blob[0]),
                   f"{len(no_blob)} of {found} listed images have no ArcFace input .npy beside them "
                   "(MICA loads <image>.npy); this is the first")
