"""The build manifest: what a subset build has done, so that a re-run does only what is left.

``<SUBSET>/build/manifest.json`` holds one record per scan (``<actor>/<stem>``): its status, the
fingerprints of the input files the task read (size, modification time, SHA-256), the SHA-256 (and size
and modification time) of every file it wrote, the task's configuration key (model, registration
settings, scan unit and axes, landmark choice) and its timings. A scan is finished when its record has
the current key, every input still has its recorded content and every output is on disk with its
recorded checksum; anything else (a changed scan or landmark file, another model, an output deleted or
replaced) is done again.

While a build runs, each completed record is appended as one JSON line to ``build/manifest.journal``
(constant work per scan, whatever the number of scans); the build folds the journal into
``manifest.json`` (written atomically) when it starts and when it ends. A journal line cut short by
``kill -9`` is ignored, and so is a record whose fields have the wrong types (a hand-edited or damaged
manifest): its scan is built again, and the build says how many records it could not use.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..fileio import write_json

log = logging.getLogger(__name__)

#: Format tag of manifest files.
MANIFEST_FORMAT = "onflame-build-manifest-1"
#: The journal of records completed since ``manifest.json`` was last written (one JSON object a line).
JOURNAL_SUFFIX = ".journal"
#: Statuses a record may have.
RECORD_STATUSES = ("registered", "suspect", "failed")
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


# --- checking records ------------------------------------------------------------------------------------------

def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _str_map(x: Any, value_ok) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and value_ok(v) for k, v in x.items())


def _str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(s, str) for s in x)


def _optional_str(x: Any) -> bool:
    return x is None or isinstance(x, str)


def _fingerprint_ok(fp: Any) -> bool:
    return (isinstance(fp, dict) and _is_int(fp.get("size")) and _is_int(fp.get("mtime_ns"))
            and isinstance(fp.get("sha256"), str))


def _stat_ok(s: Any) -> bool:
    return isinstance(s, list) and len(s) == 2 and all(_is_int(v) for v in s)


#: Field -> check of a usable record (fields the build reads; others are kept as they are).
_RECORD_FIELDS = {
    "name": lambda x: isinstance(x, str),
    "key": lambda x: isinstance(x, str),
    "status": lambda x: x in RECORD_STATUSES,
    "verdict": _optional_str,
    "reasons": _str_list,
    "error": _optional_str,
    "retry": lambda x: isinstance(x, bool),
    "warnings": _str_list,
    "landmarks": _optional_str,
    "inputs": lambda x: _str_map(x, _fingerprint_ok),
    "outputs": lambda x: _str_map(x, lambda v: isinstance(v, str)),
    "timings_s": lambda x: _str_map(x, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}
#: Optional fields and their checks.
_OPTIONAL_FIELDS = {"output_stat": lambda x: _str_map(x, _stat_ok)}


def record_usable(name: str, record: Any) -> bool:
    """True if ``record`` is a manifest record for scan ``name`` whose fields all have the types the build
    reads (see :data:`_RECORD_FIELDS`); anything else means "build this scan again"."""
    if not isinstance(record, dict) or record.get("name") != name:
        return False
    if not all(field in record and ok(record[field]) for field, ok in _RECORD_FIELDS.items()):
        return False
    return all(ok(record[f]) for f, ok in _OPTIONAL_FIELDS.items() if f in record)


# --- the manifest ----------------------------------------------------------------------------------------------

class Manifest:
    """The records of one subset build (see the module docstring).

    Attributes:
        path: the manifest file (the journal is ``path`` with :data:`JOURNAL_SUFFIX` added).
        header: build-wide facts (source, raw folder, model digest, settings) from the last save.
        records: ``<actor>/<stem>`` -> record (JSON-ready dict, written by
            :func:`onflame.dataset.build_task.run_task`).
    """

    def __init__(self, path: str | os.PathLike, header: dict | None = None, records: dict | None = None):
        self.path = Path(path)
        self.journal_path = self.path.with_name(self.path.name + JOURNAL_SUFFIX)
        self.header = dict(header or {})
        self.records: dict[str, dict] = dict(records or {})
        self._journal: IO[str] | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["Manifest", list[str]]:
        """The manifest at ``path`` (with its journal applied) and notes on what could not be used.

        Nothing here is fatal: an unreadable manifest (not JSON, another format) means every scan is
        checked again; an unusable record or journal line means its scan is built again.
        """
        path = Path(path)
        manifest, notes = cls(path), []
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
                    raise ValueError(f"not a {MANIFEST_FORMAT} file")
                records = data.get("records")
                if not isinstance(records, dict):
                    raise ValueError("no records")
            except (OSError, ValueError, RecursionError, UnicodeDecodeError) as exc:
                notes.append(f"{path}: unreadable build manifest ({exc}); every scan is checked again")
            else:
                header = data.get("header")
                manifest.header = header if isinstance(header, dict) else {}
                bad = manifest._take(records.items())
                if bad:
                    notes.append(f"{path}: {bad} record(s) with missing or wrongly typed fields; "
                                 "their scans are built again")
        notes += manifest._replay_journal()
        return manifest, notes

    def _take(self, items) -> int:
        """Keep the usable records of ``items`` (name, record); returns how many were not usable."""
        bad = 0
        for name, rec in items:
            if isinstance(name, str) and record_usable(name, rec):
                self.records[name] = rec
            else:
                bad += 1
                if isinstance(name, str):
                    self.records.pop(name, None)  # a later unusable record replaces an earlier one
        return bad

    def _replay_journal(self) -> list[str]:
        if not self.journal_path.is_file():
            return []
        try:
            lines = self.journal_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            return [f"{self.journal_path}: unreadable ({exc.strerror or exc}); the scans it lists are built again"]
        items, torn = [], 0
        for line in lines:
            try:
                entry = json.loads(line)
                items.append((entry["name"], entry["record"]))
            except (ValueError, RecursionError, TypeError, KeyError):
                torn += 1  # a line a killed build did not finish writing
        bad = self._take(items) + torn
        return [f"{self.journal_path}: {bad} unusable line(s); their scans are built again"] if bad else []

    def add(self, name: str, record: dict) -> None:
        """Keep ``record`` and append it to the journal (flushed, so a killed build keeps it).

        Raises :class:`OSError` if the journal cannot be written (the record stays in memory; the next
        :meth:`save` writes it).
        """
        self.records[name] = record
        if self._journal is None:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(self.journal_path, "a", encoding="utf-8")
        self._journal.write(json.dumps({"name": name, "record": record}, sort_keys=False) + "\n")
        self._journal.flush()

    def save(self) -> None:
        """Write ``manifest.json`` atomically (records sorted by name, so equal builds write equal files),
        then drop the journal it now holds."""
        write_json(self.path, {"format": MANIFEST_FORMAT, "header": self.header,
                               "records": dict(sorted(self.records.items()))})
        self.close()
        self.journal_path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the journal (it stays on disk until the next :meth:`save`)."""
        if self._journal is not None:
            try:
                self._journal.close()
            except OSError:  # a full disk refusing the last flush: those lines are rebuilt
                pass
            self._journal = None

    def finished(self, name: str, key: str, subset_dir: str | os.PathLike, retry_failed: bool = False) -> bool:
        """True if the record of ``name`` shows the work is done and still valid (see the module docstring).

        Failed records count as done when the failure came from the input (a bad file fails again the
        same way) unless ``retry_failed``; failures of the machinery (a crashed worker, a full disk) are
        retried. An output whose size and modification time are those recorded is taken as unchanged;
        any other is hashed.
        """
        rec = self.records.get(name)
        if rec is None or rec["key"] != key:
            return False
        if rec["status"] == "failed" and (retry_failed or rec["retry"]):
            return False
        for p, fp in rec["inputs"].items():
            if not input_unchanged(p, fp):
                log.info("%s: input %s changed since the last build", name, p)
                return False
        root = Path(subset_dir)
        stats = rec.get("output_stat", {})
        for rel, digest in rec["outputs"].items():
            if not _output_intact(root / rel, digest, stats.get(rel)):
                log.info("%s: output %s missing or not the one recorded", name, root / rel)
                return False
        return True


def _output_intact(path: Path, digest: str, stat: list[int] | None) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if stat is not None and [st.st_size, st.st_mtime_ns] == stat:
        return True
    return file_sha256(path) == digest


def output_stat(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns]`` of a file just written (the manifest's quick check of an output)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]
