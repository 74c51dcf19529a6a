#!/usr/bin/env python3
"""Rebuild the landmark correction: detected dense points → FLAME vertices, learned from generated heads.

1. The realistic-shape test model (``../shared/tools/make_realshape_flame.py``: FLAME 2023 Open's mean
   head and real identity components) is made in the cache folder.
2. ``--heads`` heads of :mod:`onflame.synthetic.expressive_scans` (training seeds only:
   ``TRAINING_SEEDS``; the benchmark's held-out seeds are never read) are scanned and run through
   automatic landmarking (``tools/landmark_cases.py``; cached, so a re-run or an interrupted one does
   not detect again).
3. The correction (:class:`onflame.detection.correction.LandmarkCorrection`) is fitted: the dense table's
   transfer onto the FLAME vertices that carry FLAME's and MICA's 51 landmarks (on FLAME 2023 Open's mean
   head) gives first estimates; a similarity on the dense points that do not move with expression, a
   principal-component basis of the feature points' offsets and a robust ridge map to the first
   estimates' errors correct them. The
   number of components and the ridge weight are chosen by 5-fold cross-validation over the heads (the
   median landmark error over both conventions); each vertex's expected error is its cross-validated
   RMS error, and the limits beyond which a face is "outside the training faces" come from the
   training faces' own spread.

Deterministic: the same heads give the same file, byte for byte (BLAS is kept to one thread).

usage: python tools/build_landmark_correction.py [--heads 2000] [--cache .landmark-cache]
           [--out onflame/detection/data/mediapipe_flame_correction.npz]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread: sums in a fixed order, the same bytes
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from landmark_cases import load_cases, make_cases  # noqa: E402

from onflame.detection import MEDIAPIPE_TO_IBUG68  # noqa: E402
from onflame.detection.correction import LandmarkCorrection, RidgeMap  # noqa: E402
from onflame.detection.correspondence import LandmarkTransfer, load_correspondence, topology_key  # noqa: E402
from onflame.flame.embedding import SurfacePoints  # noqa: E402
from onflame.flame import load_landmark_embedding, load_masks, load_model  # noqa: E402
from onflame.geometry import rigid_fit  # noqa: E402
from onflame.synthetic.expressive_scans import TRAINING_SEEDS, VERSION  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
DEFAULT_OUT = ROOT / "onflame" / "detection" / "data" / "mediapipe_flame_correction.npz"
#: Cross-validation grid: principal components kept, ridge weight (relative to the whitened scores).
COMPONENTS = (10, 20, 40, 80)
RIDGE = (0.1, 1.0)
FOLDS = 5
#: A dense point is a feature when the table marks it usable and at least this share of heads found it.
MIN_FOUND = 0.97
#: The similarity uses feature points above MediaPipe's subnasale by this much (m, on the template):
#: brows, eyes, nose and forehead, which an open mouth or a smile does not move.
ALIGN_ABOVE_SUBNASALE_M = 0.003
#: Robust fit: rounds of reweighting, and the residual (× the median head's) beyond which a head weighs less.
ROBUST_ROUNDS = 4
HUBER = 2.0
#: A face's distance from the training faces is measured in this many leading components (the main ways
#: faces differ; later ones have tiny spreads that make any new face look far) and beyond them.
SPREAD_COMPONENTS = 10
#: Each group of vertices (FLAME-51 rows: right brow, left brow, nose, right eye, left eye, mouth) is
#: corrected from the dense points within this distance (m, on the reference head): a wide smile does
#: not move the nose's correction.
GROUP_SIZES = (5, 5, 9, 6, 6, 20)
LOCAL_RADIUS_M = 0.025
#: A face is outside the training faces beyond this multiple of a typical training face's distance (the
#: median over faces each fold did not see; the training faces' own tail holds heads the transfer failed on).
OOD_FACTOR = 2.5
CONVENTIONS = ("mica51", "flame51")


def conventions():
    """FLAME's and MICA's 51-point conventions (:class:`~onflame.flame.SurfacePoints` by name)."""
    out = dict(load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy").conventions)
    out.update(load_landmark_embedding(FLAME_FIX / "flame_static_embedding.pkl").conventions)
    return {name: out[name] for name in CONVENTIONS}


def procrustes_template(dense: np.ndarray, align: np.ndarray, iters: int = 8) -> np.ndarray:
    """(N, 3) the mean configuration of the heads' dense points (H, N, 3) under similarity fits on the
    ``align`` points, at the heads' mean size and centred on the origin."""
    template = np.nanmean(dense, 0) - np.nanmean(dense[:, align], (0, 1))
    for _ in range(iters):
        aligned = [s * d @ R.T + t for d, (R, t, s) in zip(dense, similarities(dense, align, template))]
        template = np.nanmean(aligned, 0)
        template -= template[align].mean(0)
    return template


