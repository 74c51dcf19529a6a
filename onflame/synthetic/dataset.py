"""A small synthetic MICA dataset tree, named exactly like MICA's, made with the FLAME layer.

MICA's training data has, for each of eight subsets, FLAME parameters and registered meshes per actor::

    ROOT/<SUBSET>/FLAME_parameters/<actor>/<stem>.npz     betas (400,), pose (15,), trans (3,)
    ROOT/<SUBSET>/registrations/<actor>/<stem>.obj        the FLAME mesh of those parameters, metres

:func:`make_mica_dataset` writes such a tree for any FLAME-structured model (e.g. the procedural head
of :func:`onflame.synthetic.head.make_head_model`), using real actor ids and file stems from MICA's
image lists (facts, below), and random but plausible identities, expressions and jaw openings.
Re-running skips the files that exist (an interrupted run resumes); a parameter file that exists
without its mesh has the mesh made from the file's own parameters.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..flame.model import FlameModel
from ..flame.params import N_EXPRESSION, N_POSE, N_SHAPE, FlameParams, read_params
from ..mesh import Mesh, write_obj

#: MICA's eight subsets, in its order.
SUBSETS = ("BP4D", "BU3DFE", "D3DFACS", "FACEWAREHOUSE", "FLORENCE", "FRGC", "LYHM", "STIRLING")

#: Real (actor, file stem) pairs from MICA's ``image_paths/<SUBSET>.npy`` lists (the npz stem of each
#: actor, relative to ``FLAME_parameters/<actor>/``).
MICA_ACTORS: dict[str, tuple[tuple[str, str], ...]] = {
    "BP4D": (("F001", "F001"), ("F014", "F014"), ("F028", "F028"), ("F042", "F042"), ("F055", "F055"),
             ("F067", "F067"), ("F081", "F081"), ("M012", "M012"), ("M025", "M025"), ("M037", "M037")),
    "BU3DFE": (("F0001", "F0001_NE00WH_RAW"), ("F0011", "F0011_NE00AE_RAW"), ("F0021", "F0021_NE00WH_RAW"),
               ("F0031", "F0031_NE00WH_RAW"), ("F0041", "F0041_NE00AE_RAW"), ("F0051", "F0051_NE00WH_RAW"),
               ("M0005", "M0005_NE00IN_RAW"), ("M0015", "M0015_NE00WH_RAW"), ("M0025", "M0025_NE00AE_RAW"),
               ("M0035", "M0035_NE00WH_RAW")),
    "D3DFACS": (("Adrian", "Adrian"), ("Darren", "Darren"), ("Eva", "Eva"), ("Gwenda", "Gwenda"),
                ("Helen", "Helen"), ("James", "James"), ("Joe", "Joe"), ("Kornelia", "Kornelia"),
                ("Michaela", "Michaela"), ("Nat", "Nat")),
    "FACEWAREHOUSE": tuple((f"Tester_{n}", "pose_0") for n in (1, 112, 126, 14, 18, 31, 45, 59, 72, 86)),
    "FLORENCE": (("subject_01", "110920150452"), ("subject_06", "110614144900"), ("subject_11", "110627184405"),
                 ("subject_16", "110627195752"), ("subject_21", "110610172750"), ("subject_26", "110627194147"),
                 ("subject_31", "110929161411"), ("subject_36", "110929155154"), ("subject_41", "110616112206"),
                 ("subject_46", "110929153316")),
    "FRGC": (("02463", "02463d546"), ("04319", "04319d120"), ("04404", "04404d135"), ("04484", "04484d135"),
             ("04568", "04568d89"), ("04632", "04632d132"), ("04700", "04700d18"), ("04761", "04761d44"),
             ("04819", "04819d12"), ("04878", "04878d78")),
    "LYHM": (("00001", "130925161618"), ("00140", "130929140643"), ("00289", "131004130047"),
             ("00427", "131009164854"), ("00585", "131017151438"), ("00746", "131025161311"),
             ("00911", "131102133318"), ("01057", "131109154818"), ("01209", "131117160102"),
             ("01356", "131127165656")),
    "STIRLING": (("F1001", "F1001_N"), ("F1010", "F1010_N"), ("F1020", "f1020_N"), ("F1029", "f1029_N"),
                 ("F1039", "f1039_N"), ("F1049", "f1049_N"), ("M1003", "m1003_N"), ("M1012", "m1012_N"),
                 ("M1021", "m1021_N"), ("M1030", "m1030_N")),
}


def random_params(rng: np.random.Generator) -> FlameParams:
    """Plausible random FLAME parameters for one capture.

    Identity ~ N(0, 1) per coefficient, shrinking with the index (real fits use the leading ones most);
    a mild expression on the first 20 coefficients; the jaw opened 0-0.15 rad about x; no global, neck
    or eye rotation and no translation (registrations are in FLAME's frame).
    """
    shape = rng.standard_normal(N_SHAPE) / np.sqrt(1.0 + np.arange(N_SHAPE) / 50.0)
    expression = np.zeros(N_EXPRESSION)
    expression[:20] = 0.6 * rng.standard_normal(20)
    pose = np.zeros(N_POSE)
    pose[6] = rng.uniform(0.0, 0.15)
    return FlameParams(shape, expression, pose, np.zeros(3))


def _paths(root: Path, subset: str, actor: str, stem: str) -> tuple[Path, Path]:
    return (root / subset / "FLAME_parameters" / actor / f"{stem}.npz",
            root / subset / "registrations" / actor / f"{stem}.obj")


def make_mica_dataset(root: str | os.PathLike, model: FlameModel, actors_per_subset: int = 3, seed: int = 0,
                      subsets: Iterable[str] | None = None) -> dict[str, Any]:
    """Write a synthetic MICA tree under ``root`` (see the module docstring).

    Args:
        root: folder to write into (created).
        model: FLAME-structured model whose layer makes the registrations.
        actors_per_subset: actors per subset, at most ``len(MICA_ACTORS[subset])`` (10).
        seed: parameters are drawn from ``(seed, subset, actor)``, so they do not depend on which
            subsets or how many actors are asked for.
        subsets: subset names (default: all eight).

    Returns:
        ``{"root", "subsets": {name: {"actors": [...], "written": n, "skipped": n}}, "files_written",
        "files_skipped"}``.
    """
    import torch

    from ..flame.layer import FLAME

    root = Path(root)
    names = list(SUBSETS if subsets is None else subsets)
    unknown = [s for s in names if s not in MICA_ACTORS]
    if unknown:
        raise ValueError(f"unknown MICA subset(s) {unknown}; known: {', '.join(SUBSETS)}")
    most = min(len(MICA_ACTORS[s]) for s in names)
    if not 1 <= actors_per_subset <= most:
        raise ValueError(f"actors_per_subset must be 1..{most}, got {actors_per_subset}")
    layer = FLAME(model, dtype=torch.float64)
    summary: dict[str, Any] = {"root": str(root), "subsets": {}, "files_written": 0, "files_skipped": 0}
    for subset in names:
        index = SUBSETS.index(subset)
        todo: list[tuple[Path, FlameParams]] = []
        written = skipped = 0
        actors = MICA_ACTORS[subset][:actors_per_subset]
        for a, (actor, stem) in enumerate(actors):
            npz, obj = _paths(root, subset, actor, stem)
            if npz.exists():
                skipped += 1
                params = read_params(npz)
            else:
                params = random_params(np.random.default_rng([seed, index, a]))
                params.save(npz)
                written += 1
            if obj.exists():
                skipped += 1
            else:
                todo.append((obj, params))
        if todo:  # one batched layer call per subset
            stacked = (np.stack([getattr(p, k) for _, p in todo]) for k in ("shape", "expression", "pose", "trans"))
            batch = FlameParams(*stacked)
            with torch.no_grad():
                verts = layer(batch).vertices.numpy()
            for (obj, _), v in zip(todo, verts):
                write_obj(obj, Mesh(v, model.faces, source=str(obj)))
                written += 1
        summary["subsets"][subset] = {"actors": [a for a, _ in actors], "written": written, "skipped": skipped}
        summary["files_written"] += written
        summary["files_skipped"] += skipped
    return summary
