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
out and listed in :attr:`Subset.problems`. :func:`extract_subset` unpacks one safely. Paths of zip members are written
``<zip>/<member>`` in messages.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import InputError
from ..fileio import (MAX_READ_BYTES, MESH_MAX_BYTES, PARAMS_MAX_BYTES, check_regular, file_kind, read_bounded,
                      temporary_name, zip_member_bytes)
from ..flame import FlameParams, read_params
from ..mesh import Mesh, read_mesh
from .image_paths import ImagePaths, read_image_paths

log = logging.getLogger(__name__)

#: The eight subsets of the MICA dataset.
SUBSETS = ("BP4D", "BU3DFE", "D3DFACS", "FACEWAREHOUSE", "FLORENCE", "FRGC", "LYHM", "STIRLING")
PARAMS_DIR = "FLAME_parameters"
REGISTRATIONS_DIR = "registrations"
#: A subset's build records: manifest, summary, per-scan reports, rejected registrations, locks.
BUILD_DIR = "build"
#: Image folders, in the order they are looked for (MICA reads ``arcface_input``).
IMAGE_DIRS = ("arcface_input", "images")
REGISTRATION_SUFFIXES = (".obj", ".ply")
_JUNK = ("__MACOSX/",)  # folders some zip tools add; never part of the data


# --- where a subset's files live: a folder or a zip -------------------------------------------------------

