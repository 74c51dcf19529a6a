"""Reading and writing meshes.

OBJ is read by onflame's own parser because trimesh splits vertices at texture seams (changing the
vertex count and order of FLAME-topology files) and is slow on multi-million-vertex scans; this one
keeps vertex order, reads per-corner UVs and the ``.mtl`` texture, tolerates the malformed
``usemtl``/``newmtl`` lines some dataset releases contain, and parses with numpy rather than per line.
PLY is read by :mod:`.ply` (checked against its header); STL, OFF and GLB go through trimesh
(``process=False``, so order is kept).
"""
from __future__ import annotations

import io as _io
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import MESH_MAX_BYTES, SIDE_FILE_MAX_BYTES, atomic_open, check_regular, read_bounded, read_text
from ..geometry import fan_triangles
from .mesh import Mesh
from .numbers import Block, Lines
from .ply import read_ply

log = logging.getLogger(__name__)

#: Suffixes :func:`read_mesh` understands.
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf", ".wrl", ".wrl.gz", ".abs", ".abs.gz")


def read_mesh(path: str | os.PathLike, check_texture: bool = True) -> Mesh:
    """Read a triangle mesh (OBJ with optional MTL texture, PLY, STL, OFF, GLB, VRML, FRGC range images).

    A texture image that does not decode is treated like a missing one, whatever the format: the mesh
    is returned without it, a warning is logged, and ``meta["texture_problem"]`` holds ``(image path,
    problem)`` (:meth:`onflame.sources.ScanItem.read` turns it into an error with ``require_texture``).
    ``check_texture=False`` leaves an OBJ's or VRML's texture path unchecked, for a caller that never
    looks at the image (registration from given landmarks): decoding a scanner's multi-megapixel
    texture costs more than reading the mesh.

    Raises :class:`InputError` naming the file if it is missing, unreadable, empty or malformed.
    """
    path = Path(path)
    size = check_regular(path).st_size  # a FIFO or a device is refused here, before any reader opens it
    suffix = path.suffix.lower()
    try:
        if suffix == ".obj":
            mesh = read_obj(path)
        elif suffix == ".wrl" or path.name.lower().endswith(".wrl.gz"):
            from .wrl import read_wrl

            mesh = read_wrl(path)
        elif suffix == ".ply":
            mesh = read_ply(path)
        elif path.name.lower().endswith((".abs", ".abs.gz")):
            from .frgc_abs import read_abs

            mesh = read_abs(path)
        elif suffix in MESH_SUFFIXES:
            if size > MESH_MAX_BYTES:
                raise InputError(path, f"is {size} bytes; onflame reads meshes of at most {MESH_MAX_BYTES} bytes")
            mesh = _read_with_trimesh(path)
        else:
            raise InputError(path, f"unknown mesh format {suffix!r} (known: {', '.join(MESH_SUFFIXES)})")
    except InputError:
        raise
    except (ValueError, OverflowError, IndexError, TypeError, MemoryError, RecursionError) as exc:
        # a reader's parsing failure it did not name itself: still this file's problem, in one line
        raise InputError(path, f"malformed {suffix or 'mesh'} file ({type(exc).__name__}: {exc})") from None
    check_mesh(mesh, path)
    # a reader that decoded its texture already (FRGC's photo: ``photo_size``) or dropped it is not redone
    if check_texture and mesh.texture is not None and not {"texture_problem", "photo_size"} & mesh.meta.keys():
        drop_unreadable_texture(mesh, path)
    return mesh


def drop_unreadable_texture(mesh: Mesh, path: str | os.PathLike) -> None:
    """Decode ``mesh.texture``; if it does not decode, read on without it (see :func:`read_mesh`)."""
    from .images import image_size

    try:
        image_size(mesh.texture)
    except InputError as exc:
        log.warning("%s: texture %s; reading without texture", path, exc)
        mesh.meta["texture_problem"] = (exc.path, exc.problem)
        mesh.texture = None