def similarities(dense: np.ndarray, align: np.ndarray, template: np.ndarray) -> list:
    out = []
    for d in dense:
        use = align & np.isfinite(d).all(1)
        out.append(rigid_fit(d[use], template[use], scale=True))
    return out


def design(dense, truth, align, template, vertices, first):
    """Dense points' offsets (H, N, 3) from the template, first estimates (H, M, 3, NaN where the transfer
    gives none) and true positions (H, M, 3) of the vertices, all in each head's normalised frame."""
    X, B, T = [], [], []
    for d, v, b, (R, t, s) in zip(dense, truth, first, similarities(dense, align, template)):
        off = s * d @ R.T + t - template
        off[~np.isfinite(off).all(1)] = 0.0
        X.append(off)
        B.append(s * b @ R.T + t)
        T.append(s * v[vertices] @ R.T + t)
    return np.array(X), np.array(B), np.array(T)


def fit_map(X: np.ndarray, Y: np.ndarray, features: np.ndarray, rows: np.ndarray, k: int, ridge: float,
            w: np.ndarray) -> RidgeMap:
    """A ridge map on K whitened principal components of the ``features`` points' offsets (H, N, 3) to
    the ``rows`` vertices' corrections (H, M, 3), heads weighted by ``w`` (H,)."""
    x, y = X[:, features].reshape(len(X), -1), Y[:, rows].reshape(len(Y), -1)
    mean, offset = (w @ x) / w.sum(), (w @ y) / w.sum()
    _, S, Vt = np.linalg.svd((x - mean) * np.sqrt(w)[:, None], full_matrices=False)
    k = min(k, len(S))
    directions, sd = Vt[:k].T, S[:k] / np.sqrt(w.sum())
    Z = (x - mean) @ directions / sd
    weights = np.linalg.solve((Z * w[:, None]).T @ Z + ridge * w.sum() * np.eye(k), (Z * w[:, None]).T @ (y - offset))
    return RidgeMap(features, rows, mean, directions, sd, weights, offset)


def apply_maps(maps, X: np.ndarray, m: int) -> np.ndarray:
    """(H, M, 3) the maps' corrections for heads' offsets (H, N, 3)."""
    out = np.zeros((len(X), m, 3))
    for r in maps:
        out[:, r.rows] = np.stack([r(x) for x in X])
    return out


def fit_robust(X: np.ndarray, Y: np.ndarray, groups, k: int, ridge: float):
    """One map per group ``(features, rows)`` fitted together and reweighted: a head whose RMS residual
    exceeds ``HUBER`` × the median weighs ``HUBER × median / residual`` (a few heads the transfer gets
    centimetres wrong would set the maps)."""
    w = np.ones(len(X))
    for _ in range(ROBUST_ROUNDS):
        maps = [fit_map(X, Y, f, r, k, ridge, w) for f, r in groups]
        res = np.sqrt(np.mean(np.sum((Y - apply_maps(maps, X, Y.shape[1])) ** 2, 2), 1))
        w = np.minimum(1.0, HUBER * np.median(res) / np.maximum(res, 1e-12))
    return maps


def cross_validate(X: np.ndarray, Y: np.ndarray, fold: np.ndarray, groups, k: int, ridge: float) -> np.ndarray:
    """Out-of-fold corrections (H, M, 3)."""
    cv = np.zeros_like(Y)
    for f in range(FOLDS):
        cv[fold == f] = apply_maps(fit_robust(X[fold != f], Y[fold != f], groups, k, ridge), X[fold == f], Y.shape[1])
    return cv


