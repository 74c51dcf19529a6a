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

Region masks (``FLAME_masks.pkl``) map a region name (``face``, ``left_eyeball``, ``scalp`` …) to vertex
indices.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import safepickle
from ..errors import InputError


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

    def locate(self, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
        """Positions (..., N, 3) on a mesh with ``vertices`` (V, 3) and ``faces`` (F, 3)."""
        corners = np.asarray(vertices)[np.asarray(faces)[self.face_idx]]  # (..., N, 3 corners, 3)
        return np.einsum("...nk,...nkd->...nd", self.bary, corners)


@dataclass(frozen=True)
class LandmarkEmbedding:
    """The landmark embeddings a model has; any of them may be missing.

    ``static51``: (51,) points; ``full68``: (68,) points; ``dynamic``: (79, 17) contour points by yaw.
    """

    static51: SurfacePoints | None = None
    full68: SurfacePoints | None = None
    dynamic: SurfacePoints | None = None

    def merged(self, other: "LandmarkEmbedding") -> "LandmarkEmbedding":
        """This embedding with the parts it lacks taken from ``other``."""
        return LandmarkEmbedding(
            self.static51 or other.static51, self.full68 or other.full68, self.dynamic or other.dynamic
        )

    def summary(self) -> dict[str, Any]:
        """Counts of each part (``None`` where missing)."""
        return {
            "static51": None if self.static51 is None else len(self.static51),
            "full68": None if self.full68 is None else len(self.full68),
            "dynamic": None if self.dynamic is None else list(self.dynamic.face_idx.shape),
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
    """Interpret a dict in any of the known embedding layouts (see the module docstring)."""
    keys = set(d)
    try:
        if "static_lmk_faces_idx" in keys:  # MICA's combined file
            static = _points(path, d["static_lmk_faces_idx"], d["static_lmk_bary_coords"], (-1,))
            full = dyn = None
            if "full_lmk_faces_idx" in keys:
                full = _points(path, d["full_lmk_faces_idx"], d["full_lmk_bary_coords"], (-1,))
            if "dynamic_lmk_faces_idx" in keys:
                dyn = _points(path, d["dynamic_lmk_faces_idx"], d["dynamic_lmk_bary_coords"])
            return LandmarkEmbedding(static, full, dyn)
        if "lmk_face_idx" in keys and "lmk_b_coords" in keys:
            pts = _points(path, d["lmk_face_idx"], d["lmk_b_coords"])
            if pts.face_idx.ndim == 2:
                return LandmarkEmbedding(dynamic=pts)
            if len(pts) == 51:
                return LandmarkEmbedding(static51=pts)
            if len(pts) == 68:
                return LandmarkEmbedding(full68=pts)
            raise InputError(path, f"landmark embedding has {len(pts)} points; expected 51 or 68")
    except KeyError as exc:
        raise InputError(path, f"landmark embedding lacks key {exc}") from None
    raise InputError(path, f"not a landmark embedding (keys: {sorted(map(str, keys))})")


def load_landmark_embedding(*paths: str | os.PathLike) -> LandmarkEmbedding:
    """Load and merge landmark embeddings from ``.pkl`` / ``.npy`` files (any layout above)."""
    out = LandmarkEmbedding()
    for path in paths:
        obj = safepickle.load_npy_object(path) if Path(path).suffix == ".npy" else safepickle.load(path)
        if not isinstance(obj, Mapping):
            raise InputError(path, f"expected a dict of embedding arrays, found {type(obj).__name__}")
        out = out.merged(landmark_embedding_from_dict(obj, path))
    return out


def load_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load FLAME region masks: region name -> vertex indices (K,) int64."""
    obj = safepickle.load_npy_object(path) if Path(path).suffix == ".npy" else safepickle.load(path)
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a dict of region -> vertex indices, found {type(obj).__name__}")
    masks = {}
    for name, idx in obj.items():
        arr = np.asarray(idx)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise InputError(path, f"mask {name!r} is not a 1-D integer index array")
        masks[str(name)] = arr.astype(np.int64)
    return masks


def check_embedding(emb: LandmarkEmbedding, n_faces: int, path: str | os.PathLike = "<model>") -> None:
    """Raise :class:`InputError` if any landmark names a triangle outside ``[0, n_faces)``."""
    for part in (emb.static51, emb.full68, emb.dynamic):
        if part is not None and (part.face_idx.min() < 0 or part.face_idx.max() >= n_faces):
            raise InputError(path, f"landmark triangle index out of range for a mesh of {n_faces} triangles")
