"""FLAME model files: load the official ``*.pkl`` without chumpy, save and load a pickle-free ``.npz``.

FLAME's ``generic_model.pkl`` / ``male_model.pkl`` / ``female_model.pkl`` (2017, 2019, 2020, 2023) hold::

    v_template (V, 3)   mean head, metres, +y up, face towards +z
    f (F, 3)            triangles
    shapedirs (V, 3, S+E)  identity (first S, 300) then expression (last E, 100) blendshapes,
                        a chumpy ``Ch`` object in the official files
    posedirs (V, 3, 9(J-1)) pose-corrective blendshapes driven by (R - I) of the non-root joints
    J_regressor (J, V)  sparse, joint locations from the shaped mesh
    weights (V, J)      linear-blend-skinning weights
    kintree_table (2, J)  row 0: parent of each joint (root: 2**32 - 1)

with J = 5 joints: 0 global (root), 1 neck, 2 jaw, 3 left eye, 4 right eye.

:class:`FlameModel` keeps these as plain float64 / int64 numpy arrays, optionally with a landmark
embedding and region masks, and can be written to a single ``.npz`` (no pickle) that loads in a
fraction of the time.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import safepickle
from ..errors import InputError
from ..fileio import read_npz, write_npz
from ..fileio.aligned import read_aligned_npz, write_aligned_npz
from .embedding import LandmarkEmbedding, SurfacePoints, check_embedding
from .model_cache import load_cached

#: FLAME's joint names, in pose-vector order.
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
#: Number of expression components in every official FLAME release.
N_EXPRESSION = 100
#: Format tag stored in onflame's ``.npz`` model files.
NPZ_FORMAT = "onflame-flame-model-1"
#: Layout of a model's pickle-free copy (:mod:`.model_cache`): 1, stored members with aligned data.
COPY_VERSION = 1


@dataclass
class FlameModel:
    """A FLAME-structured model as plain numpy arrays (metres).

    Attributes:
        v_template: (V, 3) float64 mean shape.
        faces: (F, 3) int64 triangles.
        shapedirs: (V, 3, S) float64 identity basis (metres per unit coefficient).
        exprdirs: (V, 3, E) float64 expression basis.
        posedirs: (V, 3, 9 (J-1)) float64 pose-corrective basis.
        J_regressor: (J, V) float64 dense joint regressor.
        weights: (V, J) float64 skinning weights.
        parents: (J,) int64 parent joint of each joint, -1 for the root.
        landmarks: landmark embedding, if known.
        masks: region name -> (K,) int64 vertex indices.
        source: where the model came from (a path, or a description).
    """

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray
    landmarks: LandmarkEmbedding = field(default_factory=LandmarkEmbedding)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def n_joints(self) -> int:
        return self.parents.shape[0]

    @property
    def n_shape(self) -> int:
        return self.shapedirs.shape[2]

    @property
    def n_expression(self) -> int:
        return self.exprdirs.shape[2]

    def validate(self) -> None:
        """Raise :class:`InputError` (naming :attr:`source`) if the arrays do not fit together."""
        V, J = self.v_template.shape[0], self.parents.shape[0]
        checks = [
            (self.v_template.ndim == 2 and self.v_template.shape[1] == 3, f"v_template {self.v_template.shape}, expected (V, 3)"),
            (self.faces.ndim == 2 and self.faces.shape[1] == 3, f"faces {self.faces.shape}, expected (F, 3)"),
            (self.shapedirs.shape[:2] == (V, 3), f"shapedirs {self.shapedirs.shape}, expected ({V}, 3, S)"),
            (self.exprdirs.shape[:2] == (V, 3), f"expression dirs {self.exprdirs.shape}, expected ({V}, 3, E)"),
            (self.posedirs.shape == (V, 3, 9 * (J - 1)), f"posedirs {self.posedirs.shape}, expected ({V}, 3, {9 * (J - 1)})"),
            (self.J_regressor.shape == (J, V), f"J_regressor {self.J_regressor.shape}, expected ({J}, {V})"),
            (self.weights.shape == (V, J), f"weights {self.weights.shape}, expected ({V}, {J})"),
        ]
        for ok, problem in checks:
            if not ok:
                raise InputError(self.source or None, f"not a FLAME model: {problem}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= V):
            raise InputError(self.source or None, "not a FLAME model: face index out of range")
        if self.parents[0] != -1 or np.any(self.parents[1:] >= np.arange(1, J)) or np.any(self.parents[1:] < 0):
            raise InputError(self.source or None, f"not a FLAME model: joint parents {self.parents.tolist()} are not a tree in topological order")
        for name in ("v_template", "shapedirs", "exprdirs", "posedirs", "J_regressor", "weights"):
            if not np.isfinite(getattr(self, name)).all():
                raise InputError(self.source or None, f"not a FLAME model: {name} has NaN or inf")
        self._check_assets()

    def _check_assets(self) -> None:
        """Raise :class:`InputError` if a landmark or mask indexes past the mesh."""
        check_embedding(self.landmarks, self.faces.shape[0], self.source or "<model>")
        V = self.n_vertices
        for name, idx in self.masks.items():
            if idx.size and (idx.min() < 0 or idx.max() >= V):
                raise InputError(self.source or None, f"mask {name!r} has vertex indices outside [0, {V})")

    def with_assets(self, landmarks: LandmarkEmbedding | None = None, masks: Mapping[str, np.ndarray] | None = None) -> "FlameModel":
        """This model with a landmark embedding and/or masks attached (parts it lacks are merged in).

        The arrays are this model's, already checked: only what is attached is checked again."""
        out = copy.copy(self)
        out.landmarks = self.landmarks if landmarks is None else landmarks.merged(self.landmarks)
        out.masks = {**self.masks, **(masks or {})}
        out._check_assets()
        return out

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: sizes, joints, landmarks, masks, head size in metres."""
        ext = self.v_template.max(0) - self.v_template.min(0)
        return {
            "source": self.source,
            "vertices": self.n_vertices,
            "faces": int(self.faces.shape[0]),
            "shape_components": self.n_shape,
            "expression_components": self.n_expression,
            "pose_components": int(self.posedirs.shape[2]),
            "joints": self.n_joints,
            "parents": self.parents.tolist(),
            "extent_m": [round(float(x), 4) for x in ext],
            "landmarks": self.landmarks.summary(),
            "masks": {k: int(v.size) for k, v in sorted(self.masks.items())},
        }


def model_from_dict(d: Mapping[str, Any], source: str = "", n_expression: int = N_EXPRESSION) -> FlameModel:
    """Build a :class:`FlameModel` from the dict stored in a FLAME ``.pkl`` (chumpy already removed)."""
    missing = [k for k in ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table") if k not in d]
    if missing:
        raise InputError(source or None, f"not a FLAME model: missing {', '.join(missing)}")
    try:
        dirs = np.asarray(d["shapedirs"], dtype=np.float64)
        if dirs.ndim != 3 or dirs.shape[2] <= n_expression:
            raise InputError(source or None, f"not a FLAME model: shapedirs {dirs.shape} has no room for {n_expression} expression components")
        jreg = d["J_regressor"]
        jreg = np.asarray(jreg.todense() if hasattr(jreg, "todense") else jreg, dtype=np.float64)
        parents = np.asarray(d["kintree_table"], dtype=np.int64)[0].copy()
        parents[parents >= 2**31 - 1] = -1
        parents[0] = -1
        return FlameModel(
            v_template=np.asarray(d["v_template"], dtype=np.float64),
            faces=np.asarray(d["f"], dtype=np.int64),
            shapedirs=np.ascontiguousarray(dirs[:, :, :-n_expression]),
            exprdirs=np.ascontiguousarray(dirs[:, :, -n_expression:]),
            posedirs=np.asarray(d["posedirs"], dtype=np.float64),
            J_regressor=jreg,
            weights=np.asarray(d["weights"], dtype=np.float64),
            parents=parents,
            source=source,
        )
    except InputError:  # already names the file and the problem (InputError is a ValueError)
        raise
    except (TypeError, ValueError, IndexError, OverflowError, AttributeError) as exc:
        raise InputError(source or None, f"not a FLAME model: {str(exc)[:200]}") from None


def load_model(path: str | os.PathLike, landmarks: LandmarkEmbedding | None = None,
               masks: Mapping[str, np.ndarray] | None = None, n_expression: int = N_EXPRESSION) -> FlameModel:
    """Load a FLAME model from an official ``.pkl`` (chumpy or plain) or an onflame ``.npz``.

    Args:
        path: model file. A ``.pkl`` is copied once to a pickle-free ``.npz`` beside it (or in the user's
            cache folder) that later loads read instead (:mod:`.model_cache`).
        landmarks: embedding to attach (merged with any stored in an ``.npz``).
        masks: region masks to attach.
        n_expression: how many of the last ``shapedirs`` columns are expression (100 for FLAME).

    Raises:
        InputError: the file is missing, corrupt, unsafe or not a FLAME model.
    """
    path = Path(path)

    def load_pickle() -> FlameModel:
        obj = safepickle.load(path)
        if not isinstance(obj, Mapping):
            raise InputError(path, f"not a FLAME model: the pickle holds a {type(obj).__name__}, not a dict")
        return model_from_dict(obj, str(path), n_expression)

    if path.suffix == ".npz":
        model = _model_from_arrays(read_npz(path), path)
    elif path.is_file():  # a pickle-free copy beside it makes later loads fast (.model_cache)
        model = load_cached(path, n_expression, load_pickle, _model_from_arrays, _save_copy, read_aligned_npz, COPY_VERSION)
    else:
        model = load_pickle()
    if landmarks is not None or masks:
        model = model.with_assets(landmarks, masks)
    return model


def save_model(model: FlameModel, path: str | os.PathLike) -> None:
    """Write ``model`` (with embedding and masks) to a pickle-free ``.npz``, atomically."""
    write_npz(path, **_model_arrays(model))


def _save_copy(model: FlameModel, path: Path, **stamp: np.ndarray) -> None:
    """The model's pickle-free copy (:mod:`.model_cache`): its arrays and the stamp, laid out to be read
    without copying (:func:`~onflame.fileio.aligned.write_aligned_npz`)."""
    write_aligned_npz(path, **stamp, **_model_arrays(model))


def _model_arrays(model: FlameModel) -> dict[str, np.ndarray]:
    """The arrays of onflame's ``.npz`` model file: the model's, its embedding's and its masks'."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(NPZ_FORMAT),
        "v_template": model.v_template, "faces": model.faces, "shapedirs": model.shapedirs,
        "exprdirs": model.exprdirs, "posedirs": model.posedirs, "J_regressor": model.J_regressor,
        "weights": model.weights, "parents": model.parents,
    }
    parts = dict(model.landmarks.conventions)
    if model.landmarks.dynamic is not None:
        parts["dynamic"] = model.landmarks.dynamic
    for part, pts in parts.items():
        arrays[f"lmk_{part}_face_idx"] = pts.face_idx
        arrays[f"lmk_{part}_bary"] = pts.bary
    for name, idx in model.masks.items():
        arrays[f"mask_{name}"] = idx
    return arrays


