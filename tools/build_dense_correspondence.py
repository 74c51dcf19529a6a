#!/usr/bin/env python3
"""Rebuild the dense-correspondence table: where MediaPipe's 478 points land on FLAME's surface.

Heads in FLAME's topology (FLAME's mean head and random heads of a FLAME-structured model: identity,
expression and an open or closed jaw) are cut the way a frontal scanner sees them (no eyeballs, no back
of the head, no lower neck) and run through the same automatic landmarking as scans
(:func:`onflame.registration.landmark_detection.detect_scan_landmarks`: coarse search, five views around the
face, per-point consensus). Each head's consensus points are located on its FLAME surface (triangle and
barycentric weights) and carried to the mean head; a point's table entry is the robust mean of those
positions put back on the mean head's surface, and its spread their RMS distance from it. The face's
outline (it follows the silhouette) and the irises (a scan shows none) are marked unusable, as are
points that strayed more than ``--max-spread-mm`` or that too few heads found.

usage: python tools/build_dense_correspondence.py [--model generic_model.pkl] [--heads 24]
           [--out onflame/detection/data/mediapipe_flame.npz]

Without ``--model`` the synthetic FLAME-structured model of ``../shared/tools/make_synthetic_flame.py``
is made in a temporary folder (its mean head is FLAME's); with your own FLAME the random heads are real
FLAME identities. The benchmark's real head (``registered_mesh.ply``) is never used.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from onflame.detection import get_detector
from onflame.errors import OnflameError
from onflame.detection.correspondence import DenseCorrespondence, topology_key
from onflame.flame import FLAME, SurfacePoints, load_masks, load_model
from onflame.registration.landmark_detection import N_DENSE, consensus, detect_scan_landmarks
from onflame.synthetic.scans import visible_faces

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "onflame" / "detection" / "data" / "mediapipe_flame.npz"
#: MediaPipe FaceMesh's face outline and iris points (from its published connection lists).
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284,
             288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
IRISES = tuple(range(468, 478))


def heads(model, n: int, seed: int, shape_sd: float, expression_sd: float, max_jaw: float):
    """``(name, vertices (V, 3) m)``: the mean head, then ``n`` random ones (coefficients drawn with
    standard deviations ``shape_sd`` and ``expression_sd``, the jaw opened up to ``max_jaw`` radians)."""
    flame = FLAME(model, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    yield "mean", model.v_template
    for i in range(n):
        pose = torch.zeros(1, 15, dtype=torch.float64)
        pose[0, 6] = rng.uniform(0.0, max_jaw)  # the jaw: closed to clearly open
        with torch.no_grad():
            out = flame(torch.as_tensor(rng.normal(0, shape_sd, (1, model.n_shape))),
                        torch.as_tensor(rng.normal(0, expression_sd, (1, model.n_expression))), pose)
        yield f"random {i}", out.vertices[0].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="FLAME generic_model.pkl (default: the synthetic one, made now)")
    ap.add_argument("--masks", type=Path, default=SHARED / "fixtures" / "flame" / "FLAME_masks.pkl")
    ap.add_argument("--heads", type=int, default=24, help="random heads besides the mean one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape-sd", type=float, default=0.5)
    ap.add_argument("--expression-sd", type=float, default=0.3)
    ap.add_argument("--max-jaw", type=float, default=0.3, help="radians")
    ap.add_argument("--min-found", type=float, default=0.6, help="share of heads that must find a point")
    ap.add_argument("--max-spread-mm", type=float, default=5.0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pkl = args.model
        if pkl is None:
            pkl = Path(tmp) / "generic_model.pkl"
            subprocess.run([sys.executable, str(SHARED / "tools" / "make_synthetic_flame.py"), str(pkl)],
                           check=True, capture_output=True)
        model = load_model(pkl, masks=load_masks(args.masks))
    faces = model.faces
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    detector = get_detector("mediapipe")
    template = trimesh.Trimesh(model.v_template, faces, process=False)
    on_template = []
    t0 = time.perf_counter()
    for name, v in (heads(model, args.heads, args.seed, args.shape_sd, args.expression_sd, args.max_jaw)):
        # as a frontal scanner sees it, without eyeballs: a lid point lifted onto an eyeball would map to
        # the eyeball's own vertices, which no landmark's neighbourhood on the face reaches
        keep = visible_faces(v, faces, eyes)
        keep &= v[faces].mean(1)[:, 1] > -0.09
        found = detect_scan_landmarks(v, faces[keep], facing_hint=np.eye(3), detector=detector)
        if found.dense is None:
            print(f"{name}: no face ({found.info.get('reason')})")
            continue
        ok = np.isfinite(found.dense).all(1)
        # where on the head's FLAME surface each point landed, carried to the mean head
        head = trimesh.Trimesh(v, faces[keep], process=False)
        closest, _, tri = trimesh.proximity.closest_point(head, found.dense[ok])
        bary = trimesh.triangles.points_to_barycentric(v[faces[keep][tri]], closest)
        pts = np.full((N_DENSE, 3), np.nan)
        pts[ok] = np.einsum("nk,nkd->nd", bary, model.v_template[faces[keep][tri]])
        on_template.append(pts)
        print(f"{name}: {ok.sum()} points, score {found.info['score']:.2f}, views {found.info['views_used']}")
    samples = np.stack(on_template)
    mean, spread, count, _ = consensus(samples)
    found_share = np.isfinite(samples).all(2).mean(0)
    closest, _, tri = trimesh.proximity.closest_point(template, np.nan_to_num(mean))
    bary = trimesh.triangles.points_to_barycentric(model.v_template[faces[tri]], closest)
    usable = (found_share >= args.min_found) & (np.nan_to_num(spread, nan=1.0) * 1000 <= args.max_spread_mm)
    usable[list(FACE_OVAL + IRISES)] = False
    table = DenseCorrespondence("mediapipe", topology_key(faces), SurfacePoints(tri.astype(np.int64), bary),
                                np.nan_to_num(spread, nan=1.0), usable)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.save(args.out)
    s = spread[usable] * 1000
    print(f"{len(samples)} heads in {time.perf_counter() - t0:.0f} s; {usable.sum()} of {N_DENSE} points usable, "
          f"spread median {np.median(s):.2f} mm, p90 {np.percentile(s, 90):.2f} mm -> {args.out}")


if __name__ == "__main__":
    try:
        main()
    except OnflameError as exc:  # a bad model or masks file: one line naming it
        sys.exit(f"error: {exc}")
