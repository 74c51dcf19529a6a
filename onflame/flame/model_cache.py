"""A pickle-free copy of a FLAME ``.pkl``, kept beside it, so that later runs skip the pickle.

Reading FLAME's ``generic_model.pkl`` (75 MB, chumpy objects inside) takes a third of a second or more;
the same arrays in an uncompressed ``.npz`` load several times faster. The first :func:`load_cached`
of a ``.pkl`` writes ``.<name>.onflame.npz`` beside it (or, where that folder is read-only, into
``$XDG_CACHE_HOME/onflame/models/``, default ``~/.cache``); later loads use it while the ``.pkl``'s
size and modification time (and the copy's layout version) are those it was made from.
``ONFLAME_MODEL_CACHE=0`` turns caching off. The copy holds arrays only (no pickles); a copy that cannot
be read whole (cut short, damaged, a CRC-32 that does not match) is made again from the pickle.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import numpy as np

from ..errors import InputError
from ..fileio import read_npz

T = TypeVar("T")
log = logging.getLogger(__name__)


def cache_paths(path: Path) -> list[Path]:
    """Where the copy of model file ``path`` may lie: beside it, then in the user's cache folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "onflame" / "models"
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return [path.with_name(f".{path.name}.onflame.npz"), base / f"{digest}.npz"]


def _stamp(path: Path, n_expression: int, version: int) -> dict[str, np.ndarray]:
    st = path.stat()
    stamp = {"cache_of": np.array(str(path.resolve())), "cache_size": np.array(st.st_size),
             "cache_mtime_ns": np.array(st.st_mtime_ns), "cache_n_expression": np.array(n_expression)}
    return stamp | ({"cache_version": np.array(version)} if version else {})


def _fresh(arrays: Mapping[str, np.ndarray], stamp: dict[str, np.ndarray]) -> bool:
    try:
        return all(k in arrays and arrays[k].shape == v.shape and bool(arrays[k] == v) for k, v in stamp.items())
    except (TypeError, ValueError):  # a stamp of another type (text for a number): not this file's copy
        return False


def load_cached(path: Path, n_expression: int, load_pickle: Callable[[], T],
                from_arrays: Callable[[dict[str, np.ndarray], Path], T], save: Callable[..., None],
                read: Callable[[Path], dict[str, np.ndarray]] = read_npz, version: int = 0) -> T:
    """The model (or other object) of ``path`` from its copy when it is fresh, else from ``load_pickle()``
    (then copied).

    ``read(copy)`` gives a copy's arrays (:func:`~onflame.fileio.read_npz`, or
    :func:`~onflame.fileio.aligned.read_aligned_npz` for a large one), ``from_arrays(arrays, copy)`` the
    object they hold, ``save(obj, copy, **stamp)`` writes one (atomically); failing to write one
    (read-only folders, a full disk) only costs the next run the pickle again. ``version``: the copy's
    layout; a copy of another layout is made again.
    """
    if os.environ.get("ONFLAME_MODEL_CACHE", "1") == "0":
        return load_pickle()
    stamp = _stamp(path, n_expression, version)
    candidates = cache_paths(path)
    for copy in candidates:
        if not copy.is_file():
            continue
        try:
            arrays = read(copy)
        except InputError as exc:  # a broken copy is only a miss: the pickle is read again
            log.debug("%s: unreadable copy %s (%s)", path, copy, exc.problem)
            continue
        if not _fresh(arrays, stamp):
            continue
        try:
            model = from_arrays(arrays, copy)
        except InputError as exc:  # damaged after its stamp was written: made again below
            log.warning("%s: the pickle-free copy %s is damaged (%s); reading the pickle again", path, copy,
                        exc.problem)
            continue
        model.source = str(path)
        return model
    from ..fileio.paths import confine_writes

    model = load_pickle()
    for copy in candidates:
        try:
            with confine_writes(copy.parent):  # the cache's own folder, whatever the command writes to
                save(model, copy, **stamp)
            break
        except (OSError, InputError) as exc:  # InputError: a link planted where the copy goes
            log.debug("cannot cache %s at %s: %s", path, copy, exc)
    return model
