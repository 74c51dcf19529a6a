"""Bad input through every command: one line naming the file at fault, the right exit code, nothing else.

A table of cases (:class:`Case`): how to make the input (code, no binary blobs in the repository), the
command line, the expected exit code and the file the one ``onflame: <file>: <problem>`` line must name.
Every case also asserts: no traceback, no temporary or partial output file, and that no pickle payload
ran (each malicious file would create the marker file). Cases run in-process through
:func:`onflame.cli.main`; a few also run as a real ``onflame`` process (:data:`SUBPROCESS`).

Exit codes: 0 success, 1 failure (bad input, failed items), 2 bad usage (options, output locations).
"""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from onflame.cli import main
from onflame.flame import FlameParams
from onflame.flame.model import save_model
from onflame.mesh import Mesh, write_obj, write_ply

import corpus_inputs as ci



# --- what the inputs are made of -----------------------------------------------------------------------------

@dataclass
class Ctx:
    """Shared material: the session's synthetic FLAME model (FLAME topology, metres) and its landmarks."""

    model_path: Path
    readonly: Path | None     # a folder nobody may write into (None where the machine has none: root, no /sys)
    vertices: np.ndarray      # (5023, 3) the template, metres
    faces: np.ndarray         # (9976, 3)
    landmarks: np.ndarray     # (51, 3) on the template, metres
    marker: Path              # a payload that ran would create this file

    def head(self, path: Path, scale: float = 1.0, shift: float = 0.0) -> Path:
        """The template as an OBJ scan, in ``1/scale`` metres (scale 1000: millimetres)."""
        write_obj(path, Mesh(self.vertices * scale + shift, self.faces), precision=9)
        return path


class _Payload:
    """Pickles to ``os.system('touch <marker>')``: a reader that runs it leaves the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Call:
    """Pickles to ``func(*args)`` (any module-level callable)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _object_npy(payload: bytes) -> bytes:
    """A ``.npy`` of a 0-d object array whose pickle is ``payload`` (as MICA's image lists are stored)."""
    return _npy_header((), "|O") + payload


def _npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _params_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **FlameParams.zeros().to_arrays())
    return buf.getvalue()


def _huge_member_npz() -> bytes:
    """An ``.npz`` whose ``betas`` member's header claims 10^11 float64 (745 GiB) over 24 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("betas.npy", _npy_header((10**11,)) + bytes(24))
        zf.writestr("pose.npy", _npy_bytes(np.zeros(15)))
        zf.writestr("trans.npy", _npy_bytes(np.zeros(3)))
    return buf.getvalue()


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _obj_text(vertices: str, faces: str = "f 1 2 3\n") -> str:
    return vertices + faces


TRIANGLE = "v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\n"


def _plane(ctx: Ctx, path: Path) -> Path:
    """A flat 20 cm square in metres, 30 x 30 vertices: head-sized, but no depth."""
    n = 30
    x, y = np.meshgrid(np.linspace(-0.1, 0.1, n), np.linspace(-0.1, 0.1, n))
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n)], 1)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    write_obj(path, Mesh(v, np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])))
    return path


def _mica_tree(ctx: Ctx, root: Path, subset: str = "BU3DFE") -> Path:
    """A valid one-subject MICA subset folder: zero parameters and the template as registration."""
    FlameParams.zeros().save(root / subset / "FLAME_parameters" / "A1" / "s1.npz")
    write_obj(root / subset / "registrations" / "A1" / "s1.obj", Mesh(ctx.vertices, ctx.faces))
    return root


def _zip_with(ctx: Ctx, path: Path, extra: Callable[[zipfile.ZipFile], None]) -> Path:
    """A subset zip holding one valid subject, plus whatever ``extra`` adds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / "reg.obj"
    write_obj(tmp, Mesh(ctx.vertices, ctx.faces))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("FLAME_parameters/A1/s1.npz", _params_npz())
        zf.write(tmp, "registrations/A1/s1.obj")
        extra(zf)
    tmp.unlink()
    return path


def _symlink_member(zf: zipfile.ZipFile) -> None:
    info = zipfile.ZipInfo("FLAME_parameters/A2/s2.npz")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, "/etc/passwd")


def _stirling_release(ctx: Ctx, raw: Path) -> None:
    """A Stirling release of two scans: a malformed OBJ, and a good head whose texture does not decode."""
    _write(raw / "scans" / "F" / "F1001_N.obj", "v 0 0\nv 1 1\nf 1 2 3\n")
    obj = ctx.head(raw / "scans" / "F" / "F1002_N.obj", 1000.0)
    uv = "".join("vt 0.5 0.5\n" for _ in range(3))
    faces = "".join(f"f {a}/1 {b}/2 {c}/3\n" for a, b, c in ctx.faces[:10] + 1)
    text = obj.read_text().split("f ", 1)[0]
    _write(obj, "mtllib F1002_N.mtl\n" + text + uv + "usemtl m\n" + faces)
    _write(obj.with_suffix(".mtl"), "newmtl m\nmap_Kd F1002_N.bmp\n")
    _write(obj.with_suffix(".bmp"), b"BM" + bytes(40))  # a bitmap header and nothing else


def _lmk(ctx: Ctx, d: Path, arr: np.ndarray, name: str = "lmk.npy") -> None:
    np.save(d / name, np.asarray(arr))


