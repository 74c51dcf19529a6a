"""FLAME landmark embeddings and region masks.

A landmark is a point fixed on the mesh surface: a triangle index and barycentric weights, so it moves
with the mesh. FLAME ships three kinds:

- static 51 points (``flame_static_embedding.pkl``: ``lmk_face_idx`` (51,), ``lmk_b_coords`` (51, 3)),
  iBUG-68 without the 17 jaw-contour points;
- static 68 points (``flame_static_embedding_68.pkl``, same keys), the full iBUG-68 layout;
- the dynamic jaw contour, 17 points for each head yaw from −39° to +39° (79 rows):
  ``lmk_face_idx`` (79, 17), ``lmk_b_coords`` (79, 17, 3) in smplx's ``flame_dynamic_embedding.npy``.

MICA's ``landmark_embedding.npy`` combines all three (``static_lmk_*``, ``full_lmk_*``,
``dynamic_lmk_*``), the dynamic arrays as pickled torch tensors. Every file is read through
:mod:`onflame.safepickle`.

FLAME's and MICA's static points are two conventions, not two copies (:data:`CONVENTIONS`): an
embedding keeps each under its name (``flame51``, ``flame68``, ``mica51``, ``mica68``) with the file it
came from, and the registration picks the one a scan's clicks were made in.

Region masks (``FLAME_masks.pkl``) map a region name (``face``, ``left_eyeball``, ``scalp`` …) to vertex
indices.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import safepickle
from ..errors import InputError, short_keys, short_repr
from ..fileio import SIDE_FILE_MAX_BYTES


@dataclass(frozen=True)
class SurfacePoints:
    """Points fixed on a triangle mesh: ``face_idx`` (..., N) int64 and ``bary`` (..., N, 3) float64."""

    face_idx: np.ndarray
    bary: np.ndarray

    def __post_init__(self) -> None:
        if self.bary.shape != self.face_idx.shape + (3,):
            raise ValueError(f"bary shape {self.bary.shape} does not match face_idx shape {self.face_idx.shape}")

    def __len__(self) -> int:
        return self.face_idx.shape[-1]

    def same_as(self, other: "SurfacePoints", atol: float = 1e-6) -> bool:
        """True if both name the same triangles with the same barycentric weights (within ``atol``)."""
        return (self.face_idx.shape == other.face_idx.shape and np.array_equal(self.face_idx, other.face_idx)
                and np.allclose(self.bary, other.bary, atol=atol))

    def locate(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Positions (..., N, 3) on a mesh with ``vertices`` (V, 3) and ``faces`` (F, 3)."""
        corners = np.asarray(vertices)[np.asarray(faces)[self.face_idx]]  # (..., N, 3 corners, 3)
        return np.einsum("...nk,...nkd->...nd", self.bary, corners)


#: The named 51/68-point conventions FLAME files come in. Both follow iBUG-68's order and meaning, but
#: FLAME's own ``flame_static_embedding*.pkl`` and MICA/DECA's ``landmark_embedding.npy`` put some points
#: in different places on the same head (on FLAME's template: the ten brow points 5–13 mm apart, the nose
#: bridge 2–5 mm, the jaw contour up to 12 mm; the other 37 coincide). Clicks made for one convention
#: fit worse with the other, so they are kept apart by name and never merged.
CONVENTIONS = ("mica51", "mica68", "flame51", "flame68")
#: Which convention the FLAME layer's ``landmarks`` / ``landmarks68`` outputs use when several are loaded:
#: MICA's first (the MICA dataset, DECA and MICA's trainer use it), then FLAME's.
DEFAULT_ORDER = ("mica", "flame")
#: iBUG-68 indices of the 51 inner points (no jaw contour): FLAME's 51-point layout.
INNER51 = np.arange(17, 68)


def convention_family(name: str) -> str:
    """``"mica51"`` → ``"mica"``: a convention's name without its point count."""
    return name.rstrip("0123456789")