def spread_limits(X: np.ndarray, features: np.ndarray, fold: np.ndarray) -> tuple[RidgeMap, float, np.ndarray]:
    """How faces differ (the leading ``SPREAD_COMPONENTS`` of the feature points' offsets), the RMS of
    the offsets beyond them, and the limits: ``OOD_FACTOR`` × the median distance of faces a fold did not see."""
    empty = np.zeros(0, dtype=np.int64)
    distances = np.zeros((len(X), 2))
    for f in range(FOLDS):
        m = fit_map(X[fold != f], np.zeros((len(X[fold != f]), 0, 3)), features, empty, SPREAD_COMPONENTS, 1.0,
                    np.ones((fold != f).sum()))
        for i in np.flatnonzero(fold == f):
            x = X[i, features].ravel() - m.mean
            beyond = x - m.directions @ (m.directions.T @ x)
            distances[i] = np.sqrt(np.mean(m.components(X[i]) ** 2)), np.sqrt(np.mean(beyond**2))
    spread = fit_map(X, np.zeros((len(X), 0, 3)), features, empty, SPREAD_COMPONENTS, 1.0, np.ones(len(X)))
    x = X[:, features].reshape(len(X), -1) - spread.mean
    residual_scale = float(np.sqrt(np.mean((x - x @ spread.directions @ spread.directions.T) ** 2)))
    limits = OOD_FACTOR * np.median(distances, 0) / [1.0, residual_scale]
    return spread, residual_scale, limits


def vertex_points(vertices: np.ndarray, faces: np.ndarray) -> SurfacePoints:
    """The vertices (M,) as surface points (a triangle of each, weight 1 on the vertex)."""
    tri = np.zeros(len(vertices), dtype=np.int64)
    bary = np.zeros((len(vertices), 3))
    for i, v in enumerate(vertices):
        row, col = np.argwhere(faces == v)[0]
        tri[i], bary[i, col] = row, 1.0
    return SurfacePoints(tri, bary)


