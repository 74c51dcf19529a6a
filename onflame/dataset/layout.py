"""The MICA dataset layout: open a root, list its subsets and subjects, read a subset from its zip.

A MICA root holds one entry per subset (``BP4D, BU3DFE, D3DFACS, FACEWAREHOUSE, FLORENCE, FRGC, LYHM,
STIRLING``), either a folder or the downloaded ``<SUBSET>.zip``::

    ROOT/
      image_paths/<SUBSET>.npy            MICA's image lists (or ROOT/<SUBSET>/image_paths/<SUBSET>.npy)
      <SUBSET>/
        FLAME_parameters/<actor>/<name>.npz   betas (400,), pose (15,), trans (3,)
        registrations/<actor>/<name>.obj      the scan registered in FLAME topology, metres
        arcface_input/ or images/             optional: the images the lists name
      <SUBSET>.zip                        the same tree, with or without a top folder <SUBSET>/

A subject is one parameter file; its registration is the mesh with the same actor and name. Zip subsets
are read in place (members are read into memory; a registration goes through a temporary file for the
mesh reader); members that extraction would refuse (absolute paths, ``..``, symbolic links) are left
out and listed in :attr:`Subset.problems`. The names of the tree are in :mod:`.names`; how a folder or a
zip is read, and the zip's safe extraction, in :mod:`.stores`.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import InputError
from ..fileio import MAX_READ_BYTES, PARAMS_MAX_BYTES, file_kind
from ..flame import FlameParams, read_params
from ..mesh import Mesh, read_mesh
from .image_paths import ImagePaths, read_image_paths
from .names import (IMAGE_DIRS, MODEL_FILE, PARAMS_DIR, REGISTRATION_SUFFIXES, REGISTRATIONS_DIR, SUBSETS,
                    canonical_name)
from .stores import FolderStore, Store, ZipStore, open_zip, zip_prefix

log = logging.getLogger(__name__)


# --- subjects and subsets ---------------------------------------------------------------------------------

@dataclass
class Subject:
    """One parameter file of a subset, with its registration if there is one.

    Attributes:
        subset: subset name, e.g. ``"BP4D"``.
        actor: the actor folder, e.g. ``"F001"``.
        name: file stem inside the actor folder (with sub-folders, POSIX), e.g. ``"F001"``.
        params_path: the ``.npz`` (a path, or ``<zip>/<member>`` for zip subsets).
        registration_path: the registration mesh, or None when it is missing.
    """

    subset: str
    actor: str
    name: str
    params_path: str
    registration_path: str | None
    _store: Store = field(repr=False, compare=False)
    _params_rel: str = field(repr=False, compare=False)
    _registration_rel: str | None = field(repr=False, compare=False)
    _params: FlameParams | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> str:
        """``subset/actor/name``: unique within a root."""
        return f"{self.subset}/{self.actor}/{self.name}"

    @property
    def params(self) -> FlameParams:
        """The subject's :class:`FlameParams` (read once; :class:`InputError` if the file is bad)."""
        if self._params is None:
            data = self._store.read_bytes(self._params_rel, PARAMS_MAX_BYTES)
            self._params = read_params(io.BytesIO(data), name=self.params_path)
        return self._params

    def params_arrays(self) -> dict:
        """The parameter file's arrays as stored (name -> array; shapes unchecked: :mod:`.validate` judges them)."""
        from ..fileio import read_npz

        return read_npz(io.BytesIO(self._store.read_bytes(self._params_rel)), self.params_path)

    def training_targets(self) -> dict:
        """MICA's training targets (``shape_params``, ``expression_params``, ``pose_params``)."""
        return self.params.training_targets()

    def registration(self) -> Mesh:
        """Read the registration mesh (metres). :class:`InputError` if missing or unreadable."""
        if self._registration_rel is None:
            raise InputError(self.params_path, f"no registration for {self.key}")
        with self._store.local_file(self._registration_rel) as local:
            try:
                mesh = read_mesh(local)
            except InputError as exc:  # name the member, not the temporary copy
                raise InputError(self.registration_path, exc.problem) from None
        mesh.source = self.registration_path or mesh.source
        return mesh


def _by_actor(store: Store, top: str, suffixes: tuple[str, ...]) -> dict[tuple[str, str], str]:
    """``(actor, name) -> rel`` for files ``top/<actor>/<name><suffix>``."""
    out = {}
    for rel in store.files(top):
        p = PurePosixPath(rel)
        parts = p.relative_to(top).parts
        if len(parts) < 2 or p.suffix.lower() not in suffixes:
            continue
        out[(parts[0], str(PurePosixPath(*parts[1:]).with_suffix("")))] = rel
    return out


