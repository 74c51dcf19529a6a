"""What every source dataset module provides: a :class:`Source` that finds :class:`ScanItem` s.

A source module knows one raw release (BU-3DFE, FRGC, ...): where its scans, landmarks and photos lie,
which capture MICA made each actor's training subject from, the unit and axes the scanner wrote, and
how MICA names the result. It turns a raw folder into a list of :class:`ScanItem`, each carrying
everything registration needs (scan path, unit, rotation to FLAME's axes, optional landmarks) and the
names the built dataset must use (``<SUBSET>/FLAME_parameters/<actor>/<stem>.npz``, as in MICA's lists).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from ..errors import InputError
from ..mesh import Mesh, read_mesh
from ..mesh.scan_names import landmark_sidecar
from ..units import METRES_PER_UNIT

log = logging.getLogger(__name__)

def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    """(3, 3) right-handed rotation of points by ``degrees`` about ``"x"``, ``"y"`` or ``"z"``."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler(axis.lower(), degrees, degrees=True).as_matrix()


@dataclass(frozen=True, eq=False)
class ScanItem:
    """One raw scan to register, with the names its results get.

    Attributes:
        subset: MICA subset name (``"FRGC"``, ...).
        actor: MICA's actor id (the folder name in MICA's lists), e.g. ``"02463"``.
        stem: the capture id, MICA's file stem, e.g. ``"02463d546"``.
        scan_path: the raw scan file (any format :func:`onflame.mesh.read_mesh` reads).
        landmarks_path: a landmark file shipped with the scan, or None.
        photos: every photo of the actor found in the release; :attr:`Source.photo_rules` picks among them.
        units: unit of the scan's coordinates (``"mm"``, ...), or None where the release states none.
        rotation: (3, 3) rotation from the scan's axes to FLAME's (+y up, face towards +z):
            ``x_flame = metres_per_unit * rotation @ x_raw`` (translation is left to registration).
        texture_expected: the release ships a texture image for each scan.
    """

    subset: str
    actor: str
    stem: str
    scan_path: Path
    landmarks_path: Path | None = None
    photos: tuple[Path, ...] = ()
    units: str | None = "mm"
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    texture_expected: bool = True

    @property
    def name(self) -> str:
        """``<actor>/<stem>``: the item's name inside its subset."""
        return f"{self.actor}/{self.stem}"

    @property
    def params_relpath(self) -> str:
        """Path of its FLAME parameters relative to ``<SUBSET>/FLAME_parameters/``, as in MICA's lists."""
        return f"{self.actor}/{self.stem}.npz"

    @property
    def registration_relpath(self) -> str:
        """Path of its registered mesh relative to ``<SUBSET>/registrations/``."""
        return f"{self.actor}/{self.stem}.obj"

    @property
    def metres_per_unit(self) -> float | None:
        """Metres per scan unit, or None if the unit is unknown (detect it from the scan's size)."""
        return None if self.units is None else METRES_PER_UNIT[self.units]

    def as_dict(self) -> dict:
        """The item as plain JSON-able values (for build manifests and logs)."""
        return {"subset": self.subset, "actor": self.actor, "stem": self.stem, "scan_path": str(self.scan_path),
                "landmarks_path": None if self.landmarks_path is None else str(self.landmarks_path),
                "photos": [str(p) for p in self.photos], "units": self.units,
                "rotation": np.asarray(self.rotation).tolist(), "texture_expected": self.texture_expected}

    def read(self, require_texture: bool = False) -> Mesh:
        """The scan as stored (its units and axes).

        Raises :class:`InputError` naming the scan if it cannot be read, or, with ``require_texture``,
        if its texture image is missing (naming the scan) or does not decode (naming the image).
        """
        mesh = read_mesh(self.scan_path)
        if require_texture and self.texture_expected and mesh.texture is None:
            if "texture_problem" in mesh.meta:  # an image that is there but does not decode: name it
                raise InputError(*mesh.meta["texture_problem"])
            raise InputError(self.scan_path, "texture image not found (the release ships one per scan)")
        return mesh

    def to_flame_frame(self, mesh: Mesh) -> Mesh:
        """``mesh`` (as read from the scan) in metres and FLAME's axes; the origin stays the scanner's.

        An unknown unit is detected from the scan's size (:func:`onflame.registration.units.detect_units`).
        """
        scale = self.metres_per_unit
        if scale is None:
            from ..registration.units import detect_units

            try:
                unit, scale = detect_units(mesh.vertices)
            except InputError as exc:
                raise InputError(self.scan_path, exc.problem) from None
        else:
            unit = self.units
        out = mesh.transformed(rotation=self.rotation, scale=scale)
        out.meta = {**mesh.meta, "units": "m", "units_read": unit}
        return out

    def load(self, require_texture: bool = False) -> Mesh:
        """:meth:`read` then :meth:`to_flame_frame`: the scan in metres and FLAME's axes."""
        return self.to_flame_frame(self.read(require_texture))


