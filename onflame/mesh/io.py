"""Reading and writing meshes.

OBJ is read by onflame's own parser because trimesh splits vertices at texture seams (changing the
vertex count and order of FLAME-topology files) and is slow on multi-million-vertex scans; this one
keeps vertex order, reads per-corner UVs and the ``.mtl`` texture, tolerates the malformed
``usemtl``/``newmtl`` lines some dataset releases contain, and parses with numpy rather than per line.
Binary PLY is read by ``plyfile`` (:mod:`.ply`); ASCII PLY, STL, OFF and GLB go through trimesh
(``process=False``, so order is kept).
"""
from __future__ import annotations

import io as _io
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import atomic_open
from ..geometry import fan_triangles
from .mesh import Mesh
from .ply import check_vertex_header, ply_header, read_ply

log = logging.getLogger(__name__)

#: Suffixes :func:`read_mesh` understands.
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf", ".wrl", ".abs", ".abs.gz")


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read a triangle mesh (OBJ with optional MTL texture, PLY, STL, OFF, GLB, VRML, FRGC range images).

    A texture image that does not decode is treated like a missing one, whatever the format: the mesh
    is returned without it, a warning is logged, and ``meta["texture_problem"]`` holds ``(image path,
    problem)`` (:meth:`onflame.sources.ScanItem.read` turns it into an error with ``require_texture``).

    Raises :class:`InputError` naming the file if it is missing, unreadable, empty or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file" if not path.exists() else "not a regular file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".obj":
            mesh = read_obj(path)
        elif suffix == ".wrl":
            from .wrl import read_wrl

            mesh = read_wrl(path)
        elif suffix == ".ply":
            fmt, elements = ply_header(path)
            if fmt == "ascii":
                check_vertex_header(path, elements)
                mesh = _read_with_trimesh(path)
            else:
                mesh = read_ply(path)
        elif path.name.lower().endswith((".abs", ".abs.gz")):
            from .frgc_abs import read_abs

            mesh = read_abs(path)
        elif suffix in MESH_SUFFIXES:
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
    if mesh.texture is not None and not {"texture_problem", "photo_size"} & mesh.meta.keys():
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
    """Parse a Wavefront OBJ: ``v`` (optionally with RGB), ``vt``, ``f`` (any polygon, fan-triangulated)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    v_lines, vt_lines, f_lines, mtllibs = [], [], [], []
    for line in text.splitlines():
        head = line[:2]
        if head == "v ":
            v_lines.append(line[2:])
        elif head == "vt":
            vt_lines.append(line[3:])
        elif head == "f ":
            f_lines.append(line[2:])
        elif line.startswith("mtllib"):
            mtllibs.append(line[6:].strip())
    try:
        vdata = _rows(v_lines, path, "v", 3)
        vertices = vdata[:, :3]
        colors = vdata[:, 3:6] if vdata.shape[1] >= 6 else None
        uv = _rows(vt_lines, path, "vt", 2)[:, :2] if vt_lines else None
        faces, face_uv = _faces(f_lines, len(vertices), 0 if uv is None else len(uv), path)
    except (ValueError, OverflowError) as exc:
        raise InputError(path, f"malformed OBJ ({exc})") from None
    if colors is not None and colors.max() > 1.0:
        colors = colors / 255.0
    texture = _texture_from_mtl(path, mtllibs) if uv is not None else None
    return Mesh(vertices, faces, uv, face_uv, texture, colors, str(path))


def _rows(lines: list[str], path: Path, what: str, need: int) -> np.ndarray:
    """(N, K) numbers of ``lines``, K >= ``need`` (ragged lines are cut to the shortest)."""
    if not lines:
        return np.zeros((0, need))
    flat = np.array(" ".join(lines).split(), dtype=np.float64)
    width = flat.size / len(lines)
    if width != int(width) or width < need:  # ragged: some lines have extra values (colours, w) -> per line
        rows = [ln.split() for ln in lines]
        n = min(len(r) for r in rows)
        if n < need:
            line = next(ln for ln in lines if len(ln.split()) == n)
            raise ValueError(f"a '{what}' line has {n} value(s), needs {need}: {what} {line.strip()[:60]!r}")
        return np.array([r[:n] for r in rows], dtype=np.float64)
    return flat.reshape(len(lines), int(width))


def _faces(lines: list[str], n_v: int, n_vt: int, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    if not lines:
        return np.zeros((0, 3), np.int64), None
    tokens_per_line = np.array([len(ln.split()) for ln in lines])
    if tokens_per_line.min() < 3:
        raise ValueError("a face has fewer than 3 corners")
    tokens = " ".join(lines).split()
    first = tokens[0]
    if "//" in first:  # v//vn
        fields, has_vt = 2, False
        flat = " ".join(tokens).replace("//", " ").split()
    elif "/" in first:  # v/vt or v/vt/vn
        fields, has_vt = first.count("/") + 1, True
        flat = " ".join(tokens).replace("/", " ").split()
    else:
        fields, has_vt = 1, False
        flat = tokens
    if len(flat) != len(tokens) * fields:
        raise ValueError("faces mix corner formats (v, v/vt, v//vn)")
    idx = np.array(flat, dtype=np.int64).reshape(-1, fields)
    vi = idx[:, 0]
    vi = np.where(vi < 0, vi + n_v, vi - 1)
    ti = None
    if has_vt and n_vt:
        ti = idx[:, 1]
        ti = np.where(ti < 0, ti + n_vt, ti - 1)
    corners = fan_triangles(tokens_per_line)
    faces = vi[corners]
    face_uv = None if ti is None else ti[corners]
    if face_uv is not None and (face_uv.min() < 0 or face_uv.max() >= n_vt):
        raise ValueError("texture coordinate index out of range")
    return faces, face_uv


def _texture_from_mtl(obj_path: Path, mtllibs: list[str]) -> Path | None:
    """First ``map_Kd`` image named in the OBJ's material libraries that exists; broken lines are skipped."""
    from .images import resolve_reference  # Windows paths and case-mismatched names, as releases write them

    for lib in mtllibs:
        mtl = resolve_reference(obj_path.parent, lib)
        try:
            lines = mtl.read_bytes().decode("utf-8", errors="replace").splitlines() if mtl else None
        except OSError:
            lines = None
        if lines is None:
            log.warning("%s: material library %s not found or unreadable; reading without texture", obj_path, lib)
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