def check_mesh(mesh: Mesh, path: str | os.PathLike | None = None) -> None:
    """Raise :class:`InputError` if ``mesh`` is empty, has NaN/inf positions or bad face indices."""
    where = path or mesh.source or None
    if mesh.n_vertices == 0:
        raise InputError(where, "mesh has no vertices")
    if not np.isfinite(mesh.vertices).all():
        raise InputError(where, "mesh has NaN or infinite vertex positions")
    if mesh.n_faces and (mesh.faces.min() < 0 or mesh.faces.max() >= mesh.n_vertices):
        raise InputError(where, f"face index out of range for {mesh.n_vertices} vertices")


def read_obj(path: str | os.PathLike) -> Mesh:
    """Parse a Wavefront OBJ: ``v`` (optionally with RGB), ``vt``, ``f`` (any polygon, fan-triangulated).

    What the lines promise is checked against what they hold before the big arrays are made: every
    ``v`` line has the same number of values (3, or 4 with ``w``, 6 or 7 with colours), every ``vt`` line
    too (2 or 3), every face corner the same form (``v``, ``v/vt``, ``v/vt/vn``, ``v//vn``), indices within
    int64, and no more vertices or triangles than a scan holds (:data:`MAX_VERTICES`,
    :data:`MAX_TRIANGLES`, and at most four triangles per vertex: more means duplicated faces).
    """
    path = Path(path)
    data = read_bounded(path, MESH_MAX_BYTES)
    check_mesh_size(_count_tagged(data, b"v"), _count_tagged(data, b"f"), path)  # each face a triangle at least
    lines = Lines(data)
    del data
    is_v, is_f = lines.tagged(b"v"), lines.tagged(b"f")
    v_block, vt_block, f_block, mtl_block = (lines.select(which, skip) for which, skip in (
        (is_v, 1), (lines.tagged(b"vt"), 2), (is_f, 1), (lines.tagged(b"mtllib"), 6)))
    mtllibs = [mtl_block.line_text(k) for k in range(min(len(mtl_block), 16))]
    del lines
    try:
        n_corners = f_block.tokens_per_line()
        _check_counts(len(v_block), n_corners, path)
        vdata = _rows(v_block, path, "v", (3, 4, 6, 7))
        del v_block  # the vertices' text: no longer needed while the faces are parsed
        vertices = np.ascontiguousarray(vdata[:, :3])
        colors = vdata[:, 3:6] if vdata.shape[1] >= 6 and vdata.shape[1] != 4 else None
        uv = _rows(vt_block, path, "vt", (2, 3))[:, :2] if len(vt_block) else None
        faces, face_uv = _faces(f_block, n_corners, len(vertices), 0 if uv is None else len(uv), path)
    except ValueError as exc:
        raise InputError(path, f"malformed OBJ ({exc})") from None
    if colors is not None and colors.max(initial=0.0) > 1.0:
        colors = colors / 255.0
    texture = _texture_from_mtl(path, mtllibs) if uv is not None else None
    return Mesh(vertices, faces, uv, face_uv, texture, colors, str(path))


#: The most vertices and triangles a mesh read here may have (a head scan has tens of thousands to a few
#: hundred thousand; the densest a million or two); a file that announces more is refused before its arrays
#: are made. The bound also keeps reading the largest mesh allowed under 2 GB of memory.
MAX_VERTICES = 4_000_000
MAX_TRIANGLES = 8_000_000


def check_mesh_size(n_vertices: int, n_triangles: int, path: str | os.PathLike) -> None:
    """:class:`InputError` naming ``path`` when a mesh is larger than a scan, or has more than four
    triangles per vertex (duplicated faces: a closed surface has about two)."""
    if n_vertices > MAX_VERTICES:
        raise InputError(path, f"{n_vertices} vertices; onflame reads meshes of at most {MAX_VERTICES}")
    if n_triangles > 4 * n_vertices + 64:
        raise InputError(path, f"{n_triangles} triangles over only {n_vertices} vertices: the faces repeat "
                               "(a surface has about two triangles per vertex)")
    if n_triangles > MAX_TRIANGLES:
        raise InputError(path, f"{n_triangles} triangles; onflame reads meshes of at most {MAX_TRIANGLES}")


