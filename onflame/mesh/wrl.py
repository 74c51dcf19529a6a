"""VRML 2.0 (``.wrl``) reader for textured scanner meshes (3dMD exports of BU-3DFE, Florence, ...).

Hand-written because neither trimesh nor any maintained Python library reads VRML 2.0 geometry.
It understands what scanner software writes: ``Shape`` nodes (several per file: one per camera pod)
with an ``IndexedFaceSet`` geometry (``coord``/``coordIndex``, ``texCoord``/``texCoordIndex``, optional
per-vertex ``color``, ``ccw``) and an ``ImageTexture`` ``url``; ``Transform``/``Group`` nesting; ``DEF``/
``USE``; comments; gzip-compressed files. Polygons end with ``-1`` and are fan-triangulated.

Speed: only the structure (braces, brackets, names, strings) goes through a regular expression; each
big number block (``point [...]``, ``coordIndex [...]``) is located with ``str.find`` and parsed by numpy
in C, so a multi-million-number scan reads in about a second.

Units are kept as stored (scanners write millimetres); the reader states none: the source module that
knows the dataset does.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError
from ..fileio import MESH_MAX_BYTES, read_maybe_gzip
from ..geometry import fan_triangles
from .images import resolve_reference
from .mesh import Mesh
from .numbers import parse_numbers

log = logging.getLogger(__name__)

#: strings, comments, brackets and names; a name never starts inside a number (the lookbehind), so
#: exponents such as ``1e-5`` are not mistaken for names
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*|[\[\]{}]|(?<![\w.+\-])[A-Za-z_][^\s\[\]{}",#]*')
_COMMENT = re.compile(r"#[^\n]*")
_NAME = re.compile(r"[A-Za-z_]")
_NON_SPACE = re.compile(r"\S")
#: grouping nodes whose ``children`` (or LOD ``level`` / Switch ``choice``) hold more nodes
_GROUP_FIELDS = ("children", "level", "choice")


@dataclass
class _Node:
    type: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Numbers:
    """An unparsed run of numbers and where it starts in the file (for error messages)."""

    text: str
    pos: int


def read_wrl(path: str | os.PathLike, require_texture: bool = False) -> Mesh:
    """Read the triangle mesh of every ``Shape`` in a VRML 2.0 file, with texture coordinates.

    Args:
        path: the ``.wrl`` file (plain or gzip-compressed).
        require_texture: raise if a texture image the file names cannot be found (otherwise the mesh
            is returned without it and a warning is logged).

    Returns:
        A :class:`Mesh` in the file's units, shapes concatenated in file order, ``Transform`` nodes
        applied. ``uv``/``face_uv`` are set when every shape has texture coordinates; ``texture`` is the
        first shape's image. When shapes use different images (one per camera), ``meta["textures"]``
        lists them and ``meta["face_texture"]`` (F,) gives each triangle's index into that list (-1:
        none). ``meta["shapes"]`` is the number of shapes read.

    Raises:
        InputError: naming the file (and line) if it is missing, not VRML 2.0, truncated or malformed.
    """
    path = Path(path)
    text = _read_text(path)
    parser = _Parser(text, path)
    scene = parser.parse()
    parts = _instances(scene, parser)
    if not parts:
        raise InputError(path, "no IndexedFaceSet geometry in the file")
    return _combine(parts, path, require_texture)


# --- text and tokens ----------------------------------------------------------------------------------------

def _read_text(path: Path) -> str:
    # VRML files are often shipped gzip-compressed under the same name: inflated, within the same bound
    data = read_maybe_gzip(path, MESH_MAX_BYTES)
    text = data.decode("utf-8", errors="replace")
    head = text.lstrip("\ufeff \t\r\n")[:64]
    if head.startswith("#VRML V1.0"):
        raise InputError(path, "VRML 1.0 file; only VRML 2.0 (VRML97) is supported")
    if not head.startswith("#VRML V2.0"):
        raise InputError(path, "not a VRML 2.0 file (no '#VRML V2.0' header)")
    return text


class _Parser:
    """Recursive-descent reader of the VRML node tree; number blocks stay unparsed text until needed."""

    def __init__(self, text: str, path: Path):
        self.text, self.path, self.pos = text, path, 0
        self.defs: dict[str, _Node] = {}

    def fail(self, pos: int, problem: str) -> None:
        raise InputError(self.path, f"line {self.text.count(chr(10), 0, pos) + 1}: {problem}")

    def peek(self, pos: int | None = None) -> tuple[str, int, int] | None:
        """Next token (text, start, end) from ``pos``, comments skipped; None at the end."""
        pos = self.pos if pos is None else pos
        while True:
            m = _TOKEN.search(self.text, pos)
            if m is None:
                return None
            if m.group().startswith("#"):
                pos = m.end()
                continue
            return m.group(), m.start(), m.end()

    def take(self, expecting: str, opened_at: int) -> tuple[str, int, int]:
        tok = self.peek()
        if tok is None:
            self.fail(opened_at, f"file ends before {expecting} (truncated?)")
        self.pos = tok[2]
        return tok

    def parse(self) -> list[_Node]:
        nodes: list[_Node] = []
        while (tok := self.peek()) is not None:
            self.pos = tok[2]
            t = tok[0]
            if t in ("DEF", "USE") or (_NAME.match(t) and self._next_is_brace(tok[2])):
                node = self.node(tok)
                if node is not None:
                    nodes.append(node)
            elif t in ("{", "["):  # e.g. a PROTO body: not geometry, skip it whole
                self._skip_balanced(tok)
        return nodes

    def _next_is_brace(self, pos: int) -> bool:
        nxt = self.peek(pos)
        return nxt is not None and nxt[0] == "{"

    def _skip_balanced(self, tok: tuple[str, int, int]) -> None:
        depth = 1
        while depth:
            t = self.take("the bracket opened here to close", tok[1])[0]
            if t in ("{", "["):
                depth += 1
            elif t in ("}", "]"):
                depth -= 1

    def node(self, tok: tuple[str, int, int]) -> _Node | None:
        t, start, _ = tok
        if t == "USE":
            name = self.take("a name after USE", start)[0]
            if name not in self.defs:
                self.fail(start, f"USE {name!r} before any DEF {name!r}")
            return self.defs[name]
        if t == "NULL":
            return None
        def_name = None
        if t == "DEF":
            def_name = self.take("a name after DEF", start)[0]
            t, start, _ = self.take("a node type after DEF", start)
        if not _NAME.match(t):
            self.fail(start, f"expected a node type, found {t[:40]!r}")
        if self.take(f"'{{' after {t}", start)[0] != "{":
            self.fail(start, f"expected '{{' after node type {t}")
        node = _Node(t)
        while True:
            name, fstart, _ = self.take(f"'}}' closing the {t} opened here", start)
            if name == "}":
                if def_name is not None:
                    self.defs[def_name] = node
                return node
            if not _NAME.match(name):
                self.fail(fstart, f"unexpected {name[:40]!r} inside {t}")
            node.fields[name] = self.value(name, fstart)

    def value(self, name: str, at: int) -> Any:
        nxt = self.peek()
        if nxt is None:
            self.fail(at, f"file ends before the value of {name} (truncated?)")
        t, start, end = nxt
        gap = self.text[self.pos:start]
        if "#" in gap:
            gap = _COMMENT.sub("", gap)
        if gap.strip():  # numbers before the next token: a numeric single value (e.g. "creaseAngle 0.5")
            block = _Numbers(gap, self.pos)
            self.pos = start
            return block
        self.pos = end
        if t == "[":
            return self.multi(name, start)
        if t.startswith('"'):
            return [_unquote(t)]
        if t in ("TRUE", "FALSE"):
            return t == "TRUE"
        if t in ("DEF", "USE", "NULL") or self._next_is_brace(end):
            return self.node(nxt)
        self.fail(start, f"cannot read the value of field {name} ({t[:40]!r})")

    def multi(self, name: str, opened_at: int) -> Any:
        """The inside of ``[ ... ]``: nodes, strings, or numbers (returned unparsed)."""
        pos = self.pos
        while True:  # first meaningful character decides the kind
            m = _NON_SPACE.search(self.text, pos)
            if m is None:
                self.fail(opened_at, f"'[' of field {name} is never closed (truncated file?)")
            if m.group() != "#":
                break
            nl = self.text.find("\n", m.start())
            pos = len(self.text) if nl < 0 else nl
        c = m.group()
        if c == "]":
            self.pos = m.end()
            return []
        if c == '"' or _NAME.match(c):
            out: list[Any] = []
            while True:
                tok = self.take(f"']' closing the {name} list opened here", opened_at)
                if tok[0] == "]":
                    return out
                if tok[0].startswith('"'):
                    out.append(_unquote(tok[0]))
                else:
                    node = self.node(tok)
                    if node is not None:
                        out.append(node)
        end = self.text.find("]", pos)  # a number block holds no brackets: jump to its end
        if end < 0:
            self.fail(opened_at, f"'[' of field {name} is never closed (truncated file?)")
        block = self.text[pos:end]
        if "#" in block:
            block = _COMMENT.sub("", block)
        self.pos = end + 1
        return _Numbers(block, pos)

    def numbers(self, value: Any, what: str, width: int | None = None, dtype: type = np.float64) -> np.ndarray:
        """Parse a number field; (N, width) if ``width``."""
        if isinstance(value, list) and not value:
            return np.zeros((0, width) if width else 0, dtype)
        if not isinstance(value, _Numbers):
            raise InputError(self.path, f"{what}: expected numbers")
        try:
            arr = parse_numbers(value.text, self.path, what, dtype)
        except InputError as exc:
            self.fail(value.pos, exc.problem)
        if width:
            if arr.size % width:
                self.fail(value.pos, f"{what} has {arr.size} numbers, not a multiple of {width}")
            arr = arr.reshape(-1, width)
        return arr

    def indices(self, value: Any, what: str) -> np.ndarray:
        return self.numbers(value, what, dtype=np.int64)


def _unquote(token: str) -> str:
    return re.sub(r"\\(.)", r"\1", token[1:-1])


# --- scene graph ------------------------------------------------------------------------------------------

#: Bounds on instancing: ``DEF``/``USE`` lets each level of a 1.5 kB file double what is below it, so the
#: scene graph is walked with a budget of nodes visited, and the shapes' points are counted as they are
#: placed (a scanner's file has a few shapes, one per camera pod).
MAX_NODE_VISITS = 100_000
MAX_SHAPES = 10_000


def _instances(scene: list[_Node], parser: _Parser) -> list["_Part"]:
    """The geometry of every ``Shape`` placed in the scene, in file order: a shape used several times is
    parsed once and placed once per use, within :data:`MAX_NODE_VISITS`, :data:`MAX_SHAPES` and the
    readers' vertex and triangle bounds (:func:`~onflame.mesh.io.check_mesh_size`)."""
    from .io import check_mesh_size

    parsed: dict[int, _Part | None] = {}
    parts: list[_Part] = []
    visits = [0]
    n_vertices = n_faces = 0
    for k, (shape, matrix) in enumerate(_shapes(scene, np.eye(4), parser, visits)):
        if k >= MAX_SHAPES:
            raise InputError(parser.path, f"places more than {MAX_SHAPES} shapes (DEF/USE instancing); "
                                          "refused as no scan")
        if id(shape) not in parsed:
            parsed[id(shape)] = _shape_geometry(shape, parser, len(parsed))
        part = parsed[id(shape)]
        if part is None:
            continue
        n_vertices, n_faces = n_vertices + len(part.vertices), n_faces + len(part.faces)
        check_mesh_size(n_vertices, n_faces, parser.path)
        parts.append(part.placed(matrix))
    return parts


def _shapes(nodes: list[_Node], matrix: np.ndarray, parser: _Parser, visits: list[int]) -> Iterator[tuple[_Node, np.ndarray]]:
    """Every ``Shape`` under ``nodes`` with its accumulated 4×4 transform, in file order; ``visits`` counts
    the nodes walked (shared with the recursion), refused past :data:`MAX_NODE_VISITS`."""
    for node in nodes:
        visits[0] += 1
        if visits[0] > MAX_NODE_VISITS:
            raise InputError(parser.path, f"its scene graph unfolds to more than {MAX_NODE_VISITS} nodes "
                                          "(DEF/USE instancing nested too deep); refused as no scan")
        if node.type == "Shape":
            yield node, matrix
            continue
        m = matrix @ _transform_matrix(node, parser) if node.type == "Transform" else matrix
        for name in _GROUP_FIELDS:
            kids = node.fields.get(name)
            if isinstance(kids, _Node):
                kids = [kids]
            if isinstance(kids, list):
                yield from _shapes([k for k in kids if isinstance(k, _Node)], m, parser, visits)


def _transform_matrix(node: _Node, parser: _Parser) -> np.ndarray:
    """VRML's ``T C R SR S -SR -C`` for a Transform node."""
    from scipy.spatial.transform import Rotation

    def vec(name: str, default: list[float]) -> np.ndarray:
        v = node.fields.get(name)
        return np.array(default, float) if v is None else parser.numbers(v, f"Transform {name}")

    def rot(name: str) -> np.ndarray:
        r = vec(name, [0, 0, 1, 0])
        if r.size != 4:
            raise InputError(parser.path, f"Transform {name} needs 4 numbers (axis, angle)")
        axis = r[:3] / (np.linalg.norm(r[:3]) or 1.0)
        m = np.eye(4)
        m[:3, :3] = Rotation.from_rotvec(axis * r[3]).as_matrix()
        return m

    def shift(v: np.ndarray) -> np.ndarray:
        m = np.eye(4)
        m[:3, 3] = v
        return m

    t, c, s = vec("translation", [0, 0, 0]), vec("center", [0, 0, 0]), vec("scale", [1, 1, 1])
    if t.size != 3 or c.size != 3 or s.size != 3:
        raise InputError(parser.path, "Transform translation/center/scale need 3 numbers each")
    sr = rot("scaleOrientation")
    return shift(t) @ shift(c) @ rot("rotation") @ sr @ np.diag([*s, 1.0]) @ sr.T @ shift(-c)


@dataclass
class _Part:
    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None
    face_uv: np.ndarray | None
    colors: np.ndarray | None
    urls: list[str]

    def placed(self, matrix: np.ndarray) -> "_Part":
        """This shape moved by a 4×4 transform (the same part when it is the identity)."""
        if np.allclose(matrix, np.eye(4)):
            return self
        points = self.vertices @ matrix[:3, :3].T + matrix[:3, 3]
        return _Part(points, self.faces, self.uv, self.face_uv, self.colors, self.urls)


def _shape_geometry(shape: _Node, parser: _Parser, k: int) -> _Part | None:
    """The geometry of one ``Shape`` in its own frame (None for lines, points, primitives)."""
    geom = shape.fields.get("geometry")
    if not isinstance(geom, _Node) or geom.type != "IndexedFaceSet":
        return None  # lines, points, primitives: not scan geometry
    f = geom.fields
    coord = f.get("coord")
    if not isinstance(coord, _Node) or "point" not in coord.fields:
        raise InputError(parser.path, f"Shape {k}: IndexedFaceSet without coord points")
    points = parser.numbers(coord.fields["point"], f"Shape {k} coord point", 3)
    cidx = parser.indices(f.get("coordIndex", []), f"Shape {k} coordIndex")
    corners, cidx = _fan(cidx)
    if f.get("ccw", True) is False:
        corners = corners[:, [0, 2, 1]]
    faces = cidx[corners]
    if faces.size and (faces.min() < 0 or faces.max() >= len(points)):
        raise InputError(parser.path, f"Shape {k}: coordIndex refers to point {faces.max()} "
                         f"but coord has {len(points)} points")

    uv = face_uv = None
    tc = f.get("texCoord")
    if isinstance(tc, _Node) and "point" in tc.fields:
        uv = parser.numbers(tc.fields["point"], f"Shape {k} texCoord point", 2)
        if "texCoordIndex" in f:
            tidx = parser.indices(f["texCoordIndex"], f"Shape {k} texCoordIndex")
            if len(tidx) and tidx[-1] >= 0:
                tidx = np.append(tidx, -1)
            if len(tidx) != len(cidx) or not np.array_equal(tidx < 0, cidx < 0):
                raise InputError(parser.path, f"Shape {k}: texCoordIndex does not match coordIndex polygon by polygon")
        else:  # VRML: without texCoordIndex the coordIndex indexes the texture coordinates too
            tidx = cidx
        face_uv = tidx[corners]
        if face_uv.size and (face_uv.min() < 0 or face_uv.max() >= len(uv)):
            raise InputError(parser.path, f"Shape {k}: texture index {face_uv.max()} out of range for "
                             f"{len(uv)} texture coordinates")

    colors = None
    col = f.get("color")
    if isinstance(col, _Node) and "color" in col.fields and "colorIndex" not in f and f.get("colorPerVertex", True):
        c = parser.numbers(col.fields["color"], f"Shape {k} color", 3)
        colors = c if len(c) == len(points) else None

    urls: list[str] = []
    app = shape.fields.get("appearance")
    tex = app.fields.get("texture") if isinstance(app, _Node) else None
    if isinstance(tex, _Node) and tex.type == "ImageTexture":
        urls = [u for u in tex.fields.get("url", []) if isinstance(u, str)]
    return _Part(points, faces, uv, face_uv, colors, urls)


def _fan(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangles of ``-1``-terminated polygons: (T, 3) positions into ``idx`` (which gets a final ``-1``).

    Polygons with fewer than 3 corners are dropped.
    """
    if len(idx) and idx[-1] >= 0:
        idx = np.append(idx, -1)
    ends = np.flatnonzero(idx < 0)
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else np.zeros(0, np.int64)
    return fan_triangles(ends - starts, starts), idx


def _combine(parts: list[_Part], path: Path, require_texture: bool) -> Mesh:
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    uv = face_uv = None
    if all(p.uv is not None for p in parts):
        uv_off = np.cumsum([0] + [len(p.uv) for p in parts])
        uv = np.concatenate([p.uv for p in parts])
        face_uv = np.concatenate([p.face_uv + o for p, o in zip(parts, uv_off)])
    elif any(p.uv is not None for p in parts):
        log.warning("%s: only some shapes have texture coordinates; reading without them", path)
    colors = np.concatenate([p.colors for p in parts]) if all(p.colors is not None for p in parts) else None
    if colors is not None and colors.max() > 1.0:
        colors = colors / 255.0

    textures: list[Path] = []
    face_texture = np.full(len(faces), -1, np.int64)
    start = 0
    for p in parts:
        img = None
        if p.urls:
            img = next((r for u in p.urls if (r := resolve_reference(path.parent, u)) is not None), None)
            if img is None:
                if require_texture:
                    raise InputError(path, f"texture {p.urls[0]!r} not found beside the file")
                log.warning("%s: texture %s not found; reading without it", path, p.urls[0])
        if img is not None:
            if img not in textures:
                textures.append(img)
            face_texture[start:start + len(p.faces)] = textures.index(img)
        start += len(p.faces)
    if require_texture and not textures:
        raise InputError(path, "names no texture image")
    meta: dict[str, Any] = {"shapes": len(parts)}
    if len(textures) > 1:
        meta["textures"] = textures
        meta["face_texture"] = face_texture
    texture = textures[0] if textures and uv is not None else None
    return Mesh(vertices, faces, uv, face_uv, texture, colors, str(path), meta)