def local_groups(convs, reference, faces, vertices, points, features) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(features (N,), rows)`` per landmark group: each vertex goes with its nearest landmark's group
    (brows, nose, eyes, mouth; left and right apart) on the reference head, and a group reads the
    feature points within ``LOCAL_RADIUS_M`` of its vertices there (``points`` (N, 3))."""
    marks = np.concatenate([p.locate(reference, faces) for p in convs.values()])
    group = np.tile(np.repeat(np.arange(len(GROUP_SIZES)), GROUP_SIZES), len(convs))
    of_vertex = group[cKDTree(marks).query(reference[vertices])[1]]
    out = []
    for g in range(len(GROUP_SIZES)):
        rows = np.flatnonzero(of_vertex == g)
        near = cKDTree(reference[vertices[rows]]).query(points)[0] <= LOCAL_RADIUS_M
        out.append((features & near, rows))
    return out


def landmark_errors_mm(Ypred, Y, vertices, faces, convs) -> np.ndarray:
    """(H, C·51) landmark errors (mm) of predicted vertices (H, M, 3) against the true ones."""
    row = np.full(faces.max() + 1, -1)
    row[vertices] = np.arange(len(vertices))
    out = []
    for pts in convs.values():
        corners = row[faces[pts.face_idx]]
        loc = lambda Yv: np.einsum("lk,hlkd->hld", pts.bary, Yv[:, corners])  # noqa: E731
        out.append(np.linalg.norm(loc(Ypred) - loc(Y), axis=2))
    return np.concatenate(out, 1) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=2000, help="training heads (from the first training seed)")
    ap.add_argument("--cache", type=Path, default=ROOT / ".landmark-cache")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    t0 = time.perf_counter()
    pkl = args.cache / "realshape.pkl"
    if not pkl.is_file():
        args.cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(SHARED / "tools" / "make_realshape_flame.py"), str(pkl), "--plain"],
                       check=True, capture_output=True)
    model = load_model(pkl, masks=load_masks(FLAME_FIX / "FLAME_masks.pkl"))
    faces = np.asarray(model.faces, dtype=np.int64)
    seeds = TRAINING_SEEDS[:args.heads]
    tag = f"train-v{VERSION}"
    make_cases(model, tag, seeds, args.cache / "cases")
    cases = load_cases(args.cache / "cases", tag, seeds)
    dense = np.stack([c["dense"] for c in cases]).astype(np.float64)
    truth = np.stack([c["vertices"] for c in cases]).astype(np.float64)
    print(f"{len(cases)} of {len(seeds)} heads found a face")

    convs = conventions()
    vertices = np.unique(np.concatenate([faces[p.face_idx].ravel() for p in convs.values()]))
    table = load_correspondence("mediapipe", faces)
    features = table.usable & (np.isfinite(dense).all(2).mean(0) >= MIN_FOUND)
    agreed = np.stack([np.isfinite(c["view_dense"]).all(2).sum(0) >= min(2, len(c["view_dense"])) for c in cases])
    start = np.nanmean(dense, 0)
    subnasale = start[MEDIAPIPE_TO_IBUG68[33]]
    up = start[MEDIAPIPE_TO_IBUG68[27]] - start[MEDIAPIPE_TO_IBUG68[57]]  # nose bridge minus lower lip
    up /= np.linalg.norm(up)
    align = features & ((start - subnasale) @ up > ALIGN_ABOVE_SUBNASALE_M)
    template = procrustes_template(dense, align)
    reference = model.v_template  # the first estimates' reference head: FLAME 2023 Open's mean
    base = LandmarkTransfer.build(table, reference, faces, vertex_points(vertices, faces), name="first estimate")
    first = np.stack([base.apply(d, a) for d, a in zip(dense, agreed)])
    X, B, T = design(dense, truth, align, template, vertices, first)
    base_fill = np.nanmedian(B, 0)
    B = np.where(np.isfinite(B).all(2, keepdims=True), B, base_fill)
    Y = T - B
    groups = local_groups(convs, reference, faces, vertices, base.template_points, features)

    fold = np.array([int(c["seed"]) % FOLDS for c in cases])
    best = None
    for k in COMPONENTS:
        for ridge in RIDGE:
            cv = cross_validate(X, Y, fold, groups, k, ridge)
            err = landmark_errors_mm(B + cv, T, vertices, faces, convs)
            score = float(np.median(np.median(err, 1)))
            print(f"components {k:3d} ridge {ridge:5.2f}: cross-validated landmark error median {score:.3f} mm", flush=True)
            if best is None or score < best[0]:
                best = (score, k, ridge, cv)
    score, k, ridge, cv = best
    maps = fit_robust(X, Y, groups, k, ridge)
    # a vertex's expected error: the median over the heads of its cross-validated error
    vertex_error = np.median(np.linalg.norm(cv - Y, axis=2), 0)
    spread, residual_scale, limits = spread_limits(X, features, fold)
    err = landmark_errors_mm(B + cv, T, vertices, faces, convs)
    first_err = landmark_errors_mm(B, T, vertices, faces, convs)
    info = {"trained_on": f"{len(cases)} generated heads of the realistic-shape test model (FLAME 2023 Open's "
                          "identity space) with everyday expressions, simulated scans, relief-shaded views",
            "seeds": [int(seeds[0]), int(seeds[-1])], "components": int(k), "ridge": float(ridge),
            "cv_landmark_median_mm": round(score, 3),
            "uncorrected_landmark_median_mm": round(float(np.median(np.median(first_err, 1))), 3),
            "cv_landmark_median_mm_by_convention": {c: round(float(np.median(err[:, 51 * i:51 * (i + 1)])), 3)
                                                    for i, c in enumerate(convs)},
            "notice": "derived from FLAME 2023 Open (MPI-IS, https://flame.is.tue.mpg.de), CC BY 4.0"}
    correction = LandmarkCorrection(
        f"mediapipe-flame-local{k}-{len(cases)}heads", "mediapipe", topology_key(faces), align,
        template, vertices, base, base_fill, tuple(maps), vertex_error, spread, residual_scale, limits, info)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    correction.save(args.out)
    print(f"{correction.name}: {len(vertices)} vertices from {features.sum()} dense points ({align.sum()} align); "
          f"cross-validated landmark error median {score:.2f} mm; {time.perf_counter() - t0:.0f} s -> {args.out} "
          f"({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
