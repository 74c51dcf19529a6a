"""A held-out campaign of bad inputs and faults, run as an adversarial user would, command by command.

Every case writes its own hostile input into a temporary folder (new inputs of the kinds issue 27 lists,
none of them the corpus's, ``tests/corpus_inputs.py``), runs one ``onflame`` command as a real process
and checks what a user sees and what is left:

- the exit code the README's table gives (2 bad usage before any work, 1 bad input, 130 / 143 for
  Ctrl-C / SIGTERM, 0 where onflame reads on past a bad side file);
- exactly one ``onflame: <file>: ...`` line per problem, naming the file (other stderr lines only the
  progress lines of a batch), no traceback, no "unexpected" error, no library's warning text;
- nothing half-written (no temporary left, no output of a failed item), nothing touched outside the
  output folder (the case's other files, a folder of the user's own files, the model's folder);
- within the time limit (10 s; longer, stated in the table, for the faults that need a registration to
  run first), under an address-space limit of 2 GiB, and a resident peak under 2 GiB.

Some cases need privileges the campaign takes itself: a small tmpfs for a full disk, a read-only tmpfs
for an output that cannot be written, and a process without CAP_DAC_OVERRIDE for files of mode 000 (root
reads those otherwise). Where it is not root, those cases are skipped, saying why.

It is a tool, not a test (it takes minutes)::

    python tools/heldout_campaign.py                 # every case; the table on stdout
    python tools/heldout_campaign.py -k pickle -v    # cases whose id holds 'pickle', with their stderr
    python tools/heldout_campaign.py --keep DIR      # leave the cases' folders in DIR

Exit status: 0 when every case passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"

#: The bar: peak resident memory and address space of one command, and the seconds it may take.
PEAK_LIMIT = 2 * 2**30
TIMEOUT = 10.0
#: Cases that must first register a scan (faults during its writing, interrupts) take this long at most.
SLOW = 120.0


# --- the material every case shares ---------------------------------------------------------------------------

@dataclass
class Ctx:
    base: Path
    flame: Path            # a FLAME folder: generic_model.pkl, its pickle-free copy, embeddings, masks
    vertices: np.ndarray   # (5023, 3) the template, metres
    faces: np.ndarray      # (9976, 3)
    landmarks: np.ndarray  # (51, 3) on the template, metres
    victim: Path           # the user's own files: nothing may touch them
    root: bool             # running as root (tmpfs mounts, capabilities)
    photo: Path            # a real face photo

    def head(self, path: Path, scale: float = 1000.0) -> Path:
        """The template as an OBJ scan in millimetres (scale 1000) with its landmarks beside it."""
        from onflame.mesh import Mesh, write_obj

        path.parent.mkdir(parents=True, exist_ok=True)
        write_obj(path, Mesh(self.vertices * scale, self.faces), precision=6)
        return path

    def mica(self, root: Path, subset: str = "BU3DFE", actors: int = 1) -> Path:
        """A valid MICA subset folder: zero parameters and the template as each registration."""
        from onflame.flame import FlameParams
        from onflame.mesh import Mesh, write_obj

        for k in range(actors):
            FlameParams.zeros().save(root / subset / "FLAME_parameters" / f"A{k}" / f"s{k}.npz")
            write_obj(root / subset / "registrations" / f"A{k}" / f"s{k}.obj", Mesh(self.vertices, self.faces))
        return root


def make_ctx(base: Path) -> Ctx:
    from onflame.flame import load_model_with_assets

    flame = base / "FLAME"
    flame.mkdir(parents=True)
    subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(flame / "generic_model.pkl")],
                   check=True, capture_output=True)
    for name in ("landmark_embedding.npy", "FLAME_masks.pkl", "flame_static_embedding.pkl",
                 "flame_static_embedding_68.pkl"):
        shutil.copy(FLAME_FIX / name, flame / name)
    model = load_model_with_assets(flame / "generic_model.pkl")  # leaves the pickle-free copy beside it
    v, f = model.v_template, model.faces
    victim = base / "victim"
    write(victim / "keep.txt", "the user's own file\n")
    write(victim / "deep" / "keep.npz", b"PK not onflame's")
    return Ctx(base, flame, v, f, model.landmarks.static51.locate(v, f), victim, os.geteuid() == 0,
               SHARED / "fixtures" / "images" / "carell.jpg")


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# --- hostile inputs, new ones -----------------------------------------------------------------------------------

RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]


class Reduce:
    """Pickles to ``func(*args)`` then, with ``state``, a BUILD of it."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class Global:
    """Pickles to a reference to ``module.name`` (a GLOBAL opcode), whatever that is."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


def pickle_bytes(obj, protocol: int = 2) -> bytes:
    return pickle.dumps(obj, protocol)


def opcodes_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def hex_bomb(levels: int = 28) -> bytes:
    """``_codecs.encode`` applied ``levels`` times with the 'hex' codec: each doubles 4 kB (2**28 x)."""
    inner = b"B" + struct.pack("<I", 4096) + b"0" * 4096  # BINBYTES
    for _ in range(levels):
        inner = opcodes_global("_codecs", "encode") + b"(" + inner + b"X\x03\x00\x00\x00hext" + b"R"
    return b"\x80\x03}(X\n\x00\x00\x00v_templateX\x01\x00\x00\x00x" + inner + b"u."


def shared_tuples(depth: int) -> bytes:
    """Opcodes of a tuple whose tree holds ``2**depth`` pairs of floats through the memo (a few bytes a level)."""
    out = b"(G" + struct.pack(">d", 1.0) + b"G" + struct.pack(">d", 2.0) + b"tq\x00"
    for i in range(1, depth + 1):
        out += b"0h" + bytes([i - 1]) + b"h" + bytes([i - 1]) + b"\x86q" + bytes([i])
    return out


def hash_bomb(kind: str, depth: int = 30) -> bytes:
    """A pickle that makes Python hash a tuple of ``2**depth`` leaves: a frozenset's element or a dict's key."""
    if kind == "frozenset":
        return (b"\x80\x02}(X\n\x00\x00\x00v_templatec__builtin__\nfrozenset\n]" + shared_tuples(depth)
                + b"a\x85Ru.")
    return b"\x80\x02}" + shared_tuples(depth) + b"K\x01s."


def int_hash_bomb(n: int = 10**6) -> bytes:
    """A set built from a list of ``n`` references to one integer of 16 MB (hashing it costs its size)."""
    big = b"\x8b" + struct.pack("<I", 16 << 20) + b"\x01" * (16 << 20) + b"q\x00"
    return (b"\x80\x02}(X\n\x00\x00\x00v_templatec__builtin__\nset\n](" + big + b"h\x00" * n + b"e\x85Ru.")


def binbytes8_claim(size: int) -> bytes:
    """Protocol 4 BINBYTES8 announcing ``size`` bytes, followed by 16."""
    return b"\x80\x04\x8e" + struct.pack("<Q", size) + b"x" * 16 + b"."


def frame_claim(size: int) -> bytes:
    """A protocol 4 FRAME announcing ``size`` bytes, followed by a small dict."""
    return b"\x80\x04\x95" + struct.pack("<Q", size) + b"}."


def reconstruct_state(shape, descr, data) -> bytes:
    """numpy's own array pickle, its state's shape, dtype and data chosen."""
    return pickle_bytes({"v_template": Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(descr),
                                                                                          False, data)),
                         "f": np.zeros((1, 3), np.int64)})


def npy_object(payload: bytes) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


def npy_header(shape, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def params_npz(betas=None, pose=None, trans=None) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, betas=np.zeros(400) if betas is None else betas, pose=np.zeros(15) if pose is None else pose,
             trans=np.zeros(3) if trans is None else trans)
    return buf.getvalue()


def zip_lying_member(name: str, head: bytes, inflated: int, declared: int) -> bytes:
    """A zip of one deflated member of ``head`` + zeros (``inflated`` bytes in all) whose central directory
    declares ``declared`` bytes (and the CRC of what it declares, so only the size lies)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = head + bytes(inflated - len(head))
    data = c.compress(body) + c.flush()
    crc = zlib.crc32(body[:declared])
    fields = (20, 0, 8, 0, 0, crc, len(data), declared, len(name))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name.encode() + data
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, 0) + name.encode()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


def zip_local_header_lies(members: dict[str, bytes], lie: dict[str, str]) -> bytes:
    """A stored zip whose local headers name members otherwise than the central directory (``lie``:
    central name -> local name), or claim another size."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data in members.items():
        local_name = lie.get(name, name)
        crc, offset = zlib.crc32(data), out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, len(data) * 1000, len(data) * 1000,
                              len(local_name.encode()), 0) + local_name.encode() + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, len(data), len(data),
                                  len(name.encode()), 0, 0, 0, 0, 0, offset) + name.encode())
    cd = central.getvalue()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd), out.tell() - len(cd), 0))
    return out.getvalue()


def gzip_in_gzip(head: bytes, inflated: int) -> bytes:
    """gzip of gzip: the outer member inflates to a small gzip stream that would inflate to ``inflated``."""
    inner = gzip.compress(head + bytes(inflated), 9)
    return gzip.compress(inner, 9)


def gzip_bomb_one_member(head: bytes, inflated: int) -> bytes:
    """One gzip member (not many repeated) that inflates to ``head`` plus ``inflated`` zero bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    parts = [c.compress(head)] + [c.compress(chunk) for _ in range(inflated >> 20)] + [c.flush()]
    return b"".join(parts)


