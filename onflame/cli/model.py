"""Which FLAME model a command uses: ``--model``, else ``ONFLAME_MODEL``, never a silent default.

``--model`` (and ``ONFLAME_MODEL``) take a model file (FLAME's ``.pkl``, onflame's ``.npz``), a folder
holding one under FLAME's usual names (``generic_model.pkl``, ``flame2023.pkl``, ...), or the word
``procedural`` for onflame's procedural head (what ``onflame demo`` uses). Commands that cannot work
without a model stop with :data:`NO_MODEL` (a usage error, exit 2) before anything is written.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError, UsageError
from ..info import MODEL_NAMES

if TYPE_CHECKING:
    from ..flame.model import FlameModel

#: The environment variable that names the model for every command without ``--model``.
MODEL_VARIABLE = "ONFLAME_MODEL"
#: The ``--model`` value that chooses onflame's procedural head.
PROCEDURAL = "procedural"
#: FLAME's topology: vertices of every official FLAME model (2017-2023).
FLAME_VERTICES = 5023
#: The one line a command that needs a model says when it has none.
NO_MODEL = ("needs a FLAME model: give --model FILE_OR_FOLDER or set ONFLAME_MODEL (FLAME 2020 or 2023 from "
            "https://flame.is.tue.mpg.de: generic_model.pkl or flame2023.pkl, with FLAME_masks.pkl and "
            "landmark_embedding.npy or flame_static_embedding.pkl in its folder); or choose onflame's "
            "procedural head on purpose with --model procedural (as onflame demo does)")


def model_option(args: argparse.Namespace) -> str | None:
    """The model the user named: ``--model``, else ``$ONFLAME_MODEL``, else None."""
    value = getattr(args, "model", None)
    if value is None:
        value = os.environ.get(MODEL_VARIABLE) or None
    return None if value is None else str(value)


def model_file(value: str) -> Path:
    """The model file a ``--model`` value names (a folder: the first of :data:`MODEL_NAMES` in it).

    Raises :class:`UsageError` naming the value when there is no such file or folder, or no model in it.
    """
    path = Path(value).expanduser()
    if path.is_dir():
        found = next((path / n for n in MODEL_NAMES if (path / n).is_file()), None)
        if found is None:
            raise UsageError(path, f"no FLAME model in this folder (looked for {', '.join(MODEL_NAMES)}); "
                                   "give the model file with --model")
        return found
    if not path.exists():
        raise UsageError(path, f"no such model file or folder (given by --model or {MODEL_VARIABLE})")
    return path


def require_model(args: argparse.Namespace) -> str:
    """The model option of a command that needs one; :class:`UsageError` (:data:`NO_MODEL`) without it.

    Checks only that the value names a model (the word ``procedural``, a file, a folder with a model), so
    that a missing model stops the command before it creates anything."""
    value = model_option(args)
    if value is None:
        raise UsageError(None, f"{args.command} {NO_MODEL}")
    if value != PROCEDURAL:
        model_file(value)
    return value


def load(value: str, embedding: list | None = None, masks: str | os.PathLike | None = None) -> FlameModel:
    """The model a ``--model`` value names, with its landmark embeddings and masks (found beside it, or
    ``embedding`` / ``masks``)."""
    if value == PROCEDURAL:  # carries its own landmarks and masks
        from ..synthetic.head import make_head_model

        return make_head_model()
    from ..flame import load_model_with_assets

    return load_model_with_assets(model_file(value), embedding, masks)


def load_for(args: argparse.Namespace) -> FlameModel:
    """The command's model (:func:`require_model` first), with ``--embedding`` / ``--masks`` if given."""
    return load(require_model(args), getattr(args, "embedding", None), getattr(args, "masks", None))


def describe(model: FlameModel, value: str | None = None) -> str:
    """``generic_model.pkl (FLAME topology, 5023 vertices)``: the model and its topology, for every line
    that names it."""
    name = "procedural head" if value == PROCEDURAL else Path(model.source).name if model.source else "model"
    topology = "FLAME topology" if model.n_vertices == FLAME_VERTICES else "not FLAME's topology"
    return f"{name} ({topology}, {model.n_vertices} vertices)"


def topology_problem(path: object, n_vertices: int, model: FlameModel, value: str | None) -> InputError:
    """The error for a mesh whose vertex count is not the model's, pointing at ``--model``."""
    flame = " (FLAME's topology has 5023)" if model.n_vertices != FLAME_VERTICES else ""
    return InputError(path, f"has {n_vertices} vertices but the model {describe(model, value)} has "
                            f"{model.n_vertices}{flame}: give the model of the mesh's topology with --model")
