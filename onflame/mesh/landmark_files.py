"""3D landmark files as labs have them, read into iBUG-68 indices.

Every reader returns :class:`ScanLandmarks`: the points in the file's own units and frame (a scan's
landmarks follow the scan's units) and, for each point, the iBUG-68 index it stands for, so one
registration can use 51 clicks, 68, NoW's 7 or BU-3DFE's 83 alike.

=========  ==================================================================================================
suffix     content
=========  ==================================================================================================
``.npy``   (51, 3) or (68, 3) floats in iBUG order (also with a leading axis of 1); no pickles
``.txt``   one point per line, ``x y z`` or ``index x y z`` (spaces, tabs or commas), 7, 51 or 68 lines
``.pp``    MeshLab's picked points (XML ``<point x= y= z= name= active=/>``): 7, 51 or 68 points in order
``.ljson`` menpo's LJSON (versions 1-3): labelled groups; the labels (``jaw``/``chin``, ``left_eyebrow``/
           ``leyebrow``, ``nose``, ``left_eye``/``leye``, ``mouth``…, menpo's image-side names) say which
           iBUG points each group holds, whatever order the groups are stored in
``.bnd``   BU-3DFE's 83 points (``index x y z`` or ``x y z`` lines): the 15 it shares with iBUG-68
           (eye corners, brow ends, mouth corners and lip middles, chin), found within each of its groups
           by their place on the face, since BU-3DFE's point numbering inside a group is not iBUG's
``.lnd``   FG2018 / Stirling: ``index x y z`` lines (mm): 7, 51 or 68 points
``.land``  FaceWarehouse's layout (a count line, then one landmark per line) holding 3D points or vertex
           ids into the scan (7, 51 or 68 in iBUG order); the release's own files hold 2D photo points,
           which have no depth and are refused
=========  ==================================================================================================

Seven points are NoW's and FG2018's: right eye outer, right eye inner, left eye inner, left eye outer,
nose bottom, right mouth corner, left mouth corner (iBUG 36, 39, 42, 45, 33, 48, 54). "Right" is the
subject's right, which iBUG draws on the image's left.

Every file is checked the same way: a known point count, finite numbers, and left and right the right way
round (the nose must stand out of the face that the eyes and mouth span; a mirrored file fails that).
Errors name the file and the problem (:class:`~onflame.errors.InputError`).
"""
from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError, short_repr
from ..fileio import npy_header, read_bounded, read_npy, read_text

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from .mesh import Mesh

#: Landmark files larger than this are not landmark files (a few hundred points take a few kB).
MAX_BYTES = 4 << 20
#: NoW's / FG2018's seven points as iBUG-68 indices.
NOW7 = np.array([36, 39, 42, 45, 33, 48, 54])
#: iBUG-68 indices a file of N points in order holds.
ORDERED_LAYOUTS = {7: NOW7, 51: np.arange(17, 68), 68: np.arange(68)}
#: Suffixes :func:`read_landmarks` reads.
LANDMARK_SUFFIXES = (".npy", ".txt", ".pp", ".ljson", ".bnd", ".lnd", ".land")

# iBUG-68 groups, for labelled formats and the handedness check
_RIGHT_EYE, _LEFT_EYE = np.arange(36, 42), np.arange(42, 48)
_MOUTH, _NOSE = np.arange(48, 68), np.arange(27, 36)
#: menpo's LJSON labels (image-side names: "left" is the image's left, the subject's right) -> iBUG-68.
_LJSON_LABELS = {
    "jaw": np.arange(0, 17), "chin": np.arange(0, 17),
    "lefteyebrow": np.arange(17, 22), "leyebrow": np.arange(17, 22),
    "righteyebrow": np.arange(22, 27), "reyebrow": np.arange(22, 27),
    "nose": np.arange(27, 36), "uppernose": np.arange(27, 31), "lowernose": np.arange(31, 36),
    "lefteye": _RIGHT_EYE, "leye": _RIGHT_EYE, "righteye": _LEFT_EYE, "reye": _LEFT_EYE,
    "mouth": _MOUTH, "outermouth": np.arange(48, 60), "innermouth": np.arange(60, 68),
}