def binary_ply(n_vertices: int, faces: bytes, face_count: int, list_type: str = "uint") -> bytes:
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {n_vertices}\nproperty float x\nproperty float y\n"
              f"property float z\nelement face {face_count}\nproperty list {list_type} int vertex_indices\nend_header\n")
    v = np.random.default_rng(0).normal(size=(n_vertices, 3)).astype("<f4").tobytes()
    return header.encode() + v + faces


def obj_text(n_v: int, faces: str) -> str:
    return "".join(f"v {i % 7} {i % 5} {i % 3}\n" for i in range(n_v)) + faces


def vrml(body: str) -> str:
    return "#VRML V2.0 utf8\n" + body


SHAPE = "Shape { geometry IndexedFaceSet { coord Coordinate { point [0 0 0, 1 0 0, 0 1 0] } coordIndex [0 1 2 -1] } }"


def pp(points: np.ndarray, prolog: str = "", extra: str = "") -> str:
    rows = "".join(f'<point x="{x}" y="{y}" z="{z}" name="{i}" active="1"/>\n' for i, (x, y, z) in enumerate(points))
    return f"{prolog}<PickedPoints>\n{rows}{extra}</PickedPoints>\n"


def laughs_xml(levels: int = 12) -> str:
    ents = '<!ENTITY a0 "0.5">' + "".join(f'<!ENTITY a{k} "&a{k - 1};&a{k - 1};&a{k - 1};&a{k - 1};">'
                                            for k in range(1, levels))
    return f'<?xml version="1.0"?>\n<!DOCTYPE PickedPoints [{ents}]>\n'


def png_bytes(w: int, h: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (w, h)).save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header announces ``w`` x ``h`` pixels over one tiny IDAT (a lie)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def textured_head(ctx: Ctx, d: Path, image_name: str) -> Path:
    obj = ctx.head(d / "s.obj")
    text = obj.read_text()
    uv01 = (ctx.vertices[:, :2] - ctx.vertices[:, :2].min(0)) / np.ptp(ctx.vertices[:, :2], 0)
    uv = "".join(f"vt {u:.4f} {v:.4f}\n" for u, v in uv01)
    faces = "".join(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in ctx.faces + 1)
    write(obj, "mtllib s.mtl\n" + text.split("f ", 1)[0] + uv + "usemtl m\n" + faces)
    write(d / "s.mtl", f"newmtl m\nmap_Kd {image_name}\n")
    return obj


def now_tree(ctx: Ctx, d: Path, pred_lmk: bytes | str | None = None, pred_mesh: bytes | str | None = None) -> None:
    """A NoW ground truth of one subject (the head in mm) and one prediction (the head in metres)."""
    from onflame.evaluation.now_landmarks import from_flame  # the 7 NoW points of a FLAME mesh

    from onflame.flame import load_model_with_assets

    model = load_model_with_assets(ctx.flame / "generic_model.pkl")
    lmk7 = from_flame(ctx.vertices, ctx.faces, model.landmarks)
    ctx.head(d / "gt" / "scans" / "S1" / "natural_head_rotation.000001.obj")
    write(d / "gt" / "scans_lmks_onlypp" / "S1" / "natural_head_rotation.000001_picked_points.pp", pp(lmk7 * 1000))
    write(d / "gt" / "imagepathsvalidation.txt", "S1/multiview_neutral/IMG_1.jpg\n")
    stem = d / "pred" / "S1" / "multiview_neutral" / "IMG_1"
    if pred_mesh is None:
        ctx.head(stem.with_suffix(".obj"), 1.0)
    else:
        write(stem.with_suffix(".obj"), pred_mesh)
    write(stem.with_suffix(".npy"), npy_bytes(lmk7) if pred_lmk is None else pred_lmk)


