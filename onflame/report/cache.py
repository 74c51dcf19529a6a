"""Content keys for the report's pictures, so that a report of an unchanged root draws nothing again.

A subject's pictures are named by a key: the SHA-256 of everything they are drawn from (the mesh's and
parameter file's bytes, the scan's, the model's digest, the picture settings). Unchanged inputs give the
same key, and a key whose result is on disk is not drawn again; a changed file gives a new key.

Hashing every scan on every run would cost more than drawing (raw scans are tens of MB), so file digests
are remembered with the file's size and modification time (``.cache/digests.json``), as make and rsync
decide, and the build's manifest, which records the SHA-256 of every scan it read, seeds them.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..dataset.manifest import file_sha256
from ..fileio import write_json

DIGESTS_FILE = "digests.json"


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
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                self.known = {k: v for k, v in data.items() if isinstance(v, dict)}
        except (OSError, ValueError):
            pass  # no index yet, or a damaged one: every file is hashed again
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
