"""``onflame info``: recognise a file or folder and summarise it.

Knows FLAME model files (``.pkl`` or onflame ``.npz``), landmark embeddings, region masks, MICA parameter
``.npz`` files, MICA image lists (``image_paths/<SUBSET>.npy``), meshes, 3D landmark files (every kind
``register --landmarks`` reads), and MICA dataset roots.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import safepickle
from .errors import InputError, short_keys, short_repr

if TYPE_CHECKING:
    from .flame.model import FlameModel


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready summary of ``path``; ``summary["kind"]`` says what it was recognised as.

    Raises :class:`InputError` if the path is missing or is none of the known kinds.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        model = next((path / n for n in MODEL_NAMES if os.path.lexists(path / n)), None)
        if model is not None:  # a FLAME release folder: the model with what lies beside it
            return _describe_model_with_assets(model)
    if path.is_dir() or path.suffix.lower() == ".zip":
        return _describe_dataset(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _describe_npz(path)
    if suffix in LANDMARK_FILE_SUFFIXES:
        return _describe_landmarks(path)
    if suffix in (".pkl", ".npy"):
        obj = safepickle.load_npy_object(path) if suffix == ".npy" else safepickle.load(path)
        if _looks_like_landmarks(obj):
            return _describe_landmarks(path)
        if isinstance(obj, Mapping) and {"v_template", "shapedirs"} <= set(obj):  # unpickled once, read once
            from .flame.model import model_from_dict

            return _describe_model_with_assets(path, model_from_dict(obj, str(path)))
        return _describe_object(path, obj)
    from .mesh import MESH_SUFFIXES, read_mesh

    if path.name.lower().endswith(MESH_SUFFIXES):
        mesh = read_mesh(path)
        return {"kind": "mesh", "path": str(path), "vertices": mesh.n_vertices, "faces": mesh.n_faces,
                "extent": [round(float(x), 6) for x in mesh.extent()], "textured": mesh.texture is not None}
    raise InputError(path, f"unknown file type {suffix!r}")


#: Model file names a FLAME release folder holds.
MODEL_NAMES = ("generic_model.pkl", "flame2023.pkl", "flame2023_no_jaw.pkl", "male_model.pkl", "female_model.pkl")


def _describe_model_with_assets(path: Path, model: FlameModel | None = None) -> dict[str, Any]:
    """A model file's summary with the embeddings and masks found beside it, and how its landmark
    conventions differ on its mean head (FLAME's and MICA's 51 points are not the same); ``model``: the
    model of ``path`` if already read."""
    from .flame.embedding import compare_conventions
    from .flame.model import load_model_with_assets

    model = load_model_with_assets(path, model=model)
    summary = {"kind": "flame_model", **model.summary()}
    differ = compare_conventions(model.landmarks, model.v_template, model.faces)
    if differ:
        summary["landmark_conventions_differ"] = differ
    return summary


#: Suffixes of files that only hold 3D landmarks (``.npy`` and ``.txt`` ones are told by their shape).
LANDMARK_FILE_SUFFIXES = (".ljson", ".bnd", ".pp", ".lnd", ".land", ".txt")


def _looks_like_landmarks(obj: Any) -> bool:
    """A (7 | 51 | 68, 3) numeric array: NoW's, FLAME's or iBUG's landmarks in order."""
    return (isinstance(obj, np.ndarray) and obj.shape in ((7, 3), (51, 3), (68, 3))
            and np.issubdtype(obj.dtype, np.number))


def _describe_landmarks(path: Path) -> dict[str, Any]:
    """A landmark file's summary: what it holds (its layout and the points per iBUG group), the points'
    extent in the file's units, and the unit their size suggests (as ``register --units auto`` decides).
    A ``.land`` file of vertex ids needs its scan, and says so."""
    from .flame.embedding import IBUG_GROUPS
    from .mesh.landmark_files import read_landmarks
    from .registration.units import detect_units

    lm = read_landmarks(path)
    groups = {g: int(np.isin(lm.ibug, idx).sum()) for g, idx in IBUG_GROUPS.items()}
    try:
        units = detect_units(lm.points, lm.points)[0] if len(lm) >= 5 else "too few points to tell"
    except InputError as exc:
        units = exc.problem
    return {"kind": "landmarks", "path": str(path), "layout": lm.layout, "points": len(lm),
            "groups": {g: n for g, n in groups.items() if n}, "likely_units": units,
            "extent": [round(float(x), 6) for x in np.ptp(lm.points, axis=0)]}