def stirling_raw(ctx: Ctx, raw: Path, scan: Callable[[Path], object] | None = None) -> Path:
    path = raw / "scans" / "F" / "F1001_N.obj"
    (scan or (lambda p: ctx.head(p)))(path)
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def link(path: Path, target: str | Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def loop(path: Path) -> Path:
    """A symbolic link to itself (ELOOP on open)."""
    return link(path, path.name)


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def chmod000(path: Path) -> Path:
    path.chmod(0)
    return path


# --- a case ----------------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One hostile input or fault.

    ``argv`` is formatted with ``d`` (the case's folder), ``flame`` (the model folder), ``victim``, ``ro``
    (a read-only mount) and ``tiny`` (a small tmpfs that fills up). ``names``: the file each ``onflame:``
    line must name (one line per name; none: one line naming anything); ``code``: the exit code;
    ``outputs``: folders (under ``d``) the command may write; ``signal``: ``(signal, seconds, times)``
    sent while it runs; ``then``: a second command (a re-run) and its exit code; ``check``: more
    checks, returning a problem or None.
    """

    id: str
    cause: str
    make: Callable[[Ctx, Path], object]
    argv: str
    code: int | tuple[int, ...]
    names: tuple[str, ...] = ()
    says: str = ""
    outputs: tuple[str, ...] = ("out",)
    timeout: float = TIMEOUT
    no_dac: bool = False          # run without CAP_DAC_OVERRIDE (mode 000 files are unreadable)
    mounts: tuple[str, ...] = ()  # "ro" and/or "tiny"
    tiny_kb: int = 256
    signal: tuple[int, float, int] | None = None
    kill9_at: float | None = None
    then: tuple[str, int] | None = None
    clean_failure: bool = True    # a failed run leaves no output file at all
    check: Callable[[Ctx, Path], str | None] | None = None
    lines: int | None = None      # onflame lines expected (default: len(names), or 1; 0 for exit 0)

    @property
    def command(self) -> str:
        words = self.argv.split()
        return " ".join(words[:2]) if words[0] in ("evaluate", "image-paths") else words[0]


M = "--model {flame}"


def reg(scan: str = "{d}/s.obj", extra: str = "") -> str:
    return f"register {scan} {M} --out {{d}}/out {extra}".strip()


def cases() -> list[Case]:
    C: list[Case] = []
    add = C.append

    # --- 27.2: pickles that ask for more than numbers -----------------------------------------------------------
    P = "27.2 pickle"
    add(Case("pickle-state-data-shorter-than-shape", P, lambda c, d: write(d / "m.pkl", reconstruct_state(
        (10**9,), "<f8", b"")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-state-unicode-dtype-2e9-chars", P, lambda c, d: write(d / "m.pkl", pickle.dumps(
        {"v_template": Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (4,), np.dtype("<U4"), False, b""))}, 0).replace(
        b"VU4\n", b"VU2000000000\n")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-state-shape-as-list", P, lambda c, d: write(d / "m.pkl", reconstruct_state(
        [10**10], "<f8", b"")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-state-zero-and-huge-dims", P, lambda c, d: write(d / "m.pkl", reconstruct_state(
        (0, 2**62, 2**62), "<f8", b"")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-state-negative-dim", P, lambda c, d: write(d / "m.pkl", reconstruct_state(
        (-1, 3), "<f8", b"")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-reconstruct-numpy2-path-object", P, lambda c, d: write(d / "m.pkl", pickle_bytes(
        {"v_template": Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (10**8,), np.dtype(object), False,
                                                                        [1] * 3))}).replace(
        b"numpy.core.multiarray", b"numpy._core.multiarray")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-reconstruct-subtype-matrix", P, lambda c, d: write(d / "m.pkl", pickle_bytes(
        {"v_template": Reduce(RECONSTRUCT, (np.matrix, (0,), b"b"), (1, (2, 2), np.dtype("<f8"), False,
                                                                       bytes(32)))})), "info {d}/m.pkl", 1,
        ("{d}/m.pkl",)))
    add(Case("pickle-copyreg-reconstructor-of-dict-subclass", P, lambda c, d: write(d / "m.pkl",
        b"\x80\x02ccopy_reg\n_reconstructor\nq\x00ccollections\ndefaultdict\nq\x01c__builtin__\ndict\nq\x02N\x87q\x03R"
        b"q\x04."), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-copyreg-newobj", P, lambda c, d: write(d / "m.pkl", b"\x80\x02ccopyreg\n__newobj__\n"
        b"ccollections\nOrderedDict\n\x85R."), "info {d}/m.pkl", 1, ("{d}/m.pkl",), "refused"))
    add(Case("pickle-builtins-getattr", P, lambda c, d: write(d / "m.pkl", b"\x80\x02cbuiltins\ngetattr\n"
        b"cbuiltins\nobject\nX\x0b\x00\x00\x00__subclassesq\x00\x86R."), "info {d}/m.pkl", 1, ("{d}/m.pkl",),
        "refused"))
    add(Case("pickle-codecs-hex-doubling-28-levels", P, lambda c, d: write(d / "m.pkl", hex_bomb()),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-binbytes8-claims-1.5gb", P, lambda c, d: write(d / "m.pkl", binbytes8_claim(1_500_000_000)),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-binbytes8-claims-2e18", P, lambda c, d: write(d / "m.pkl", binbytes8_claim(2 * 10**18)),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-frame-claims-1.5gb", P, lambda c, d: write(d / "m.pkl", frame_claim(1_500_000_000)),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-nested-lists-of-huge-ints", P, lambda c, d: write(d / "m.pkl", pickle_bytes(
        {"v_template": [[10**20000] * 3] * 5023, "f": [[0, 1, 2]]})), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-protocol0-int-of-100k-digits", P, lambda c, d: write(d / "m.pkl", b"(dp0\nS'f'\nI" + b"9" * 100_000
                                                                           + b"\ns."), "info {d}/m.pkl", 1,
             ("{d}/m.pkl",)))
    add(Case("pickle-frozenset-of-shared-tuples-30-deep", P, lambda c, d: write(d / "m.pkl", hash_bomb("frozenset")),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-dict-key-of-shared-tuples-30-deep", P, lambda c, d: write(d / "m.pkl", hash_bomb("key")),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-set-of-one-huge-int-1e6-times", P, lambda c, d: write(d / "m.pkl", int_hash_bomb()),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-dict-key-repr-of-1e6-values", P, lambda c, d: write(d / "m.pkl", hash_bomb("key", 17)),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-chumpy-state-of-laughs", P, lambda c, d: write(d / "m.pkl", pickle_bytes(
        {"v_template": np.zeros((5023, 3)), "f": np.zeros((9976, 3), np.int64), "shapedirs": Reduce(
            Chumpy, (), {"x": laughs(26)})}).replace(b"heldout_campaign\nChumpy", b"chumpy.ch\nCh").replace(
        b"__main__\nChumpy", b"chumpy.ch\nCh")), "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-sparse-matrix-1e6-square", P, lambda c, d: write(d / "m.pkl", sparse_pickle(10**6)),
             "info {d}/m.pkl", 1, ("{d}/m.pkl",)))
    add(Case("pickle-torch-storage-claims-1e10", P, lambda c, d: write(d / "emb.npy", torch_embedding(10**10)),
             "info {d}/emb.npy", 1, ("{d}/emb.npy",)))
    add(Case("pickle-torch-tensor-stride-0-view", P, lambda c, d: write(d / "emb.npy", torch_stride0()),
             "info {d}/emb.npy", 1, ("{d}/emb.npy",)))
    add(Case("register-model-hex-bomb", P, lambda c, d: (c.head(d / "s.obj"), write(d / "m" / "generic_model.pkl",
                                                                                      hex_bomb())),
             "register {d}/s.obj --model {d}/m --out {d}/out", 1, ("{d}/m/generic_model.pkl",)))
    add(Case("register-masks-binbytes-claim", P, lambda c, d: (c.head(d / "s.obj"), write(d / "masks.pkl",
                                                                                          binbytes8_claim(2**40))),
             reg(extra="--masks {d}/masks.pkl"), 1, ("{d}/masks.pkl",)))
    add(Case("register-embedding-reconstruct-object", P, lambda c, d: (c.head(d / "s.obj"), write(
        d / "emb.pkl", pickle_bytes({"lmk_face_idx": Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (
            1, (51,), np.dtype(object), False, list(range(51)))), "lmk_b_coords": np.full((51, 3), 1 / 3)}))),
             reg(extra="--embedding {d}/emb.pkl"), 1, ("{d}/emb.pkl",)))
    add(Case("validate-image-list-hex-bomb", P, lambda c, d: (c.mica(d / "mica"), write(
        d / "mica/image_paths/BU3DFE.npy", npy_object(hex_bomb()))), "validate {d}/mica", 1,
             ("{d}/mica/image_paths/BU3DFE.npy",)))
    add(Case("diff-list-nested-huge-ints", P, lambda c, d: write(d / "a.npy", npy_object(pickle_bytes(
        np.array({"A": ([10**4000] * 1000, "A/x.npz")}, dtype=object)))), "image-paths diff {d}/a.npy {d}/a.npy",
             1, ("{d}/a.npy",)))
    add(Case("diff-list-two-object-wrappers", P, lambda c, d: write(d / "a.npy", npy_object(pickle_bytes(
        np.array({"A": (np.array(["x.jpg"], dtype=object), "A/x.npz")}, dtype=object)))),
             "image-paths diff {d}/a.npy {d}/a.npy", 1, ("{d}/a.npy",)))
    add(Case("evaluate-flame-pred-npz-object-member", P, lambda c, d: (c.mica(d / "mica"), write(
        d / "pred" / "BU3DFE" / "A0" / "s0.npz", npz_with_pickle())),
             "evaluate flame --pred {d}/pred --ref {d}/mica " + M + " --out {d}/out --workers 1 -q", 1,
             ("{d}/pred/BU3DFE/A0/s0.npz",), clean_failure=False))

    # --- 27.8: bombs of other shapes ----------------------------------------------------------------------------
    B = "27.8 bomb"
    add(Case("npz-member-declares-small-inflates-big", B, lambda c, d: (c.mica(d / "mica"), write(
        d / "mica/BU3DFE/FLAME_parameters/A0/s0.npz", zip_lying_member("betas.npy", npy_header((400,)), 200 << 20,
                                                                       len(npy_header((400,))) + 3200))),
             "validate {d}/mica", 1, ("{d}/mica/BU3DFE/FLAME_parameters/A0/s0.npz",)))
    add(Case("model-npz-member-declares-small-inflates-big", B, lambda c, d: (c.head(d / "s.obj"), write(
        d / "m.npz", zip_lying_member("v_template.npy", npy_header((5023, 3)), 300 << 20,
                                      len(npy_header((5023, 3))) + 5023 * 24))),
             "register {d}/s.obj --model {d}/m.npz --out {d}/out", 1, ("{d}/m.npz",)))
    add(Case("subset-zip-local-header-names-another-member", B, lambda c, d: (d.joinpath("mica").mkdir(), write(
        d / "mica/BU3DFE.zip", zip_local_header_lies({"FLAME_parameters/A0/s0.npz": params_npz(),
                                                      "registrations/A0/s0.obj": obj_text(3, "f 1 2 3\n").encode()},
                                                     {"FLAME_parameters/A0/s0.npz": "../../../etc/passwd"}))),
             "validate {d}/mica", 1, ("{d}/mica/BU3DFE.zip",)))
    add(Case("subset-zip-lying-member-in-report", B, lambda c, d: (d.joinpath("mica").mkdir(), write(
        d / "mica/BU3DFE.zip", zip_local_header_lies({"FLAME_parameters/A0/s0.npz": params_npz(),
                                                      "registrations/A0/s0.obj": obj_text(3, "f 1 2 3\n").encode()},
                                                     {"registrations/A0/s0.obj": "registrations/A0/other.obj"}))),
             "report {d}/mica --out {d}/out --workers 1 -q " + M, 1, ("{d}/mica/BU3DFE.zip",), clean_failure=False))
    add(Case("export-subset-zip-member-declares-small", B, lambda c, d: (d.joinpath("mica").mkdir(), write(
        d / "mica/BU3DFE.zip", zip_lying_member("FLAME_parameters/A0/s0.npz", b"PK\x03\x04", 300 << 20, 4096))),
             "export {d}/mica --out {d}/out/all.npz", 1, ("{d}/mica/BU3DFE.zip",), clean_failure=False))
    add(Case("wrl-gzip-in-gzip", B, lambda c, d: write(d / "m.wrl.gz", gzip_in_gzip(b"#VRML V2.0 utf8\n", 200 << 20)),
             "info {d}/m.wrl.gz", 1, ("{d}/m.wrl.gz",)))
    add(Case("wrl-one-member-gzip-bomb", B, lambda c, d: write(d / "s.wrl", gzip_bomb_one_member(
        b"#VRML V2.0 utf8\n", 1024 << 20)), reg("{d}/s.wrl"), 1, ("{d}/s.wrl",)))
    add(Case("abs-gz-header-1e6-by-1e6", B, lambda c, d: write(d / "04200d74.abs.gz", gzip.compress(
        b"1000000 rows\n1000000 columns\npixels (flag X Y Z):\n1 1\n")), "info {d}/04200d74.abs.gz", 1,
             ("{d}/04200d74.abs.gz",)))
    add(Case("npy-landmarks-header-larger-than-file", B, lambda c, d: (c.head(d / "s.obj"), write(
        d / "l.npy", npy_header((51, 3)) + bytes(100))), reg(extra="--landmarks {d}/l.npy"), 1, ("{d}/l.npy",)))
    add(Case("npy-embedding-header-larger-than-file", B, lambda c, d: (c.head(d / "s.obj"), write(
        d / "landmark_embedding.npy", npy_header((10**6, 51)) + bytes(64))),
             reg(extra="--embedding {d}/landmark_embedding.npy"), 1, ("{d}/landmark_embedding.npy",)))
    add(Case("npy-image-list-fortran-header-lies", B, lambda c, d: write(d / "a.npy", npy_header(
        (2**31, 2**31), "<f4") + bytes(64)), "image-paths diff {d}/a.npy {d}/a.npy", 1, ("{d}/a.npy",)))
    add(Case("evaluate-now-pred-landmarks-header-lies", B, lambda c, d: now_tree(
        c, d, pred_lmk=npy_header((7, 3 * 10**9)) + bytes(168)),
             "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q", 1,
             ("{d}/pred/S1/multiview_neutral/IMG_1.npy",), clean_failure=False))
    add(Case("landmarks-txt-sparse-5gb", B, lambda c, d: (c.head(d / "s.obj"), sparse(d / "l.txt", 5 << 30, b"1 2 3\n")),
             reg(extra="--landmarks {d}/l.txt"), 1, ("{d}/l.txt",)))
    add(Case("texture-png-announcing-1e10-pixels", B, lambda c, d: (textured_head(c, d, "t.png"), write(
        d / "t.png", png_claiming(100_000, 100_000))), reg(), 0, ("{d}/s.obj",), timeout=SLOW,
             lines=1, clean_failure=False, says="t.png"))
    add(Case("texture-png-1e8-pixels-is-one-line", B, lambda c, d: (textured_head(c, d, "t.png"), write(
        d / "t.png", png_bytes(10_000, 10_000))), reg(), 0, ("{d}/s.obj",), timeout=SLOW, lines=1,
             clean_failure=False, says="t.png"))

    # --- 27.5: meshes whose header or lines lie -----------------------------------------------------------------
    R = "27.5 mesh"
    add(Case("ply-binary-list-count-2e31", R, lambda c, d: write(d / "m.ply", binary_ply(
        4, struct.pack("<I", 2**31) + bytes(12), 1)), "info {d}/m.ply", 1, ("{d}/m.ply",)))
    add(Case("ply-binary-2m-empty-quads-lists", R, lambda c, d: write(d / "m.ply", binary_ply(
        600_000, b"\x00" * 2_000_000, 2_000_000, "uchar")), "info {d}/m.ply", 1, ("{d}/m.ply",)))
    add(Case("ply-binary-quads-index-beyond-vertices", R, lambda c, d: write(d / "m.ply", binary_ply(
        4, b"\x04" + struct.pack("<4i", 0, 1, 2, 2**31 - 1), 1, "uchar")), "info {d}/m.ply", 1, ("{d}/m.ply",)))
    add(Case("ply-header-negative-count", R, lambda c, d: write(d / "m.ply", "ply\nformat ascii 1.0\nelement vertex -3\n"
                                                               "property float x\nproperty float y\nproperty float z\n"
                                                               "end_header\n"), "info {d}/m.ply", 1, ("{d}/m.ply",)))
    add(Case("ply-header-count-of-40-digits", R, lambda c, d: write(d / "m.ply", "ply\nformat ascii 1.0\nelement vertex "
                                                                   + "9" * 40 + "\nproperty float x\nproperty float y\n"
                                                                   "property float z\nend_header\n0 0 0\n"),
             "info {d}/m.ply", 1, ("{d}/m.ply",)))
    add(Case("obj-negative-indices-beyond-count", R, lambda c, d: write(d / "s.obj", obj_text(3, "f -1 -2 -9\n")),
             reg(), 1, ("{d}/s.obj",)))
    add(Case("obj-vt-index-beyond-count", R, lambda c, d: write(d / "m.obj", obj_text(3, "vt 0 0\nf 1/1 2/5 3/1\n")),
             "info {d}/m.obj", 1, ("{d}/m.obj",)))
    add(Case("obj-at-the-bounds-4m-vertices-8m-faces", R, lambda c, d: write(d / "m.obj", big_obj(4_000_000)),
             "info {d}/m.obj", 0, (), lines=0, outputs=()))
    add(Case("obj-10m-vertices-20m-faces-240mb", R, lambda c, d: write(d / "m.obj", big_obj()), "info {d}/m.obj", 1,
             ("{d}/m.obj",)))
    add(Case("obj-crlf-and-tabs-head", R, lambda c, d: write(d / "s.obj", c.head(d / "s.obj").read_text().replace(
        "\n", "\r\n").replace(" ", "\t")), "fit-mesh {d}/s.obj " + M + " --out {d}/out --units mm", 0,
             outputs=("out",), timeout=60, lines=0))
    add(Case("fit-mesh-obj-nul-bytes", R, lambda c, d: write(d / "m.obj", b"v 0 0 0\x00\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"),
             "fit-mesh {d}/m.obj " + M + " --out {d}/out", 1, ("{d}/m.obj",)))
    add(Case("stl-binary-claims-1e9-triangles", R, lambda c, d: write(d / "m.stl", bytes(80) + struct.pack("<I", 10**9)
                                                                         + bytes(50 * 10)), "info {d}/m.stl", 1,
             ("{d}/m.stl",)))
    add(Case("off-header-claims-1e9-vertices", R, lambda c, d: write(d / "m.off", "OFF\n1000000000 1 0\n0 0 0\n"),
             "info {d}/m.off", 1, ("{d}/m.off",)))
    add(Case("gltf-accessor-beyond-buffer", R, lambda c, d: write(d / "m.gltf", gltf_lying()), "info {d}/m.gltf", 1,
             ("{d}/m.gltf",)))
    add(Case("gltf-buffer-uri-outside", R, lambda c, d: write(d / "m.gltf", gltf_lying("../../../../../etc/passwd")),
             "info {d}/m.gltf", 1, ("{d}/m.gltf",)))
    add(Case("wrl-use-of-undefined-name", R, lambda c, d: write(d / "m.wrl", vrml("Group { children [ USE NOPE ] }")),
             "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("wrl-def-uses-itself", R, lambda c, d: write(d / "m.wrl", vrml(f"DEF A Group {{ children [ {SHAPE} USE A ] }}")),
             "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("wrl-def-redefined-chain", R, lambda c, d: write(d / "m.wrl", vrml(
        f"DEF A {SHAPE}\n" + "".join("DEF A Group { children [ USE A USE A USE A ] }\n" for _ in range(30)))),
             "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("wrl-groups-nested-100k", R, lambda c, d: write(d / "m.wrl", vrml("Group { children [ " * 100_000 + SHAPE
                                                                             + " ] }" * 100_000)),
             "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("wrl-coordindex-beyond-int64", R, lambda c, d: write(d / "m.wrl", vrml(SHAPE.replace(
        "[0 1 2 -1]", "[0 1 99999999999999999999999 -1]"))), "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("wrl-transform-scale-nan", R, lambda c, d: write(d / "m.wrl", vrml(
        f"Transform {{ scale nan 1 1 children [ {SHAPE} ] }}")), "info {d}/m.wrl", 1, ("{d}/m.wrl",)))
    add(Case("abs-rows-times-columns-overflow", R, lambda c, d: write(d / "04200d74.abs",
                                                                     "4294967296 rows\n4294967296 columns\n"
                                                                     "pixels (flag X Y Z):\n1\n"),
             "info {d}/04200d74.abs", 1, ("{d}/04200d74.abs",)))
    add(Case("abs-negative-rows", R, lambda c, d: write(d / "04200d74.abs", "-4 rows\n-4 columns\npixels (flag X Y Z):\n"),
             "info {d}/04200d74.abs", 1, ("{d}/04200d74.abs",)))

    # --- 27.6: landmark files and other parsers -----------------------------------------------------------------
    L = "27.6 parser"
    for name, doc in [("points-a-string", {"landmarks": {"points": "abc"}}),
                      ("points-an-int", {"landmarks": {"points": 7}}),
                      ("points-of-dicts", {"landmarks": {"points": [{"x": 1}] * 51}}),
                      ("points-ragged", {"landmarks": {"points": [[1, 2, 3]] * 50 + [[1, 2]]}}),
                      ("points-of-bools", {"landmarks": {"points": [[True, False, True]] * 51}}),
                      ("points-of-1e400", {"landmarks": {"points": [[1e308, 1e308, 1e308]] * 51}}),
                      ("labels-a-string", {"landmarks": {"points": [[0, 0, 0]] * 68}, "labels": "jaw"}),
                      ("label-name-a-list", {"landmarks": {"points": [[0, 0, 0]] * 68},
                                             "labels": [{"label": ["jaw"], "mask": [0]}]}),
                      ("label-mask-negative", {"landmarks": {"points": [[0, 0, 0]] * 68},
                                               "labels": [{"label": "jaw", "mask": [-1] * 17}]}),
                      ("groups-a-list", {"groups": [1, 2]}),
                      ("groups-of-strings", {"groups": {"a": "b"}}),
                      ("landmarks-a-list", {"landmarks": [1, 2, 3]}),
                      ("top-level-a-list", [1, 2, 3])]:
        add(Case(f"ljson-{name}", L, lambda c, d, doc=doc: (c.head(d / "s.obj"), write(d / "l.ljson", json.dumps(doc))),
                 reg(extra="--landmarks {d}/l.ljson"), 1, ("{d}/l.ljson",)))
    add(Case("ljson-1e308-as-text-inf", L, lambda c, d: (c.head(d / "s.obj"), write(
        d / "l.ljson", '{"landmarks": {"points": [' + ",".join(["[1e999, 0, 0]"] * 51) + "]}}")),
             reg(extra="--landmarks {d}/l.ljson"), 1, ("{d}/l.ljson",)))
    add(Case("pp-billion-laughs", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.pp", pp(
        c.landmarks * 1000, laughs_xml(), '<point x="&a11;" y="0" z="0" name="x" active="1"/>\n'))),
             reg(extra="--landmarks {d}/l.pp"), 1, ("{d}/l.pp",)))
    add(Case("pp-external-entity-file", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.pp", pp(
        c.landmarks * 1000, '<?xml version="1.0"?>\n<!DOCTYPE p SYSTEM "file:///etc/passwd">\n',
        '<point x="&xxe;" y="0" z="0"/>\n'))), reg(extra="--landmarks {d}/l.pp"), 1, ("{d}/l.pp",)))
    add(Case("pp-parameter-entity", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.pp", pp(
        c.landmarks * 1000, '<!DOCTYPE p [<!ENTITY % x SYSTEM "file:///etc/passwd"> %x;]>\n'))),
             reg(extra="--landmarks {d}/l.pp"), 1, ("{d}/l.pp",)))
    add(Case("pp-elements-nested-100k", L, lambda c, d: (c.head(d / "s.obj"), write(
        d / "l.pp", "<PickedPoints>" + "<a>" * 100_000 + "</a>" * 100_000 + "</PickedPoints>")),
             reg(extra="--landmarks {d}/l.pp"), 1, ("{d}/l.pp",)))
    add(Case("pp-utf16", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.pp", pp(c.landmarks * 1000).encode("utf-16"))),
             reg(extra="--landmarks {d}/l.pp"), 1, ("{d}/l.pp",)))
    add(Case("lnd-with-nan", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.lnd", "".join(
        f"{i} {x} {y} {'nan' if i == 5 else z}\n" for i, (x, y, z) in enumerate(c.landmarks * 1000)))),
             reg(extra="--landmarks {d}/l.lnd"), 1, ("{d}/l.lnd",)))
    add(Case("lnd-index-inf", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.lnd", "".join(
        f"{'inf' if i == 3 else i} {x} {y} {z}\n" for i, (x, y, z) in enumerate(c.landmarks * 1000)))),
             reg(extra="--landmarks {d}/l.lnd"), 1, ("{d}/l.lnd",)))
    add(Case("bnd-with-inf", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.bnd", "".join(
        f"{i} inf 0 0\n" for i in range(83)))), reg(extra="--landmarks {d}/l.bnd"), 1, ("{d}/l.bnd",)))
    add(Case("bnd-all-points-equal", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.bnd", "".join(
        "1 1 1\n" for i in range(83)))), reg(extra="--landmarks {d}/l.bnd"), 1, ("{d}/l.bnd",)))
    add(Case("txt-1e6-rows", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.txt", "1 2 3\n" * 1_000_000)),
             reg(extra="--landmarks {d}/l.txt"), 1, ("{d}/l.txt",)))
    add(Case("bnd-1e6-rows", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.bnd", "1 2 3\n" * 600_000)),
             reg(extra="--landmarks {d}/l.bnd"), 1, ("{d}/l.bnd",)))
    add(Case("land-count-1e6-rows", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.land", "999999\n" + "1 2 3\n" * 999_999)),
             reg(extra="--landmarks {d}/l.land"), 1, ("{d}/l.land",)))
    add(Case("land-vertex-ids-beyond-scan", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.land", "51\n" + "".join(
        f"{10**12 + i}\n" for i in range(51)))), reg(extra="--landmarks {d}/l.land"), 1, ("{d}/l.land",)))
    add(Case("txt-with-inf", L, lambda c, d: (c.head(d / "s.obj"), write(d / "l.txt", "".join(
        f"{x} {'inf' if i == 2 else y} {z}\n" for i, (x, y, z) in enumerate(c.landmarks * 1000)))),
             reg(extra="--landmarks {d}/l.txt"), 1, ("{d}/l.txt",)))
    add(Case("sidecar-lmk51-npy-object", L, lambda c, d: (c.head(d / "s.obj"), write(d / "s.lmk51.npy", npy_object(
        pickle_bytes(Reduce(os.system, ("touch {d}/PWNED",)))))), reg(), 1, ("{d}/s.lmk51.npy",)))
    add(Case("evaluate-now-gt-pp-laughs", L, lambda c, d: (now_tree(c, d), write(
        d / "gt" / "scans_lmks_onlypp" / "S1" / "natural_head_rotation.000001_picked_points.pp",
        pp(np.zeros((7, 3)), laughs_xml()))),
             "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q", 1,
             ("{d}/gt/scans_lmks_onlypp/S1/natural_head_rotation.000001_picked_points.pp",), clean_failure=False))
    add(Case("evaluate-now-image-list-binary", L, lambda c, d: (now_tree(c, d), write(
        d / "gt" / "imagepathsvalidation.txt", bytes(range(256)) * 100)),
             "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q", 1,
             ("{d}/gt/imagepathsvalidation.txt",), clean_failure=False))
    add(Case("evaluate-now-image-list-dotdot", L, lambda c, d: (now_tree(c, d), write(
        d / "gt" / "imagepathsvalidation.txt", "../../../victim/keep.txt\n")),
             "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q", 1, (), clean_failure=False))
    add(Case("build-manifest-of-wrong-types", L, lambda c, d: (stirling_raw(c, d / "raw", lambda p: write(p, "v 0 0\n")),
                                                               write(d / "out/STIRLING/build/manifest.json", json.dumps(
                                                                   {"version": [], "scans": {"F1001_N": 5}}))),
             "build --source STIRLING --raw {d}/raw --out {d}/out " + M + " --workers 1 -q", 1,
             ("{d}/raw/scans/F/F1001_N.obj",), clean_failure=False, timeout=30))
    add(Case("build-manifest-not-json", L, lambda c, d: (stirling_raw(c, d / "raw", lambda p: write(p, "v 0 0\n")),
                                                         write(d / "out/STIRLING/build/manifest.json", "\x00" * 100)),
             "build --source STIRLING --raw {d}/raw --out {d}/out " + M + " --workers 1 -q", 1,
             ("{d}/raw/scans/F/F1001_N.obj",), clean_failure=False, timeout=30))

    # --- 27.4: paths that are not the files they seem -----------------------------------------------------------
    A = "27.4 path"
    loops = [("info", "info {d}/x.pkl", "{d}/x.pkl", "x.pkl"),
             ("register-scan", reg("{d}/x.obj"), "{d}/x.obj", "x.obj"),
             ("register-model", "register {d}/s.obj --model {d}/x.pkl --out {d}/out", "{d}/x.pkl", "x.pkl"),
             ("register-landmarks", reg(extra="--landmarks {d}/x.npy"), "{d}/x.npy", "x.npy"),
             ("fit-mesh", "fit-mesh {d}/x.obj " + M + " --out {d}/out", "{d}/x.obj", "x.obj"),
             ("validate-root", "validate {d}/x", "{d}/x", "x"),
             ("report-root", "report {d}/x --out {d}/out -q", "{d}/x", "x"),
             ("export-root", "export {d}/x --out {d}/out/all.npz", "{d}/x", "x"),
             ("diff", "image-paths diff {d}/x.npy {d}/x.npy", "{d}/x.npy", "x.npy"),
             ("evaluate-now-gt", "evaluate now --pred {d}/pred --gt {d}/x --out {d}/out -q", "{d}/x", "x"),
             ("prepare-photos", "prepare {d}/mica --subset FLORENCE --photos {d}/x", "{d}/x", "x"),
             ("build-raw", "build --source STIRLING --raw {d}/x --out {d}/out -q " + M, "{d}/x", "x")]
    for name, argv, named, target in loops:
        def make(c, d, target=target):
            c.head(d / "s.obj")
            c.mica(d / "mica", "FLORENCE")
            (d / "pred").mkdir()
            loop(d / target)
        code = 2 if name == "prepare-photos" else 1
        add(Case(f"symlink-loop-{name}", A, make, argv, (1, 2) if name.startswith("prepare") else code, (named,),
                 clean_failure=True))
    folders = [("model", "register {d}/s.obj --model {d}/m.pkl --out {d}/out", "{d}/m.pkl", "m.pkl", (1, 2)),
               ("masks", reg(extra="--masks {d}/masks.pkl"), "{d}/masks.pkl", "masks.pkl", 1),
               ("embedding", reg(extra="--embedding {d}/e.npy"), "{d}/e.npy", "e.npy", 1),
               ("landmarks", reg(extra="--landmarks {d}/l.npy"), "{d}/l.npy", "l.npy", 1),
               ("image-list", "image-paths diff {d}/a.npy {d}/a.npy", "{d}/a.npy", "a.npy", 1),
               ("params-in-root", "validate {d}/mica", "{d}/mica/BU3DFE/FLAME_parameters/A0/s0.npz",
                "mica/BU3DFE/FLAME_parameters/A0/s0.npz", 1),
               ("build-image-list", "build --source STIRLING --raw {d}/raw --out {d}/out --image-list {d}/l.npy " + M,
                "{d}/l.npy", "l.npy", 1),
               ("evaluate-pred-mesh", "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q",
                "{d}/pred/S1/multiview_neutral/IMG_1.obj", "pred/S1/multiview_neutral/IMG_1.obj", 1)]
    for name, argv, named, target, code in folders:
        def make(c, d, target=target, name=name):
            c.head(d / "s.obj")
            stirling_raw(c, d / "raw")
            if name == "evaluate-pred-mesh":
                now_tree(c, d)
            if name == "params-in-root":
                c.mica(d / "mica")
            p = d / target
            if p.exists():
                p.unlink()
            p.mkdir(parents=True)
        add(Case(f"folder-as-{name}", A, make, argv, code, (named,), clean_failure=name != "evaluate-pred-mesh"))
    add(Case("model-folder-without-model", A, lambda c, d: (c.head(d / "s.obj"), (d / "m").mkdir()),
             "register {d}/s.obj --model {d}/m --out {d}/out", (1, 2), ("{d}/m",)))
    add(Case("model-folder-whose-model-is-a-fifo", A, lambda c, d: (c.head(d / "s.obj"), fifo(d / "m" / "flame2023.pkl")),
             "register {d}/s.obj --model {d}/m --out {d}/out", (1, 2), ("{d}/m/flame2023.pkl",)))
    add(Case("env-model-symlink-loop", A, lambda c, d: (c.head(d / "s.obj"), loop(d / "m.pkl")),
             "register {d}/s.obj --out {d}/out", 1, ("{d}/m.pkl",)))
    add(Case("report-root-params-are-dev-zero-links", A, lambda c, d: (c.mica(d / "mica"), (
        d / "mica/BU3DFE/registrations/A0/s0.obj").unlink(), link(d / "mica/BU3DFE/registrations/A0/s0.obj", "/dev/zero")),
             "report {d}/mica --out {d}/out --workers 1 -q " + M, 1, ("{d}/mica/BU3DFE/registrations/A0/s0.obj",),
             clean_failure=False))
    add(Case("prepare-photo-fifo-is-no-photo", A, lambda c, d: (c.mica(d / "mica", "FLORENCE"), fifo(
        d / "photos" / "A0" / "p.jpg"), shutil.copy(c.photo, d / "photos" / "A0" / "q.jpg")),
             "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 1 -q", 0, (), outputs=("mica",),
             clean_failure=False, timeout=60, lines=0))
    add(Case("prepare-photo-png-bomb-named-jpg", A, lambda c, d: (c.mica(d / "mica", "FLORENCE"), write(
        d / "photos" / "A0" / "p.jpg", png_bytes(12_000, 12_000)), shutil.copy(c.photo, d / "photos" / "A0" / "q.jpg")),
             "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 1 -q", 1,
             ("{d}/photos/A0/p.jpg",), outputs=("mica",), clean_failure=False, timeout=60))
    add(Case("prepare-photo-truncated-jpeg", A, lambda c, d: (c.mica(d / "mica", "FLORENCE"), write(
        d / "photos" / "A0" / "p.jpg", c.photo.read_bytes()[:3000]), shutil.copy(c.photo, d / "photos" / "A0" / "q.jpg")),
             "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 1 -q", 1,
             ("{d}/photos/A0/p.jpg",), outputs=("mica",), clean_failure=False, timeout=60))
    add(Case("build-scan-is-a-fifo", A, lambda c, d: stirling_raw(c, d / "raw", fifo),
             "build --source STIRLING --raw {d}/raw --out {d}/out " + M + " --workers 1 -q", 1,
             ("{d}/raw",), clean_failure=False, timeout=30))

    # unreadable files (mode 000), without the capability that lets root read them
    U = "27.4 unreadable"
    unreadable = [("scan", reg(), "{d}/s.obj", "s.obj"),
                  ("model", "register {d}/s.obj --model {d}/m/generic_model.pkl --out {d}/out", "{d}/m/generic_model.pkl",
                   "m/generic_model.pkl"),
                  ("landmarks", reg(extra="--landmarks {d}/l.npy"), "{d}/l.npy", "l.npy"),
                  ("params-in-root", "validate {d}/mica", "{d}/mica/BU3DFE/FLAME_parameters/A0/s0.npz",
                   "mica/BU3DFE/FLAME_parameters/A0/s0.npz"),
                  ("actor-folder", "validate {d}/mica", "{d}/mica/BU3DFE/FLAME_parameters/A0",
                   "mica/BU3DFE/FLAME_parameters/A0"),
                  ("subset-folder-in-report", "report {d}/mica --out {d}/out --workers 1 -q " + M, "{d}/mica/BU3DFE",
                   "mica/BU3DFE"),
                  ("subset-folder-in-export", "export {d}/mica --out {d}/out/all.npz", "{d}/mica/BU3DFE", "mica/BU3DFE"),
                  ("image-list", "image-paths diff {d}/a.npy {d}/a.npy", "{d}/a.npy", "a.npy"),
                  ("raw-scan", "build --source STIRLING --raw {d}/raw --out {d}/out " + M + " --workers 1 -q",
                   "{d}/raw/scans/F/F1001_N.obj", "raw/scans/F/F1001_N.obj")]
    for name, argv, named, target in unreadable:
        def make(c, d, target=target):
            c.head(d / "s.obj")
            c.mica(d / "mica")
            stirling_raw(c, d / "raw")
            np.save(d / "l.npy", c.landmarks * 1000)
            write(d / "a.npy", npy_object(pickle_bytes(np.array({"A": (["x.jpg"], "A/x.npz")}, dtype=object))))
            (d / "m").mkdir()
            shutil.copy(c.flame / "generic_model.pkl", d / "m" / "generic_model.pkl")
            chmod000(d / target)
        add(Case(f"mode-000-{name}", U, make, argv, 1, (named,), no_dac=True,
                 # report and export go on with the readable subsets (as for a damaged subset zip), build with
                 # the other scans: their outputs are the readable items'
                 clean_failure=name not in ("subset-folder-in-report", "subset-folder-in-export", "raw-scan"),
                 timeout=60 if name == "raw-scan" else TIMEOUT))
    add(Case("model-folder-not-writable-for-its-copy", U, lambda c, d: (c.head(d / "s.obj"), (d / "m").mkdir(), shutil.copy(
        c.flame / "generic_model.pkl", d / "m" / "generic_model.pkl"), (d / "m").chmod(0o555)),
             "info {d}/m", 0, (), no_dac=True, lines=0, outputs=()))

    # --- 27.11 / 25: outputs that cannot be written ------------------------------------------------------------
    O = "27.11 output"
    ro_cases = [("register", "register {d}/s.obj " + M + " --out {ro}/out"),
                ("fit-mesh", "fit-mesh {d}/s.obj " + M + " --out {ro}/out"),
                ("report", "report {d}/mica --out {ro}/site -q"),
                ("export", "export {d}/mica --out {ro}/all.npz"),
                ("evaluate-now", "evaluate now --pred {d}/pred --gt {d}/gt --out {ro}/ev -q"),
                ("evaluate-flame", "evaluate flame --pred {d}/pred --ref {d}/mica --out {ro}/ev -q"),
                ("build", "build --source STIRLING --raw {d}/raw --out {ro}/mica " + M),
                ("demo", "demo --out {ro}/demo"),
                ("prepare", "prepare {ro}/mica --subset FLORENCE --photos {d}/photos")]
    for name, argv in ro_cases:
        def make(c, d):
            c.mica(c.base / "ro" / "mica", "FLORENCE")
            c.head(d / "s.obj")
            c.mica(d / "mica")
            stirling_raw(c, d / "raw")
            (d / "photos" / "A0").mkdir(parents=True)
            shutil.copy(c.photo, d / "photos" / "A0" / "q.jpg")
            (d / "pred").mkdir()
            (d / "gt").mkdir()
        add(Case(f"read-only-out-{name}", O, make, argv, 2, (), mounts=("ro",), says="",
                 lines=1, outputs=()))

    # --- 27.3 / 27.9: a full disk --------------------------------------------------------------------------------
    F = "27.3 full disk"
    add(Case("full-disk-register", F, lambda c, d: c.head(d / "s.obj"), "register {d}/s.obj " + M + " --out {tiny}/out",
             1, ("{tiny}/out/s.obj",), mounts=("tiny",), tiny_kb=64, timeout=SLOW, outputs=("tiny",),
             check=lambda c, d: nothing_in(c.base / "tiny" / "out")))
    add(Case("full-disk-register-picture", F, lambda c, d: c.head(d / "s.obj"),
             "register {d}/s.obj " + M + " --out {tiny}/out --picture", 1, (), mounts=("tiny",), tiny_kb=400,
             timeout=SLOW, outputs=("tiny",), check=lambda c, d: nothing_in(c.base / "tiny" / "out")))
    add(Case("full-disk-report", F, lambda c, d: c.mica(d / "mica", actors=3),
             "report {d}/mica --out {tiny}/site --workers 1 -q " + M, 1, (), mounts=("tiny",), tiny_kb=120,
             # the pictures drawn and their cache stay (recorded, reused by the re-run); no page may link to one
             # that was not written
             timeout=60, outputs=("tiny",), clean_failure=False, check=lambda c, d: dead_links(c.base / "tiny" / "site")))
    add(Case("full-disk-export", F, lambda c, d: c.mica(d / "mica", actors=3), "export {d}/mica --out {tiny}/all.csv",
             1, ("{tiny}/all.csv",), mounts=("tiny",), tiny_kb=8, outputs=("tiny",),
             check=lambda c, d: nothing_in(c.base / "tiny")))
    add(Case("full-disk-fit-mesh", F, lambda c, d: c.head(d / "s.obj"),
             "fit-mesh {d}/s.obj " + M + " --out {tiny}/out --units mm", 1, ("{tiny}/out/s.npz",), mounts=("tiny",),
             tiny_kb=4, timeout=60, outputs=("tiny",), check=lambda c, d: nothing_in(c.base / "tiny" / "out")))
    add(Case("full-disk-evaluate-now", F, now_tree,
             "evaluate now --pred {d}/pred --gt {d}/gt --out {tiny}/ev --workers 1 -q", 1, (), mounts=("tiny",),
             tiny_kb=24, timeout=60, outputs=("tiny",), lines=None, clean_failure=False))

    # --- 27.1 / follow-up: links planted in an output folder --------------------------------------------------
    K = "27.1 link in out"
    planted = [("register", reg(), "out/s.npz", "{d}/out/s.npz"),
               ("register-report-json", reg(), "out/s_report.json", "{d}/out/s_report.json"),
               ("fit-mesh", "fit-mesh {d}/s.obj " + M + " --out {d}/out --units mm", "out/s.npz", "{d}/out/s.npz"),
               ("export", "export {d}/mica --out {d}/out/all.npz", "out/all.npz", "{d}/out/all.npz"),
               ("evaluate-flame-results", "evaluate flame --pred {d}/pred --ref {d}/mica " + M + " --out {d}/out -q",
                "out/flame_results.json", "{d}/out/flame_results.json"),
               ("evaluate-now-items", "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 1 -q",
                "out/items", "{d}/out/items"),
               ("prepare-arcface-folder", "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 1 -q",
                "mica/FLORENCE/arcface_input", "{d}/mica/FLORENCE/arcface_input"),
               ("prepare-image-list", "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 1 -q",
                "mica/image_paths/FLORENCE.npy", "{d}/mica/image_paths/FLORENCE.npy"),
               ("build-subset-folder", "build --source STIRLING --raw {d}/raw --out {d}/out " + M + " --workers 1 -q",
                "out/STIRLING/registrations", "{d}/out/STIRLING/registrations"),
               ("demo-folder", "demo --out {d}/out -q", "out/mica", "{d}/out/mica")]
    for name, argv, where, named in planted:
        def make(c, d, where=where, name=name, argv=argv):
            c.head(d / "s.obj")
            c.mica(d / "mica", "FLORENCE" if "prepare" in name else "BU3DFE")
            stirling_raw(c, d / "raw")
            (d / "photos" / "A0").mkdir(parents=True)
            shutil.copy(c.photo, d / "photos" / "A0" / "q.jpg")
            (d / "pred" / "BU3DFE" / "A0").mkdir(parents=True)
            shutil.copy(d / "mica/BU3DFE/registrations/A0/s0.obj" if (d / "mica/BU3DFE").exists()
                        else c.head(d / "x.obj", 1.0), d / "pred" / "BU3DFE" / "A0" / "s0.obj")
            if "evaluate now" in argv:
                now_tree(c, d)
            target = c.victim / "deep" if not Path(where).suffix else c.victim / "keep.txt"
            link(d / where, target)
        add(Case(f"link-planted-{name}", K, make, argv, 2, (named,), outputs=("out", "mica"),
                 timeout=SLOW if name in ("register", "register-report-json", "demo-folder", "build-subset-folder") else 60,
                 clean_failure=False))

    # --- 27.6 (interrupts): Ctrl-C and SIGTERM at random moments, kill -9 then a re-run -------------------------
    I = "27.6 interrupt"
    rng = random.Random(27)
    plans = [("register", reg(), lambda c, d: c.head(d / "s.obj"), ("out",)),
             ("report", "report {d}/mica --out {d}/out --workers 2 -q " + M, lambda c, d: c.mica(d / "mica", actors=6),
              ("out",)),
             ("validate", "validate {d}/mica " + M, lambda c, d: c.mica(d / "mica", actors=40), ()),
             ("prepare", "prepare {d}/mica --subset FLORENCE --photos {d}/photos --workers 2 -q",
              lambda c, d: prepare_tree(c, d), ("mica",)),
             ("evaluate-now", "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out --workers 2 -q", now_tree, ("out",)),
             ("fit-mesh", "fit-mesh {d}/s.obj {d}/t.obj " + M + " --out {d}/out --units mm",
              lambda c, d: (c.head(d / "s.obj"), c.head(d / "t.obj")), ("out",))]
    for name, argv, make, outs in plans:
        for sig, signame in ((signal.SIGINT, "ctrl-c"), (signal.SIGTERM, "sigterm")):
            for times in (1, 2):
                if sig == signal.SIGTERM and times == 2:
                    continue
                delay = round(rng.uniform(0.5, 4.0), 2)
                code = 130 if sig == signal.SIGINT else 143
                add(Case(f"{signame}{'-twice' if times == 2 else ''}-{name}-at-{delay}s", I, make, argv, (code, 0, 1),
                         (), outputs=outs, timeout=SLOW, signal=(sig, delay, times), clean_failure=False,
                         then=(argv, 0 if name != "validate" else 0)))
        delay = round(rng.uniform(1.0, 6.0), 2)
        add(Case(f"kill-9-{name}-at-{delay}s", I, make, argv, (-9, 0, 1), (), outputs=outs, timeout=SLOW,
                 kill9_at=delay, clean_failure=False, then=(argv, 0)))
    return C


class Chumpy:
    """Stands for ``chumpy.ch.Ch`` (the pickle's global is renamed to it)."""

    def __init__(self, *args):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def laughs(depth: int, leaf=1.0) -> list:
    x = [leaf] * 10
    for _ in range(depth):
        x = [x, x]
    return x


def sparse_pickle(n: int) -> bytes:
    """A FLAME-like dict whose ``J_regressor`` is a scipy sparse (n x n) matrix (dense: n*n*8 bytes)."""
    import scipy.sparse as sp

    return pickle_bytes({"v_template": np.zeros((5023, 3)), "f": np.zeros((9976, 3), np.int64),
                         "J_regressor": sp.csc_matrix((np.ones(1), (np.zeros(1, int), np.zeros(1, int))), shape=(n, n))})


def torch_embedding(numel: int) -> bytes:
    """MICA's landmark embedding (a dict in a 0-d object ``.npy``) whose dynamic tensor's storage claims
    ``numel`` elements: a torch tensor pickled, then its storage's declared size patched."""
    import torch

    src = FLAME_FIX / "landmark_embedding.npy"
    data = src.read_bytes()
    t = torch.zeros(4, dtype=torch.int64)
    payload = pickle.dumps({"static_lmk_faces_idx": np.zeros(51, np.int64), "static_lmk_bary_coords": np.zeros((51, 3)),
                            "dynamic_lmk_faces_idx": t}, 2)
    del data
    small = torch.zeros(4, dtype=torch.int64).untyped_storage().nbytes()
    return npy_object(payload.replace(struct.pack("<q", small // 8), struct.pack("<q", numel), 1))


def torch_stride0() -> bytes:
    """An embedding whose dynamic index tensor is a (1e6, 1e6) view of one element (stride 0)."""
    import torch

    big = torch.zeros(1, dtype=torch.int64).expand(10**6, 10**6)
    payload = pickle.dumps({"static_lmk_faces_idx": np.zeros(51, np.int64), "static_lmk_bary_coords": np.zeros((51, 3)),
                            "dynamic_lmk_faces_idx": big, "dynamic_lmk_bary_coords": big}, 2)
    return npy_object(payload)


def npz_with_pickle() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, betas=np.zeros(400), pose=np.zeros(15), trans=np.zeros(3),
             vertices=np.array([Reduce(os.system, ("true",))], dtype=object), allow_pickle=True)
    return buf.getvalue()


def big_obj(n: int = 10_000_000) -> bytes:
    """``n`` vertices and ``2 n`` faces in ``24 n`` bytes (10 M: 240 MB, the bounds before the campaign)."""
    return b"v 0 0 0\n" * n + b"f 1 2 3\n" * (2 * n - 10)


def gltf_lying(uri: str | None = None) -> str:
    """A glTF whose accessor announces 10^9 vertices over a 36-byte buffer (or names a buffer outside)."""
    import base64

    buf = np.zeros(9, "<f4").tobytes()
    doc = {"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
           "buffers": [{"byteLength": 36, "uri": uri or "data:application/octet-stream;base64,"
                        + base64.b64encode(buf).decode()}],
           "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 36}],
           "accessors": [{"bufferView": 0, "componentType": 5126, "count": 10**9, "type": "VEC3",
                          "max": [1, 1, 1], "min": [0, 0, 0]}]}
    return json.dumps(doc)


def prepare_tree(ctx: Ctx, d: Path) -> None:
    ctx.mica(d / "mica", "FLORENCE", actors=2)
    for a in range(2):
        for k in range(3):
            shutil.copy(SHARED / "fixtures" / "images" / ("carell.jpg", "lawrence.jpg", "connelly.jpg")[k],
                        write(d / "photos" / f"A{a}" / f"p{k}.jpg", b"").parent / f"p{k}.jpg")


def nothing_in(folder: Path) -> str | None:
    files = [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    return f"files left in {folder}: {files[:4]}" if files else None


def dead_links(site: Path) -> str | None:
    dead = [f"{page.name} -> {href}" for page in site.rglob("*.html")
            for href in re.findall(r'href="([^"#?:]+\.html)"', page.read_text(errors="replace"))
            if not (page.parent / href).is_file()]
    return f"pages link to pages never written: {dead[:3]}" if dead else None


# --- running a case --------------------------------------------------------------------------------------------

_LAUNCH = r"""
import ctypes, os, resource, sys
limit = int(sys.argv[1]); no_dac = sys.argv[2] == "1"
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
if no_dac:  # root without the capabilities to override file modes: a mode 000 file is unreadable
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set for exec
        libc.prctl(24, cap, 0, 0, 0)
os.execv(sys.executable, [sys.executable, "-m", "onflame.cli", *sys.argv[3:]])
"""


@dataclass
class Run:
    code: int
    out: str
    err: str
    peak: int          # bytes
    seconds: float
    timed_out: bool


def run_onflame(argv: list[str], timeout: float, env: dict, no_dac: bool = False,
                signal_plan: tuple[int, float, int] | None = None, kill9_at: float | None = None) -> Run:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(PEAK_LIMIT), "1" if no_dac else "0", *argv],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=ROOT)
        start = time.monotonic()
        sent = 0
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic() - start
            if signal_plan and sent < signal_plan[2] and now >= signal_plan[1] + 0.3 * sent:
                os.kill(proc.pid, signal_plan[0])
                sent += 1
            if kill9_at is not None and now >= kill9_at:
                os.kill(proc.pid, signal.SIGKILL)
                kill9_at = None
            if now > timeout:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        seconds = time.monotonic() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        err.seek(0)
        return Run(code, out.read(), err.read(), usage.ru_maxrss * 1024, seconds, timed_out)


def snapshot(*folders: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """What every file under ``folders`` is (links not followed): kind, size, mtime and a hash of small files."""
    state = {}
    for folder in folders:
        if not folder.exists() and not folder.is_symlink():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
            here = Path(dirpath)
            if any(here == s or s in here.parents for s in skip):
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                p = here / name
                if any(p == s or s in p.parents for s in skip):
                    continue
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                digest = ""
                if stat.S_ISREG(st.st_mode) and st.st_size < 4 << 20:
                    try:
                        digest = hashlib.sha1(p.read_bytes()).hexdigest()
                    except OSError:
                        digest = "unreadable"
                elif stat.S_ISLNK(st.st_mode):
                    digest = os.readlink(p)
                state[str(p)] = (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0,
                                 st.st_mtime_ns if stat.S_ISREG(st.st_mode) else 0, digest)
    return state


TEMP_RE = re.compile(r"\.tmp($|\.)|\.onflame-probe")
PROGRESS_RE = re.compile(r"^[\w][\w .-]*: .*\d+/\d+")


@dataclass
class Result:
    case: Case
    code: int | str = ""
    lines: int = 0
    peak_mb: float = 0.0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    skipped: str = ""
    stderr: str = ""

    @property
    def verdict(self) -> str:
        return "skipped" if self.skipped else "pass" if not self.problems else "FAIL"


def judge(case: Case, run: Run, names: list[str], result: Result, first: bool = True) -> None:
    """Everything a user sees of one run, against what the case expects."""
    p = result.problems
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    if run.timed_out:
        p.append(f"still running after {case.timeout:g} s")
    elif run.code not in codes:
        p.append(f"exit {run.code}, expected {' or '.join(map(str, codes))}")
    if run.code < 0 and run.code != -9:
        p.append(f"crashed (signal {-run.code})")
    text = run.out + run.err
    if "Traceback" in text:
        p.append("traceback")
    if re.search(r"\bunexpected\b", run.err):
        p.append("an 'unexpected' error")
    if re.search(r"Warning\b|warnings\.warn|^WARNING|^W\d{4} |^I\d{4} ", run.err, re.M):
        p.append("library warning text on stderr")
    if run.peak >= PEAK_LIMIT:
        p.append(f"peak {run.peak / 2**20:.0f} MB")
    err_lines = [ln for ln in run.err.splitlines() if ln.strip()]
    ours = [ln for ln in err_lines if ln.startswith("onflame: ")]
    other = [ln for ln in err_lines if not ln.startswith("onflame: ") and not PROGRESS_RE.match(ln)]
    if other:
        p.append(f"stderr lines that are not onflame's: {other[0][:100]!r}" + (f" (+{len(other) - 1})" if len(other) > 1 else ""))
    if case.signal or case.kill9_at:
        if run.code in (130, 143):
            want = "interrupted" if run.code == 130 else "terminated"
            if len(ours) != 1 or not ours[0].endswith(want):
                p.append(f"expected one line ending '{want}', got {ours[:3]}")
        result.lines = len(ours)
        return
    expected = case.lines if case.lines is not None else (max(1, len(names)) if codes[0] != 0 else len(names))
    result.lines = len(ours)
    if len(ours) != expected:
        p.append(f"{len(ours)} onflame lines, expected {expected}: {[ln[:120] for ln in ours[:3]]}")
    for line, name in zip(ours, names):
        # a member of a zip is named by the zip's path and the member's (``S.zip/FLAME_parameters/x.npz: ``)
        inside = name.lower().endswith(".zip") and f"{name}/" in line
        if f"{name}: " not in line and not inside:
            p.append(f"the line does not name {name}: {line[:160]!r}")
            break
    if case.says and not any(case.says in ln for ln in ours):
        p.append(f"no line says {case.says!r}")


def run_case(case: Case, ctx: Ctx, env: dict, verbose: bool) -> Result:
    result = Result(case)
    if (case.no_dac or case.mounts) and not ctx.root:
        result.skipped = "needs root (capabilities, tmpfs mounts)"
        return result
    d = ctx.base / "cases" / case.id
    d.mkdir(parents=True)
    mounted = []
    try:
        for kind in case.mounts:
            where = ctx.base / kind
            where.mkdir(exist_ok=True)
            opts = "size=4m" if kind == "ro" else f"size={case.tiny_kb}k"
            subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
            mounted.append(where)
        case.make(ctx, d)
        if "ro" in case.mounts:  # filled by make (a root for prepare), then read-only
            subprocess.run(["mount", "-o", "remount,ro", str(ctx.base / "ro")], check=True)
        fmt = dict(d=d, flame=ctx.flame, victim=ctx.victim, ro=ctx.base / "ro", tiny=ctx.base / "tiny")
        argv = [a.format(**fmt) for a in case.argv.split()]
        names = [n.format(**fmt) for n in case.names]
        outputs = tuple(d / o for o in case.outputs) + tuple(ctx.base / m for m in case.mounts)
        case_env = dict(env)
        if case.id.startswith("env-model"):
            case_env["ONFLAME_MODEL"] = str(d / "m.pkl")
        before = snapshot(d, ctx.victim, ctx.flame, skip=outputs)
        present = {p for o in outputs for p in (o.rglob("*") if o.is_dir() and not o.is_symlink() else [])}
        run = run_onflame(argv, case.timeout, case_env, case.no_dac, case.signal, case.kill9_at)
        result.code, result.peak_mb, result.seconds = run.code, run.peak / 2**20, run.seconds
        result.stderr = run.err
        judge(case, run, names, result)
        after = snapshot(d, ctx.victim, ctx.flame, skip=outputs)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if changed:
            result.problems.append(f"touched outside its output folder: {changed[:3]}")
        temps = [str(p) for p in d.rglob("*") if TEMP_RE.search(p.name)] + \
                [str(p) for m in mounted for p in m.rglob("*") if TEMP_RE.search(p.name)]
        if temps and not case.kill9_at:
            result.problems.append(f"temporaries left: {temps[:3]}")
        if run.code not in (0, 130, 143, -9) and case.clean_failure:
            left = [str(p) for o in outputs for p in (o.rglob("*") if o.is_dir() and not o.is_symlink() else [])
                    if p.is_file() and not p.is_symlink() and p not in present]  # ro: the inputs made before
            if left:
                result.problems.append(f"a failed run left outputs: {left[:3]}")
        if (d / "PWNED").exists():
            result.problems.append("a pickle payload ran")
        if case.check is not None and not run.timed_out:
            problem = case.check(ctx, d)
            if problem:
                result.problems.append(problem)
        if case.then is not None and not run.timed_out:
            again = run_onflame([a.format(**fmt) for a in case.then[0].split()], SLOW, case_env)
            if again.code != case.then[1]:
                result.problems.append(f"re-run: exit {again.code}, expected {case.then[1]}: {again.err.strip()[:200]}")
            if "Traceback" in again.err:
                result.problems.append("re-run: traceback")
            left = [str(p) for p in d.rglob("*") if TEMP_RE.search(p.name)]
            if left:
                result.problems.append(f"re-run left temporaries: {left[:3]}")
    except Exception as exc:  # noqa: BLE001  the campaign's own failure to set a case up
        result.problems.append(f"campaign error: {type(exc).__name__}: {exc}")
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], check=False)
    if verbose and (result.problems or verbose > 1):
        print(f"--- {case.id}: {result.problems}\n{result.stderr[-2000:]}", file=sys.stderr)
    return result


def table(results: list[Result]) -> str:
    rows = ["| case | cause | command | exit | lines | peak MB | s | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        verdict = r.verdict if not r.problems else "FAIL: " + "; ".join(r.problems)
        verdict = verdict if not r.skipped else f"skipped ({r.skipped})"
        rows.append(f"| {r.case.id} | {r.case.cause} | `{r.case.command}` | {r.code} | {r.lines} | "
                    f"{r.peak_mb:.0f} | {r.seconds:.1f} | {verdict.replace('|', '/')[:400]} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="run only cases whose id contains this text")
    ap.add_argument("-v", action="count", default=0, help="print the stderr of failed cases (-vv: of all)")
    ap.add_argument("--keep", type=Path, help="make the cases' folders here and leave them")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    selected = [c for c in cases() if args.k in c.id]
    base = Path(tempfile.mkdtemp(prefix="onflame-campaign-")) if args.keep is None else args.keep
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONFLAME_")}
    env.update(HOME=str(base / "home"), PYTHONPATH=str(ROOT), ONFLAME_MODEL_CACHE="1")
    try:
        sys.path.insert(0, str(ROOT))
        ctx = make_ctx(base)
        results = []
        for k, case in enumerate(selected, 1):
            r = run_case(case, ctx, env, args.v)
            results.append(r)
            print(f"[{k}/{len(selected)}] {case.id}: {r.verdict} ({r.seconds:.1f} s)"
                  + (f" {r.problems}" if r.problems else ""), file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            for m in ("ro", "tiny"):
                subprocess.run(["umount", "-l", str(base / m)], check=False, capture_output=True)
            for p in base.rglob("*"):
                with contextlib.suppress(OSError):
                    if not p.is_symlink():
                        p.chmod(0o755 if p.is_dir() else 0o644)
            shutil.rmtree(base, ignore_errors=True)
    passed = sum(r.verdict == "pass" for r in results)
    skipped = sum(r.verdict == "skipped" for r in results)
    print(f"**{passed} of {len(results) - skipped} cases pass** ({skipped} skipped); "
          f"largest peak {max((r.peak_mb for r in results), default=0):.0f} MB, limit {PEAK_LIMIT >> 20} MB.\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([{"id": r.case.id, "cause": r.case.cause, "command": r.case.command,
                                          "exit": r.code, "lines": r.lines, "peak_mb": round(r.peak_mb),
                                          "seconds": round(r.seconds, 1), "verdict": r.verdict,
                                          "problems": r.problems} for r in results], indent=1))
    return 0 if passed + skipped == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