@dataclass
class ScanLandmarks:
    """Landmarks on a scan.

    Attributes:
        points: (N, 3) float64 positions in the scan's units and frame.
        ibug: (N,) int64 iBUG-68 index of each point (0-16 jaw contour, 17-26 brows, 27-35 nose, 36-47
            eyes, 48-67 mouth).
        source: the file read, or a description.
        layout: what the file held (``"ibug68"``, ``"ibug51"``, ``"now7"``, ``"bu3dfe83"``, ``"ljson"``).
    """

    points: np.ndarray
    ibug: np.ndarray
    source: str = ""
    layout: str = ""

    def __len__(self) -> int:
        return len(self.ibug)

    def select(self, keep: np.ndarray) -> "ScanLandmarks":
        """The landmarks where the (N,) bool ``keep`` is set."""
        return ScanLandmarks(self.points[keep], self.ibug[keep], self.source, self.layout)

    def with_points(self, points: np.ndarray) -> "ScanLandmarks":
        """The same landmarks moved to ``points`` (N, 3) (another unit or frame)."""
        return ScanLandmarks(np.asarray(points, dtype=np.float64), self.ibug, self.source, self.layout)


def landmarks_from_array(points: np.ndarray, source: str = "<array>") -> ScanLandmarks:
    """:class:`ScanLandmarks` from a (7 | 51 | 68, 3) array in iBUG order (a leading axis of 1 is dropped).

    Raises:
        InputError: another shape, or values that are not finite numbers, naming ``source``.
    """
    a = np.asarray(points)
    if a.dtype.kind not in "iuf":
        raise InputError(source, f"landmarks hold {a.dtype} values, not numbers")
    a = a.astype(np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] != 3 or a.shape[0] not in ORDERED_LAYOUTS:
        raise InputError(source, f"landmarks must be 7, 51 or 68 points of (x, y, z), got an array of shape {a.shape}")
    names = {7: "now7", 51: "ibug51", 68: "ibug68"}
    return checked(ScanLandmarks(a, ORDERED_LAYOUTS[a.shape[0]].copy(), str(source), names[a.shape[0]]))