def _describe_object(path: Path, obj: Any) -> dict[str, Any]:
    from .flame.embedding import landmark_embedding_from_dict

    if isinstance(obj, np.ndarray):
        return {"kind": "array", "path": str(path), "shape": list(obj.shape), "dtype": str(obj.dtype)}
    if not isinstance(obj, Mapping):
        raise InputError(path, f"holds a {type(obj).__name__}; not a FLAME or MICA file")
    keys = set(obj)
    if keys & {"lmk_face_idx", "static_lmk_faces_idx"}:
        return {"kind": "landmark_embedding", "path": str(path), **landmark_embedding_from_dict(obj, path).summary()}
    if obj and all(isinstance(v, tuple) and len(v) == 2 for v in obj.values()):
        from .dataset.image_paths import read_image_paths, summarise_image_paths

        return {"kind": "image_paths", "path": str(path), **summarise_image_paths(read_image_paths(path))}
    if obj and all(isinstance(v, np.ndarray) and v.ndim == 1 and np.issubdtype(v.dtype, np.integer) for v in obj.values()):
        regions = {k[:60] if isinstance(k, str) else short_repr(k): int(v.size) for k, v in obj.items()}
        return {"kind": "masks", "path": str(path), "regions": dict(sorted(regions.items()))}
    raise InputError(path, f"unrecognised dict (keys: {short_keys(keys)})")


def _describe_npz(path: Path) -> dict[str, Any]:
    from .fileio import read_npz
    from .flame.model import NPZ_FORMAT, load_model
    from .flame.params import params_from_arrays

    arrays = read_npz(path)
    tag = str(arrays["format"]) if "format" in arrays else ""
    if tag == NPZ_FORMAT:
        return {"kind": "flame_model", **load_model(path).summary()}
    if {"subset", "actor", "betas"} <= set(arrays):
        subsets, counts = np.unique(arrays["subset"], return_counts=True)
        return {"kind": "params_export", "path": str(path), "subjects": int(counts.sum()),
                "subsets": {str(s): int(c) for s, c in zip(subsets, counts)}}
    p = params_from_arrays(arrays, path)
    return {
        "kind": "flame_params", "path": str(path),
        "shape_norm": round(float(np.linalg.norm(p.shape)), 4),
        "expression_norm": round(float(np.linalg.norm(p.expression)), 4),
        "pose": {"global": p.pose[:3].round(4).tolist(), "neck": p.pose[3:6].round(4).tolist(),
                 "jaw": p.pose[6:9].round(4).tolist(), "eyes": p.pose[9:15].round(4).tolist()},
        "trans_m": p.trans.round(5).tolist(),
        "extras": sorted(p.extras),
    }


def _describe_dataset(path: Path) -> dict[str, Any]:
    from .dataset.layout import open_root

    root = open_root(path)
    return {"kind": "mica_root", **root.summary()}


def format_summary(summary: Mapping[str, Any], indent: int = 0) -> str:
    """Render a summary dict as aligned ``key: value`` lines (nested dicts indented)."""
    lines = []
    width = max((len(str(k)) for k in summary), default=0)
    for k, v in summary.items():
        if isinstance(v, Mapping) and v:
            lines.append(" " * indent + f"{k}:")
            lines.append(format_summary(v, indent + 2))
        elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            lines.append(" " * indent + f"{k}:")
            lines += [" " * (indent + 2) + "- " + ", ".join(f"{a}: {b}" for a, b in x.items()) for x in v]
        else:
            lines.append(" " * indent + f"{str(k).ljust(width)}  {v}")
    return "\n".join(lines)