def _model_from_arrays(data: Mapping[str, np.ndarray], path: Path) -> FlameModel:
    """The model an onflame ``.npz`` model file (or a model's copy) at ``path`` holds."""
    if str(data.get("format", "")) != NPZ_FORMAT:
        raise InputError(path, f"not an onflame model file (format tag {str(data.get('format', 'missing'))!r})")
    try:  # every array a file lacks or holds in a form it cannot have is said in one line
        parts = {k[4:-9]: SurfacePoints(data[k].astype(np.int64), data[f"lmk_{k[4:-9]}_bary"])
                 for k in data if k.startswith("lmk_") and k.endswith("_face_idx")}
        dynamic = parts.pop("dynamic", None)
        # files written before conventions were named: their default points, under a name that says so
        for old, new in (("static51", "legacy51"), ("full68", "legacy68")):
            if old in parts:
                parts[new] = parts.pop(old)
        masks = {k[5:]: v.astype(np.int64) for k, v in data.items() if k.startswith("mask_")}
        return FlameModel(
            data["v_template"], data["faces"].astype(np.int64), data["shapedirs"], data["exprdirs"],
            data["posedirs"], data["J_regressor"], data["weights"], data["parents"].astype(np.int64),
            LandmarkEmbedding(parts, dynamic, {k: str(path) for k in parts}), masks, str(path),
        )
    except KeyError as exc:
        raise InputError(path, f"onflame model file lacks array {exc}") from None
    except InputError:
        raise
    except (TypeError, ValueError, IndexError, OverflowError) as exc:
        raise InputError(path, f"not a FLAME model: {exc}") from None