class Subset:
    """One subset of a MICA root (a folder or a zip). See the module docstring for the layout.

    Attributes:
        name: the subset's name (``BP4D``, ...).
        location: its folder or zip file.
        image_list: its image list ``.npy`` if one was found, else None.
    """

    def __init__(self, name: str, store: Store, image_list: Path | None):
        self.name = name
        self._store = store
        self.location: Path = store.location
        self.image_list = image_list
        self._index: tuple[dict, dict] | None = None

    def __repr__(self) -> str:
        return f"Subset({self.name!r}, {str(self.location)!r})"

    @property
    def is_zip(self) -> bool:
        return isinstance(self._store, ZipStore)

    def label(self, rel: str) -> str:
        """How a file inside the subset is named in messages (a path, or ``<zip>/<member>``)."""
        return self._store.label(rel)

    @property
    def problems(self) -> list[InputError]:
        """What of the subset is left out: zip members that cannot be read safely, folders that cannot be
        listed or are named like a subject's file (the subset's files are listed first)."""
        self._files()
        return self._store.problems

    def params_files(self) -> dict[tuple[str, str], str]:
        """``(actor, name) -> rel path`` of every ``FLAME_parameters/<actor>/<name>.npz``."""
        return self._files()[0]

    def registration_files(self) -> dict[tuple[str, str], str]:
        """``(actor, name) -> rel path`` of every ``registrations/<actor>/<name>.obj`` (or ``.ply``)."""
        return self._files()[1]

    def _files(self) -> tuple[dict, dict]:
        if self._index is None:
            self._index = (_by_actor(self._store, PARAMS_DIR, (".npz",)),
                           _by_actor(self._store, REGISTRATIONS_DIR, REGISTRATION_SUFFIXES))
        return self._index

    def actors(self) -> list[str]:
        """Sorted actors with a parameter file or a registration."""
        params, regs = self._files()
        return sorted({a for a, _ in params} | {a for a, _ in regs})

    def subjects(self) -> Iterator[Subject]:
        """Every parameter file as a :class:`Subject`, sorted by actor then name."""
        params, regs = self._files()
        for (actor, name), rel in sorted(params.items()):
            reg = regs.get((actor, name))
            yield Subject(self.name, actor, name, self.label(rel), None if reg is None else self.label(reg),
                          self._store, rel, reg)

    def image_folder(self) -> str | None:
        """``"arcface_input"`` or ``"images"``, whichever is present first, else None."""
        return next((d for d in IMAGE_DIRS if self._store.has_dir(d)), None)

    def files(self, top: str) -> list[str]:
        """Rel paths of the files under folder ``top`` of the subset (recursive, sorted)."""
        return self._store.files(top)

    def read_bytes(self, rel: str, limit: int = MAX_READ_BYTES) -> bytes:
        """The bytes of a file inside the subset, at most ``limit`` (:class:`InputError` naming it if it
        cannot be read, is not a regular file or is larger)."""
        return self._store.read_bytes(rel, limit)

    def read_image_paths(self) -> ImagePaths | None:
        """The subset's image list, or None if it has none (:class:`InputError` if it is unreadable)."""
        return None if self.image_list is None else read_image_paths(self.image_list)

    def close(self) -> None:
        self._store.close()