def _count_tagged(data: bytes, tag: bytes) -> int:
    """Lines of ``data`` that start with ``tag`` and a space or tab, counted in C without splitting it."""
    return sum(data.count(b"\n" + tag + sep) + data.startswith(tag + sep) for sep in (b" ", b"\t"))


def _check_counts(n_vertices: int, corners: np.ndarray, path: Path) -> None:
    if len(corners) and corners.min() < 3:
        line = int(np.argmax(corners < 3))
        raise InputError(path, f"malformed OBJ (face {line + 1} has {corners[line]} corner(s); a face needs 3)")
    check_mesh_size(n_vertices, int(corners.sum()) - 2 * len(corners), path)


def _rows(block: Block, path: Path, what: str, widths: tuple[int, ...]) -> np.ndarray:
    """(N, K) numbers of a block of ``v`` or ``vt`` lines, all of one width K in ``widths``."""
    if not len(block):
        return np.zeros((0, widths[0]))
    counts = block.tokens_per_line()
    width = int(counts[0])
    if width not in widths:
        raise ValueError(f"line {block.line_numbers[0] + 1}: a '{what}' line has {width} value(s); it needs "
                         f"{widths[0]} (or {', '.join(map(str, widths[1:]))})")
    odd = np.flatnonzero(counts != width)
    if len(odd):
        k = int(odd[0])
        raise ValueError(f"line {block.line_numbers[k] + 1}: a '{what}' line has {counts[k]} value(s) where the "
                         f"first has {width} (ragged '{what}' lines)")
    return block.numbers(path, f"'{what}' lines").reshape(len(block), width)


