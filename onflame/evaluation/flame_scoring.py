"""Matching FLAME-topology predictions to a MICA root's registrations and scoring them
(:mod:`.flame_topology` runs it and writes the outputs).

A prediction is found by its path (see :mod:`.flame_topology`), read as a mesh or through the FLAME layer
for a parameter file, aligned to its reference on the face region (rigidly or by a similarity) and
measured per vertex; with the raw scans, each scan's predictions are queued as one scan-to-mesh task.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ..errors import InputError, OnflameError
from ..geometry import apply_rigid, rigid_fit
from ..mesh import Mesh, read_mesh
from ..units import METRES_PER_UNIT
from .parallel import run_parallel

#: Table regions -> FLAME_masks names (``cheeks`` is the face without the other regions).
REGIONS = {"face": "face", "nose": "nose", "eyes": "eye_region", "lips": "lips", "forehead": "forehead"}
PRED_SUFFIXES = (".obj", ".ply", ".npz")
#: Folders of a MICA subset that hold no predictions.
_NOT_PREDICTIONS = {"build", "arcface_input", "images", "image_paths"}


def region_indices(masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Vertex indices per table region from FLAME's masks (needs at least ``face``)."""
    out = {name: np.asarray(masks[key], np.int64) for name, key in REGIONS.items() if key in masks}
    if "face" not in out:
        raise KeyError("face")
    others = [out[n] for n in ("nose", "eyes", "lips", "forehead") if n in out]
    out["cheeks"] = np.setdiff1d(out["face"], np.concatenate(others)) if others else out["face"]
    return out


@dataclass(frozen=True)
class FlameSettings:
    """How FLAME-topology predictions are scored.

    Attributes:
        align: ``rigid`` (metrical: scale is scored) or ``similarity``.
        pred_unit: the predicted meshes' unit (parameter files give metres).
        pred_files: ``auto`` (meshes where a subject has both), ``meshes`` or ``params``.
        protocol: crop of the scan-to-mesh variant: ``now`` (1.4) or ``fg2018`` (1.2).
    """

    align: str = "rigid"
    pred_unit: str = "m"
    pred_files: str = "auto"
    protocol: str = "now"


@dataclass
class Reference:
    """One reference subject: its key ``SUBSET/actor/name`` and registration (metres)."""

    subset: str
    actor: str
    name: str
    vertices: np.ndarray
    faces: np.ndarray
    source: str

    @property
    def key(self) -> str:
        return f"{self.subset}/{self.actor}/{self.name}"


def match_predictions(pred: Path, references: dict[str, list[tuple[str, str]]], pred_files: str = "auto"
                      ) -> tuple[dict[tuple[str, str, str], list[Path]], list[str]]:
    """Prediction files under ``pred`` for each reference subject.

    Args:
        pred: the prediction folder.
        references: subset -> ``(actor, name)`` of its reference subjects.
        pred_files: ``auto``, ``meshes`` or ``params``.

    Returns:
        ``({(subset, actor, name): [files]}, [one line per file that matches no subject])``.
    """
    subsets = {s.upper(): s for s in references}
    by_actor: dict[str, list[tuple[str, str, str]]] = {}
    for subset, pairs in references.items():
        for actor, name in pairs:
            by_actor.setdefault(actor, []).append((subset, actor, name))
    found: dict[tuple[str, str, str], list[Path]] = {}
    unmatched: list[str] = []
    for path in sorted(p for p in pred.rglob("*") if p.is_file() and p.suffix.lower() in PRED_SUFFIXES):
        parts = list(PurePosixPath(path.relative_to(pred).as_posix()).parts)
        if parts == ["model.npz"] or path.name.startswith("."):
            continue  # a MICA root's model file; temporaries
        subset = subsets.get(parts[0].upper()) if len(parts) > 1 else None
        if subset is not None:
            parts = parts[1:]
        if parts[0] in _NOT_PREDICTIONS:
            continue
        if parts[0] in ("registrations", "FLAME_parameters") and len(parts) > 2:
            parts = parts[1:]
        actor = parts[0] if len(parts) > 1 else path.stem
        name = str(PurePosixPath(*parts[1:]).with_suffix("")) if len(parts) > 1 else None
        cands = [c for c in by_actor.get(actor, []) if subset is None or c[0] == subset]
        exact = [c for c in cands if c[2] == name]
        if exact or len(cands) == 1:
            found.setdefault((exact or cands)[0], []).append(path)
        elif cands:
            unmatched.append(f"{path}: actor {actor} has {len(cands)} reference captures and none is named {name!r}")
        else:
            unmatched.append(f"{path}: no reference subject for actor {actor!r}"
                             + (f" in {subset}" if subset else ""))
    for key, files in found.items():
        meshes = [p for p in files if p.suffix.lower() != ".npz"]
        params = [p for p in files if p.suffix.lower() == ".npz"]
        found[key] = {"meshes": meshes, "params": params}.get(pred_files, meshes or params)
    return {k: v for k, v in found.items() if v}, unmatched


