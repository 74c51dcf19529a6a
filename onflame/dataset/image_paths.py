"""MICA's per-subset image lists: ``image_paths/<SUBSET>.npy``.

Each file is a pickled 0-d object array holding a dict

    actor -> (list of image paths relative to <SUBSET>/arcface_input/,
              path of the actor's .npz relative to <SUBSET>/FLAME_parameters/)

e.g. ``"F001" -> (["F001/0491.jpg", ...], "F001/F001.npz")``. MICA samples K images per actor from the
list and trains on the one parameter file. Lists are read with onflame's restricted unpickler, never with
``np.load(allow_pickle=True)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import InputError, short_repr
from ..fileio import atomic_open, write_json
from ..safepickle import load_npy_object

#: actor -> (image paths relative to arcface_input/, npz path relative to FLAME_parameters/)
ImagePaths = dict[str, tuple[list[str], str]]

_MAX_LISTED = 5  # problems named in one error message; the count says how many more
#: The largest image list read: MICA's lists name a few thousand photos (tens of kB).
MAX_LIST_BYTES = 64 * 2**20


def read_image_paths(path: str | os.PathLike) -> ImagePaths:
    """Read and check a MICA image list.

    Returns ``{actor: (image_paths, npz_path)}`` with plain ``str`` everywhere. Raises
    :class:`InputError` naming ``path`` if the file is unreadable, unsafe, or not such a dict.
    """
    return _checked(load_npy_object(path, MAX_LIST_BYTES), path)


def write_image_paths(path: str | os.PathLike, mapping: Mapping[str, Any], json_copy: bool = True) -> None:
    """Write ``mapping`` as MICA stores it (0-d object ``.npy``), atomically.

    With ``json_copy`` the same mapping is also written to ``<stem>.json`` beside it
    (``{actor: [[images...], npz_path]}``), readable without any unpickling.
    """
    path = Path(path)
    checked = _checked(mapping, path)
    arr = np.empty((), dtype=object)
    arr[()] = checked
    with atomic_open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=True)  # writing our own plain dict; reading stays restricted
    if json_copy:
        write_json(path.with_suffix(".json"), {actor: [images, npz] for actor, (images, npz) in checked.items()})


def summarise_image_paths(mapping: Mapping[str, tuple[list[str], str]]) -> dict[str, Any]:
    """Counts of an image list: ``actors``, ``images`` and ``min/max/mean_images`` per actor."""
    counts = [len(images) for images, _ in mapping.values()]
    return {
        "actors": len(counts),
        "images": int(sum(counts)),
        "min_images": min(counts) if counts else 0,
        "max_images": max(counts) if counts else 0,
        "mean_images": float(np.mean(counts)) if counts else 0.0,
    }


def _checked(obj: Any, path: str | os.PathLike) -> ImagePaths:
    """``obj`` as a clean :data:`ImagePaths`, or :class:`InputError` listing what is wrong."""
    if not isinstance(obj, Mapping):
        raise InputError(path, f"expected a dict actor -> (image list, npz path), found {type(obj).__name__}")
    out: ImagePaths = {}
    problems: list[str] = []
    for actor, value in obj.items():
        if not isinstance(actor, str):
            problems.append(f"actor key {short_repr(actor)} is not a string")
            continue
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            problems.append(f"actor {short_repr(actor)}: expected (image list, npz path), found {type(value).__name__}")
            continue
        images, npz = value
        if not isinstance(images, (list, tuple)) or not all(isinstance(p, str) for p in images):
            problems.append(f"actor {short_repr(actor)}: image list is not a list of strings")
            continue
        if not isinstance(npz, str):
            problems.append(f"actor {short_repr(actor)}: npz path is not a string")
            continue
        out[str(actor)] = ([str(p) for p in images], str(npz))
    if problems:
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise InputError(path, "; ".join(problems[:_MAX_LISTED]) + more)
    return out
