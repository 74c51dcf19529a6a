"""Hostile inputs for the bad-input corpus, made by code (nothing binary is kept in the repository).

Bombs are built cheaply: a gzip bomb repeats one small gzip member (gzip allows many members in a
file), a zip member that inflates to hundreds of megabytes reuses one raw deflate block of zeros made
once per session, a file of gigabytes is sparse (``truncate``), a pickle bomb relies on the pickle memo.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import socket
import struct
import zlib
from pathlib import Path

import numpy as np

#: numpy's array rebuilder, as its own pickles name it.
RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]


class ObjectArrayState:
    """Pickles to what numpy's own pickles are (``_reconstruct`` then ``__setstate__``), but the state
    asks for an object array of ``n`` elements with no data: numpy allocates ``n`` pointers and reads
    past its list (a crash in native code before onflame rebuilt arrays itself)."""

    def __init__(self, n: int = 10**9):
        self.n = n

    def __reduce__(self):
        return RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (self.n,), np.dtype(object), False, [])


def object_array_pickle(n: int = 10**9) -> bytes:
    return pickle.dumps({"v_template": ObjectArrayState(n), "f": np.zeros((1, 3), np.int64)}, protocol=2)


def laughs(depth: int = 26, leaf=1.0, width: int = 10) -> list:
    """A list whose tree holds ``width * 2**depth`` leaves, built from ``depth`` shared pairs."""
    x = [leaf] * width
    for _ in range(depth):
        x = [x, x]
    return x


def laughs_model_pickle(depth: int = 26) -> bytes:
    """A FLAME-looking dict whose ``v_template`` expands to 2**depth * 10 floats (a few hundred bytes)."""
    return pickle.dumps({"v_template": laughs(depth), "f": [[0, 1, 2]], "shapedirs": laughs(depth)}, protocol=2)


def npy_object(payload: bytes) -> bytes:
    """A ``.npy`` of a 0-d object array whose pickle is ``payload`` (as MICA's image lists are stored)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + payload


def npy_with_header(text: str) -> bytes:
    """A ``.npy`` 1.0 file whose header dictionary is ``text`` as it is (need not be a Python literal)."""
    h = text.encode("latin1")
    h += b" " * ((64 - (10 + len(h) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_socket(path: Path) -> Path:
    """A Unix socket file nobody listens on (a plain open of it fails; a careless reader may block)."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


def sparse_file(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk: ``head`` then a hole (zeros)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def gzip_bomb(head: bytes, inflated: int, filler: bytes = b" ") -> bytes:
    """gzip data that inflates to ``head`` plus about ``inflated`` bytes of ``filler``: one 8 MB member
    repeated (about 8 kB each)."""
    member = gzip.compress(filler * (8 << 20), 9)
    return gzip.compress(head) + member * max(1, inflated // (8 << 20))


@functools.lru_cache(maxsize=4)
def _deflated_zeros(n: int) -> bytes:
    """A raw deflate segment (sync-flushed, not final) of ``n`` zero bytes (a multiple of 1 MB)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    return b"".join([c.compress(chunk) for _ in range(n >> 20)] + [c.flush(zlib.Z_SYNC_FLUSH)])


def _member(head: bytes, zeros: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, size) of ``head`` followed by ``zeros`` zero bytes (a multiple of 1 MB):
    two sync-flushed segments and a final empty block, a valid deflate stream."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_SYNC_FLUSH)
    crc, chunk = zlib.crc32(head), bytes(1 << 20)
    for _ in range(zeros >> 20):
        crc = zlib.crc32(chunk, crc)
    return first + (_deflated_zeros(zeros) if zeros else b"") + b"\x03\x00", crc, len(head) + zeros


def raw_zip(members: list[tuple[str, bytes, int]]) -> bytes:
    """A zip of deflated members given as ``(name, head, zeros)``: ``head`` then ``zeros`` zero bytes,
    compressed once per session whatever the count (sizes below 4 GB, no zip64)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, head, zeros in members:
        data, crc, size = _member(head, zeros)
        offset = out.tell()
        fields = (20, 0, 8, 0, 0, crc, len(data), size, len(name.encode()))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + name.encode() + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, 0, offset)
                      + name.encode())
    cd = central.getvalue()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd), out.tell() - len(cd), 0))
    return out.getvalue()


def npy_header_bytes(shape: tuple, descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def params_npz_with_ballast(ballast_mb: int, members: int = 3) -> bytes:
    """A valid MICA parameter ``.npz`` plus ``members`` uint8 arrays of ``ballast_mb`` MB of zeros each."""
    entries = [("betas.npy", npy_bytes(np.zeros(400)), 0), ("pose.npy", npy_bytes(np.zeros(15)), 0),
               ("trans.npy", npy_bytes(np.zeros(3)), 0)]
    n = ballast_mb << 20
    entries += [(f"ballast{k}.npy", npy_header_bytes((n,), "|u1"), n) for k in range(members)]
    return raw_zip(entries)


def ascii_ply(vertices: np.ndarray, faces: np.ndarray, announce_vertices: int | None = None) -> str:
    header = (f"ply\nformat ascii 1.0\nelement vertex {announce_vertices or len(vertices)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    return (header + "".join(f"{x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in vertices)
            + "".join(f"3 {a} {b} {c}\n" for a, b, c in faces))


def vrml_instancing(levels: int = 40) -> str:
    """A VRML file whose ``DEF``/``USE`` levels each double the shapes below (2**levels triangles)."""
    text = ("#VRML V2.0 utf8\nDEF L0 Shape { geometry IndexedFaceSet { coord Coordinate { point [0 0 0, 1 0 0, "
            "0 1 0] } coordIndex [0 1 2 -1] } }\n")
    for i in range(1, levels):
        text += f"DEF L{i} Group {{ children [ USE L{i - 1} USE L{i - 1} ] }}\n"
    return text
