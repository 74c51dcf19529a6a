#!/usr/bin/env python3
"""Evaluation speed: onflame's point-to-surface distances beside trimesh's, and NoW-protocol throughput.

1. Distances, same points, same run: onflame's :class:`onflame.mesh.distance.SurfaceDistance`
   (libigl's AABB tree) against ``trimesh.proximity.closest_point`` (what a user without psbody-mesh would
   reach for), on the real 3dMD scan ``../shared/fixtures/scans/3dmd_james/james.obj`` (points scattered
   around it) and on one NoW-size image: the cropped points of a dense scan against a FLAME-topology
   prediction. Both sides' distances are compared (max difference).
2. NoW evaluation throughput: a NoW-format tree written for the run (``--subjects`` scans of FLAME's mean
   head ``../shared/fixtures/flame/head_template.obj`` subdivided ``--subdivisions`` times with 0.2 mm
   noise, in mm; ``--images`` predictions each: the head with a smooth 1–2 mm displacement, moved by a
   random similarity, with its 7 landmarks from MICA's embedding) scored by ``onflame evaluate now`` with
   each ``--workers`` count: predictions scored per second, and the time a NoW-size run (2,000
   predictions) would take at that rate.

NoW's own ``now_evaluation`` is not run: it needs MPI-IS ``psbody-mesh`` (not on PyPI: ``pip install
psbody-mesh`` finds no distribution; it builds from source with Boost), Eigen 3.4.0 and a compiled
``sbody``, and pins Python 3.8 / numpy 1.19.

usage: python benchmarks/evaluation.py [--subjects 2] [--images 20] [--subdivisions 3] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from onflame.evaluation import now_landmarks
from onflame.mesh.distance import SurfaceDistance
from onflame.evaluation.now import NowSettings, evaluate_now
from onflame.evaluation.report import format_rows
from onflame.evaluation.scan_to_mesh import prepare_scan
from onflame.flame import load_landmark_embedding
from onflame.mesh import Mesh, read_mesh, write_obj

SHARED = Path(__file__).resolve().parents[2] / "shared"
FLAME_FIX = SHARED / "fixtures" / "flame"
JAMES = SHARED / "fixtures" / "scans" / "3dmd_james" / "james.obj"
NOW_SIZE = 2000  # predictions in a NoW-size run


def time_distances(points: np.ndarray, mesh: Mesh) -> tuple[float, float, float]:
    """``(onflame s, trimesh s, max |difference|)`` for the distances of ``points`` to ``mesh``."""
    t = time.perf_counter()
    ours = SurfaceDistance(mesh.vertices, mesh.faces).distances(points)  # the tree's build counted
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    _, theirs, _ = trimesh.proximity.closest_point(mesh.to_trimesh(), points)
    t_theirs = time.perf_counter() - t
    return t_ours, t_theirs, float(np.abs(ours - theirs).max())


def dense_scan(template: Mesh, subdivisions: int, seed: int) -> Mesh:
    v, f = trimesh.remesh.subdivide_loop(template.vertices * 1000, template.faces, iterations=subdivisions)
    return Mesh(v + np.random.default_rng(seed).normal(0, 0.2, v.shape), f)


def displaced(template: Mesh, seed: int) -> Mesh:
    """The template (metres) with a smooth displacement of a few mm: a prediction in the scan's place."""
    rng = np.random.default_rng(seed)
    v = template.vertices
    return template.with_vertices(v + 0.0015 * np.sin(v @ rng.normal(0, 30, (3, 3)) + rng.uniform(0, 6, 3)))


def prediction(template: Mesh, emb, seed: int) -> tuple[Mesh, np.ndarray]:
    """:func:`displaced`, moved by a random similarity, and its 7 landmarks."""
    mesh = displaced(template, seed)
    lmk = now_landmarks.from_flame(mesh.vertices, mesh.faces, emb)
    rng = np.random.default_rng(seed + 1)
    R, s, t = Rotation.random(random_state=seed).as_matrix(), rng.uniform(0.5, 2.0), rng.normal(0, 0.1, 3)
    return mesh.with_vertices(s * mesh.vertices @ R.T + t), s * lmk @ R.T + t