def _faces(block: Block, corners: np.ndarray, n_v: int, n_vt: int, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(T, 3) triangles and (T, 3) texture-coordinate triangles (or None) of a block of ``f`` lines."""
    if not len(block):
        return np.zeros((0, 3), np.int64), None
    slashes = block.count_per_line(ord("/"))
    first = block.line_text(0).split()[0].encode()
    fields = first.count(b"/") + 1 - (1 if b"//" in first else 0)
    has_vt = b"/" in first and b"//" not in first
    per_corner = first.count(b"/")
    odd = np.flatnonzero(slashes != corners * per_corner)
    if len(odd):
        raise ValueError(f"line {block.line_numbers[odd[0]] + 1}: faces mix corner forms (v, v/vt, v/vt/vn, v//vn)")
    idx = block.numbers(path, "face indices", np.int64, b"/")
    if len(idx) != int(corners.sum()) * fields:
        raise ValueError("faces mix corner forms (v, v/vt, v/vt/vn, v//vn)")
    if len(idx) and (idx.max() == np.iinfo(np.int64).max or idx.min() == np.iinfo(np.int64).min):
        raise ValueError("a face index is beyond int64")
    idx = idx.reshape(-1, fields)
    vi = _zero_based(idx[:, 0], n_v)
    all_triangles = bool((corners == 3).all())  # the usual case: no fan to build
    triangles = None if all_triangles else fan_triangles(corners)
    faces = vi.reshape(-1, 3) if all_triangles else vi[triangles]
    face_uv = None
    if has_vt and n_vt:
        ti = _zero_based(idx[:, 1], n_vt)
        face_uv = ti.reshape(-1, 3) if all_triangles else ti[triangles]
        if face_uv.min() < 0 or face_uv.max() >= n_vt:
            raise ValueError("texture coordinate index out of range")
    return faces, face_uv


def _zero_based(index: np.ndarray, count: int) -> np.ndarray:
    """OBJ's 1-based indices (negative: from the end of the ``count`` so far) made 0-based, in place where
    ``index`` is its own array (a scan's millions of corners: no temporary copies)."""
    index = index if index.base is None and index.flags.c_contiguous else np.ascontiguousarray(index)
    negative = index < 0
    index -= 1
    index[negative] += count + 1
    return index


def _texture_from_mtl(obj_path: Path, mtllibs: list[str]) -> Path | None:
    """First ``map_Kd`` image named in the OBJ's material libraries that exists; broken lines are skipped."""
    from .images import resolve_reference  # Windows paths and case-mismatched names, as releases write them

    for lib in mtllibs:
        mtl = resolve_reference(obj_path.parent, lib)
        try:
            lines = read_text(mtl, SIDE_FILE_MAX_BYTES).splitlines() if mtl else None
            problem = "not found"
        except InputError as exc:
            lines, problem = None, exc.problem
        if lines is None:
            log.warning("%s: material library %s %s; reading without texture", obj_path, lib, problem)
            continue
        for line in lines:
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2 and parts[0].lower() == "map_kd":
                # options such as "-s 1 1 1" come before the file name, which may itself hold spaces
                name = parts[1].strip()
                img = resolve_reference(mtl.parent, name) or resolve_reference(mtl.parent, name.split()[-1])
                if img is not None:
                    return img
                log.warning("%s: texture %s not found; reading without texture", obj_path, name)
    # releases without an mtl often put an image with the same stem next to the OBJ
    for ext in (".png", ".jpg", ".jpeg", ".bmp"):
        img = obj_path.with_suffix(ext)
        if img.is_file():
            return img
    return None


def _read_with_trimesh(path: Path) -> Mesh:
    import trimesh

    try:
        loaded = trimesh.load(path, process=False, force="mesh")
    except Exception as exc:  # trimesh raises many kinds of errors on bad files
        raise InputError(path, f"cannot read mesh ({type(exc).__name__}: {exc})") from None
    if not hasattr(loaded, "vertices") or not hasattr(loaded, "faces"):
        raise InputError(path, "file holds no triangle mesh")
    colors = None
    vc = getattr(getattr(loaded, "visual", None), "vertex_colors", None)
    if vc is not None and getattr(loaded.visual, "kind", None) == "vertex":
        colors = np.asarray(vc)[:, :3] / 255.0
    return Mesh(np.asarray(loaded.vertices), np.asarray(loaded.faces), colors=colors, source=str(path))


def write_obj(path: str | os.PathLike, mesh: Mesh, precision: int = 6) -> None:
    """Write ``mesh`` as OBJ atomically (vertex order kept; ``vt`` and an ``.mtl`` if it has UVs and a texture).

    ``precision`` is the number of decimals (6 = micrometres for metre units).
    """
    path = Path(path)
    buf = _io.StringIO()
    fmt = f"%.{precision}f"
    if mesh.texture is not None and mesh.uv is not None:
        buf.write(f"mtllib {path.stem}.mtl\n")
    vdata = mesh.vertices if mesh.colors is None else np.hstack([mesh.vertices, mesh.colors])
    _write_rows(buf, "v", vdata, fmt)
    if mesh.uv is not None and mesh.face_uv is not None:
        _write_rows(buf, "vt", mesh.uv, fmt)
        if mesh.texture is not None:
            buf.write("usemtl material0\n")
        f = np.stack([mesh.faces + 1, mesh.face_uv + 1], -1).reshape(-1, 6)
        _write_rows(buf, "f", f, "%d/%d %d/%d %d/%d", per_row=True)
    else:
        _write_rows(buf, "f", mesh.faces + 1, "%d")
    if mesh.texture is not None and mesh.uv is not None:
        mtl = f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nmap_Kd {Path(mesh.texture).name}\n"
        with atomic_open(path.with_suffix(".mtl"), "w") as fh:
            fh.write(mtl)
    with atomic_open(path, "w") as fh:
        fh.write(buf.getvalue())


def _write_rows(buf: _io.StringIO, tag: str, rows: np.ndarray, fmt: str, per_row: bool = False) -> None:
    if len(rows) == 0:
        return
    line_fmt = f"{tag} {fmt}\n" if per_row else f"{tag} " + " ".join([fmt] * rows.shape[1]) + "\n"
    buf.write((line_fmt * len(rows)) % tuple(rows.ravel()))