def read_landmarks(path: str | os.PathLike, scan: "Mesh | None" = None) -> ScanLandmarks:
    """Read a landmark file of any kind in the module's table (by its suffix).

    ``scan``: the scan the landmarks are on, for ``.land`` files of vertex ids.

    Raises:
        InputError: missing, empty, oversized or malformed file, an unknown suffix, a wrong point count,
            NaN or infinite values, or left and right swapped; the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".land":
        return _read_land(path, scan)
    if suffix in ORDERED_SUFFIXES:
        return landmarks_from_array(read_points(path), str(path))
    text = _read_text(path, LANDMARK_SUFFIXES)
    return checked({".ljson": _read_ljson, ".bnd": _read_bnd}[suffix](text, path))


#: Suffixes of files whose points are in an order that says which landmark each is.
ORDERED_SUFFIXES = (".npy", ".txt", ".lnd", ".pp")


def read_points(path: str | os.PathLike) -> np.ndarray:
    """The (N, 3) points of an ordered landmark file (``.npy``, ``.txt``, ``.lnd``, ``.pp``), in file
    order, without checking what N is (:func:`read_landmarks` checks it; NoW's reader wants 7).

    Raises:
        InputError: missing, empty, oversized or unparsable file, naming it.
    """
    path = Path(path)
    text = _read_text(path, ORDERED_SUFFIXES)
    if text is None:
        return _read_npy(path)
    return _read_pp(text, path) if path.suffix.lower() == ".pp" else _read_table(text, path)


def _read_text(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The file's text after the checks every landmark file gets (None for ``.npy``, read as binary)."""
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise InputError(path, f"unknown landmark file type {suffix!r}; use one of {', '.join(suffixes)}")
    if suffix == ".npy":
        return None
    text = read_text(path, MAX_BYTES, errors="strict")  # a regular file of at most MAX_BYTES
    if not text:
        raise InputError(path, "empty landmark file")
    return text


def _read_land(path: Path, scan: "Mesh | None") -> ScanLandmarks:
    """FaceWarehouse's ``.land`` layout with 3D points, or vertex ids into ``scan``."""
    from .facewarehouse import landmarks_3d, read_land

    land = read_land(path)
    if land.image_points is not None:
        raise InputError(path, "holds 2D photo points (x y per line), which have no depth; give 3D points "
                               "(x y z per line) or vertex ids of the scan")
    if land.vertex_ids is not None and scan is None:
        raise InputError(path, "holds vertex ids; they need the scan they index")
    points = landmarks_3d(land, scan) if scan is not None else land.points
    return landmarks_from_array(points, str(path))


def checked(lmk: ScanLandmarks) -> ScanLandmarks:
    """``lmk`` if its points are finite, its iBUG indices valid and distinct, and left and right are the
    right way round; else :class:`InputError` naming its source."""
    src = lmk.source or "<landmarks>"
    if not np.isfinite(lmk.points).all():
        bad = np.flatnonzero(~np.isfinite(lmk.points).all(1))
        raise InputError(src, f"landmarks {', '.join(map(str, bad[:5]))} are not finite numbers (NaN or inf)")
    if len(np.unique(lmk.ibug)) != len(lmk.ibug) or lmk.ibug.min(initial=0) < 0 or lmk.ibug.max(initial=0) > 67:
        raise InputError(src, "landmark indices must be distinct iBUG-68 indices 0-67")
    spread = np.ptp(lmk.points, axis=0).max() if len(lmk) else 0.0
    if len(lmk) and spread == 0.0:
        raise InputError(src, "all landmarks are the same point")
    side = handedness(lmk)
    if side is not None and side < 0:
        raise InputError(src, "left and right are swapped: the subject's right eye (iBUG 36-41) lies on the "
                              "subject's left side of the face (the nose points into the head)")
    return lmk


def handedness(lmk: ScanLandmarks) -> float | None:
    """+1 if the subject's right eye lies on the subject's right (as iBUG's order says), -1 if mirrored,
    None when the file lacks the points to tell (both eyes, the mouth and the nose).

    The face's frame from its points: x from the right eye to the left eye, up from the mouth to the eyes,
    facing = x × up; the nose must stand out along facing. Mirrored labels flip x, hence facing, and the
    nose then points into the head.
    """
    where = {int(i): k for k, i in enumerate(lmk.ibug)}

    def mean(idx: np.ndarray) -> np.ndarray | None:
        rows = [where[i] for i in idx if i in where]
        return lmk.points[rows].mean(0) if rows else None

    right, left, mouth, nose = mean(_RIGHT_EYE), mean(_LEFT_EYE), mean(_MOUTH), mean(_NOSE)
    if right is None or left is None or mouth is None or nose is None:
        return None
    out = nose_out(right, left, mouth, nose)
    if abs(out) < 1e-3:  # a flat set of points (2D clicks with z = 0): cannot tell
        return None
    return 1.0 if out > 0 else -1.0


def nose_out(right_eye: np.ndarray, left_eye: np.ndarray, mouth: np.ndarray, nose: np.ndarray) -> float:
    """How far the nose (3,) stands out of the plane of the eyes and mouth (each (3,)) along the face's
    facing, in eye distances: positive when ``right_eye`` is the subject's right (x from the right eye
    to the left, up from the mouth to the eyes, facing = x × up), negative for mirrored labels; 0 when the
    points give no frame."""
    x = left_eye - right_eye
    up = (left_eye + right_eye) / 2 - mouth
    facing = np.cross(x, up)
    norm = np.linalg.norm(facing) * np.linalg.norm(x)
    if norm == 0:
        return 0.0
    return float((nose - (left_eye + right_eye + mouth) / 3) @ facing / norm)


# --- readers -------------------------------------------------------------------------------------------------

def _read_npy(path: Path) -> np.ndarray:
    data = read_bounded(path, MAX_BYTES)
    if not data:
        raise InputError(path, "empty landmark file")
    shape, _, dtype = npy_header(io.BytesIO(data), path)  # what the header announces is checked first
    if dtype.hasobject:
        raise InputError(path, "holds Python objects (a pickle), not landmark numbers; onflame does not load those")
    if int(np.prod(shape)) > 83 * 3:
        raise InputError(path, f"landmarks must be 7, 51 or 68 points of (x, y, z), got an array of shape {shape}")
    arr = read_npy(data, path)
    if arr.dtype.kind not in "iuf":
        raise InputError(path, f"landmarks hold {arr.dtype} values, not numbers")
    arr = arr.astype(np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:  # a batch of one, as some tools save it
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(path, f"landmarks must be 7, 51 or 68 points of (x, y, z), got an array of shape {arr.shape}")
    return arr


def _numbers(line: str, path: Path, lineno: int) -> list[float]:
    try:
        return [float(t) for t in re.split(r"[\s,;]+", line.strip()) if t]
    except ValueError:
        raise InputError(path, f"line {lineno}: {line.strip()[:40]!r} is not a row of numbers") from None


def _read_table(text: str, path: Path) -> np.ndarray:
    """``x y z`` or ``index x y z`` rows; comment lines (``#``) and blank lines are skipped."""
    rows = [(n, _numbers(line, path, n)) for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]
    widths = {len(r) for _, r in rows}
    if not rows or not widths <= {3, 4} or len(widths) != 1:
        bad = next((n for n, r in rows if len(r) not in (3, 4)), None)
        raise InputError(path, "landmark rows must be 'x y z' or 'index x y z'" + (f" (line {bad})" if bad else ""))
    a = np.array([r for _, r in rows])
    if a.shape[1] == 4:  # an index column: order the points by it
        idx = a[:, 0]
        if not np.isfinite(idx).all() or not np.array_equal(idx, np.round(idx)) or len(np.unique(idx)) != len(idx):
            raise InputError(path, "the first column of 'index x y z' rows must hold distinct integers")
        a = a[np.argsort(idx, kind="stable"), 1:]
    return a


def _parse_xml(text: str, path: Path) -> ET.Element:
    import xml.etree.ElementTree as ET  # only MeshLab's .pp files are XML

    if "<!ENTITY" in text:  # no entity expansion: picked-point files never need it
        raise InputError(path, "XML entities are not allowed in a picked-points file")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise InputError(path, f"not valid XML ({exc})") from None


def _read_pp(text: str, path: Path) -> np.ndarray:
    """MeshLab's picked points: every ``<point>``, in file order (inactive ones are refused, not skipped:
    the order is what says which landmark each point is)."""
    root = _parse_xml(text, path)
    pts = []
    for k, el in enumerate(root.iter("point")):
        try:
            pts.append([float(el.attrib[c]) for c in "xyz"])
        except (KeyError, ValueError):
            raise InputError(path, f"point {k + 1} ({el.attrib.get('name', '?')}) lacks a numeric x, y or z") from None
        if el.attrib.get("active", "1") == "0":
            raise InputError(path, f"point {k + 1} ({el.attrib.get('name', '?')}) is not active (not placed)")
    if not pts:
        raise InputError(path, "no <point> elements: not a MeshLab picked-points file")
    return np.array(pts)


def _read_ljson(text: str, path: Path) -> ScanLandmarks:
    try:
        doc = json.loads(text)
    except RecursionError:
        raise InputError(path, "not an LJSON document (JSON nested too deep)") from None
    except ValueError as exc:  # JSONDecodeError, and ints of more digits than Python converts
        raise InputError(path, f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(doc, dict):
        raise InputError(path, "not an LJSON document (a JSON object)")
    if isinstance(doc.get("groups"), dict):  # version 3: named groups, take the one with iBUG labels
        groups = [g for g in doc["groups"].values() if isinstance(g, dict)]
        group = next((g for g in groups if _labels(g, path)), groups[0] if groups else None)
    else:
        group = doc
    if group is None or not isinstance(group.get("landmarks"), dict) or "points" not in group["landmarks"]:
        raise InputError(path, "no landmarks.points in the LJSON document")
    raw = group["landmarks"]["points"]
    try:
        pts = np.array([[np.nan] * 3 if p is None else p for p in raw], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, "landmarks.points is not a list of (x, y, z) numbers") from None
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(path, f"landmarks.points must be (N, 3) 3D points, got shape {pts.shape}")
    labels = _labels(group, path)
    if not labels:  # no labels: the points are in iBUG order
        return landmarks_from_array(pts, str(path))
    ibug = np.full(len(pts), -1)
    for name, mask in labels:
        want = _LJSON_LABELS.get(re.sub(r"[^a-z]", "", name.lower()))
        if want is None:
            continue
        if len(mask) != len(want) or max(mask, default=-1) >= len(pts) or min(mask, default=0) < 0:
            raise InputError(path, f"label {name!r} has {len(mask)} points; iBUG-68's {name} has {len(want)}")
        ibug[list(mask)] = want
    keep = ibug >= 0
    if keep.sum() < 4:
        raise InputError(path, "none of the LJSON labels are iBUG-68 groups (jaw/chin, eyebrows, nose, eyes, mouth)")
    return ScanLandmarks(pts[keep], ibug[keep], str(path), "ljson")


def _labels(group: dict, path: Path | None = None) -> list[tuple[str, list[int]]]:
    labels = group.get("labels")
    if not isinstance(labels, list):
        return []
    out = []
    for lb in labels:
        if not isinstance(lb, dict) or not isinstance(lb.get("mask"), list):
            continue
        name, mask = lb.get("label", ""), lb["mask"]
        if not isinstance(name, str) or not all(type(i) is int and 0 <= i < 2**31 for i in mask):
            raise InputError(path, f"label {short_repr(name)} is not a name with a list of point indices")
        out.append((name, mask))
    return out


#: BU-3DFE's 83 points by group (its own numbering, as menpo's labeller has it).
_BU_GROUPS = {"eye_a": range(0, 8), "eye_b": range(8, 16), "brow_a": range(16, 26), "brow_b": range(26, 36),
              "nose": range(36, 48), "outer_mouth": range(48, 60), "inner_mouth": range(60, 68), "jaw": range(68, 83)}


def _read_bnd(text: str, path: Path) -> ScanLandmarks:
    """BU-3DFE ``.bnd``: 83 points; the iBUG points it shares are picked by position within each group."""
    rows = [_numbers(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if any(len(r) not in (3, 4) for r in rows):
        raise InputError(path, "BU-3DFE rows must be 'x y z' or 'index x y z'")
    a = np.array([r[-3:] for r in rows])
    if len(a) != 83:
        raise InputError(path, f"a BU-3DFE .bnd holds 83 points, found {len(a)}")
    if not np.isfinite(a).all():
        raise InputError(path, "landmarks are not finite numbers (NaN or inf)")
    g = {k: a[list(r)] for k, r in _BU_GROUPS.items()}
    # which of the two eye/brow groups is the subject's right: the one that makes the nose stand out
    eye_a, eye_b, mouth = g["eye_a"].mean(0), g["eye_b"].mean(0), g["outer_mouth"].mean(0)
    out_ab = nose_out(eye_a, eye_b, mouth, g["nose"].mean(0))
    if out_ab == 0:
        raise InputError(path, "cannot tell the face's left from its right (the nose does not stand out of the face)")
    right, left = ("a", "b") if out_ab > 0 else ("b", "a")
    eye_r, eye_l = g[f"eye_{right}"].mean(0), g[f"eye_{left}"].mean(0)
    x = eye_l - eye_r
    x /= np.linalg.norm(x)
    up = (eye_l + eye_r) / 2 - mouth
    up -= (up @ x) * x
    up /= np.linalg.norm(up)
    out: dict[int, np.ndarray] = {}

    def ends(points: np.ndarray, lo: int, hi: int) -> None:  # the group's extremes from the right to the left
        along = points @ x
        out[lo], out[hi] = points[np.argmin(along)], points[np.argmax(along)]

    def middles(points: np.ndarray, top: int, bottom: int) -> None:  # the points nearest the middle, above and below
        along = points @ x
        mid = (along.min() + along.max()) / 2
        height = points @ up
        corner_line = (height[np.argmin(along)] + height[np.argmax(along)]) / 2
        for sel, idx in ((height > corner_line, top), (height < corner_line, bottom)):
            cand = np.flatnonzero(sel)
            if cand.size:
                best = cand[np.argmin(np.abs(along[cand] - mid))]
                if abs(along[best] - mid) < 0.1 * (along.max() - along.min()):
                    out[idx] = points[best]

    ends(g[f"eye_{right}"], 36, 39)
    ends(g[f"eye_{left}"], 42, 45)
    ends(g[f"brow_{right}"], 17, 21)
    ends(g[f"brow_{left}"], 22, 26)
    ends(g["outer_mouth"], 48, 54)
    middles(g["outer_mouth"], 51, 57)
    ends(g["inner_mouth"], 60, 64)
    middles(g["inner_mouth"], 62, 66)
    out[8] = g["jaw"][np.argmin(g["jaw"] @ up)]  # the chin: the jaw line's lowest point
    ibug = np.array(sorted(out))
    return ScanLandmarks(np.array([out[i] for i in ibug]), ibug, str(path), "bu3dfe83")