@dataclass(frozen=True, eq=False)
class Source:
    """A raw source dataset of MICA.

    Attributes:
        name: MICA subset name (``"BU3DFE"``, ...).
        title: the dataset's usual name.
        units: unit of its scans (None: not stated by the release).
        rotation: (3, 3) rotation from its scans' axes to FLAME's.
        layout: where the scans and photos lie in the raw folder (for messages and docs).
        finder: ``finder(raw_dir, source)`` lists the release's scans (see :meth:`find_scans`).
        actor_id: turns a raw actor name into MICA's actor id.
        texture_expected: its scans come with a texture image.
    """

    name: str
    title: str
    units: str | None
    layout: str
    finder: Callable[[Path, "Source"], list[ScanItem]]
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    actor_id: Callable[[str], str] = str
    texture_expected: bool = True

    @property
    def photo_rules(self) -> Any:
        """MICA's rules for this subset's photos (exclusions, sampling, detection score):
        :func:`onflame.training.rules.photo_rules`. Finders list every photo; the rules pick among them."""
        from ..training.rules import photo_rules

        return photo_rules(self.name)

    def item(self, actor: str, stem: str, scan_path: Path, photos: Iterable[Path] = (),
             landmarks_path: Path | None = None) -> ScanItem:
        """A :class:`ScanItem` of this source (unit, rotation filled in; ``actor`` normalised).

        Without a ``landmarks_path`` from the release, a landmark sidecar beside the scan is used if there
        is one (:func:`landmark_sidecar`).
        """
        if landmarks_path is None:
            landmarks_path = landmark_sidecar(scan_path)
        return ScanItem(self.name, self.actor_id(actor), stem, Path(scan_path), landmarks_path,
                        tuple(sorted(photos)), self.units, self.rotation, self.texture_expected)

    def find_scans(self, raw_dir: str | os.PathLike, only: Mapping[str, str] | None = None) -> list[ScanItem]:
        """The scans to register in a raw release, one per MICA subject where MICA's rule picks one.

        Args:
            raw_dir: the release's root folder (layout: see the source module).
            only: actor -> stem to keep (e.g. :func:`mica_subjects` of MICA's image list), for sources
                whose raw release holds several candidate captures per actor.

        Returns:
            Items sorted by name. Raises :class:`InputError` if ``raw_dir`` is not a folder or holds no
            scan where this source's layout puts them.
        """
        raw_dir = Path(raw_dir)
        if not raw_dir.is_dir():
            raise InputError(raw_dir, "no such folder")
        items = self.finder(raw_dir, self)
        if not items:
            raise InputError(raw_dir, f"no {self.name} scans found (expected {self.layout})")
        by_name: dict[str, ScanItem] = {}
        for it in items:
            if it.name in by_name:
                log.warning("%s: %s found twice (%s, %s); keeping the first", raw_dir, it.name,
                            by_name[it.name].scan_path, it.scan_path)
                continue
            by_name[it.name] = it
        out = sorted(by_name.values(), key=lambda it: it.name)
        if only is not None:
            out = [it for it in out if only.get(it.actor) == it.stem]
        return out


def mica_subjects(image_paths: str | os.PathLike | Mapping) -> dict[str, str]:
    """actor -> capture stem of each subject in a MICA image list (``image_paths/<SUBSET>.npy`` or its dict)."""
    if not isinstance(image_paths, Mapping):
        from ..dataset.image_paths import read_image_paths

        image_paths = read_image_paths(image_paths)
    return {actor: Path(npz).stem for actor, (_, npz) in image_paths.items()}


# --- small helpers the source modules share ----------------------------------------------------------------

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm")


def images_in(folder: Path, pattern: str = "*") -> list[Path]:
    """Image files (by suffix, any case) in ``folder`` matching ``pattern``, sorted; [] if no folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
