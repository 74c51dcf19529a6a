"""Write a :class:`FlameModel` in FLAME's own file formats, so every loader path can run on the default head.

- ``generic_model.pkl`` as FLAME ships it: a protocol-2 pickle of a dict with ``f`` (F, 3) uint32,
  ``v_template`` (V, 3), ``shapedirs`` (V, 3, S + E) (a ``chumpy.ch.Ch`` object holding the array in
  ``x``, as in the official files, or a plain array), ``posedirs`` (V, 3, 36), ``J_regressor`` (J, V)
  ``scipy.sparse.csc_matrix``, ``weights`` (V, J), ``kintree_table`` (2, J) (root parent 2**32 - 1),
  ``J`` (J, 3), ``bs_style`` ``"lbs"``, ``bs_type`` ``"lrotmin"``;
- ``flame_static_embedding.pkl`` / ``flame_static_embedding_68.pkl``: ``lmk_face_idx`` (N,) uint32,
  ``lmk_b_coords`` (N, 3);
- MICA's ``landmark_embedding.npy``: a pickled dict in a 0-d object array with ``static_lmk_*`` (51),
  ``full_lmk_*`` (1, 68) and ``dynamic_lmk_*`` (79, 17) arrays (plain numpy here, torch tensors in MICA's);
- ``FLAME_masks.pkl``: region name -> vertex indices.

Every file is written atomically through :mod:`onflame.fileio`. chumpy is not needed: the stand-in
class below only has to pickle under chumpy's name (the reader never imports chumpy either).
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..fileio import atomic_open, write_bytes
from ..flame.embedding import SurfacePoints
from ..flame.model import FlameModel

#: File names of the landmark and mask files, as FLAME and MICA name them.
STATIC_51 = "flame_static_embedding.pkl"
STATIC_68 = "flame_static_embedding_68.pkl"
MICA_EMBEDDING = "landmark_embedding.npy"
MASKS = "FLAME_masks.pkl"
_ROOT_PARENT = 2**32 - 1


class ChumpyArray:
    """Stand-in for ``chumpy.ch.Ch``: pickles as that class with the array in the state's ``x``."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def __getstate__(self) -> dict[str, Any]:
        return {"x": self.x}


class _FlamePickler(pickle._Pickler):  # the pure-Python pickler: its save_global can be redirected
    """Pickler that writes :class:`ChumpyArray` under the global name ``chumpy.ch.Ch``.

    Python's pickler checks that a class can be imported under the name it writes; chumpy is not
    installed (it does not import on NumPy 2), so the name is written directly instead.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is ChumpyArray:
            self.write(pickle.GLOBAL + b"chumpy.ch\nCh\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def flame_dict(model: FlameModel, chumpy: bool = True) -> dict[str, Any]:
    """The dict stored in FLAME's ``generic_model.pkl`` for ``model`` (shapedirs = identity then expression)."""
    dirs = np.concatenate([model.shapedirs, model.exprdirs], axis=2)
    parents = np.where(model.parents < 0, _ROOT_PARENT, model.parents).astype(np.int64)
    return {
        "f": model.faces.astype(np.uint32),
        "v_template": np.asarray(model.v_template, dtype=np.float64),
        "shapedirs": ChumpyArray(dirs) if chumpy else dirs,
        "posedirs": np.asarray(model.posedirs, dtype=np.float64),
        "J_regressor": sp.csc_matrix(model.J_regressor),
        "weights": np.asarray(model.weights, dtype=np.float64),
        "kintree_table": np.stack([parents, np.arange(model.n_joints, dtype=np.int64)]),
        "J": model.J_regressor @ model.v_template,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def _pickle2(obj: Any) -> bytes:
    buf = io.BytesIO()
    _FlamePickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def save_flame_pkl(model: FlameModel, path: str | os.PathLike, chumpy: bool = True) -> None:
    """Write ``model`` as FLAME's ``generic_model.pkl`` (protocol 2; ``shapedirs`` chumpy-wrapped unless
    ``chumpy`` is False). :func:`onflame.flame.load_model` reads it back to the same arrays."""
    write_bytes(path, _pickle2(flame_dict(model, chumpy)))


def _embedding_dict(points: SurfacePoints) -> dict[str, np.ndarray]:
    return {"lmk_face_idx": points.face_idx.astype(np.uint32),
            "lmk_b_coords": np.asarray(points.bary, dtype=np.float64)}


def save_landmark_files(model: FlameModel, folder: str | os.PathLike) -> dict[str, Path]:
    """Write the landmark embeddings and masks of ``model`` into ``folder`` in FLAME's and MICA's formats.

    Writes :data:`STATIC_51`, :data:`STATIC_68` (when the model has those embeddings),
    :data:`MICA_EMBEDDING` (when it has all three) and :data:`MASKS`. Returns name -> path written.
    """
    folder = Path(folder)
    emb = model.landmarks
    written: dict[str, Path] = {}
    if emb.static51 is not None:
        written[STATIC_51] = folder / STATIC_51
        write_bytes(written[STATIC_51], _pickle2(_embedding_dict(emb.static51)))
    if emb.full68 is not None:
        written[STATIC_68] = folder / STATIC_68
        write_bytes(written[STATIC_68], _pickle2(_embedding_dict(emb.full68)))
    if emb.static51 is not None and emb.full68 is not None and emb.dynamic is not None:
        mica = {
            "static_lmk_faces_idx": emb.static51.face_idx.astype(np.int64),
            "static_lmk_bary_coords": np.asarray(emb.static51.bary, dtype=np.float64),
            "dynamic_lmk_faces_idx": emb.dynamic.face_idx.astype(np.int64),
            "dynamic_lmk_bary_coords": np.asarray(emb.dynamic.bary, dtype=np.float64),
            "full_lmk_faces_idx": emb.full68.face_idx.astype(np.int64)[None],
            "full_lmk_bary_coords": np.asarray(emb.full68.bary, dtype=np.float64)[None],
        }
        holder = np.empty((), dtype=object)
        holder[()] = mica
        written[MICA_EMBEDDING] = folder / MICA_EMBEDDING
        with atomic_open(written[MICA_EMBEDDING], "wb") as fh:
            np.save(fh, holder, allow_pickle=True)  # MICA's format is a pickle; onflame reads it back safely
    written[MASKS] = folder / MASKS
    write_bytes(written[MASKS], _pickle2({k: np.asarray(v, dtype=np.int64) for k, v in model.masks.items()}))
    return written
