"""Ray tasks that see no file of the driver's: inputs shipped in, outputs shipped back.

On a cluster whose nodes do not share the driver's file system, the driver reads each task's input
files (:func:`ship_inputs`: the scan, the files it refers to, its landmark files) and sends their bytes
with the task through Ray's object store. The task (:func:`run_shipped`, on any node) lays them out in a
private folder of the node's temporary folder at the same relative places (so a scan finds its texture
and material library as it would at home), builds the scan there exactly as a local worker would
(:func:`.build_task.compute_task`), and returns its record and the bytes of its output files. The
driver writes them, together or not at all (:func:`commit_shipped`), and keeps the manifest. Text the
task produced that names its private copies (error lines, the report's paths) names the driver's
files instead, so the bytes written are those of a local build.

Which files a scan needs is found without parsing it: every file beside the scan whose name is the
scan's stem followed by ``.``, ``_`` or ``-`` (textures and photos named after the capture, landmark
sidecars), and every file the scan or its material libraries name (OBJ/MTL ``mtllib`` and ``map_*``
lines, VRML ``url`` strings, PLY ``TextureFile`` comments), resolved as the readers resolve them
(:func:`onflame.mesh.images.resolve_reference`). A texture named by an absolute path that exists on the
driver is the one case this does not cover (3dMD's absolute names are of the capture machine's disk).

The private folder is ``<node temp>/onflame-ship-<host>-<pid>-<random>``: it is removed when the task
ends, and one left by a worker killed mid-task is removed by the next task on that node.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..fileio import write_bytes, write_json
from ..fileio.write import HOST, process_gone
from ..flame.model import FlameModel
from ..mesh.images import resolve_reference
from ..mesh.scan_names import scan_stem
from .build_task import (BuildTask, LocalFiles, TaskOutputs, Writer, commit_outputs, compute_task, finish_timings,
                         new_record, written_failed)

#: Start of the private folders' names (``onflame-ship-<host>-<pid>-<random>``).
SANDBOX_PREFIX = "onflame-ship-"
#: Most bytes of a scan searched for the names of the files it refers to (they come before the geometry).
_SEARCH_BYTES = 64 * 2**20
#: Lines that name a file: OBJ/MTL material libraries and texture maps, PLY's texture comment.
_NAMING_LINE = re.compile(rb"^[ \t]*(?:mtllib|map_\w+|bump|disp|decal|refl|comment[ \t]+TextureFile)[ \t]+(.+?)[ \t]*\r?$",
                          re.M | re.I)
#: VRML's quoted strings (``url "F0001_0.bmp"``).
_QUOTED = re.compile(rb'"([^"\r\n]{1,1024})"')


@dataclass
class Shipment:
    """A task's input files: path as the task names it -> (bytes, modification time in ns)."""

    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)


# --- on the driver ---------------------------------------------------------------------------------------------

def ship_inputs(task: BuildTask) -> Shipment:
    """The files ``task`` may read, from the driver's disk, each read once (see the module docstring). Files
    that cannot be read are left out: the task then fails on them as a local one would."""
    shipment = Shipment()

    def add(path: Path) -> bytes | None:
        if str(path) not in shipment.files:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if stat.S_ISREG(st.st_mode):
                    shipment.files[str(path)] = (path.read_bytes(), st.st_mtime_ns)
        entry = shipment.files.get(str(path))
        return None if entry is None else entry[0]

    scan = task.item.scan_path
    extra = [task.item.landmarks_path] if task.item.landmarks_path is not None else []
    for path in [*task.landmark_candidates(), *extra, *_named_after(scan)]:
        add(path)
    todo = [(scan, add(scan))]
    while todo:  # the scan, then the material libraries it names
        path, data = todo.pop()
        for name in _names_inside(path, data or b""):
            ref = resolve_reference(path.parent, name)
            if ref is not None and str(ref) not in shipment.files:
                ref_data = add(ref)
                if ref.suffix.lower() == ".mtl":
                    todo.append((ref, ref_data))
    return shipment


def _named_after(scan: Path) -> list[Path]:
    """Files beside ``scan`` whose name is its stem followed by ``.``, ``_`` or ``-`` (any case)."""
    stem = scan_stem(scan).lower()
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(scan.parent):
            name = entry.name.lower()
            if name.startswith(stem) and (len(name) == len(stem) or name[len(stem)] in "._-") and entry.is_file():
                found.append(Path(entry.path))
    return found


def _names_inside(path: Path, data: bytes) -> list[str]:
    """File names written inside a file (see :data:`_NAMING_LINE`, :data:`_QUOTED`), from its first bytes."""
    name = path.name.lower()
    if name.endswith((".abs", ".abs.gz")):  # range images name nothing (their photo is named after them)
        return []
    head = data[:_SEARCH_BYTES]
    if name.endswith(".gz"):  # as much as the first bytes give, even cut mid-stream
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _SEARCH_BYTES)
        except zlib.error:
            return []
    if path.suffix.lower() == ".ply":
        head = head[: head.find(b"end_header")]
    names = []
    for m in _NAMING_LINE.finditer(head):
        value = m.group(1).decode("utf-8", "replace")
        names += [value, value.split()[-1]] if value.split() else []
    names += [m.group(1).decode("utf-8", "replace") for m in _QUOTED.finditer(head)]
    return list(dict.fromkeys(names))