@dataclass(frozen=True)
class LandmarkEmbedding:
    """The landmark embeddings a model has, by convention name; any of them may be missing.

    Attributes:
        conventions: name -> points; ``<family>51`` (51,) in FLAME's 51-point layout (iBUG-68 without
            the jaw contour), ``<family>68`` (68,) in iBUG-68 order; other names (e.g. dense detector
            correspondences) keep their own layout.
        dynamic: (79, 17) jaw-contour points by yaw.
        origins: convention name (or ``"dynamic"``) -> the file it was read from.
    """

    conventions: Mapping[str, SurfacePoints] = field(default_factory=dict)
    dynamic: SurfacePoints | None = None
    origins: Mapping[str, str] = field(default_factory=dict, metadata={"provenance": True})

    @property
    def static51(self) -> SurfacePoints | None:
        """The default 51 points (see :data:`DEFAULT_ORDER`), or None."""
        return self._default(51)

    @property
    def full68(self) -> SurfacePoints | None:
        """The default 68 points, or None."""
        return self._default(68)

    def _default(self, n: int) -> SurfacePoints | None:
        for family in DEFAULT_ORDER:
            if f"{family}{n}" in self.conventions:
                return self.conventions[f"{family}{n}"]
        return next((p for k, p in sorted(self.conventions.items()) if k.endswith(str(n)) and len(p) == n), None)

    @property
    def default_family(self) -> str | None:
        """The family of :attr:`static51` (``"mica"``, ``"flame"``...), or None without one."""
        s = self.static51
        return next((convention_family(k) for k, p in self.conventions.items() if p is s), None)

    def families(self) -> list[str]:
        """Families with iBUG-layout points (``<family>51`` or ``<family>68``), default first."""
        fams = {convention_family(k) for k, p in self.conventions.items() if _ibug_layout(k, p) is not None}
        return sorted(fams, key=lambda f: (f != self.default_family, f))

    def ibug_points(self, family: str, ibug: np.ndarray) -> SurfacePoints | None:
        """The ``family``'s points for iBUG-68 indices ``ibug`` (K,), or None if it lacks any of them
        (a 51-point convention has no jaw contour, 0-16)."""
        ibug = np.asarray(ibug, dtype=np.int64)
        for n in (68, 51):
            pts = self.conventions.get(f"{family}{n}")
            if pts is None:
                continue
            rows = _ibug_layout(f"{family}{n}", pts)[ibug] if ibug.size else np.zeros(0, np.int64)
            if rows.size and rows.min() < 0:
                continue
            return SurfacePoints(pts.face_idx[rows], pts.bary[rows])
        return None

    def merged(self, other: "LandmarkEmbedding") -> "LandmarkEmbedding":
        """Both embeddings' conventions together.

        Raises:
            InputError: both hold a convention of one name with different points (two files of one
                convention that disagree are never merged silently).
        """
        conventions, origins = dict(other.conventions), dict(other.origins)
        for name, pts in self.conventions.items():
            if name in conventions and not pts.same_as(conventions[name]):
                a, b = self.origins.get(name, "<embedding>"), other.origins.get(name, "<embedding>")
                raise InputError(a, f"its {name!r} landmarks differ from those in {b}; give one of the two files")
            conventions[name] = pts
            if name in self.origins:
                origins[name] = self.origins[name]
        dynamic = self.dynamic or other.dynamic
        if self.dynamic is not None and "dynamic" in self.origins:
            origins["dynamic"] = self.origins["dynamic"]
        return LandmarkEmbedding(conventions, dynamic, origins)

    def summary(self) -> dict[str, Any]:
        """Counts of each part, the default 51 and 68 points' convention, and where each came from."""
        return {
            "conventions": {k: len(p) for k, p in sorted(self.conventions.items())},
            "default": self.default_family,
            "dynamic": None if self.dynamic is None else list(self.dynamic.face_idx.shape),
            **({"files": dict(sorted(self.origins.items()))} if self.origins else {}),
        }


def _ibug_layout(name: str, pts: SurfacePoints) -> np.ndarray | None:
    """(68,) row of each iBUG-68 index in a ``<family>51`` / ``<family>68`` convention (-1: absent)."""
    n = len(pts)
    if pts.face_idx.ndim != 1 or not name.endswith(str(n)) or n not in (51, 68):
        return None
    rows = np.full(68, -1, dtype=np.int64)
    rows[INNER51 if n == 51 else np.arange(68)] = np.arange(n)
    return rows


def compare_conventions(emb: LandmarkEmbedding, vertices: np.ndarray, faces: np.ndarray) -> list[dict[str, Any]]:
    """How each pair of families differs on a mesh (e.g. the model's template), in millimetres.

    Returns:
        one dict per pair: ``a``, ``b``, ``max_mm``, ``median_mm`` over the shared inner 51 points, and
        ``differ`` {group: max mm} for the iBUG groups that differ by more than 0.5 mm.
    """
    fams = emb.families()
    out = []
    for i, a in enumerate(fams):
        for b in fams[i + 1:]:
            pa, pb = emb.ibug_points(a, INNER51), emb.ibug_points(b, INNER51)
            d = np.linalg.norm(pa.locate(vertices, faces) - pb.locate(vertices, faces), axis=1) * 1000
            groups = {g: float(d[idx - 17].max()) for g, idx in IBUG_GROUPS.items() if g != "jaw" and d[idx - 17].max() > 0.5}
            out.append({"a": a, "b": b, "max_mm": round(float(d.max()), 2), "median_mm": round(float(np.median(d)), 2),
                        "differ": {g: round(v, 2) for g, v in groups.items()}})
    return out


#: iBUG-68 groups (indices into the 68): jaw contour, brows, nose, eyes, mouth.
IBUG_GROUPS = {
    "jaw": np.arange(0, 17), "brows": np.arange(17, 27), "nose": np.arange(27, 36),
    "eyes": np.arange(36, 48), "mouth": np.arange(48, 68),
}


def _points(path: str | os.PathLike, face_idx: Any, bary: Any, shape: tuple[int, ...] | None = None) -> SurfacePoints:
    face_idx = np.asarray(_to_numpy(face_idx)).astype(np.int64)
    bary = np.asarray(_to_numpy(bary), dtype=np.float64)
    if shape is not None:  # MICA keeps a leading batch axis of 1 on the 68-point arrays
        face_idx = face_idx.reshape(shape)
        bary = bary.reshape(shape + (3,))
    if bary.shape != face_idx.shape + (3,):
        raise InputError(path, f"barycentric coords of shape {bary.shape} do not fit face indices {face_idx.shape}")
    if not np.isfinite(bary).all():
        raise InputError(path, "barycentric coords are not finite")
    return SurfacePoints(face_idx, bary)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor from MICA's file
        return x.detach().cpu().numpy()
    return np.asarray(x)


def landmark_embedding_from_dict(d: Mapping[str, Any], path: str | os.PathLike = "<dict>") -> LandmarkEmbedding:
    """Interpret a dict in any of the known embedding layouts (see the module docstring).

    MICA's combined layout (``static_lmk_*``) gives the ``mica51`` / ``mica68`` conventions, FLAME's
    (``lmk_face_idx``, ``lmk_b_coords``) ``flame51`` or ``flame68`` by its point count; ``origins``
    records ``path`` for each.
    """
    keys = set(d)
    conventions: dict[str, SurfacePoints] = {}
    dyn = None
    try:
        if "static_lmk_faces_idx" in keys:  # MICA's combined file
            conventions["mica51"] = _points(path, d["static_lmk_faces_idx"], d["static_lmk_bary_coords"], (-1,))
            if "full_lmk_faces_idx" in keys:
                conventions["mica68"] = _points(path, d["full_lmk_faces_idx"], d["full_lmk_bary_coords"], (-1,))
            if "dynamic_lmk_faces_idx" in keys:
                dyn = _points(path, d["dynamic_lmk_faces_idx"], d["dynamic_lmk_bary_coords"])
        elif "lmk_face_idx" in keys and "lmk_b_coords" in keys:
            pts = _points(path, d["lmk_face_idx"], d["lmk_b_coords"])
            if pts.face_idx.ndim == 2:
                dyn = pts
            elif len(pts) in (51, 68):
                conventions[f"flame{len(pts)}"] = pts
            else:
                raise InputError(path, f"landmark embedding has {len(pts)} points; expected 51 or 68")
        else:
            raise InputError(path, f"not a landmark embedding (keys: {short_keys(keys)})")
    except KeyError as exc:
        raise InputError(path, f"landmark embedding lacks key {short_repr(exc.args[0] if exc.args else '?')}") from None
    except InputError:
        raise
    except (TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise InputError(path, f"landmark embedding arrays are not face indices and barycentric coordinates "
                               f"({type(exc).__name__})") from None
    if len(conventions.get("mica51", ())) not in (0, 51):
        raise InputError(path, f"static landmarks have {len(conventions['mica51'])} points; expected 51")
    if len(conventions.get("mica68", ())) not in (0, 68):
        raise InputError(path, f"full landmarks have {len(conventions['mica68'])} points; expected 68")
    origins = {name: str(path) for name in conventions}
    if dyn is not None:
        origins["dynamic"] = str(path)
    return LandmarkEmbedding(conventions, dyn, origins)


def load_landmark_embedding(*paths: str | os.PathLike) -> LandmarkEmbedding:
    """Load landmark embeddings from ``.pkl`` / ``.npy`` files (any layout above) and put their
    conventions together (:meth:`LandmarkEmbedding.merged`: two files that disagree on one convention
    are an error)."""
    out = LandmarkEmbedding()
    for path in paths:
        out = out.merged(_load_embedding_file(Path(path)))
    return out


def _read_embedding_file(path: Path) -> LandmarkEmbedding:
    load = safepickle.load_npy_object if path.suffix == ".npy" else safepickle.load
    obj = load(path, SIDE_FILE_MAX_BYTES)
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a dict of embedding arrays, found {type(obj).__name__}")
    return landmark_embedding_from_dict(obj, path)


@dataclass
class _Copy:
    """An embedding as :func:`.model_cache.load_cached` keeps it (it stamps a ``source`` on what it loads)."""

    embedding: LandmarkEmbedding
    source: str = ""


#: Format tag of an embedding's pickle-free copy.
EMBEDDING_COPY_FORMAT = "onflame-landmark-embedding-1"


def _load_embedding_file(path: Path) -> LandmarkEmbedding:
    """One embedding file, read from its pickle-free copy after the first time (:mod:`.model_cache`:
    beside it, or in the user's cache folder; remade when the file changes). MICA's file pickles torch
    tensors, so reading it imports torch, which ``onflame register`` otherwise never needs; the copy needs
    numpy only."""
    from ..fileio import write_npz
    from .model_cache import load_cached

    if not path.is_file():  # the reader's own error (missing file, a folder)
        return _read_embedding_file(path)

    def save(copy: _Copy, to: Path, **stamp: np.ndarray) -> None:
        emb = copy.embedding
        parts = dict(emb.conventions, **({"dynamic": emb.dynamic} if emb.dynamic is not None else {}))
        arrays = {f"{k}_{name}": a for name, pts in parts.items() for k, a in (("face_idx", pts.face_idx), ("bary", pts.bary))}
        write_npz(to, format=np.array(EMBEDDING_COPY_FORMAT), **stamp, **arrays)

    def load(data: dict[str, np.ndarray], copy: Path) -> _Copy:
        if str(data.get("format", "")) != EMBEDDING_COPY_FORMAT:
            raise InputError(copy, "not an onflame embedding copy")
        parts = {k[9:]: SurfacePoints(data[k].astype(np.int64), data[f"bary_{k[9:]}"])
                 for k in data if k.startswith("face_idx_")}
        dynamic = parts.pop("dynamic", None)
        origins = {name: str(path) for name in parts} | ({"dynamic": str(path)} if dynamic is not None else {})
        return _Copy(LandmarkEmbedding(parts, dynamic, origins))

    return load_cached(path, 0, lambda: _Copy(_read_embedding_file(path)), load, save).embedding


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load FLAME region masks: region name -> vertex indices (K,) int64.

    Raises :class:`InputError` naming ``path`` unless it holds a dict of names (text) to 1-D integer
    index arrays or lists of integers.
    """
    load = safepickle.load_npy_object if Path(path).suffix == ".npy" else safepickle.load
    obj = load(path, SIDE_FILE_MAX_BYTES)
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a dict of region -> vertex indices, found {type(obj).__name__}")
    masks = {}
    for name, idx in obj.items():
        if not isinstance(name, str):
            raise InputError(path, f"mask names must be text, found a {type(name).__name__} ({short_repr(name)})")
        masks[name] = _index_array(idx, path, f"mask {short_repr(name)}")
    return masks


def _index_array(value: Any, path: str | os.PathLike, what: str) -> np.ndarray:
    """(K,) int64 indices from an integer array or a list of ints; :class:`InputError` for anything else."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise InputError(path, f"{what} is a {value.dtype} array of shape {value.shape}, not 1-D integer indices")
        return value.astype(np.int64)
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            bad = next(v for v in value if not isinstance(v, (int, np.integer)) or isinstance(v, bool))
            raise InputError(path, f"{what} holds a {type(bad).__name__} ({short_repr(bad)}), not vertex indices")
        if any(not -2**63 <= int(v) < 2**63 for v in value):
            raise InputError(path, f"{what} holds an index too large to be a vertex")
        return np.array(value, dtype=np.int64).reshape(-1)
    raise InputError(path, f"{what} is a {type(value).__name__} ({short_repr(value)}), not vertex indices")


def check_embedding(emb: LandmarkEmbedding, n_faces: int, path: str | os.PathLike = "<model>") -> None:
    """Raise :class:`InputError` if any landmark names a triangle outside ``[0, n_faces)``; the error
    names the embedding's own file where it is known, else ``path`` (the model)."""
    parts = list(emb.conventions.items()) + ([("dynamic", emb.dynamic)] if emb.dynamic is not None else [])
    for name, part in parts:
        if part.face_idx.size and (part.face_idx.min() < 0 or part.face_idx.max() >= n_faces):
            raise InputError(emb.origins.get(name, path),
                             f"{name} landmark triangle index out of range for a mesh of {n_faces} triangles")
