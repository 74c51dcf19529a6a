"""Content keys for the report's pictures, so that a report of an unchanged root draws nothing again.

A subject's pictures are named by a key: the SHA-256 of everything they are drawn from (the mesh's and
parameter file's bytes, the scan's, the model's digest, the picture settings). Unchanged inputs give the
same key, and a key whose result is on disk is not drawn again; a changed file gives a new key.

Hashing every scan on every run would cost more than drawing (raw scans are tens of MB), so file digests
are remembered with the file's size and modification time (``.cache/digests.json``), as make and rsync
decide, and the build's manifest, which records the SHA-256 of every scan it read, seeds them.

What a report wrote is recorded with each file's size (:class:`SiteRecord`, ``.cache/written.json``):
a later run reuses a picture or photo only while it is still a regular file of that size, and removes
only recorded files that it no longer uses, never following a link.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Iterable

from ..dataset.manifest import file_sha256
from ..fileio import SIDE_FILE_MAX_BYTES, confine_writes, read_text, remove_file, write_json

DIGESTS_FILE = "digests.json"
RECORD_FILE = "written.json"


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def value_key(value: Any) -> str:
    """SHA-256 of a JSON-able value (sorted keys): the key of a picture job."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class DigestIndex:
    """SHA-256 of files, remembered by (size, mtime) between runs (see the module docstring).

    Args:
        cache_dir: the site's ``.cache`` folder (the index is ``digests.json`` in it).
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.path = Path(cache_dir) / DIGESTS_FILE
        self.known: dict[str, dict] = {}
        self.hashed = 0
        self.known = {k: v for k, v in _read_json_dict(self.path).items() if isinstance(v, dict)}
        self.used: dict[str, dict] = {}

    def seed(self, path: str, record: dict) -> None:
        """Take a digest recorded elsewhere (``{"size", "mtime_ns", "sha256"}``, the build manifest's)."""
        if path not in self.known and {"size", "mtime_ns", "sha256"} <= record.keys():
            self.known[path] = {k: record[k] for k in ("size", "mtime_ns", "sha256")}

    def digest(self, path: str | os.PathLike) -> str | None:
        """SHA-256 of ``path``'s bytes, or None if it cannot be read."""
        p = str(path)
        try:
            st = os.stat(p)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device is never opened (it could block forever)
            return None
        rec = self.known.get(p)
        if rec is None or rec.get("size") != st.st_size or rec.get("mtime_ns") != st.st_mtime_ns:
            try:
                rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(p)}
            except OSError:
                return None
            self.hashed += 1
            self.known[p] = rec
        self.used[p] = rec
        return rec["sha256"]

    def save(self) -> None:
        """Keep the digests of the files this run used."""
        write_json(self.path, dict(sorted(self.used.items())))


def _read_json_dict(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when there is none, or it is damaged (nothing is reused then)."""
    try:
        data = json.loads(read_text(path, SIDE_FILE_MAX_BYTES, errors="strict"))
    except (ValueError, RecursionError):  # InputError (missing, not a regular file, too large) is a ValueError
        return {}
    return data if isinstance(data, dict) else {}


def whole_file(path: Path, size: int | None) -> bool:
    """True when ``path`` is a regular file (not a link) of ``size`` bytes: what was written is still there."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and size is not None and st.st_size == size


class SiteRecord:
    """The files a report wrote (site-relative paths) and their sizes, kept in ``.cache/written.json``.

    Args:
        out: the site's folder.
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out / ".cache" / RECORD_FILE
        self.sizes: dict[str, int] = {k: v for k, v in _read_json_dict(self.path).items()
                                      if isinstance(k, str) and type(v) is int}

    def whole(self, rel: str) -> bool:
        """True when the site file ``rel`` is as this record says it was written."""
        return whole_file(self.out / rel, self.sizes.get(rel))

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Remove the recorded files not in ``keep`` (inside the site, links removed themselves, never
        followed), then the folders that leaves empty; returns the removed paths."""
        keep = set(keep)
        with confine_writes(self.out):
            removed = [rel for rel in sorted(self.sizes)
                       if rel not in keep and _inside(rel) and remove_file(self.out / rel)]
        for folder in sorted({Path(rel).parent for rel in removed}, key=lambda p: len(p.parts), reverse=True):
            while folder.parts:
                try:
                    (self.out / folder).rmdir()  # only an empty real folder goes; a link is no folder here
                except OSError:
                    break
                folder = folder.parent
        return removed

    def save(self, keep: Iterable[str]) -> None:
        """Record ``keep`` (site-relative paths) with their sizes now."""
        sizes = {}
        for rel in sorted(set(keep)):
            try:
                st = os.lstat(self.out / rel)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                sizes[rel] = st.st_size
        self.sizes = sizes
        write_json(self.path, sizes)


def _inside(rel: str) -> bool:
    """A relative path that stays inside the site (a damaged record could name anything)."""
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts
