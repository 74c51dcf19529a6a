"""PLY: vertices, optional vertex colours, polygons fan-split into triangles.

The header is read here first (:func:`read_header`) and what it announces is checked against the file
before anything big is allocated: element counts within what a scan holds and what the file's bytes can
carry, ``x``/``y``/``z`` present. Binary PLY whose elements have a fixed size (faces all triangles, the
usual case) is read as numpy records and must end where the header says; other binary files (polygons,
extra lists) go to ``plyfile``, a reader made for the format, from the bytes already read. ASCII PLY is
parsed here with numpy, line by line as the format lays it out (one element per line): the number of
lines, the values on each line and every face's corner count must be what the header says, so a file
cut short or padded is refused. (plyfile parses ASCII line by line in Python, trimesh without checking
the lines against the header.)
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..fileio import MESH_MAX_BYTES, read_bounded, write_bytes
from ..geometry import fan_triangles
from .mesh import Mesh
from .numbers import Lines

#: Names PLY writers give the face list, the colour channels.
_FACE_LISTS = ("vertex_indices", "vertex_index")
_COLOURS = (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue"))
#: PLY's property types and their sizes in bytes.
_TYPES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
          "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
_HEADER_MAX = 64 * 1024


@dataclass
class Property:
    name: str
    type: str
    count_type: str | None = None  # set for a list property


@dataclass
class Element:
    name: str
    count: int
    properties: list[Property] = field(default_factory=list)

    def names(self) -> list[str]:
        return [p.name for p in self.properties]

    def min_bytes(self, binary: bool) -> int:
        """The fewest bytes one such element takes (a list counted empty)."""
        if not binary:
            return 2 * max(len(self.properties), 1)  # "0 " per value, the last one's space a newline
        return sum(_TYPES[p.count_type or p.type] for p in self.properties)


@dataclass
class Header:
    format: str
    elements: list[Element]
    size: int  # bytes of the header, end_header's line included

    def element(self, name: str) -> Element | None:
        return next((e for e in self.elements if e.name == name), None)


def read_header(data: bytes, path: str | os.PathLike) -> Header:
    """The PLY header at the start of ``data``. Raises :class:`InputError` naming ``path`` when it is
    not one (no ``ply`` magic, no ``end_header`` in the first 64 kB, unknown format or types, counts
    that are not numbers)."""
    end = data.find(b"end_header", 0, _HEADER_MAX)
    if not data.startswith(b"ply") or end < 0:
        raise InputError(path, "not a PLY file (no 'ply' line, or no 'end_header' in its first 64 kB)")
    stop = data.find(b"\n", end)
    size = len(data) if stop < 0 else stop + 1
    fmt, elements = None, []
    for number, raw in enumerate(data[:end].split(b"\n")[1:], 2):
        words = raw.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append(Element(words[1], int(words[2])))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].properties.append(Property(words[4], _known(words[3]), _known(words[2])))
            elif words[0] == "property":
                elements[-1].properties.append(Property(words[2], _known(words[1])))
        except (IndexError, ValueError, KeyError):
            raise InputError(path, f"malformed PLY header (line {number}: {' '.join(words)[:60]!r})") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise InputError(path, f"PLY format {fmt!r} is not ascii, binary_little_endian or binary_big_endian")
    if any(e.count < 0 for e in elements):
        raise InputError(path, "malformed PLY header (a negative element count)")
    return Header(fmt, elements, size)


def _known(type_name: str) -> str:
    if type_name not in _TYPES:
        raise KeyError(type_name)
    return type_name


def _check_header(header: Header, body_bytes: int, path: str | os.PathLike) -> None:
    """What the header announces against what a scan holds and what the file's body can carry."""
    from .io import check_mesh_size

    vertex = header.element("vertex")
    if vertex is None:
        raise InputError(path, "PLY file has no 'vertex' element")
    _check_xyz(path, vertex.names())
    face = header.element("face")
    check_mesh_size(vertex.count, 0 if face is None else face.count, path)
    binary = header.format != "ascii"
    need = sum(e.count * e.min_bytes(binary) for e in header.elements)
    if need > body_bytes:
        counts = ", ".join(f"{e.count} {e.name}" for e in header.elements)
        raise InputError(path, f"truncated: the header announces {counts}, which take at least {need} bytes; "
                               f"{body_bytes} follow")


def _check_xyz(path: str | os.PathLike, names: list[str] | tuple[str, ...]) -> None:
    missing = [c for c in "xyz" if c not in names]
    if missing:
        raise InputError(path, f"PLY vertices lack {', '.join(missing)}")


def read_ply(path: str | os.PathLike) -> Mesh:
    """Read a PLY mesh (ASCII or binary): ``vertex`` x/y/z (V, 3) float64, colours (V, 3) in [0, 1] if it
    has red/green/blue, ``face`` polygons (F, 3) int64 triangles. Raises :class:`InputError` naming the
    file if it is malformed, or holds other than its header announces."""
    path = Path(path)
    data = read_bounded(path, MESH_MAX_BYTES)
    header = read_header(data, path)
    _check_header(header, len(data) - header.size, path)
    if header.format == "ascii":
        columns, lists = _read_ascii(data, header, path)
    else:
        columns, lists = _read_binary(data, header, path)
    vertices = np.stack([np.asarray(columns[c], dtype=np.float64) for c in "xyz"], 1)
    colors = None
    for channels in _COLOURS:
        if all(c in columns for c in channels):
            rgb = np.stack([np.asarray(columns[c], dtype=np.float64) for c in channels], 1)
            integer = header.format == "ascii" and _is_integer_type(header, channels[0])
            colors = rgb / 255.0 if integer or np.issubdtype(columns[channels[0]].dtype, np.integer) else rgb
            break
    faces = lists if lists is not None else np.zeros((0, 3), np.int64)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(path, f"PLY face index out of range (vertices: {len(vertices)})")
    return Mesh(vertices, faces, colors=colors, source=str(path))


def _is_integer_type(header: Header, name: str) -> bool:
    vertex = header.element("vertex")
    prop = next((p for p in vertex.properties if p.name == name), None) if vertex else None
    return prop is not None and not prop.type.startswith(("float", "double"))


_NUMPY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
                "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
                "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _read_binary(data: bytes, header: Header, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Vertex columns and face triangles of a binary PLY: read as numpy records where every element has a
    fixed size (faces all triangles), else by ``plyfile``; the data must end where the header says."""
    order = "<" if header.format == "binary_little_endian" else ">"
    offset, columns, faces = header.size, {}, None
    for element in header.elements:
        dtype = _record_dtype(element, order)
        if dtype is None:
            return _read_with_plyfile(data, path)
        if offset + element.count * dtype.itemsize > len(data):
            raise InputError(path, f"truncated: {element.count} {element.name} elements of {dtype.itemsize} bytes "
                                   f"need {element.count * dtype.itemsize} bytes; {len(data) - offset} follow")
        records = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
        offset += element.count * dtype.itemsize
        if element.name == "vertex":
            columns = {name: records[name] for name in dtype.names}
        elif element.name == "face":
            name = next((n for n in _FACE_LISTS if n in dtype.names), None)
            if name is None:
                raise InputError(path, f"PLY faces have no vertex list ({' or '.join(_FACE_LISTS)})")
            if len(records) and (records[f"{name}__count"] != 3).any():  # polygons: plyfile's per-face lists
                return _read_with_plyfile(data, path)
            faces = records[name].astype(np.int64)
    if len(data) - offset > 2:  # a writer's trailing newline is let pass
        raise InputError(path, f"longer than its header announces: {len(data) - offset} bytes after the last element")
    return columns, faces


def _record_dtype(element: Element, order: str) -> np.dtype | None:
    """The fixed-size record of one element (a face's vertex list read as 3 indices), or None when the
    element has other lists."""
    fields = []
    for p in element.properties:
        if p.count_type is None:
            fields.append((p.name, order + _NUMPY_TYPES[p.type]))
        elif element.name == "face" and p.name in _FACE_LISTS:
            fields += [(f"{p.name}__count", order + _NUMPY_TYPES[p.count_type]),
                       (p.name, order + _NUMPY_TYPES[p.type], (3,))]
        else:
            return None
    return np.dtype(fields)


def _read_with_plyfile(data: bytes, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(io.BytesIO(data))
    except (PlyParseError, ValueError, EOFError) as exc:
        raise InputError(path, f"malformed PLY file ({str(exc)[:200]})") from None
    vertex = ply["vertex"].data
    columns = {name: vertex[name] for name in vertex.dtype.names}
    faces = None
    if "face" in [e.name for e in ply.elements]:
        face = ply["face"].data
        name = next((n for n in _FACE_LISTS if n in face.dtype.names), None)
        if name is None:
            raise InputError(path, f"PLY faces have no vertex list ({' or '.join(_FACE_LISTS)})")
        faces = _triangles(face[name])
    return columns, faces


def _read_ascii(data: bytes, header: Header, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Vertex columns and face triangles of an ASCII PLY, checked line by line against the header."""
    lines = Lines(data[header.size:])
    block = lines.select(np.ones(len(lines), dtype=bool), 0)
    tokens = block.tokens_per_line()
    rows = np.flatnonzero(tokens > 0)  # blank lines carry no element
    announced = sum(e.count for e in header.elements)
    if len(rows) != announced:
        counts = ", ".join(f"{e.count} {e.name}" for e in header.elements)
        state = "truncated" if len(rows) < announced else "longer than announced"
        raise InputError(path, f"{state}: the header announces {counts} (one per line), the file holds "
                               f"{len(rows)} lines of values")
    columns: dict[str, np.ndarray] = {}
    faces = None
    at = 0
    for element in header.elements:
        mine = rows[at:at + element.count]
        at += element.count
        if element.name == "vertex":
            columns = _ascii_columns(lines, mine, tokens[mine], element, path)
        elif element.name == "face":
            faces = _ascii_faces(lines, mine, tokens[mine], element, path)
    return columns, faces


def _values(lines: Lines, rows: np.ndarray, path: Path, what: str) -> np.ndarray:
    which = np.zeros(len(lines), dtype=bool)
    which[rows] = True
    return lines.select(which, 0).numbers(path, what)


def _ascii_columns(lines: Lines, rows: np.ndarray, tokens: np.ndarray, element: Element, path: Path) -> dict[str, np.ndarray]:
    if any(p.count_type for p in element.properties):
        raise InputError(path, "PLY vertices with list properties are not supported")
    width = len(element.properties)
    odd = np.flatnonzero(tokens != width)
    if len(odd):
        raise InputError(path, f"line {rows[odd[0]] + 1} after the header: a vertex of {tokens[odd[0]]} values; "
                               f"the header gives vertices {width} properties")
    values = _values(lines, rows, path, "vertex values").reshape(len(rows), width)
    return {p.name: values[:, k] for k, p in enumerate(element.properties)}


def _ascii_faces(lines: Lines, rows: np.ndarray, tokens: np.ndarray, element: Element, path: Path) -> np.ndarray:
    props = element.properties
    if not props or props[0].name not in _FACE_LISTS or props[0].count_type is None:
        raise InputError(path, f"PLY faces must start with a vertex list ({' or '.join(_FACE_LISTS)})")
    extra = len(props) - 1
    if any(p.count_type for p in props[1:]):
        raise InputError(path, "PLY faces with more than one list property are not supported in ASCII files")
    values = _values(lines, rows, path, "face values")
    first = np.cumsum(tokens) - tokens  # where each face's corner count is
    corners = values[first]
    if not np.array_equal(corners, tokens - 1 - extra) or (len(corners) and corners.min() < 3):
        bad = int(np.flatnonzero((corners != tokens - 1 - extra) | (corners < 3))[0])
        raise InputError(path, f"line {rows[bad] + 1} after the header: a face announces {corners[bad]:g} corners "
                               f"and holds {tokens[bad] - 1 - extra} (a face needs at least 3)")
    keep = np.ones(len(values), dtype=bool)
    keep[first] = False
    for k in range(1, extra + 1):  # scalar properties after the list
        keep[first + tokens - k] = False
    index = values[keep]
    if not np.array_equal(index, np.round(index)):
        raise InputError(path, "PLY face indices are not integers")
    index = index.astype(np.int64)
    counts = corners.astype(np.int64)
    return index.reshape(-1, 3) if (counts == 3).all() else index[fan_triangles(counts)]


def _triangles(lists: np.ndarray) -> np.ndarray:
    """(F, 3) int64 triangles from a face-list column: an (F, 3) array, or per-face index arrays
    (polygons of any size, fan-split: corners (0, k, k + 1))."""
    if lists.dtype != object:
        return np.asarray(lists, dtype=np.int64).reshape(-1, 3)
    counts = np.fromiter((len(p) for p in lists), dtype=np.int64, count=len(lists))
    if len(counts) and counts.min() < 3:
        raise ValueError("a PLY face has fewer than 3 corners")
    flat = np.concatenate(lists).astype(np.int64) if len(lists) else np.zeros(0, np.int64)
    return flat[fan_triangles(counts)]


def write_ply(path: str | os.PathLike, mesh: Mesh) -> None:
    """Write ``mesh`` as binary little-endian PLY atomically: float64 x/y/z, uchar colours if it has them,
    int32 triangles."""
    from plyfile import PlyData, PlyElement

    fields = [("x", "f8"), ("y", "f8"), ("z", "f8")]
    if mesh.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(mesh.n_vertices, dtype=fields)
    for i, c in enumerate("xyz"):
        vertex[c] = mesh.vertices[:, i]
    if mesh.colors is not None:
        rgb = np.clip(np.round(np.asarray(mesh.colors) * 255), 0, 255).astype(np.uint8)
        for i, c in enumerate(("red", "green", "blue")):
            vertex[c] = rgb[:, i]
    face = np.empty(mesh.n_faces, dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = mesh.faces
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex"),
             PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})]).write(buf)
    write_bytes(path, buf.getvalue())
