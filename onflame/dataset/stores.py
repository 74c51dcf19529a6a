"""Where a subset's files live: a folder or a ``<SUBSET>.zip`` read in place, and the safe extraction
of such a zip.

Both stores give the same view: POSIX paths relative to the subset (``FLAME_parameters/A/x.npz``),
bounded reads, and ``problems`` for what they had to leave out (folders that cannot be read, zip members
extraction would refuse: absolute paths, ``..``, drive letters, symbolic links). Paths of zip members are
written ``<zip>/<member>`` in messages.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import InputError
from ..fileio import MAX_READ_BYTES, MESH_MAX_BYTES, check_regular, read_bounded, temporary_name, zip_member_bytes
from .names import PARAMS_DIR, REGISTRATION_SUFFIXES, REGISTRATIONS_DIR, canonical_name

log = logging.getLogger(__name__)

#: Folders some zip tools add; never part of the data.
JUNK = ("__MACOSX/",)


class FolderStore:
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


class ZipStore:
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
            name = norm(info.filename)
            why = unsafe_reason(info)
            if why:
                self.problems.append(InputError(f"{zip_path}/{info.filename}",
                                                f"unsafe zip member ({why}): left out (extraction refuses this zip)"))
            elif not info.is_dir() and name.startswith(prefix) and not name.startswith(JUNK):
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


Store = FolderStore | ZipStore


def norm(member: str) -> str:
    """A member name with forward slashes (zips made on Windows may use backslashes)."""
    return member.replace("\\", "/")


def open_zip(path: Path) -> zipfile.ZipFile:
    """``path`` opened as a zip; :class:`InputError` naming it if it is not a regular, readable zip."""
    check_regular(path)  # a FIFO would block zipfile's open
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a readable zip ({exc})") from None


def zip_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    """The member prefix (``""`` or ``"<top>/"``) of the folder holding ``FLAME_parameters/``."""
    prefixes = set()
    for name in zf.namelist():
        name = norm(name)
        if name.startswith(JUNK):
            continue
        parts = name.split("/")
        for i, part in enumerate(parts[:-1]):
            if part in (PARAMS_DIR, REGISTRATIONS_DIR):
                prefixes.add("".join(p + "/" for p in parts[:i]))
                break
    if not prefixes:
        raise InputError(path, f"no {PARAMS_DIR}/ or {REGISTRATIONS_DIR}/ folder inside; not a MICA subset zip")
    return min(prefixes, key=lambda p: (p.count("/"), p))


# --- safe extraction --------------------------------------------------------------------------------------

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    """Why extracting ``info`` would write outside its folder (an absolute path, a drive letter, a ``..``
    component, a symbolic link), or None where it is safe."""
    name = norm(info.filename)
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
    name = name or canonical_name(zip_path.stem)
    target = dest / name
    with open_zip(zip_path) as zf:
        for info in zf.infolist():
            why = unsafe_reason(info)
            if why:
                raise InputError(zip_path, f"refusing unsafe member {info.filename!r} ({why})")
        if target.exists():
            log.info("%s already exists; not extracting %s again", target, zip_path)
            return target
        prefix = zip_prefix(zf, zip_path)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = temporary_name(target)
        os.mkdir(tmp)  # mode 0777 less the umask, like the folders it is renamed to (mkdtemp gives 0700)
        try:
            # files inside the temporary folder need no atomic writes of their own: the rename below is
            # what makes the subset appear
            for info in zf.infolist():
                member = norm(info.filename)
                if info.is_dir() or not member.startswith(prefix) or member.startswith(JUNK):
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
