"""Export every subject's FLAME parameters of a MICA root to one file.

Two formats, chosen by the output's suffix; one row per subject, sorted by subset, actor, name:

``.npz`` (loads with ``np.load(path)``, no pickling: strings are numpy unicode arrays)::

    subset  (N,)      str    e.g. "BP4D"
    actor   (N,)      str    e.g. "F001"
    name    (N,)      str    file stem inside the actor folder
    betas   (N, 400)  float64  300 identity then 100 expression coefficients
    pose    (N, 15)   float64  axis-angle radians: global, neck, jaw, left eye, right eye
    trans   (N, 3)    float64  metres

``.csv`` (UTF-8, a header row, then one row per subject)::

    subset,actor,name,betas_0,...,betas_399,pose_0,...,pose_14,trans_0,trans_1,trans_2

Floats are written with Python's shortest round-trip ``repr``, so reading them back gives the same
float64 values. Files that cannot be read are skipped and listed; the output is written atomically.
"""
from __future__ import annotations

import csv
import io
import os
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import check_output_file, write_npz, write_text
from ..flame.params import MICA_KEYS
from .layout import MicaRoot, open_root

#: Suffixes :func:`export_params` writes.
EXPORT_SUFFIXES = (".npz", ".csv")


def export_params(root: str | os.PathLike | MicaRoot, out: str | os.PathLike) -> dict[str, Any]:
    """Write all subjects' parameters of ``root`` to ``out`` (``.npz`` or ``.csv``; see the module docstring).

    Returns ``{"subjects": N written, "subsets": {name: count}, "out": path, "skipped": ["file: problem", ...]}``.
    Raises :class:`~onflame.errors.UsageError` for an output that cannot be written (an unknown suffix, a
    folder, a folder without write access), before reading anything, and :class:`InputError` for a root
    that cannot be opened.
    """
    out = check_output_file(out, EXPORT_SUFFIXES)
    mica = root if isinstance(root, MicaRoot) else open_root(root)
    ids: list[tuple[str, str, str]] = []
    rows: dict[str, list[np.ndarray]] = {k: [] for k in MICA_KEYS}
    skipped = [str(exc) for exc in mica.all_problems]
    subsets: dict[str, int] = {}
    try:
        for subject in mica.subjects():
            try:
                arrays = subject.params.to_arrays()
            except InputError as exc:
                skipped.append(str(exc))
                continue
            ids.append((subject.subset, subject.actor, subject.name))
            for k in rows:
                rows[k].append(arrays[k])
            subsets[subject.subset] = subsets.get(subject.subset, 0) + 1
    finally:
        if not isinstance(root, MicaRoot):
            mica.close()
    table = {k: np.array(rows[k], dtype=np.float64).reshape(len(ids), n) for k, (n,) in MICA_KEYS.items()}
    if out.suffix.lower() == ".npz":
        cols = np.array(ids, dtype=str).reshape(len(ids), 3)
        write_npz(out, subset=cols[:, 0], actor=cols[:, 1], name=cols[:, 2], **table)
    else:
        write_text(out, _csv(ids, table))
    return {"subjects": len(ids), "subsets": subsets, "out": str(out), "skipped": skipped}


def _csv(ids: list[tuple[str, str, str]], table: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["subset", "actor", "name"] + [f"{k}_{i}" for k, a in table.items() for i in range(a.shape[1])])
    for r, ident in enumerate(ids):
        w.writerow(list(ident) + [repr(float(x)) for a in table.values() for x in a[r]])
    return buf.getvalue()