def write_tree(root: Path, template: Mesh, emb, subjects: int, images: int, subdivisions: int) -> tuple[Path, Path]:
    gt, pred = root / "gt", root / "pred"
    lines = []
    lmk = now_landmarks.from_flame(template.vertices * 1000, template.faces, emb)
    for s in range(subjects):
        subject = f"FaMoS_{s:03d}"
        write_obj(gt / "scans" / subject / "scan.obj", dense_scan(template, subdivisions, s), precision=4)
        pp = "\n".join(f'<point x="{x}" y="{y}" z="{z}" active="1" name="{i}"/>' for i, (x, y, z) in enumerate(lmk))
        (gt / "scans_lmks_onlypp" / subject).mkdir(parents=True)
        (gt / "scans_lmks_onlypp" / subject / "scan.pp").write_text(f"<PickedPoints>\n{pp}\n</PickedPoints>\n")
        for i in range(images):
            challenge = ("multiview_neutral", "multiview_expressions", "multiview_occlusions", "selfie")[i % 4]
            mesh, plm = prediction(template, emb, 1000 * s + i)
            stem = pred / subject / challenge / f"IMG_{i:04d}"
            write_obj(stem.with_suffix(".obj"), mesh, precision=8)
            np.save(stem.with_suffix(".npy"), plm)
            lines.append(f"{subject}/{challenge}/IMG_{i:04d}.jpg")
    (gt / "imagepathsvalidation.txt").write_text("\n".join(lines) + "\n")
    return gt, pred


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--images", type=int, default=20, help="predictions per scan (NoW: about 20)")
    ap.add_argument("--subdivisions", type=int, default=3, help="loop subdivisions of the scan (3: ~320k vertices)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    template = read_mesh(FLAME_FIX / "head_template.obj")
    emb = load_landmark_embedding(FLAME_FIX / "landmark_embedding.npy")

    rows = [("case", "points", "triangles", "onflame ms", "trimesh ms", "trimesh/onflame", "max |Δ| mm")]
    james = read_mesh(JAMES)
    rng = np.random.default_rng(0)
    pts = np.vstack([james.vertices[rng.integers(0, james.n_vertices, 30000)] + rng.normal(0, 3, (30000, 3)),
                     rng.uniform(james.vertices.min(0) - 20, james.vertices.max(0) + 20, (10000, 3))])
    t_o, t_t, diff = time_distances(pts, james)
    rows.append(("real 3dMD scan (james.obj)", len(pts), james.n_faces, f"{t_o * 1e3:.0f}", f"{t_t * 1e3:.0f}",
                 f"{t_t / t_o:.1f}x", f"{diff:.1e}"))
    scan = dense_scan(template, args.subdivisions, 0)
    target = prepare_scan(scan, now_landmarks.from_flame(template.vertices * 1000, template.faces, emb))
    pred = displaced(template, 1)
    pred_mm = pred.with_vertices(pred.vertices * 1000)
    t_o, t_t, diff = time_distances(target.points, pred_mm)
    rows.append((f"NoW image: cropped scan ({scan.n_vertices} vertices) -> FLAME prediction", target.mesh.n_vertices,
                 pred.n_faces, f"{t_o * 1e3:.0f}", f"{t_t * 1e3:.0f}", f"{t_t / t_o:.1f}x", f"{diff:.1e}"))
    print("Point-to-surface distances (same points, same run):\n")
    print(format_rows([tuple(map(str, r)) for r in rows]))

    with tempfile.TemporaryDirectory() as tmp:
        gt, pred_dir = write_tree(Path(tmp), template, emb, args.subjects, args.images, args.subdivisions)
        n = args.subjects * args.images
        rows = [("workers", "predictions", "scans", "wall s", "predictions/s", f"NoW-size run ({NOW_SIZE} predictions)",
                 "median mm")]
        for w in args.workers:
            t = time.perf_counter()
            rep = evaluate_now([("bench", pred_dir)], gt, Path(tmp) / f"out{w}", NowSettings(), workers=w)
            wall = time.perf_counter() - t
            assert rep.exit_code == 0, rep.failures
            rows.append((w, n, args.subjects, f"{wall:.1f}", f"{n / wall:.2f}", f"{NOW_SIZE / (n / wall) / 60:.1f} min",
                         f"{rep.stats['bench']['all']['median_mm']:.3f}"))
        print(f"\nonflame evaluate now on a NoW-format tree ({args.subjects} scans of {scan.n_vertices} vertices, "
              f"crop ~{target.mesh.n_vertices} points; reading, cropping, alignment, refinement and writing included):\n")
        print(format_rows([tuple(map(str, r)) for r in rows]))
    print("\nNoW's now_evaluation: not run (needs psbody-mesh, which is not on PyPI and builds only from source "
          "with Boost; Eigen 3.4.0; a compiled sbody; Python 3.8 / numpy 1.19).")


if __name__ == "__main__":
    main()
