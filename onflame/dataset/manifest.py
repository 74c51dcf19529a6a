"""The build manifest: what a subset build has done, so that a re-run does only what is left.

``<SUBSET>/build/manifest.json`` holds one record per scan (``<actor>/<stem>``): its status, the
fingerprints of the input files the task read (size, modification time, SHA-256), the SHA-256 of every
file it wrote, the task's configuration key (model, registration settings, scan unit and axes,
landmark choice) and its timings. A scan is finished when its record has the current key, every input
still has its recorded content and every output is on disk with its recorded checksum; anything else
(a changed scan or landmark file, another model, an output deleted or left half-written by a killed
run) is done again. The build rewrites the manifest atomically after each completed scan.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import write_json

log = logging.getLogger(__name__)

#: Format tag of manifest files.
MANIFEST_FORMAT = "onflame-build-manifest-1"
#: Chunk size for hashing files.
_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | os.PathLike) -> dict:
    """``{"size", "mtime_ns", "sha256"}`` of an input file."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def input_unchanged(path: str | os.PathLike, recorded: dict) -> bool:
    """True if ``path`` still has the content ``recorded`` by :func:`fingerprint`.

    Size and modification time equal to the record are taken as unchanged (as make and rsync do: raw
    scans are large, and hashing every one on every re-run would cost more than it saves); otherwise the
    content is hashed, so a file touched but not changed is not redone.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return file_sha256(path) == recorded.get("sha256")


def value_digest(value: Any) -> str:
    """Hex SHA-256 of a value built from dataclasses, mappings, sequences, arrays and scalars.

    Arrays count by dtype, shape and bytes; dataclass fields named ``source`` (where a model was read
    from) or marked ``metadata={"provenance": True}`` are left out, so the same model read from two
    files has the same digest.
    """
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, v: Any) -> None:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        h.update(f"<{type(v).__name__}>".encode())
        for f in dataclasses.fields(v):
            if f.name != "source" and not f.metadata.get("provenance"):
                h.update(f.name.encode())
                _feed(h, getattr(v, f.name))
    elif isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        h.update(f"<nd {a.dtype.str} {a.shape}>".encode())
        h.update(a.tobytes())
    elif isinstance(v, dict):
        h.update(b"<dict>")
        for k in sorted(v, key=str):
            h.update(str(k).encode())
            _feed(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(f"<seq {len(v)}>".encode())
        for x in v:
            _feed(h, x)
    else:
        h.update(f"<{type(v).__name__}>{v!r}".encode())


class Manifest:
    """The records of one subset build (see the module docstring).

    Attributes:
        path: the manifest file.
        header: build-wide facts (source, raw folder, model digest, settings) from the last save.
        records: ``<actor>/<stem>`` -> record (JSON-ready dict, written by :func:`onflame.dataset.build_task.run_task`).
    """

    def __init__(self, path: str | os.PathLike, header: dict | None = None, records: dict | None = None):
        self.path = Path(path)
        self.header = dict(header or {})
        self.records: dict[str, dict] = dict(records or {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["Manifest", str | None]:
        """The manifest at ``path`` and None, or an empty one and the reason when it is missing or unreadable.

        An unreadable manifest (not JSON, another format) is not fatal: every scan is checked again.
        """
        path = Path(path)
        if not path.is_file():
            return cls(path), None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("records"), dict):
                raise ValueError(f"not a {MANIFEST_FORMAT} file")
        except (OSError, ValueError, AttributeError) as exc:
            return cls(path), f"{path}: unreadable build manifest ({exc}); every scan is checked again"
        return cls(path, data.get("header"), data["records"]), None

    def save(self) -> None:
        """Write the manifest atomically (records sorted by name, so equal builds write equal files)."""
        write_json(self.path, {"format": MANIFEST_FORMAT, "header": self.header,
                               "records": dict(sorted(self.records.items()))})

    def finished(self, name: str, key: str, subset_dir: str | os.PathLike, retry_failed: bool = False) -> bool:
        """True if the record of ``name`` shows the work is done and still valid (see the module docstring).

        Failed records count as done when the failure came from the input (a bad file fails again the
        same way) unless ``retry_failed``; failures of the machinery (a crashed worker) are retried.
        """
        rec = self.records.get(name)
        if rec is None or rec.get("key") != key:
            return False
        if rec.get("status") == "failed" and (retry_failed or rec.get("retry", True)):
            return False
        for p, fp in rec.get("inputs", {}).items():
            if not input_unchanged(p, fp):
                log.info("%s: input %s changed since the last build", name, p)
                return False
        root = Path(subset_dir)
        for rel, digest in rec.get("outputs", {}).items():
            out = root / rel
            if not out.is_file() or file_sha256(out) != digest:
                log.info("%s: output %s missing or not the one recorded", name, out)
                return False
        return True