# --- one prediction -------------------------------------------------------------------------------------------

@dataclass
class FlameItem:
    """One prediction's outcome: per-vertex errors (mm, all vertices) after the face-region alignment."""

    label: str
    key: str
    file: str
    errors: np.ndarray | None = None
    scan: dict | None = None
    scan_distances: np.ndarray | None = None
    error: str | None = None


def align_and_measure(pred_m: np.ndarray, ref_m: np.ndarray, face: np.ndarray, similarity: bool
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Align ``pred_m`` (V, 3) to ``ref_m`` (V, 3) on ``face`` and measure.

    Returns:
        ``(aligned prediction (V, 3) in the reference's unit, per-vertex distances (V,) in mm)``.
    """
    R, t, s = rigid_fit(pred_m[face], ref_m[face], scale=similarity)
    aligned = apply_rigid(pred_m, R, t, s)
    return aligned, np.linalg.norm(aligned - ref_m, axis=1) * 1000.0


def _prediction_vertices(path: Path, settings: FlameSettings, layer) -> np.ndarray:
    if path.suffix.lower() == ".npz":
        from ..flame.params import read_params

        if layer is None:
            raise InputError(path, "a parameter file needs the FLAME model (--model, or a root with model.npz)")
        import torch

        with torch.no_grad():
            return layer(read_params(path)).vertices[0].numpy().astype(np.float64)
    return read_mesh(path).vertices * METRES_PER_UNIT[settings.pred_unit]


# --- scan-to-mesh tasks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ScanTask:
    scan_item: object  # onflame.sources.ScanItem
    reference_mm: np.ndarray
    faces: np.ndarray
    landmarks_mm: np.ndarray
    predictions: tuple  # ((index, aligned vertices mm, landmarks mm), ...)
    metrical: bool
    protocol: str


def _run_scan_task(task: _ScanTask) -> list[tuple[int, np.ndarray | None, dict | str]]:
    """Score one scan's predictions: ``[(index, distances mm or None, details or error line)]``."""
    from ..mesh.distance import SurfaceDistance
    from .scan_to_mesh import prepare_scan, score_prediction

    try:
        scan = task.scan_item.load()
        scan = scan.with_vertices(scan.vertices * 1000.0)
        scan.source = str(task.scan_item.scan_path)
        target = prepare_scan(scan, task.landmarks_mm, task.protocol)
        off = SurfaceDistance(task.reference_mm, task.faces).distances(target.points[target.sample])
        if np.median(off) > 10.0:
            raise InputError(task.scan_item.scan_path, f"the scan lies {np.median(off):.1f} mm (median) from its "
                             "registration: it is not in the frame the registration was made in")
    except OnflameError as exc:
        return [(i, None, str(exc)) for i, _, _ in task.predictions]
    out = []
    for i, vertices, lmk in task.predictions:
        try:
            score = score_prediction(target, Mesh(vertices, task.faces), lmk, task.metrical)
            out.append((i, score.distances.astype(np.float32), score.details()))
        except OnflameError as exc:
            out.append((i, None, str(exc)))
    return out


def _scan_items(scans: dict[str, Path]) -> dict[tuple[str, str, str], object]:
    from ..sources import get_source

    out = {}
    for subset, raw in scans.items():
        for item in get_source(subset).find_scans(raw):
            out[(subset, item.actor, item.stem)] = item
    return out


def load_references(ref: Path, subset: str | None) -> tuple[list[Reference], Path | None]:
    """The registrations of ``ref`` (those ``subset``, comma-separated, names) and the root's model file."""
    from ..dataset import open_root

    with open_root(ref) as root:
        names = list(root.subsets)
        if subset is not None:
            wanted = {s.upper() for s in subset.split(",")}
            names = [n for n in names if n.upper() in wanted]
            if not names:
                raise InputError(ref, f"no subset {subset!r} (found: {', '.join(root.subsets) or 'none'})")
        refs = []
        for name in names:
            for subject in root.subsets[name].subjects():
                if subject.registration_path is None:
                    continue
                mesh = subject.registration()
                refs.append(Reference(subject.subset, subject.actor, subject.name, mesh.vertices, mesh.faces,
                                      subject.registration_path))
        return refs, root.model_file


def resolve_model_and_regions(model, masks: dict | None, embedding, root_model: Path | None, references: list[Reference],
                       ref: Path) -> tuple:
    """``(model or None, region -> vertex indices, landmark embedding or None)``: the model given (a file
    is loaded), else the root's; masks and embedding from the arguments, else the model's. Raises
    :class:`InputError` without masks, without a face region, or with masks of another topology."""
    from ..flame import FlameModel, load_model

    if not isinstance(model, FlameModel) and (model or root_model) is not None:
        model = load_model(model or root_model)
    masks = masks if masks is not None else getattr(model, "masks", None)
    embedding = embedding if embedding is not None else getattr(model, "landmarks", None)
    if not masks:
        raise InputError(ref, "no region masks: give --masks FLAME_masks.pkl or --model (FLAME_masks.pkl beside "
                         "it), or use a root that carries its model.npz")
    try:
        regions = region_indices(masks)
    except KeyError:
        raise InputError(None, "the region masks have no 'face' region") from None
    top = max(int(idx.max()) for idx in regions.values() if len(idx))
    odd = next((r for r in references if len(r.vertices) <= top), None)
    if odd is not None:
        raise InputError(odd.source, f"{len(odd.vertices)} vertices, but the region masks index vertex {top}: "
                         "the masks belong to another topology (give the model the reference was made with)")
    return model, regions, embedding


class Scorer:
    """Scores each method's predictions against the references (per-vertex errors after alignment) and
    collects the scan-to-mesh tasks their scans need (run together by :meth:`run_scans`)."""

    def __init__(self, references: list[Reference], regions: dict[str, np.ndarray], settings: FlameSettings,
                 model, embedding, scans_by_subset: dict[str, Path]):
        self.references, self.regions, self.settings = references, regions, settings
        self.model, self.embedding, self.scans_by_subset = model, embedding, scans_by_subset
        self.refs_by_key = {r.key: r for r in references}
        self.by_subset: dict[str, list[tuple[str, str]]] = {}
        for r in references:
            self.by_subset.setdefault(r.subset, []).append((r.actor, r.name))
        self.scan_items = _scan_items(scans_by_subset) if scans_by_subset else {}
        self.similarity = settings.align == "similarity"
        self.layer = None  # the FLAME layer, made for the first parameter file
        self.tasks: list[_ScanTask] = []
        self.task_items: list[FlameItem] = []

    def score(self, label: str, pred: Path) -> tuple[list[FlameItem], list[str], list[str]]:
        """``(items scored, failure lines, reference keys without a prediction)`` of one method."""
        found, unmatched = match_predictions(pred, self.by_subset, self.settings.pred_files)
        failures = list(unmatched)
        missing = sorted(r.key for r in self.references if (r.subset, r.actor, r.name) not in found)
        items: list[FlameItem] = []
        for (sub, actor, name), files in sorted(found.items()):
            r = self.refs_by_key[f"{sub}/{actor}/{name}"]
            pending = []  # (task item index, aligned vertices mm) for the scan-to-mesh variant
            for path in files:
                item = FlameItem(label, r.key, str(path))
                try:
                    aligned, item.errors = self._measure(path, r)
                    items.append(item)
                    pending.append((len(self.task_items), aligned * 1000.0))
                    self.task_items.append(item)
                except OnflameError as exc:
                    item.error = str(exc)
                    failures.append(str(exc))
            if pending:
                failures += self._add_scan_task((sub, actor, name), r, pending)
        return items, failures, missing

    def _measure(self, path: Path, r: Reference) -> tuple[np.ndarray, dict]:
        if path.suffix.lower() == ".npz" and self.layer is None and self.model is not None:
            import torch

            from ..flame.layer import FLAME

            self.layer = FLAME(self.model, dtype=torch.float64)
        v = _prediction_vertices(path, self.settings, self.layer)
        if v.shape != r.vertices.shape:
            raise InputError(path, f"{len(v)} vertices; the reference {r.source} has {len(r.vertices)}")
        return align_and_measure(v, r.vertices, self.regions["face"], self.similarity)

    def _add_scan_task(self, key: tuple[str, str, str], r: Reference, pending: list) -> list[str]:
        """Queue the scan-to-mesh task of reference ``r``'s raw scan; failure lines (no scan found)."""
        scan_item = self.scan_items.get(key)
        if scan_item is None:
            sub = key[0]
            return ([f"{self.scans_by_subset[sub]}: scan-to-mesh: no raw scan of {r.key} found there"]
                    if sub in self.scans_by_subset else [])
        from .now_landmarks import from_flame

        ref_mm = r.vertices * 1000.0
        self.tasks.append(_ScanTask(scan_item, ref_mm, r.faces, from_flame(ref_mm, r.faces, self.embedding),
                                    tuple((i, v, from_flame(v, r.faces, self.embedding)) for i, v in pending),
                                    not self.similarity, self.settings.protocol))
        return []

    def run_scans(self, workers: int, say: Callable[[str], None], failures: dict[str, list[str]]) -> None:
        """Run the queued scan-to-mesh tasks; their distances go to the items, their failures to ``failures``."""
        if not self.tasks:
            return
        say(f"scan-to-mesh: {sum(len(t.predictions) for t in self.tasks)} predictions on {len(self.tasks)} scans")

        def broken(task: _ScanTask, why: str) -> list:
            return [(i, None, f"{task.scan_item.scan_path}: {why}") for i, _, _ in task.predictions]

        def done(batch: list) -> None:
            for i, dist, details in batch:
                it = self.task_items[i]
                if dist is None:
                    failures[it.label].append(f"{it.file}: scan-to-mesh: {details}")
                else:
                    it.scan_distances, it.scan = dist, details

        run_parallel(_run_scan_task, self.tasks, workers, done, on_broken=broken)