@dataclass
class MicaRoot:
    """An opened MICA root.

    Attributes:
        path: the root folder.
        subsets: name -> :class:`Subset`, sorted by name.
        problems: zips that looked like subsets but could not be opened (the rest is still usable).
    """

    path: Path
    subsets: dict[str, Subset]
    problems: list[InputError] = field(default_factory=list)

    @property
    def all_problems(self) -> list[InputError]:
        """The root's problems, then each subset's (zip members left out as unsafe)."""
        return self.problems + [p for s in self.subsets.values() for p in s.problems]

    def subjects(self) -> Iterator[Subject]:
        """Every subject of every subset."""
        for subset in self.subsets.values():
            yield from subset.subjects()

    @property
    def model_file(self) -> Path | None:
        """``ROOT/model.npz``: the model a dataset was built with, when it is not FLAME itself (e.g. the demo's)."""
        cand = self.path / MODEL_FILE
        return cand if cand.is_file() else None

    def summary(self) -> dict:
        """Counts per subset (actors, subjects, registrations, image list entries) and the root's model file."""
        out: dict = {"root": str(self.path), "model_file": None if self.model_file is None else str(self.model_file),
                     "subsets": {}}
        for name, subset in self.subsets.items():
            params, regs = subset.params_files(), subset.registration_files()
            entry = {"location": str(subset.location), "zip": subset.is_zip,
                     "actors": len({a for a, _ in params} | {a for a, _ in regs}),
                     "parameter_files": len(params), "registrations": len(regs)}
            if subset.image_list is not None:
                from .image_paths import summarise_image_paths

                entry["image_list"] = summarise_image_paths(subset.read_image_paths())
            out["subsets"][name] = entry
        out["problems"] = [str(p) for p in self.all_problems]
        return out

    def close(self) -> None:
        """Close the subsets' zip files."""
        for subset in self.subsets.values():
            subset.close()

    def __enter__(self) -> "MicaRoot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_subset_folder(path: Path) -> bool:
    """Whether ``path`` holds ``FLAME_parameters/`` or ``registrations/``; :class:`InputError` naming
    ``path`` where it cannot be entered (a stat below it would name a file that is not the problem)."""
    try:
        return (path / PARAMS_DIR).is_dir() or (path / REGISTRATIONS_DIR).is_dir()
    except OSError as exc:
        raise InputError(path, f"cannot read this folder ({exc.strerror or exc})") from None


def _image_list(root: Path, name: str) -> Path | None:
    for cand in (root / "image_paths" / f"{name}.npy", root / name / "image_paths" / f"{name}.npy"):
        if cand.is_file():
            return cand
    return None


def open_root(path: str | os.PathLike) -> MicaRoot:
    """Open a MICA root folder, a single subset folder, or a single ``<SUBSET>.zip``.

    In a root folder, every sub-folder holding ``FLAME_parameters/`` or ``registrations/`` is a subset,
    and so is every zip holding them (a folder wins over a zip of the same name: it is the extracted
    copy). A zip named after a MICA subset that cannot be read is recorded in ``problems``; other zips
    are ignored. Raises :class:`InputError` if ``path`` is missing or holds no subset.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not path.is_file() and not path.is_dir():
        raise InputError(path, f"is {file_kind(path.stat().st_mode)}, not a MICA root folder or subset zip")
    root = path.parent if path.is_file() or _is_subset_folder(path) else path
    subsets: dict[str, Subset] = {}
    problems: list[InputError] = []
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise InputError(path, "expected a MICA root folder, a subset folder or a <SUBSET>.zip")
        subsets[canonical_name(path.stem)] = _zip_subset(path, root)
    elif _is_subset_folder(path):
        subsets[path.name] = Subset(path.name, FolderStore(path), _image_list(root, path.name))
    else:
        # hidden entries are skipped: e.g. an interrupted extraction's temporary folder
        children = sorted(c for c in path.iterdir() if not c.name.startswith("."))
        for child in children:
            try:
                if child.is_dir() and _is_subset_folder(child):
                    subsets[child.name] = Subset(child.name, FolderStore(child), _image_list(root, child.name))
            except InputError as exc:  # a subset's folder is named; other folders are not the dataset's
                if canonical_name(child.name) in SUBSETS:
                    problems.append(exc)
                else:
                    log.info("ignoring %s: %s", child, exc.problem)
        for child in children:
            name = canonical_name(child.stem)
            if child.suffix.lower() != ".zip" or not child.is_file() or name in subsets:
                continue
            try:
                subsets[name] = _zip_subset(child, root)
            except InputError as exc:
                if name in SUBSETS:
                    problems.append(exc)
                else:
                    log.info("ignoring %s: %s", child, exc.problem)
    if not subsets and not problems:
        raise InputError(path, f"no MICA subsets found (expected folders or zips holding {PARAMS_DIR}/, "
                               f"e.g. {', '.join(SUBSETS[:3])}, ...)")
    return MicaRoot(root, dict(sorted(subsets.items())), problems)


def _zip_subset(path: Path, root: Path) -> Subset:
    zf = open_zip(path)
    try:
        prefix = zip_prefix(zf, path)
    except InputError:
        zf.close()
        raise
    name = canonical_name(path.stem)
    return Subset(name, ZipStore(path, zf, prefix), _image_list(root, name))