# --- the table ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the case's name.
        make: ``make(ctx, d)`` writes the inputs into the case's folder ``d``.
        argv: the command line; ``{d}`` is the case's folder, ``{model}`` the model file.
        code: the expected exit code.
        names: the file(s) (``{d}``/``{model}`` formatted) the error line(s) must name, one line each.
        says: a word or phrase the line must contain ("" for any).
        xfail: why the case is expected to fail for now (strict: it turns red when it starts passing).
        cause: the point of issue 27 the case guards ("" for the first round's cases).
        what: the input in words, for the table in docs/reliability.md (default: the id in words).
    """

    id: str
    make: Callable[[Ctx, Path], object]
    argv: str
    code: int
    names: tuple[str, ...] | str
    says: str = ""
    xfail: str | None = None
    cause: str = ""
    what: str = ""


def _nothing(ctx: Ctx, d: Path) -> None:
    pass


M = "--model {model}"
CASES = [
    # --- info: pickles, arrays and archives ------------------------------------------------------------------
    Case("info-missing-file", _nothing, "info {d}/nope.pkl", 1, "{d}/nope.pkl", "no such file"),
    Case("info-truncated-pickle", lambda c, d: _write(d / "t.pkl", b"\x80\x02}q\x00(X"), "info {d}/t.pkl", 1, "{d}/t.pkl"),
    Case("info-empty-pickle", lambda c, d: _write(d / "e.pkl", b""), "info {d}/e.pkl", 1, "{d}/e.pkl", "empty"),
    Case("info-pickle-runs-os-system", lambda c, d: _write(d / "evil.pkl", pickle.dumps(_Payload(c.marker), 2)),
         "info {d}/evil.pkl", 1, "{d}/evil.pkl", "refused pickle global"),
    Case("info-npy-object-runs-os-system", lambda c, d: _write(d / "evil.npy", _object_npy(pickle.dumps(_Payload(c.marker), 2))),
         "info {d}/evil.npy", 1, "{d}/evil.npy", "refused pickle global"),
    Case("info-pickle-calls-ndarray-1e11", lambda c, d: _write(d / "big.pkl", pickle.dumps(_Call(np.ndarray, (10**11,)), 2)),
         "info {d}/big.pkl", 1, "{d}/big.pkl", "ndarray"),
    Case("info-pickle-reconstructs-1e11", lambda c, d: _write(d / "big.pkl", pickle.dumps(
        _Call(np.ndarray.__reduce__(np.zeros(1))[0], np.ndarray, (10**11,), b"d"), 2)),
         "info {d}/big.pkl", 1, "{d}/big.pkl", "allocate"),
    Case("info-pkl-link-to-dev-zero", lambda c, d: os.symlink("/dev/zero", d / "zero.pkl"),
         "info {d}/zero.pkl", 1, "{d}/zero.pkl", "not a regular file"),
    Case("info-npy-header-claims-1e11", lambda c, d: _write(d / "h.npy", _npy_header((10**11,)) + bytes(24)),
         "info {d}/h.npy", 1, "{d}/h.npy", "header announces"),
    Case("info-npy-truncated", lambda c, d: _write(d / "t.npy", _npy_bytes(np.zeros(100))[:-80]),
         "info {d}/t.npy", 1, "{d}/t.npy", "bytes follow"),
    Case("info-npy-zero-bytes", lambda c, d: _write(d / "z.npy", b""), "info {d}/z.npy", 1, "{d}/z.npy", "empty"),
    Case("info-npy-not-numpy", lambda c, d: _write(d / "x.npy", "hello"), "info {d}/x.npy", 1, "{d}/x.npy"),
    Case("info-npy-under-npz-name", lambda c, d: _write(d / "p.npz", _npy_bytes(np.zeros(400))),
         "info {d}/p.npz", 1, "{d}/p.npz", ".npy array saved under an .npz name"),
    Case("info-npz-member-claims-1e11", lambda c, d: _write(d / "p.npz", _huge_member_npz()),
         "info {d}/p.npz", 1, "{d}/p.npz", "betas"),
    Case("info-npz-garbage", lambda c, d: _write(d / "p.npz", b"PK\x03\x04garbage"), "info {d}/p.npz", 1, "{d}/p.npz"),
    Case("info-npz-missing-keys", lambda c, d: _write(d / "p.npz", _zip_bytes({"x.npy": _npy_bytes(1)})),
         "info {d}/p.npz", 1, "{d}/p.npz", "missing key"),
    Case("info-pickle-of-a-list", lambda c, d: _write(d / "l.pkl", pickle.dumps([1, 2, 3], 2)),
         "info {d}/l.pkl", 1, "{d}/l.pkl", "list"),
    Case("info-unknown-suffix", lambda c, d: _write(d / "x.xyz", "1 2 3"), "info {d}/x.xyz", 1, "{d}/x.xyz", "unknown"),
    Case("info-folder-without-subsets", lambda c, d: (d / "empty").mkdir(), "info {d}/empty", 1, "{d}/empty", "no MICA subsets"),
    Case("info-zip-not-a-zip", lambda c, d: _write(d / "BP4D.zip", "not a zip"), "info {d}/BP4D.zip", 1, "{d}/BP4D.zip", "zip"),
    # --- info: meshes ---------------------------------------------------------------------------------------
    Case("obj-face-index-beyond-int64", lambda c, d: _write(d / "m.obj", _obj_text(TRIANGLE, "f 1 2 99999999999999999999999\n")),
         "info {d}/m.obj", 1, "{d}/m.obj", "malformed OBJ"),
    Case("obj-v-lines-with-two-numbers", lambda c, d: _write(d / "m.obj", _obj_text("v 0 0\nv 1 0\nv 0 1\n")),
         "info {d}/m.obj", 1, "{d}/m.obj", "needs 3"),
    Case("obj-nan-vertex", lambda c, d: _write(d / "m.obj", _obj_text("v nan 0 0\nv 1 0 0\nv 0 1 0\n")),
         "info {d}/m.obj", 1, "{d}/m.obj", "NaN"),
    Case("obj-face-index-out-of-range", lambda c, d: _write(d / "m.obj", _obj_text(TRIANGLE, "f 1 2 7\n")),
         "info {d}/m.obj", 1, "{d}/m.obj", "out of range"),
    Case("obj-face-index-zero", lambda c, d: _write(d / "m.obj", _obj_text(TRIANGLE, "f 0 1 2\n")),
         "info {d}/m.obj", 1, "{d}/m.obj", "out of range"),
    Case("obj-empty", lambda c, d: _write(d / "m.obj", ""), "info {d}/m.obj", 1, "{d}/m.obj", "no vertices"),
    Case("obj-text-garbage", lambda c, d: _write(d / "m.obj", "v a b c\nf 1 1 1\n"), "info {d}/m.obj", 1, "{d}/m.obj"),
    Case("obj-is-a-folder", lambda c, d: (d / "m.obj").mkdir(), "info {d}/m.obj", 1, "{d}/m.obj"),
    Case("ply-garbage", lambda c, d: _write(d / "m.ply", "ply\nformat ascii 1.0\nelement vertex 3\nend_header\n1 2\n"),
         "info {d}/m.ply", 1, "{d}/m.ply"),
    Case("wrl-garbage", lambda c, d: _write(d / "m.wrl", "#VRML V2.0 utf8\nShape { geometry IndexedFaceSet { coord"),
         "info {d}/m.wrl", 1, "{d}/m.wrl"),
    Case("abs-truncated", lambda c, d: _write(d / "04200d74.abs", "3 rows\n3 columns\npixels (flag X Y Z):\n1 1 1\n"),
         "info {d}/04200d74.abs", 1, "{d}/04200d74.abs", "truncated"),
    # --- register: scans whose coordinates are no head ------------------------------------------------------
    Case("register-flat-plane", lambda c, d: _plane(c, d / "plane.obj"),
         f"register {{d}}/plane.obj {M} --out {{d}}/out", 1, "{d}/plane.obj", "flat"),
    Case("register-units-cm-on-a-mm-head", lambda c, d: c.head(d / "s.obj", 1000.0),
         f"register {{d}}/s.obj {M} --out {{d}}/out --units cm", 1, "{d}/s.obj", "wrong units"),
    Case("register-units-mm-on-a-metre-head", lambda c, d: c.head(d / "s.obj"),
         f"register {{d}}/s.obj {M} --out {{d}}/out --units mm", 1, "{d}/s.obj", "wrong units"),
    Case("register-vertex-at-1e30", lambda c, d: _write(d / "s.obj", c.head(d / "s.obj").read_text() + "v 1e30 0 0\n"),
         f"register {{d}}/s.obj {M} --out {{d}}/out", 1, "{d}/s.obj", "1e+30 m from the centre"),
    Case("register-point-cloud", lambda c, d: _write(d / "s.obj", "".join(f"v {x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in c.vertices)),
         f"register {{d}}/s.obj {M} --out {{d}}/out", 1, "{d}/s.obj", "no triangles"),
    Case("register-missing-scan", _nothing, f"register {{d}}/s.obj {M} --out {{d}}/out", 1, "{d}/s.obj", "no such file"),
    Case("register-obj-face-index-beyond-int64", lambda c, d: _write(d / "s.obj", _obj_text(TRIANGLE, "f 1 2 99999999999999999999\n")),
         f"register {{d}}/s.obj {M} --out {{d}}/out", 1, "{d}/s.obj", "malformed OBJ"),
    Case("register-two-bad-scans-goes-on", lambda c, d: (_plane(c, d / "a.obj"), _write(d / "b.obj", "v 0 0\n")),
         f"register {{d}}/a.obj {{d}}/b.obj {M} --out {{d}}/out", 1, ("{d}/a.obj", "{d}/b.obj")),
    # --- register: landmarks that do not belong to the scan (item 9) -----------------------------------------
    Case("register-landmarks-10-m-away", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks + [10.0, 0, 0])),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy", "not on the scan"),
    Case("register-landmarks-10-m-away-units-given", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks + [10.0, 0, 0])),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy --units m", 1, "{d}/lmk.npy", "not on the scan"),
    Case("register-landmarks-in-mm-scan-in-m", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks * 1000)),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy --units m", 1, "{d}/lmk.npy", "wrong units"),
    Case("register-landmarks-in-mm-decide-units", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks * 1000)),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/s.obj", "wrong units"),
    Case("register-one-landmark-misplaced", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks + np.eye(51, 3)[:, ::-1] * 0.2)),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy", "landmark 0"),
    Case("register-landmarks-all-zero-units-given", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, np.zeros((51, 3)))),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy --units m", 1, "{d}/lmk.npy"),
    Case("register-landmarks-need-one-scan", lambda c, d: _lmk(c, d, c.landmarks),
         f"register {{d}}/a.obj {{d}}/b.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 2, (), "exactly one scan"),
    # --- register: malformed landmark files, named -------------------------------------------------------------------------
    Case("register-landmarks-all-zero", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, np.zeros((51, 3)))),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy"),
    Case("register-landmarks-of-strings", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, np.full((51, 3), "x"))),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy"),
    Case("register-landmarks-zero-byte-npy", lambda c, d: (c.head(d / "s.obj"), _write(d / "lmk.npy", b"")),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy"),
    Case("register-landmarks-wrong-shape", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, c.landmarks[:50])),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy"),
    Case("register-landmarks-nan", lambda c, d: (c.head(d / "s.obj"), _lmk(c, d, np.where(np.eye(51, 3) > 0, np.nan, c.landmarks))),
         f"register {{d}}/s.obj {M} --out {{d}}/out --landmarks {{d}}/lmk.npy", 1, "{d}/lmk.npy", "NaN"),
    # --- register: the model and its files -----------------------------------------------------------------
    Case("register-model-runs-os-system", lambda c, d: (c.head(d / "s.obj"), _write(d / "m" / "generic_model.pkl", pickle.dumps(_Payload(c.marker), 2))),
         "register {d}/s.obj --model {d}/m/generic_model.pkl --out {d}/out", 1, "{d}/m/generic_model.pkl", "refused"),
    Case("register-model-link-to-dev-zero", lambda c, d: (c.head(d / "s.obj"), (d / "m").mkdir(), os.symlink("/dev/zero", d / "m" / "generic_model.pkl")),
         "register {d}/s.obj --model {d}/m/generic_model.pkl --out {d}/out", 1, "{d}/m/generic_model.pkl", "not a regular file"),
    Case("register-embedding-triangles-out-of-range", lambda c, d: (c.head(d / "s.obj"), _write(d / "emb.pkl", pickle.dumps(
        {"lmk_face_idx": np.full(51, 10**6), "lmk_b_coords": np.full((51, 3), 1 / 3)}, 2))),
         f"register {{d}}/s.obj {M} --embedding {{d}}/emb.pkl --out {{d}}/out", 1, "{d}/emb.pkl", "out of range"),
    # --- register: where the outputs go -----------------------------------------------------------------------
    Case("register-out-is-a-file", lambda c, d: (c.head(d / "s.obj"), _write(d / "out", "x")),
         f"register {{d}}/s.obj {M} --out {{d}}/out", 2, "{d}/out", "not a folder"),
    Case("register-out-below-a-file", lambda c, d: (c.head(d / "s.obj"), _write(d / "f", "x")),
         f"register {{d}}/s.obj {M} --out {{d}}/f/out", 2, "{d}/f/out", "is a file"),
    Case("register-out-read-only", lambda c, d: c.head(d / "s.obj"), f"register {{d}}/s.obj {M} --out {{ro}}/out", 2,
         "{ro}/out", "cannot write"),
    Case("register-units-unknown", _nothing, f"register {{d}}/s.obj {M} --out {{d}}/out --units km", 2, (), "--units"),
    # --- fit-mesh ----------------------------------------------------------------------------------------------
    Case("fit-mesh-wrong-vertex-count", lambda c, d: _plane(c, d / "m.obj"), f"fit-mesh {{d}}/m.obj {M} --out {{d}}/out",
         1, "{d}/m.obj", "vertices"),
    Case("fit-mesh-vertex-at-1e30", lambda c, d: write_obj(d / "m.obj", Mesh(np.vstack([c.vertices[:-1], [[1e30, 0, 0]]]), c.faces)),
         f"fit-mesh {{d}}/m.obj {M} --out {{d}}/out", 1, "{d}/m.obj", "1e+30 m from the centre"),
    Case("fit-mesh-units-mm-on-metres", lambda c, d: c.head(d / "m.obj"), f"fit-mesh {{d}}/m.obj {M} --out {{d}}/out --units mm",
         1, "{d}/m.obj", "wrong units"),
    Case("fit-mesh-out-is-a-file", lambda c, d: (c.head(d / "m.obj"), _write(d / "out", "x")),
         f"fit-mesh {{d}}/m.obj {M} --out {{d}}/out", 2, "{d}/out", "not a folder"),
    # --- validate and export: MICA roots ---------------------------------------------------------------------
    Case("validate-missing-root", _nothing, "validate {d}/mica", 1, "{d}/mica", "no such"),
    Case("validate-npy-under-npz-name", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz", _npy_bytes(np.zeros(400)))),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", ".npy array"),
    Case("validate-npz-member-claims-1e11", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz", _huge_member_npz())),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", "header announces"),
    Case("validate-zip-member-with-dotdot", lambda c, d: _zip_with(c, d / "mica" / "BU3DFE.zip", lambda zf: zf.writestr("../evil.npz", _params_npz())),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE.zip/../evil.npz", "'..'"),
    Case("validate-zip-member-symlink", lambda c, d: _zip_with(c, d / "mica" / "BU3DFE.zip", _symlink_member),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE.zip/FLAME_parameters/A2/s2.npz", "symbolic link"),
    Case("validate-model-runs-os-system", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "evil.pkl", pickle.dumps(_Payload(c.marker), 2))),
         "validate {d}/mica --model {d}/evil.pkl", 1, "{d}/evil.pkl", "refused"),
    Case("validate-image-list-runs-os-system", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "mica/image_paths/BU3DFE.npy", _object_npy(pickle.dumps(_Payload(c.marker), 2)))),
         "validate {d}/mica", 1, "{d}/mica/image_paths/BU3DFE.npy", "refused"),
    Case("export-npy-under-npz-name", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz", _npy_bytes(np.zeros(400)))),
         "export {d}/mica --out {d}/all.npz", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", ".npy array"),
    Case("export-zip-member-with-dotdot", lambda c, d: _zip_with(c, d / "mica" / "BU3DFE.zip", lambda zf: zf.writestr("FLAME_parameters/../../x.npz", _params_npz())),
         "export {d}/mica --out {d}/all.csv", 1, "{d}/mica/BU3DFE.zip/FLAME_parameters/../../x.npz", "'..'"),
    Case("export-out-is-a-folder", lambda c, d: (_mica_tree(c, d / "mica"), (d / "all.npz").mkdir()),
         "export {d}/mica --out {d}/all.npz", 2, "{d}/all.npz", "is a folder"),
    Case("export-out-unknown-format", lambda c, d: _mica_tree(c, d / "mica"), "export {d}/mica --out {d}/all.txt", 2, "{d}/all.txt", "format"),
    Case("export-out-below-a-file", lambda c, d: (_mica_tree(c, d / "mica"), _write(d / "f", "x")),
         "export {d}/mica --out {d}/f/all.npz", 2, "{d}/f/all.npz", "is a file"),
    # --- build: options refused by the parser, inputs refused before any work -------------------------------
    Case("build-workers-0", _nothing, "build --source FRGC --raw {d} --out {d}/mica --workers 0", 2, (), "--workers"),
    Case("build-workers-negative", _nothing, "build --source FRGC --raw {d} --out {d}/mica --workers -3", 2, (), "--workers"),
    Case("build-workers-not-a-number", _nothing, "build --source FRGC --raw {d} --out {d}/mica --workers two", 2, (), "--workers"),
    Case("build-landmarks-unknown-field", _nothing, "build --source FRGC --raw {d} --out {d}/mica --landmarks {{nope}}/{{stem}}.npy",
         2, (), "{nope}"),
    Case("build-landmarks-positional-field", _nothing, "build --source FRGC --raw {d} --out {d}/mica --landmarks lmk/{{0}}.npy", 2, (), "{0}"),
    Case("build-landmarks-unbalanced-brace", _nothing, "build --source FRGC --raw {d} --out {d}/mica --landmarks lmk/{{actor.npy", 2, (), "--landmarks"),
    Case("build-landmarks-attribute-access", _nothing, "build --source FRGC --raw {d} --out {d}/mica --landmarks {{actor.__class__}}.npy",
         2, (), "unknown field"),
    Case("build-source-unknown", _nothing, "build --source NOPE --raw {d} --out {d}/mica", 2, (), "unknown source"),
    Case("build-raw-missing", _nothing, f"build --source FRGC --raw {{d}}/raw --out {{d}}/mica {M} --json", 1, "{d}/raw", "no such folder"),
    Case("build-out-is-a-file", lambda c, d: _write(d / "mica", "x"), f"build --source FRGC --raw {{d}} --out {{d}}/mica {M}", 2,
         "{d}/mica", "not a folder"),
    Case("build-bad-scans-go-on", lambda c, d: _stirling_release(c, d / "raw"),
         f"build --source STIRLING --raw {{d}}/raw --out {{d}}/mica {M} --workers 1 --require-texture --json", 1,
         ("{d}/raw/scans/F/F1001_N.obj", "{d}/raw/scans/F/F1002_N.bmp"), "cannot read image"),
    Case("build-out-read-only", _nothing, f"build --source FRGC --raw {{d}} --out {{ro}}/mica {M}", 2, "{ro}/mica", "cannot write"),
    Case("build-image-list-runs-os-system", lambda c, d: _write(d / "list.npy", _object_npy(pickle.dumps(_Payload(c.marker), 2))),
         f"build --source FRGC --raw {{d}} --out {{d}}/mica --image-list {{d}}/list.npy {M}", 1, "{d}/list.npy", "refused"),
    Case("build-image-list-not-a-dict", lambda c, d: _write(d / "list.npy", _object_npy(pickle.dumps([1, 2], 2))),
         f"build --source FRGC --raw {{d}} --out {{d}}/mica --image-list {{d}}/list.npy {M}", 1, "{d}/list.npy", "expected a dict"),
    # --- prepare ------------------------------------------------------------------------------------------------
    Case("prepare-subset-unknown", _nothing, "prepare {d}/root --subset NOPE --photos {d}", 2, (), "unknown subset"),
    Case("prepare-min-score-nan", _nothing, "prepare {d}/root --subset FLORENCE --photos {d} --min-score nan", 2, (), "--min-score"),
    Case("prepare-min-score-above-1", _nothing, "prepare {d}/root --subset FLORENCE --photos {d} --min-score 1.5", 2, (), "--min-score"),
    Case("prepare-workers-0", _nothing, "prepare {d}/root --subset FLORENCE --photos {d} --workers 0", 2, (), "--workers"),
    Case("prepare-photos-missing", _nothing, "prepare {d}/root --subset FLORENCE --photos {d}/photos", 1, "{d}/photos", "not found"),
    Case("prepare-root-is-a-file", lambda c, d: _write(d / "root", "x"), "prepare {d}/root --subset FLORENCE --photos {d}", 2,
         "{d}/root", "not a folder"),
    # --- image-paths diff ---------------------------------------------------------------------------------------
    Case("diff-list-runs-os-system", lambda c, d: (_write(d / "a.npy", _object_npy(pickle.dumps(_Payload(c.marker), 2))),
                                                 _write(d / "b.npy", _object_npy(pickle.dumps({}, 2)))),
         "image-paths diff {d}/a.npy {d}/b.npy", 1, "{d}/a.npy", "refused"),
    Case("diff-list-link-to-dev-zero", lambda c, d: os.symlink("/dev/zero", d / "a.npy"), "image-paths diff {d}/a.npy {d}/a.npy",
         1, "{d}/a.npy", "not a regular file"),
    Case("diff-list-header-claims-1e11", lambda c, d: _write(d / "a.npy", _npy_header((10**11,)) + bytes(8)),
         "image-paths diff {d}/a.npy {d}/a.npy", 1, "{d}/a.npy", "header announces"),
    Case("diff-list-missing", _nothing, "image-paths diff {d}/a.npy {d}/b.npy", 1, "{d}/a.npy", "no such file"),
    Case("diff-list-of-wrong-values", lambda c, d: _write(d / "a.npy", _object_npy(pickle.dumps({"A": 3}, 2))),
         "image-paths diff {d}/a.npy {d}/a.npy", 1, "{d}/a.npy", "expected (image list, npz path)"),
    # --- demo and the parser ---------------------------------------------------------------------------------
    Case("demo-out-is-a-file", lambda c, d: _write(d / "demo", "x"), "demo --out {d}/demo", 2, "{d}/demo", "not a folder"),
    Case("unknown-command", _nothing, "frobnicate {d}", 2, (), "invalid choice"),
    Case("missing-argument", _nothing, "register", 2, (), "required"),
]


# --- round two (issue 27): cases that run in this process (nothing in them can hang or take gigabytes) ------

def _head_ply(c: Ctx, cut: float | None = None, extra: str = "") -> str:
    text = ci.ascii_ply(c.vertices * 1000, c.faces) + extra
    return text if cut is None else text[:int(len(text) * cut)]


def _ragged_obj(c: Ctx, d: Path) -> None:
    """The head with its second v line short by one value and its third long by one: the total still
    divides by three, so a reader that reshapes all values at once shifts the vertices after line 1."""
    lines = c.head(d / "s.obj", 1000.0).read_text().splitlines()
    a, b = lines[1].split(), lines[2].split()
    lines[1], lines[2] = " ".join(a[:-1]), " ".join(b + [a[-1]])
    _write(d / "s.obj", "\n".join(lines) + "\n")


def _masks(d: Path, masks: object) -> None:
    _write(d / "masks.pkl", pickle.dumps(masks, 2))


TOKEN_ERROR_HEADER = "{'descr': " + "'" * 3 + "<f8"  # a string that never ends: tokenize's TokenError
R2 = "register {d}/s.obj --model {model} --out {d}/out"
CASES += [
    # 27.2: pickles that only numbers may come out of
    Case("info-pickle-array-without-state", lambda c, d: _write(d / "m.pkl", pickle.dumps({"x": _Call(
        ci.RECONSTRUCT, np.ndarray, (0,), b"b")}, 2)), "info {d}/m.pkl", 1, "{d}/m.pkl", cause="27.2",
         what="a pickle of an ndarray without its state"),
    Case("info-pickle-structured-dtype", lambda c, d: _write(d / "m.pkl", pickle.dumps(
        {"v_template": np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])}, 2)), "info {d}/m.pkl", 1, "{d}/m.pkl",
         "refused", cause="27.2", what="a model pickle holding a structured (record) array"),
    Case("info-pickle-object-array-inside-npy-wrapper", lambda c, d: _write(d / "l.npy", ci.npy_object(pickle.dumps(
        np.array({"A": np.array([1, "x"], dtype=object)}, dtype=object), 2))), "info {d}/l.npy", 1, "{d}/l.npy",
         "dtype object", cause="27.2", what="an image list whose dict holds a second object array"),
    Case("info-pickle-reference-cycle", lambda c, d: _write(d / "m.pkl", b"\x80\x02]q\x00h\x00a."),
         "info {d}/m.pkl", 1, "{d}/m.pkl", "cycle", cause="27.2", what="a pickle of a list that holds itself"),
    Case("info-pickle-nested-100k-deep", lambda c, d: _write(d / "m.pkl", b"\x80\x02" + b"]" * 100_000
                                                              + b"a" * 99_999 + b"."),
         "info {d}/m.pkl", 1, "{d}/m.pkl", "nested", cause="27.2", what="lists nested 10^5 deep in 200 kB"),
    # 27.4 (reads): every path a regular file
    Case("register-scan-is-a-folder", lambda c, d: (d / "s.obj").mkdir(), R2, 1, "{d}/s.obj", "folder",
         cause="27.4", what="a folder named like a scan"),
    # 27.5: meshes whose lines do not hold what they promise
    Case("register-obj-ragged-v-lines", _ragged_obj, R2, 1, "{d}/s.obj", "ragged", cause="27.5",
         what="OBJ v lines of 2 and 4 values (the total divides by 3)"),
    Case("info-obj-faces-mix-corner-forms", lambda c, d: _write(d / "m.obj", TRIANGLE + "vt 0 0\nvt 1 0\nvt 0 1\n"
                                                                 "f 1/1 2/2 3/3\nf 1 2 3\nf 1/1/1 2/2/2 3/3/3\n"),
         "info {d}/m.obj", 1, "{d}/m.obj", "corner forms", cause="27.5",
         what="OBJ faces v/vt, v and v/vt/vn whose counts add up"),
    Case("info-obj-face-of-two-corners", lambda c, d: _write(d / "m.obj", TRIANGLE + "f 1 2\n"), "info {d}/m.obj", 1,
         "{d}/m.obj", "corner", cause="27.5", what="an OBJ face of two corners"),
    Case("register-ply-cut-in-face-list", lambda c, d: _write(d / "s.ply", _head_ply(c, 0.9)),
         "register {d}/s.ply --model {model} --out {d}/out", 1, "{d}/s.ply", "truncated", cause="27.5",
         what="ASCII PLY of the head cut in its face list"),
    Case("info-ply-more-lines-than-announced", lambda c, d: _write(d / "m.ply", _head_ply(c, extra="3 0 1 2\n")),
         "info {d}/m.ply", 1, "{d}/m.ply", "longer than announced", cause="27.5",
         what="ASCII PLY with one face more than its header says"),
    Case("info-ply-face-holds-fewer-corners", lambda c, d: _write(d / "m.ply", ci.ascii_ply(
        c.vertices[:4], np.array([[0, 1, 2]])).replace("3 0 1 2", "4 0 1 2")), "info {d}/m.ply", 1, "{d}/m.ply",
         "corners", cause="27.5", what="ASCII PLY face announcing 4 corners holding 3"),
    Case("info-ply-vertex-line-short", lambda c, d: _write(d / "m.ply", ci.ascii_ply(
        c.vertices[:4], np.array([[0, 1, 2]])).replace(" ", "\n", 1)), "info {d}/m.ply", 1, "{d}/m.ply",
         cause="27.5", what="ASCII PLY whose first vertex is split over two lines"),
    Case("info-ply-binary-truncated", lambda c, d: (write_ply(d / "m.ply", Mesh(c.vertices, c.faces)),
                                                   _write(d / "m.ply", (d / "m.ply").read_bytes()[:-100])),
         "info {d}/m.ply", 1, "{d}/m.ply", "truncated", cause="27.5", what="binary PLY 100 bytes short"),
    # 27.6: parsers that refuse malformed content in one line
    Case("register-landmarks-ljson-nested-100k", lambda c, d: (c.head(d / "s.obj", 1000.0), _write(
        d / "l.ljson", '{"landmarks": {"points": ' + "[" * 100_000 + "]" * 100_000 + "}}")),
         f"{R2} --landmarks {{d}}/l.ljson", 1, "{d}/l.ljson", "nested", cause="27.6", what="LJSON nested 10^5 deep"),
    Case("register-landmarks-ljson-5000-digit-int", lambda c, d: (c.head(d / "s.obj", 1000.0), _write(
        d / "l.ljson", '{"landmarks": {"points": [[' + "9" * 5000 + ", 0, 0]]}}")),
         f"{R2} --landmarks {{d}}/l.ljson", 1, "{d}/l.ljson", "JSON", cause="27.6",
         what="LJSON holding a 5,000-digit integer"),
    Case("register-landmarks-ljson-label-of-strings", lambda c, d: (c.head(d / "s.obj", 1000.0), _write(
        d / "l.ljson", json.dumps({"landmarks": {"points": c.landmarks.tolist()}, "labels": [
            {"label": "jaw", "mask": ["a", "b"]}]}))),
         f"{R2} --landmarks {{d}}/l.ljson", 1, "{d}/l.ljson", "label", cause="27.6",
         what="LJSON label whose mask holds strings"),
    Case("register-landmarks-land-2d-points", lambda c, d: (c.head(d / "s.obj", 1000.0), _write(
        d / "l.land", "51\n" + "".join(f"{x:.3f} {y:.3f}\n" for x, y, _ in c.landmarks * 1000))),
         f"{R2} --landmarks {{d}}/l.land", 1, "{d}/l.land", "2D", cause="27.6",
         what="FaceWarehouse .land of 2D photo points"),
    Case("register-masks-name-5000-digit-int", lambda c, d: (c.head(d / "s.obj", 1000.0), _masks(d, {10**5000: [0, 1]})),
         f"{R2} --masks {{d}}/masks.pkl", 1, "{d}/masks.pkl", "mask names", cause="27.6",
         what="masks named by a 5,000-digit integer"),
    Case("register-masks-entry-a-string", lambda c, d: (c.head(d / "s.obj", 1000.0), _masks(d, {"face": "abc"})),
         f"{R2} --masks {{d}}/masks.pkl", 1, "{d}/masks.pkl", "not vertex indices", cause="27.6",
         what="a mask that is a string"),
    Case("register-masks-entry-a-dict", lambda c, d: (c.head(d / "s.obj", 1000.0), _masks(d, {"face": {"a": 1}})),
         f"{R2} --masks {{d}}/masks.pkl", 1, "{d}/masks.pkl", "not vertex indices", cause="27.6",
         what="a mask that is a dict"),
    Case("register-masks-entry-huge-int", lambda c, d: (c.head(d / "s.obj", 1000.0), _masks(d, {"face": [0, 10**5000]})),
         f"{R2} --masks {{d}}/masks.pkl", 1, "{d}/masks.pkl", "too large", cause="27.6",
         what="a mask holding a 5,000-digit index"),
    Case("info-npy-header-token-error", lambda c, d: _write(d / "x.npy", ci.npy_with_header(TOKEN_ERROR_HEADER)),
         "info {d}/x.npy", 1, "{d}/x.npy", "not a .npy array", cause="27.6",
         what=".npy header that is not a Python literal (TokenError)"),
    Case("info-npy-header-negative-shape", lambda c, d: _write(d / "x.npy", ci.npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-8,), }") + bytes(64)),
         "info {d}/x.npy", 1, "{d}/x.npy", "not a .npy array", cause="27.6", what=".npy header of shape (-8,)"),
    Case("info-npy-header-5000-digit-shape", lambda c, d: _write(d / "x.npy", ci.npy_with_header(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",), }")),
         "info {d}/x.npy", 1, "{d}/x.npy", "not a .npy array", cause="27.6", what=".npy header of a 5,000-digit shape"),
    Case("diff-list-actor-5000-digit-int", lambda c, d: _write(d / "a.npy", ci.npy_object(pickle.dumps(
        np.array({10**5000: (["x.jpg"], "x.npz")}, dtype=object), 2))),
         "image-paths diff {d}/a.npy {d}/a.npy", 1, "{d}/a.npy", "not a string", cause="27.6",
         what="an image list keyed by a 5,000-digit integer"),
]


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# --- running a case ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx(tmp_path_factory, flame_model) -> Ctx:
    folder = tmp_path_factory.mktemp("corpus")
    model_path = folder / "model.npz"
    save_model(flame_model, model_path)
    v, f = flame_model.v_template, flame_model.faces
    lmk = flame_model.landmarks.static51.locate(v, f)
    return Ctx(model_path, _readonly_folder(folder), v, f, lmk, folder / "PAYLOAD_RAN")


def _readonly_folder(base: Path) -> Path | None:
    """A folder this process cannot write into: a 0o555 folder, or for root (who writes anywhere) a
    read-only system folder."""
    ro = base / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return ro
    sys_kernel = Path("/sys/kernel")
    try:
        (sys_kernel / ".onflame-probe").open("w").close()
    except OSError:
        return sys_kernel if sys_kernel.is_dir() else None
    return None


def _argv(case: Case, d: Path, ctx: Ctx) -> list[str]:
    return [a.format(d=d, model=ctx.model_path, ro=ctx.readonly) for a in case.argv.split()]


def _names(case: Case, d: Path, ctx: Ctx) -> list[str]:
    names = (case.names,) if isinstance(case.names, str) else case.names
    return [n.format(d=d, model=ctx.model_path, ro=ctx.readonly) for n in names]


def check_outcome(case: Case, d: Path, ctx: Ctx, code: int, out: str, err: str) -> None:
    """The assertions every case makes (see the module docstring)."""
    assert "Traceback" not in out + err, err
    assert code == case.code, f"exit code {code}, expected {case.code}; stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    names = _names(case, d, ctx)
    assert len(lines) == max(1, len(names)), f"expected {max(1, len(names))} line(s) on stderr, got: {lines}"
    for line, name in zip(lines, names or [None]):
        assert line.startswith("onflame: "), line
        if name is not None:
            assert line.startswith(f"onflame: {name}: "), f"the line should name {name}: {line}"
    if case.says:
        assert any(case.says in ln for ln in lines), f"{case.says!r} not in {lines}"
    left = [str(p.relative_to(d)) for p in d.rglob("*") if ".tmp" in p.name or ".onflame-probe" in p.name]
    assert not left, f"temporary files left: {left}"
    outputs = [p for p in (d / "out").rglob("*") if p.is_file()] if (d / "out").is_dir() else []
    assert not outputs, f"a failed command left outputs: {outputs}"
    assert not ctx.marker.exists(), "a pickle payload ran"


def _note(case: Case, **numbers: float) -> None:
    """With ``ONFLAME_CORPUS_RESULTS`` set, keep a passed case's numbers for ``tools/reliability_table.py``."""
    path = os.environ.get("ONFLAME_CORPUS_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"id": case.id, **numbers}) + "\n")


def _params(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_params(c) for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, capsys):
    if "{ro}" in case.argv and ctx.readonly is None:
        pytest.skip("no read-only folder on this machine")
    d = tmp_path / "case"
    d.mkdir()
    case.make(ctx, d)
    code = main(_argv(case, d, ctx))
    captured = capsys.readouterr()
    check_outcome(case, d, ctx, code, captured.out, captured.err)
    _note(case)


def test_corpus_size():
    """The bar: at least 60 cases, each with its own name."""
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


#: Cases that also run as a real process: the installed entry point, its exit status and streams.
SUBPROCESS = ("obj-face-index-beyond-int64", "info-pickle-runs-os-system", "build-workers-0", "register-flat-plane")


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_bad_input_in_a_process(case_id: str, ctx: Ctx, tmp_path: Path):
    case = next(c for c in CASES if c.id == case_id)
    d = tmp_path / "case"
    d.mkdir()
    case.make(ctx, d)
    proc = subprocess.run([sys.executable, "-m", "onflame.cli", *_argv(case, d, ctx)], capture_output=True,
                          text=True, timeout=300)
    check_outcome(case, d, ctx, proc.returncode, proc.stdout, proc.stderr)


# --- round two: cases run as a process with a time limit and their memory peak measured ------------------------
#
# Inputs that never end (FIFOs, sockets, devices) and bombs (pickles, gzip, zip members, sparse files,
# VRML instancing) run as a real ``onflame`` process: a hang is a timeout, not a stuck test run, and the
# peak resident memory of that process alone (``wait4``) must stay under :data:`PEAK_LIMIT`. An address
# space limit of :data:`AS_LIMIT` keeps a regression from taking the machine down.

PEAK_LIMIT = 2 * 2**30
AS_LIMIT = 4 * 2**30
#: Seconds a case may run; the bar is 10 s on a quiet machine, the margin is for a shared CI runner.
TIMEOUT = 60


def _fifo_root(c: Ctx, d: Path) -> None:
    _mica_tree(c, d / "mica")
    (d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz").unlink()
    ci.make_fifo(d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz")


def _textured_head(c: Ctx, d: Path, image: Path) -> None:
    """The head in millimetres with texture coordinates and a material naming ``image``."""
    obj = c.head(d / "s.obj", 1000.0)
    text = obj.read_text()
    uv = "".join(f"vt {u:.4f} {v:.4f}\n" for u, v in (c.vertices[:, :2] - c.vertices[:, :2].min(0)) / np.ptp(c.vertices[:, :2], 0))
    faces = "".join(f"f {a}/{a} {b}/{b} {e}/{e}\n" for a, b, e in c.faces + 1)
    _write(obj, "mtllib s.mtl\n" + text.split("f ", 1)[0] + uv + "usemtl m\n" + faces)
    _write(d / "s.mtl", f"newmtl m\nmap_Kd {image.name}\n")


def _png_bomb(path: Path) -> Path:
    """A 97 kB PNG of 10^8 pixels (PIL's decompression-bomb warning starts at 8.9e7)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (10_000, 10_000)).save(buf, format="PNG")
    return _write(path, buf.getvalue())


def _zip_member_bomb(c: Ctx, d: Path) -> None:
    """A subset zip whose registration member inflates to 300 MB (its declared size says so)."""
    (d / "mica").mkdir()
    _write(d / "mica/BU3DFE.zip", ci.raw_zip([("registrations/A1/s1.obj", b"v 0 0 0\n", 300 << 20)]))
    with zipfile.ZipFile(d / "mica/BU3DFE.zip", "a") as zf:
        zf.writestr("FLAME_parameters/A1/s1.npz", _params_npz())


def _now_tree(c: Ctx, d: Path) -> None:
    (d / "pred").mkdir()
    (d / "gt").mkdir()


EVALUATE = "evaluate now --pred {d}/pred --gt {d}/gt --out {d}/out"
BOUNDED = [
    # 27.4: inputs that never end: refused at once, whatever reads them
    Case("info-model-fifo", lambda c, d: ci.make_fifo(d / "generic_model.pkl"), "info {d}/generic_model.pkl", 1,
         "{d}/generic_model.pkl", "FIFO", cause="27.4", what="a FIFO as the model (.pkl)"),
    Case("register-model-fifo-npz", lambda c, d: (c.head(d / "s.obj", 1000.0), ci.make_fifo(d / "m.npz")),
         "register {d}/s.obj --model {d}/m.npz --out {d}/out", 1, "{d}/m.npz", "FIFO", cause="27.4",
         what="a FIFO as the model (.npz)"),
    Case("info-model-socket", lambda c, d: ci.make_socket(d / "m.pkl"), "info {d}/m.pkl", 1, "{d}/m.pkl", "socket",
         cause="27.4", what="a Unix socket as the model"),
    Case("validate-params-fifo", _fifo_root, "validate {d}/mica", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz",
         "FIFO", cause="27.4", what="a FIFO as a parameter file in a root"),
    Case("report-root-params-fifo", _fifo_root, "report {d}/mica --out {d}/site --workers 1 -q", 1,
         "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", "FIFO", cause="27.4",
         what="a FIFO as a parameter file of a report's root (shown on the page, exit 1)"),
    Case("diff-list-fifo", lambda c, d: ci.make_fifo(d / "a.npy"), "image-paths diff {d}/a.npy {d}/a.npy", 1,
         "{d}/a.npy", "FIFO", cause="27.4", what="a FIFO as an image list"),
    Case("build-image-list-fifo", lambda c, d: ci.make_fifo(d / "list.npy"),
         "build --source FRGC --raw {d} --out {d}/mica --image-list {d}/list.npy --model {model}", 1, "{d}/list.npy",
         "FIFO", cause="27.4", what="a FIFO as build's --image-list"),
    Case("evaluate-image-list-fifo", lambda c, d: (_now_tree(c, d), ci.make_fifo(d / "list.txt")),
         f"{EVALUATE} --image-list {{d}}/list.txt", 1, "{d}/list.txt", "FIFO", cause="27.4",
         what="a FIFO as evaluate now's --image-list"),
    Case("register-scan-fifo", lambda c, d: ci.make_fifo(d / "s.obj"), R2, 1, "{d}/s.obj", "FIFO", cause="27.4",
         what="a FIFO as the scan"),
    Case("register-landmarks-fifo", lambda c, d: (c.head(d / "s.obj", 1000.0), ci.make_fifo(d / "l.npy")),
         f"{R2} --landmarks {{d}}/l.npy", 1, "{d}/l.npy", "FIFO", cause="27.4", what="a FIFO as the landmark file"),
    Case("register-masks-fifo", lambda c, d: (c.head(d / "s.obj", 1000.0), ci.make_fifo(d / "masks.pkl")),
         f"{R2} --masks {{d}}/masks.pkl", 1, "{d}/masks.pkl", "FIFO", cause="27.4", what="a FIFO as the masks file"),
    Case("validate-params-link-to-dev-zero", lambda c, d: (_mica_tree(c, d / "mica"), (d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz").unlink(),
                                                           os.symlink("/dev/zero", d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz")),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", "not a regular file", cause="27.4",
         what="a root's parameter file linked to /dev/zero"),
    # 27.2 / 27.8: pickles that allocate what they please
    Case("info-pickle-object-array-1e9", lambda c, d: _write(d / "m.pkl", ci.object_array_pickle()), "info {d}/m.pkl",
         1, "{d}/m.pkl", "dtype object", cause="27.2", what="ndarray.__setstate__ of an object array of 10^9 elements"),
    Case("register-model-object-array-1e9", lambda c, d: (c.head(d / "s.obj", 1000.0), _write(
        d / "m" / "generic_model.pkl", ci.object_array_pickle())),
         "register {d}/s.obj --model {d}/m/generic_model.pkl --out {d}/out", 1, "{d}/m/generic_model.pkl",
         "dtype object", cause="27.2", what="the same payload as the model's v_template"),
    Case("diff-list-object-array-1e9", lambda c, d: _write(d / "a.npy", ci.npy_object(pickle.dumps(
        ci.ObjectArrayState(), 2))), "image-paths diff {d}/a.npy {d}/a.npy", 1, "{d}/a.npy", "dtype object",
         cause="27.2", what="the same payload as an image list"),
    Case("info-pickle-billion-laughs", lambda c, d: _write(d / "m.pkl", ci.laughs_model_pickle()), "info {d}/m.pkl",
         1, "{d}/m.pkl", "billion laughs", cause="27.8", what="a 300-byte model pickle of shared lists 26 deep"),
    Case("diff-list-billion-laughs", lambda c, d: _write(d / "a.npy", ci.npy_object(pickle.dumps(
        np.array({"A": (ci.laughs(26, "x.jpg"), "A.npz")}, dtype=object), 2))),
         "image-paths diff {d}/a.npy {d}/a.npy", 1, "{d}/a.npy", "billion laughs", cause="27.8",
         what="an image list of shared lists 26 deep"),
    # 27.8: bombs and files larger than their format
    Case("info-wrl-gzip-bomb", lambda c, d: _write(d / "m.wrl", ci.gzip_bomb(b"#VRML V2.0 utf8\n", 1500 << 20)),
         "info {d}/m.wrl", 1, "{d}/m.wrl", "inflates to more than", cause="27.8",
         what="1.5 MB of gzip inflating to 1.5 GB, as .wrl"),
    Case("info-wrl-gz-gzip-bomb", lambda c, d: _write(d / "m.wrl.gz", ci.gzip_bomb(b"#VRML V2.0 utf8\n", 1500 << 20)),
         "info {d}/m.wrl.gz", 1, "{d}/m.wrl.gz", "inflates to more than", cause="27.8",
         what="the same bomb named .wrl.gz"),
    Case("info-abs-gz-gzip-bomb", lambda c, d: _write(d / "04200d74.abs.gz", ci.gzip_bomb(
        b"480 rows\n640 columns\npixels (flag X Y Z):\n", 1500 << 20, b"1 ")),
         "info {d}/04200d74.abs.gz", 1, "{d}/04200d74.abs.gz", "inflates to more than", cause="27.8",
         what="an FRGC .abs.gz inflating to 1.5 GB"),
    Case("validate-params-members-inflate-300mb", lambda c, d: (_mica_tree(c, d / "mica"), _write(
        d / "mica/BU3DFE/FLAME_parameters/A1/s1.npz", ci.params_npz_with_ballast(100))),
         "validate {d}/mica", 1, "{d}/mica/BU3DFE/FLAME_parameters/A1/s1.npz", "inflate", cause="27.8",
         what="a 300 kB parameter npz whose extra members inflate to 3 x 100 MB"),
    Case("validate-zip-member-inflates-300mb", _zip_member_bomb, "validate {d}/mica", 1,
         "{d}/mica/BU3DFE.zip/registrations/A1/s1.obj", "inflates to", cause="27.8",
         what="a subset zip whose registration inflates to 300 MB"),
    Case("info-obj-sparse-1.2gb", lambda c, d: ci.sparse_file(d / "m.obj", 1_200_000_000, TRIANGLE.encode()),
         "info {d}/m.obj", 1, "{d}/m.obj", "reads at most", cause="27.8", what="a 1.2 GB sparse OBJ"),
    Case("info-obj-mtllib-1.5gb", lambda c, d: (ci.sparse_file(d / "big.mtl", 1_500_000_000, b"newmtl m\n"), _write(
        d / "m.obj", "mtllib big.mtl\n" + TRIANGLE + "vt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n")),
         "info {d}/m.obj", 0, "{d}/m.obj", cause="27.8", what="an OBJ whose mtllib names a 1.5 GB file (read on without texture)"),
    Case("info-obj-10m-duplicate-faces", lambda c, d: _write(d / "m.obj", TRIANGLE.encode() + b"f 1 2 3\n" * 10_000_000),
         "info {d}/m.obj", 1, "{d}/m.obj", "repeat", cause="27.5", what="an OBJ of 10 million copies of one face"),
    Case("info-ply-header-9e8-vertices", lambda c, d: _write(d / "m.ply", ci.ascii_ply(
        c.vertices[:4], np.array([[0, 1, 2]]), announce_vertices=900_000_000)), "info {d}/m.ply", 1, "{d}/m.ply",
         "900000000 vertices", cause="27.5", what="ASCII PLY whose header announces 9e8 vertices"),
    Case("info-wrl-def-use-doubling", lambda c, d: _write(d / "m.wrl", ci.vrml_instancing(40)), "info {d}/m.wrl", 1,
         "{d}/m.wrl", "instancing", cause="27.4", what="2 kB of VRML whose 40 DEF/USE levels each double the shapes"),
    Case("register-texture-decompression-bomb", lambda c, d: _textured_head(c, d, _png_bomb(d / "t.png")), R2, 0,
         "{d}/s.obj", cause="27.6", what="a scan whose texture is a 10^8-pixel PNG (read on without texture)"),
]


#: How a case's process starts: under the address-space limit, ``onflame``'s main, then its own memory
#: peak (``VmHWM`` of its memory map: a forked child's ``ru_maxrss`` counts the parent's pages it began with).
_LAUNCH = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from onflame.cli import main
code = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    peak = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
with open(os.environ["ONFLAME_PEAK_FILE"], "w") as fh:
    fh.write(peak)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""


def _peak_run(argv: list[str], timeout: float = TIMEOUT) -> tuple[int, str, str, int, float]:
    """Run ``onflame argv`` as a process: ``(exit code, stdout, stderr, peak resident bytes, seconds)``; a
    process still running after ``timeout`` seconds is killed and the test fails. A process that dies
    before it can say its peak (a crash) is given the peak ``wait4`` reports, an upper bound."""
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "out", "w+") as out, \
            open(Path(tmp) / "err", "w+") as err:
        env = dict(os.environ, ONFLAME_PEAK_FILE=str(Path(tmp) / "peak"))
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCH.format(limit=AS_LIMIT), *argv], stdout=out,
                                stderr=err, stdin=subprocess.DEVNULL, env=env)
        start = time.monotonic()
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"onflame {' '.join(argv)}: still running after {timeout} s (a hang)")
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - start
        peak_file = Path(tmp) / "peak"
        peak_kb = int(peak_file.read_text()) if peak_file.is_file() else usage.ru_maxrss
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read(), err.read(), peak_kb * 1024, seconds


def check_warned(case: Case, d: Path, ctx: Ctx, code: int, out: str, err: str) -> None:
    """A case that succeeds (exit 0) but may say one thing about its input: no traceback, no raw Python
    warning, at most one line on stderr, naming the file when it says something."""
    assert "Traceback" not in out + err and "Warning:" not in err, err
    assert code == case.code, f"exit code {code}, expected {case.code}; stderr: {err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) <= 1, f"more than one line on stderr: {lines}"
    assert all(name in ln for ln in lines for name in _names(case, d, ctx)), lines
    assert not ctx.marker.exists(), "a pickle payload ran"


@pytest.mark.parametrize("case", [_params(c) for c in BOUNDED])
def test_bad_input_bounded(case: Case, ctx: Ctx, tmp_path: Path):
    d = tmp_path / "case"
    d.mkdir()
    case.make(ctx, d)
    code, out, err, peak, seconds = _peak_run(_argv(case, d, ctx))
    (check_warned if case.code == 0 else check_outcome)(case, d, ctx, code, out, err)
    assert peak < PEAK_LIMIT, f"peak memory {peak / 2**30:.2f} GB"
    _note(case, peak_mb=round(peak / 2**20), seconds=round(seconds, 1))


# --- cases that need a registration ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def failed_registration(ctx):
    """A real registration of the template as a scan (millimetres) with its 51 landmarks shuffled: they lie
    on the scan, so every input check passes, but no face fits them."""
    from onflame.flame import load_model
    from onflame.registration import register

    model = load_model(ctx.model_path)
    lmk = ctx.landmarks[np.random.default_rng(0).permutation(51)] * 1000
    return register(Mesh(ctx.vertices * 1000, ctx.faces, source="shuffled.obj"), model, landmarks=lmk)


def test_a_failed_verdict_exits_1_with_every_output(ctx, failed_registration, tmp_path, capsys, monkeypatch):
    import onflame.registration

    reg = failed_registration
    assert reg.verdict == "failed" and any("landmark_median_mm" in r for r in reg.quality.reasons)
    ctx.head(tmp_path / "shuffled.obj", 1000.0)
    monkeypatch.setattr(onflame.registration, "register", lambda *a, **k: reg)  # the registration above
    code = main(["register", str(tmp_path / "shuffled.obj"), "--model", str(ctx.model_path), "--out", str(tmp_path / "out"),
                 "--picture"])
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith(f"onflame: {tmp_path / 'shuffled.obj'}: registration failed")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "shuffled.npz", "shuffled.obj", "shuffled_report.json", "shuffled_report.png"]


def test_a_full_disk_leaves_no_part_of_the_set(ctx, failed_registration, tmp_path, capsys, monkeypatch):
    """The disk fills while the mesh is written (the parameters are already out): none of the four files
    appears, no temporary stays, and the line names the file that could not be written."""
    import onflame.registration

    monkeypatch.setattr(onflame.registration, "register", lambda *a, **k: failed_registration)
    ctx.head(tmp_path / "s.obj", 1000.0)
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:  # the second file: the mesh
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code = main(["register", str(tmp_path / "s.obj"), "--model", str(ctx.model_path), "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and len(calls) == 2
    assert len(lines) == 1 and lines[0] == f"onflame: {tmp_path / 'out' / 's.obj'}: {os.strerror(errno.ENOSPC)}"
    assert not list((tmp_path / "out").iterdir()), "a part of the output set was left"


def test_a_batch_goes_on_after_a_bad_scan(ctx, failed_registration, tmp_path, capsys, monkeypatch):
    import onflame.registration

    real = onflame.registration.register
    monkeypatch.setattr(onflame.registration, "register",
                        lambda scan, *a, **k: failed_registration if Path(scan).name == "good.obj" else real(scan, *a, **k))
    _plane(ctx, tmp_path / "bad.obj")
    ctx.head(tmp_path / "good.obj", 1000.0)
    code = main(["register", str(tmp_path / "bad.obj"), str(tmp_path / "good.obj"), "--model", str(ctx.model_path),
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 1 and lines[0].startswith(f"onflame: {tmp_path / 'bad.obj'}: flat")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.npz", "good.obj", "good_report.json"]


# --- the top level's last net ----------------------------------------------------------------------------------

def test_an_unforeseen_error_is_one_line_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    import onflame.info

    def broken(path):
        raise ZeroDivisionError("a bug nobody foresaw")

    monkeypatch.setattr(onflame.info, "describe", broken)
    target = _write(tmp_path / "x.pkl", b"")
    assert main(["info", str(target)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"onflame: {target}: unexpected ZeroDivisionError: a bug nobody foresaw; "
                     "rerun with --debug for the traceback"]
    with pytest.raises(ZeroDivisionError):  # --debug: the exception propagates (a process prints its traceback)
        main(["--debug", "info", str(target)])


# --- a texture that does not decode is a missing texture, whatever the format (item 10) ---------------------------

def test_a_corrupt_texture_is_read_past_or_named_the_same_for_obj_and_frgc(ctx, tmp_path, caplog):
    from onflame.errors import InputError
    from onflame.sources import get_source

    _stirling_release(ctx, tmp_path / "stirling")
    frgc = tmp_path / "frgc" / "nd1" / "Fall2003range"
    x, y = np.meshgrid(np.linspace(-50, 50, 4), np.linspace(50, -50, 4))
    blocks = [np.ones(16), x.ravel(), y.ravel(), np.zeros(16)]  # flags, X, Y, Z: a flat 4 x 4 range image
    _write(frgc / "04200d74.abs", "4 rows\n4 columns\npixels (flag X Y Z):\n"
           + "".join(" ".join(f"{v:g}" for v in b) + "\n" for b in blocks))
    _write(frgc / "04200d74.ppm", b"P6\n4 4\n255\n" + bytes(10))  # the header promises 48 bytes
    items = {"STIRLING": get_source("STIRLING").find_scans(tmp_path / "stirling")[1],
             "FRGC": get_source("FRGC").find_scans(tmp_path / "frgc")[0]}
    image = {"STIRLING": items["STIRLING"].scan_path.with_suffix(".bmp"), "FRGC": frgc / "04200d74.ppm"}
    for name, item in items.items():
        mesh = item.read()  # read past, with a warning naming the image
        assert mesh.texture is None and mesh.meta["texture_problem"][0] == str(image[name]), name
        assert any(str(image[name]) in r.getMessage() for r in caplog.records), name
        with pytest.raises(InputError) as ei:  # required: an error naming the image
            item.read(require_texture=True)
        assert ei.value.path == str(image[name]) and "cannot read image" in ei.value.problem, name


# --- round two: outputs (issue 27.1, 27.7, 27.8, 27.9; issue 25.2) ----------------------------------------------

def _two_subjects(ctx: Ctx, root: Path) -> Path:
    _mica_tree(ctx, root)
    FlameParams.zeros().save(root / "BU3DFE" / "FLAME_parameters" / "A2" / "s2.npz")
    write_obj(root / "BU3DFE" / "registrations" / "A2" / "s2.obj", Mesh(ctx.vertices * 1.01, ctx.faces))
    return root


def _report(ctx: Ctx, root: Path, site: Path) -> int:
    return main(["report", str(root), "--out", str(site), "--workers", "1", "--model", str(ctx.model_path), "-q"])


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("link", ["img", ".cache", "img/subfolder", "BU3DFE/subjects", "index.html"])
def test_report_never_writes_or_deletes_through_a_link(ctx, tmp_path, capsys, link):
    """27.1: a link planted in a report's folder (here to a folder of the user's own files) is refused
    before any work: exit 2, one line naming it, nothing in the link's target written or removed."""
    root, site, victim = _two_subjects(ctx, tmp_path / "mica"), tmp_path / "site", tmp_path / "victim"
    assert _report(ctx, root, site) == 0
    _write(victim / "keep.jpg", b"the user's own picture")
    _write(victim / "deep" / "keep.html", "<p>the user's own page</p>")
    planted = site / link
    if link == "img/subfolder":
        planted = next(p for p in (site / "img").iterdir() if p.is_dir())
    before = _listing(victim)
    if planted.is_dir():
        shutil.rmtree(planted)
    else:
        planted.unlink()
    os.symlink(victim if link != "index.html" else victim / "keep.jpg", planted)
    capsys.readouterr()
    code = _report(ctx, root, site)
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and lines == [f"onflame: {planted}: is a symbolic link inside the report folder; onflame does "
                                   "not write or delete through links (remove it, or choose another --out)"]
    assert _listing(victim) == before


def test_report_removes_only_what_it_wrote(ctx, tmp_path):
    """27.1: files a report did not write, in its own folders, stay; a subject gone from the root loses
    its pages and pictures (the report's record says it wrote them)."""
    root, site = _two_subjects(ctx, tmp_path / "mica"), tmp_path / "site"
    assert _report(ctx, root, site) == 0
    foreign = [_write(site / "img" / "mine.jpg", b"x"), _write(site / "notes.html", "<p>notes</p>"),
               _write(site / "BU3DFE" / "subjects" / "extra.html", "<p>x</p>")]
    pages_before = {p for p in site.rglob("*.html") if p not in foreign}
    shutil.rmtree(root / "BU3DFE" / "FLAME_parameters" / "A2")
    shutil.rmtree(root / "BU3DFE" / "registrations" / "A2")
    assert _report(ctx, root, site) == 0
    assert all(p.is_file() for p in foreign)
    gone = pages_before - set(site.rglob("*.html"))
    assert len(gone) == 1 and "s2" in next(iter(gone)).name  # the removed subject's page


def _dead_links(site: Path) -> list[str]:
    import re

    return [f"{page} -> {href}" for page in site.rglob("*.html")
            for href in re.findall(r'href="([^"#?]+\.html)"', page.read_text()) if not (page.parent / href).is_file()]


def test_report_cut_short_links_to_no_page_never_written(ctx, tmp_path, capsys, monkeypatch):
    """27.9: the disk fills while the pages are written: exit 1, one line naming the file, and the site is
    the last complete run's (no page at all on a first run): no page links to one never written."""
    import onflame.report.pages as pages

    root, site = _two_subjects(ctx, tmp_path / "mica"), tmp_path / "site"
    real = pages.write_text

    def full_disk_at(n: int):
        written = []

        def write_text(path, text):
            if len(written) == n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            written.append(path)
            real(path, text)
        return write_text

    monkeypatch.setattr(pages, "write_text", full_disk_at(1))
    assert _report(ctx, root, site) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith(os.strerror(errno.ENOSPC)) and not list(site.rglob("*.html"))
    monkeypatch.setattr(pages, "write_text", real)
    assert _report(ctx, root, site) == 0 and not _dead_links(site)
    index = (site / "index.html").read_text()
    FlameParams.zeros().save(root / "BU3DFE" / "FLAME_parameters" / "A3" / "s3.npz")  # a third subject
    write_obj(root / "BU3DFE" / "registrations" / "A3" / "s3.obj", Mesh(ctx.vertices * 0.99, ctx.faces))
    monkeypatch.setattr(pages, "write_text", full_disk_at(2))
    assert _report(ctx, root, site) == 1
    assert not _dead_links(site) and (site / "index.html").read_text() == index
    assert not [p for p in site.rglob("*") if ".tmp" in p.name]


def test_report_draws_again_a_picture_cut_short(ctx, tmp_path, capsys):
    """27.7: a picture of an earlier run that is no longer whole is drawn again, not reused."""
    root, site = _mica_tree(ctx, tmp_path / "mica"), tmp_path / "site"
    assert _report(ctx, root, site) == 0
    thumb = next((site / "img").rglob("*-thumb.jpg"))
    whole = thumb.read_bytes()
    thumb.write_bytes(whole[: len(whole) // 2])
    capsys.readouterr()
    assert _report(ctx, root, site) == 0
    assert "pictures drawn 1, reused 0" in capsys.readouterr().out
    assert thumb.read_bytes() == whole


def test_a_damaged_pickle_free_model_copy_is_made_again(flame_pkl, tmp_path):
    """27.7: the copy beside a model whose stamp still matches but whose arrays are damaged is read past,
    the pickle read again and the copy rewritten."""
    from onflame.flame import load_model
    from onflame.flame.model_cache import cache_paths

    pkl = tmp_path / "generic_model.pkl"
    shutil.copy2(flame_pkl, pkl)
    first = load_model(pkl)
    copy = cache_paths(pkl)[0]
    stamp = {k: v for k, v in np.load(copy).items() if k.startswith("cache_") or k == "format"}
    np.savez(copy, **stamp)  # the stamp and the format tag, but no arrays
    again = load_model(pkl)
    assert np.array_equal(again.v_template, first.v_template)
    assert np.array_equal(load_model(copy).v_template, first.v_template)  # rewritten whole


def test_evaluate_now_scores_again_images_whose_cached_result_is_cut_short(tmp_path, capsys):
    """27.7: every image's cached result cut to half: the re-run scores each again (exit 0, no line)."""
    from test_evaluation_now import SPHERE_LANDMARKS, sphere, write_gt, write_list, write_pred

    gt, pred, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    write_gt(gt, "S", sphere(50.0, 3), 50.0 * SPHERE_LANDMARKS)
    for k in range(2):
        write_pred(pred, "S", "multiview_neutral", f"{k}.jpg", sphere(48.0 + k, 3), (48.0 + k) * SPHERE_LANDMARKS)
    write_list(gt, ["S/multiview_neutral/0.jpg", "S/multiview_neutral/1.jpg"])
    argv = ["evaluate", "now", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--workers", "1"]
    assert main(argv) == 0
    items = sorted((out / "items").rglob("*.npz"))
    whole = [p.read_bytes() for p in items]
    for p, data in zip(items, whole):
        p.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(argv) == 0
    assert not [ln for ln in capsys.readouterr().err.splitlines() if "onflame:" in ln]
    assert all(np.load(p)["distances"].size > 0 for p in items)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.lstat().st_mode) for p in folder.rglob("*")}


@pytest.mark.parametrize("umask", [0o022, 0o077], ids=["umask022", "umask077"])
def test_written_files_follow_the_umask(ctx, failed_registration, flame_pkl, tmp_path, monkeypatch, umask):
    """25.2: registrations, parameters, the report site, model.npz and the pickle-free copy beside the
    user's model get the modes the umask gives new files (0644 / 0600) and folders (0755 / 0700)."""
    import onflame.registration
    from onflame.flame import load_model

    monkeypatch.setattr(onflame.registration, "register", lambda *a, **k: failed_registration)
    ctx.head(tmp_path / "s.obj", 1000.0)
    (tmp_path / "fl").mkdir()
    shutil.copy2(flame_pkl, tmp_path / "fl" / "generic_model.pkl")
    old = os.umask(umask)
    try:
        main(["register", str(tmp_path / "s.obj"), "--model", str(ctx.model_path), "--out", str(tmp_path / "w" / "reg"),
              "--picture"])
        _report(ctx, _mica_tree(ctx, tmp_path / "mica"), tmp_path / "w" / "site")
        save_model(load_model(ctx.model_path), tmp_path / "w" / "model.npz")
        load_model(tmp_path / "fl" / "generic_model.pkl")  # leaves its pickle-free copy beside it
        assert main(["export", str(tmp_path / "mica"), "--out", str(tmp_path / "w" / "all.npz")]) == 0
    finally:
        os.umask(old)
    modes = _modes(tmp_path / "w") | {"copy": stat.S_IMODE((tmp_path / "fl" / ".generic_model.pkl.onflame.npz").stat().st_mode)}
    files = {k: m for k, m in modes.items() if k == "copy" or (tmp_path / "w" / k).is_file()}
    assert {"reg/s.npz", "reg/s.obj", "reg/s_report.json", "reg/s_report.png", "model.npz", "all.npz",
            "site/index.html"} <= files.keys()
    assert {k: m for k, m in files.items() if m != 0o666 & ~umask} == {}
    assert {k: m for k, m in modes.items() if k not in files and m != 0o777 & ~umask} == {}


def test_a_rerun_removes_temporaries_a_killed_run_left(ctx, failed_registration, tmp_path, monkeypatch):
    """27.9 (register): a process killed with SIGKILL in the middle of writing a registration's files
    leaves temporaries named for their process; the next run into the same folder removes them."""
    import onflame.registration

    out = tmp_path / "out"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys\nfrom pathlib import Path\nfrom onflame.fileio import atomic_open, written_together\n"
        "out = Path(sys.argv[1])\nwith written_together(out / 's.npz', out / 's.obj', out / 's_report.json') as t:\n"
        "    t[0].write_bytes(b'params'); t[1].write_text('v 0 0 0')\n"
        "    with atomic_open(t[2], 'w') as fh:\n        fh.write('{'); fh.flush(); os.kill(os.getpid(), 9)\n"),
        str(out)], capture_output=True)
    assert killed.returncode == -9
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 3 and all(".tmp" in n for n in left), left
    monkeypatch.setattr(onflame.registration, "register", lambda *a, **k: failed_registration)
    ctx.head(tmp_path / "s.obj", 1000.0)
    main(["register", str(tmp_path / "s.obj"), "--model", str(ctx.model_path), "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["s.npz", "s.obj", "s_report.json"]


def test_register_accepts_land_landmarks(ctx, tmp_path, capsys):
    """27.6: ``register --landmarks x.land`` (FaceWarehouse's layout, the README lists it): 3D points
    register the scan; vertex ids are read against the scan."""
    from onflame.mesh import read_mesh
    from onflame.mesh.landmark_files import read_landmarks

    scan = ctx.head(tmp_path / "s.obj", 1000.0)
    pts = ctx.landmarks * 1000
    _write(tmp_path / "l.land", f"{len(pts)}\n" + "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in pts))
    code = main(["register", str(scan), "--model", str(ctx.model_path), "--out", str(tmp_path / "out"),
                 "--landmarks", str(tmp_path / "l.land")])
    assert code == 0, capsys.readouterr().err
    mesh = read_mesh(scan)
    ids = np.argmin(np.linalg.norm(mesh.vertices[None] - pts[:, None], axis=2), axis=1)
    _write(tmp_path / "ids.land", f"{len(ids)}\n" + "".join(f"{i}\n" for i in ids))
    lmk = read_landmarks(tmp_path / "ids.land", mesh)
    assert np.array_equal(lmk.points, mesh.vertices[ids]) and lmk.layout == "ibug51"


def test_evaluate_never_writes_through_a_link_in_its_output_folder(tmp_path, capsys):
    """27.1: ``evaluate now --out`` holding a link where its per-image results go: each image fails with
    a line naming the link, and nothing is written into the link's target."""
    from test_evaluation_now import SPHERE_LANDMARKS, sphere, write_gt, write_list, write_pred

    gt, pred, out, victim = tmp_path / "gt", tmp_path / "pred", tmp_path / "out", tmp_path / "victim"
    write_gt(gt, "S", sphere(50.0, 3), 50.0 * SPHERE_LANDMARKS)
    write_pred(pred, "S", "multiview_neutral", "0.jpg", sphere(48.0, 3), 48.0 * SPHERE_LANDMARKS)
    write_list(gt, ["S/multiview_neutral/0.jpg"])
    _write(victim / "keep.txt", "mine")
    out.mkdir()
    os.symlink(victim, out / "items")
    code = main(["evaluate", "now", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 1 and f"{out / 'items'}: is a symbolic link" in err and "Traceback" not in err
    assert _listing(victim) == {"keep.txt": b"mine"}