#: File names FLAME and MICA ship the landmark embeddings and masks under, searched beside a model file.
EMBEDDING_NAMES = ("landmark_embedding.npy", "flame_static_embedding.pkl", "flame_static_embedding_68.pkl",
                   "flame_dynamic_embedding.npy")
MASK_NAMES = ("FLAME_masks.pkl",)


def load_model_with_assets(path: str | os.PathLike, embedding: list[str | os.PathLike] | None = None,
                           masks: str | os.PathLike | None = None, model: FlameModel | None = None) -> FlameModel:
    """Load a model and attach its landmark embeddings and region masks.

    Embedding and mask files are taken from the arguments, else from the model's folder under FLAME's and
    MICA's usual names (``landmark_embedding.npy``, ``flame_static_embedding*.pkl``, ``FLAME_masks.pkl``).
    Each embedding file's points keep their convention's name (``mica51``, ``flame51``, ...; see
    :mod:`onflame.flame.embedding`); two files that disagree on one convention are an error. ``model``:
    the model of ``path`` when the caller has read it already.
    """
    from .embedding import load_landmark_embedding, load_masks

    model = model if model is not None else load_model(path)
    folder = Path(path).parent
    emb_paths = list(embedding or []) or [folder / n for n in EMBEDDING_NAMES if (folder / n).is_file()]
    mask_path = masks if masks is not None else next((folder / n for n in MASK_NAMES if (folder / n).is_file()), None)
    lm = load_landmark_embedding(*emb_paths) if emb_paths else None
    mk = load_masks(mask_path) if mask_path is not None else None
    return model.with_assets(lm, mk) if (lm is not None or mk) else model