def commit_shipped(task: BuildTask, result: dict) -> dict:
    """Write what a shipped task returned into the subset folder (together or not at all); its record."""
    record = result["record"]
    outputs = TaskOutputs({rel: _bytes_writer(data) for rel, data in result["files"].items()}, list(result["remove"]))
    commit_outputs(task, Path(task.subset_dir), outputs, record)
    return record


def _bytes_writer(data: bytes) -> Writer:
    return lambda path: write_bytes(path, data)


# --- on a Ray node ---------------------------------------------------------------------------------------------

class ShippedFiles(LocalFiles):
    """The task's view of its shipped files in a private folder (see the module docstring)."""

    def __init__(self, root: Path, shipment: Shipment):
        self.root = root
        self.local: dict[str, Path] = {}
        for name, (data, mtime_ns) in shipment.files.items():
            local = root / _relative(name)
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)
            os.utime(local, ns=(mtime_ns, mtime_ns))  # fingerprints as on the driver's disk
            self.local[name] = local
        # longest first, so that a path is translated before a folder of it
        self._back = sorted(((str(v), k) for k, v in self.local.items()), key=lambda kv: -len(kv[0]))

    def locate(self, path: Path) -> Path:
        found = self.local.get(str(path))
        return found if found is not None else self.root / _relative(str(path))  # absent: not shipped

    def shown(self, text: str) -> str:
        for local, name in self._back:
            text = text.replace(local, name)
        return text.replace(str(self.root), "")

    def shown_in(self, value: Any) -> Any:
        """``value`` (JSON-like) with every string passed through :meth:`shown`, keys included."""
        if isinstance(value, str):
            return self.shown(value)
        if isinstance(value, dict):
            return {self.shown_in(k): self.shown_in(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.shown_in(v) for v in value]
        return value


def _relative(name: str) -> Path:
    """Where a driver path goes inside the private folder: its absolute path below the folder."""
    absolute = Path(os.path.abspath(name))
    return Path(absolute.drive.replace(":", "") or "", *absolute.parts[1:])


def run_shipped(task: BuildTask, model: FlameModel, shipment: Shipment) -> dict:
    """Build one scan from shipped files (see the module docstring): ``{"record", "files": {relpath: bytes},
    "remove": [relpath]}``, paths as the driver names them."""
    t0, c0 = time.perf_counter(), time.process_time()
    _remove_abandoned_sandboxes()
    root = private_temporary(SANDBOX_PREFIX)
    try:
        try:
            files = ShippedFiles(root, shipment)
        except OSError as exc:  # the node's temporary folder is full
            record = new_record(task)
            written_failed(record, task, OSError(exc.errno, exc.strerror, f"{exc.filename} (on Ray node {HOST})"))
            record.pop("disk_full", None)  # the node's disk, not the output's
            return {"record": record, "files": {}, "remove": list(task.outputs().values())}
        out = root / "out"
        local_task = replace(task, subset_dir=str(out))
        record, outputs = compute_task(local_task, model, files)
        t_write = time.perf_counter()
        commit_outputs(local_task, out, outputs, record)
        report_rel = task.outputs()["report"]
        if report_rel in record["outputs"]:  # the report names the driver's files, not the copies
            write_json(out / report_rel, files.shown_in(json.loads((out / report_rel).read_text(encoding="utf-8"))))
        produced = {rel: (out / rel).read_bytes() for rel in record["outputs"]}
        # nothing written (the node's disk is full): the driver removes this scan's files, as a local task does
        remove = outputs.remove if produced or not outputs.write else list(task.outputs().values())
        record = files.shown_in(record)
        record.pop("output_stat", None)
        record.pop("disk_full", None)  # the node's disk, not the output's
        finish_timings(record, t0, c0, t_write)
        return {"record": record, "files": produced, "remove": remove}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _remove_abandoned_sandboxes() -> None:
    remove_abandoned(SANDBOX_PREFIX)


def private_temporary(prefix: str, suffix: str = "", folder: bool = True) -> Path:
    """A new folder (or file name) in the temporary folder, named ``<prefix><host>-<pid>-<random><suffix>``
    so that :func:`remove_abandoned` can tell when its process is gone."""
    base = f"{prefix}{HOST}-{os.getpid()}-"
    if folder:
        return Path(tempfile.mkdtemp(prefix=base, suffix=suffix))
    fd, name = tempfile.mkstemp(prefix=base, suffix=suffix)
    os.close(fd)
    return Path(name)


def remove_abandoned(prefix: str) -> None:
    """Remove the temporaries :func:`private_temporary` made for processes of this host that are gone (a
    worker or build killed mid-task)."""
    base = Path(tempfile.gettempdir())
    pattern = re.compile(rf"^{re.escape(prefix)}{re.escape(HOST)}-(\d+)-")
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            m = pattern.match(entry.name)
            if m and process_gone(HOST, int(m.group(1))):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