class _FolderStore:
    """A subset stored as a folder. ``rel`` paths are POSIX paths inside it."""

    def __init__(self, root: Path):
        self.root = root
        self.location = root
        self.problems: list[InputError] = []

    def label(self, rel: str) -> str:
        return str(self.root / rel)

    def files(self, top: str) -> list[str]:
        """Files under ``top``; a folder that cannot be listed, or a folder named like a subject's file
        (``x.npz/``), is recorded in ``problems`` (a plain walk would pass over them in silence)."""
        base = self.root / top
        out = []

        def unreadable(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                self._problem(InputError(exc.filename or base, f"cannot read this folder ({exc.strerror or exc})"))

        for dirpath, dirnames, names in os.walk(base, onerror=unreadable):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            out.extend(f"{rel_dir}/{n}" for n in names if not n.startswith("."))
            for d in dirnames:
                if d.lower().endswith((".npz", *REGISTRATION_SUFFIXES)):
                    self._problem(InputError(Path(dirpath) / d, "is a folder, not a file"))
        return sorted(out)

    def _problem(self, exc: InputError) -> None:
        if all(str(p) != str(exc) for p in self.problems):  # listed again by a later call: once
            self.problems.append(exc)

    def has_dir(self, top: str) -> bool:
        return (self.root / top).is_dir()

    def read_bytes(self, rel: str, limit: int = MAX_READ_BYTES) -> bytes:
        return read_bounded(self.root / rel, limit, self.label(rel))

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[Path]:
        yield self.root / rel

    def close(self) -> None:
        pass


class _ZipStore:
    """A subset stored in a zip, under ``prefix`` (``""`` or e.g. ``"BP4D/"``). The zip stays open."""

    def __init__(self, zip_path: Path, zf: zipfile.ZipFile, prefix: str):
        self.location = zip_path
        self.zf = zf
        self.prefix = prefix
        # rel path -> member name, for regular files under the prefix; members extraction would refuse
        # (absolute, '..', drive letter, symbolic link) are left out and reported, as extraction refuses them
        self.members: dict[str, str] = {}
        self.problems: list[InputError] = []
        for info in zf.infolist():
            name = _norm(info.filename)
            why = _unsafe_reason(info)
            if why:
                self.problems.append(InputError(f"{zip_path}/{info.filename}",
                                                f"unsafe zip member ({why}): left out (extraction refuses this zip)"))
            elif not info.is_dir() and name.startswith(prefix) and not name.startswith(_JUNK):
                self.members[name[len(prefix):]] = info.filename

    def label(self, rel: str) -> str:
        return f"{self.location}/{self.prefix}{rel}"

    def files(self, top: str) -> list[str]:
        top = top.rstrip("/") + "/"
        return sorted(r for r in self.members if r.startswith(top))

    def has_dir(self, top: str) -> bool:
        top = top.rstrip("/") + "/"
        return any(r.startswith(top) for r in self.members)

    def read_bytes(self, rel: str, limit: int = MAX_READ_BYTES) -> bytes:
        if rel not in self.members:
            raise InputError(self.label(rel), "no such member")
        return zip_member_bytes(self.zf, self.zf.getinfo(self.members[rel]), limit, self.label(rel))

    @contextlib.contextmanager
    def local_file(self, rel: str) -> Iterator[Path]:
        # the mesh readers take paths; the member goes to a private temporary folder, never into the tree
        with tempfile.TemporaryDirectory(prefix="onflame-") as tmp:
            path = Path(tmp) / PurePosixPath(rel).name
            path.write_bytes(self.read_bytes(rel, MESH_MAX_BYTES))
            yield path

    def close(self) -> None:
        self.zf.close()


_Store = _FolderStore | _ZipStore


def _norm(member: str) -> str:
    return member.replace("\\", "/")


def _open_zip(path: Path) -> zipfile.ZipFile:
    check_regular(path)  # a FIFO would block zipfile's open
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a readable zip ({exc})") from None


def _zip_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    """The member prefix (``""`` or ``"<top>/"``) of the folder holding ``FLAME_parameters/``."""
    prefixes = set()
    for name in zf.namelist():
        name = _norm(name)
        if name.startswith(_JUNK):
            continue
        parts = name.split("/")
        for i, part in enumerate(parts[:-1]):
            if part in (PARAMS_DIR, REGISTRATIONS_DIR):
                prefixes.add("".join(p + "/" for p in parts[:i]))
                break
    if not prefixes:
        raise InputError(path, f"no {PARAMS_DIR}/ or {REGISTRATIONS_DIR}/ folder inside; not a MICA subset zip")
    return min(prefixes, key=lambda p: (p.count("/"), p))


def _canonical_name(name: str) -> str:
    """``bp4d`` -> ``BP4D``; other names are kept as they are."""
    return name.upper() if name.upper() in SUBSETS else name


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
    _store: _Store = field(repr=False, compare=False)
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


def _by_actor(store: _Store, top: str, suffixes: tuple[str, ...]) -> dict[tuple[str, str], str]:
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

    def __init__(self, name: str, store: _Store, image_list: Path | None):
        self.name = name
        self._store = store
        self.location: Path = store.location
        self.image_list = image_list
        self._index: tuple[dict, dict] | None = None

    def __repr__(self) -> str:
        return f"Subset({self.name!r}, {str(self.location)!r})"

    @property
    def is_zip(self) -> bool:
        return isinstance(self._store, _ZipStore)

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


#: Optional file at a root's top naming the model its registrations use (an onflame ``.npz`` model).
MODEL_FILE = "model.npz"


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
        subsets[_canonical_name(path.stem)] = _zip_subset(path, root)
    elif _is_subset_folder(path):
        subsets[path.name] = Subset(path.name, _FolderStore(path), _image_list(root, path.name))
    else:
        # hidden entries are skipped: e.g. an interrupted extraction's temporary folder
        children = sorted(c for c in path.iterdir() if not c.name.startswith("."))
        for child in children:
            try:
                if child.is_dir() and _is_subset_folder(child):
                    subsets[child.name] = Subset(child.name, _FolderStore(child), _image_list(root, child.name))
            except InputError as exc:  # a subset's folder is named; other folders are not the dataset's
                if _canonical_name(child.name) in SUBSETS:
                    problems.append(exc)
                else:
                    log.info("ignoring %s: %s", child, exc.problem)
        for child in children:
            name = _canonical_name(child.stem)
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
    zf = _open_zip(path)
    try:
        prefix = _zip_prefix(zf, path)
    except InputError:
        zf.close()
        raise
    name = _canonical_name(path.stem)
    return Subset(name, _ZipStore(path, zf, prefix), _image_list(root, name))


# --- safe extraction --------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = _norm(info.filename)
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE.match(name):
        return "drive letter"
    if ".." in name.split("/"):
        return "'..' component"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def extract_subset(zip_path: str | os.PathLike, dest: str | os.PathLike, name: str | None = None) -> Path:
    """Unpack a subset zip into ``dest/<name>/`` (``name`` defaults to the zip's stem) and return that folder.

    The top folder inside the zip, if any, is dropped, so the result is always
    ``dest/<name>/FLAME_parameters/...``. Every member is checked first: an absolute path, a drive
    letter, a ``..`` component or a symbolic link refuses the whole zip with an :class:`InputError`
    naming the member. Files go into a temporary folder in ``dest`` that is renamed into place at the
    end, so ``dest/<name>`` is either complete or absent; if it already exists it is returned as it is
    (a re-run resumes).
    """
    zip_path, dest = Path(zip_path), Path(dest)
    name = name or _canonical_name(zip_path.stem)
    target = dest / name
    with _open_zip(zip_path) as zf:
        for info in zf.infolist():
            why = _unsafe_reason(info)
            if why:
                raise InputError(zip_path, f"refusing unsafe member {info.filename!r} ({why})")
        if target.exists():
            log.info("%s already exists; not extracting %s again", target, zip_path)
            return target
        prefix = _zip_prefix(zf, zip_path)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(target)
        os.mkdir(tmp)  # mode 0777 less the umask, like the folders it is renamed to (mkdtemp gives 0700)
        try:
            # files inside the temporary folder need no atomic writes of their own: the rename below is
            # what makes the subset appear
            for info in zf.infolist():
                member = _norm(info.filename)
                if info.is_dir() or not member.startswith(prefix) or member.startswith(_JUNK):
                    continue
                out = tmp / member[len(prefix):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            os.rename(tmp, target)
        except (OSError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputError(zip_path, f"extraction failed ({exc})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
