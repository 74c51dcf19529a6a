"""Random heads of a FLAME-format model with everyday expressions, scanned the way a frontal scanner sees
them: the training and held-out material of the landmark correction.

A head is drawn from the model's identity space (every coefficient one standard deviation), with an
expression made of the model's expression components (small), the jaw (closed or opened), sideways jaw,
eye and neck poses, and procedural surface moves FLAME-format test models lack: a smile (mouth corners
up, out and back, cheeks forward), lips pushed forward or pressed, brows raised or drawn together. Its
scan (:func:`onflame.synthetic.scans.simulate_scan`) has a random density, noise, holes, crop and pose.
Everything follows from the seed, so a seed names a head and its scan for good; the training tool
(``tools/build_landmark_correction.py``) and the benchmark (``benchmarks/registration_landmarks.py``)
use disjoint seed ranges (:data:`TRAINING_SEEDS`, :data:`HELD_OUT_SEEDS`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ..flame import FLAME
from ..geometry import vertex_adjacency
from ..flame.embedding import SurfacePoints
from ..flame.model import FlameModel
from .scans import SyntheticScan, simulate_scan

#: Identity components drawn at one standard deviation (the realistic-shape test model's real ones);
#: the test models' later components are smooth random fields, ~3 mm RMS together at one standard
#: deviation, which make lumpy faces unlike real ones: they are drawn at up to ``DETAIL_SD``.
REAL_COMPONENTS = 60
DETAIL_SD = 0.3
#: The test models' expression components are random smooth fields too: their coefficients are drawn
#: with a standard deviation up to this (~1 mm RMS over the face at most).
EXPRESSION_SD = 0.2
#: A head of a few principal components is smoother than a real face (a mean head's nostrils, lids and
#: lip borders are blurred by the averaging): each head is sharpened, ``v + gain (v − smooth(v))`` with
#: ``SHARPEN_PASSES`` passes of neighbour averaging (~3 mm on FLAME's face), by a gain up to this.
SHARPEN_GAIN = 1.2
SHARPEN_PASSES = 3
#: Changes whenever a seed's head or scan changes (cached detections are kept under it).
VERSION = 3
#: Seeds the correction trains on, seeds its settings may be chosen on, and seeds it must never see
#: (the benchmark's held-out heads).
TRAINING_SEEDS = range(10_000, 20_000)
VALIDATION_SEEDS = range(20_000, 21_000)
HELD_OUT_SEEDS = range(0, 1_000)


@dataclass
class ExpressiveHead:
    """A random head and its simulated scan.

    Attributes:
        seed: the seed it was made from.
        vertices: (V, 3) the head in the model's topology (metres, FLAME frame): the truth.
        scan: its simulated scan (:class:`~onflame.synthetic.scans.SyntheticScan`; ``scan.truth`` is
            ``vertices``).
        settings: JSON-ready account of the draw (expression amounts, jaw, scan settings).
    """

    seed: int
    vertices: np.ndarray
    scan: SyntheticScan
    settings: dict[str, Any] = field(default_factory=dict)


def _gauss(points: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * np.sum((points - centre) ** 2, axis=1) / width**2)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


#: Expression kinds and how often each is drawn (:func:`draw_expression`).
EXPRESSION_KINDS = {"neutral": 0.3, "smile": 0.25, "grin": 0.2, "open": 0.15, "lips": 0.1}


def draw_expression(rng: np.random.Generator) -> dict[str, Any]:
    """Amounts of a random everyday expression (metres, radians): a ``kind`` of
    :data:`EXPRESSION_KINDS`, and brows raised or lowered in a third of them."""
    kind = str(rng.choice(list(EXPRESSION_KINDS), p=list(EXPRESSION_KINDS.values())))
    a: dict[str, Any] = {"kind": kind, "jaw_rad": rng.uniform(0.0, 0.03), "smile_m": 0.0, "tilt": rng.uniform(0.7, 1.3),
                         "lips_apart_m": 0.0, "lips_forward_m": 0.0, "brows_m": 0.0}
    if kind == "smile":
        a.update(smile_m=rng.uniform(0.004, 0.015), lips_apart_m=rng.uniform(0.0, 0.002))
    elif kind == "grin":  # a broad smile with the lips apart (the teeth would show)
        a.update(smile_m=rng.uniform(0.008, 0.016), lips_apart_m=rng.uniform(0.002, 0.006),
                 jaw_rad=rng.uniform(0.0, 0.1))
    elif kind == "open":
        a.update(jaw_rad=rng.uniform(0.1, 0.35), lips_apart_m=rng.uniform(0.003, 0.008))
    elif kind == "lips":  # pushed forward (> 0) or pressed
        a.update(lips_forward_m=rng.uniform(-0.002, 0.003))
    if rng.random() < 0.35:  # > 0: raised; < 0: lowered and drawn towards the nose
        a["brows_m"] = rng.uniform(-0.003, 0.005)
    return a


def procedural_moves(v: np.ndarray, masks: dict[str, np.ndarray], amounts: dict[str, Any]) -> np.ndarray:
    """(V, 3) displacement (metres) of a smile, lips apart, forward or pressed, brows raised or drawn
    together (``amounts``: :func:`draw_expression`) on the head ``v`` (V, 3, FLAME frame).

    Anchors come from FLAME's region masks: the mouth corners are the lips' outermost vertices, the
    brows lie above the centres of the eye regions.
    """
    lips = v[masks["lips"]]
    corners = [lips[np.argmin(lips[:, 0])], lips[np.argmax(lips[:, 0])]]  # subject's right (−x), left
    mouth = lips.mean(0)
    moves = np.zeros_like(v)
    smile, tilt = amounts["smile_m"], amounts["tilt"]  # tilt: one corner higher than the other
    for side, corner, k in ((-1.0, corners[0], tilt), (1.0, corners[1], 2.0 - tilt)):
        pull = _unit(np.array([0.6 * side, 0.65, -0.4]))  # up, out and back
        moves += smile * k * _gauss(v, corner, 0.013)[:, None] * pull
        moves[:, 2] += 0.4 * smile * k * _gauss(v, corner + np.array([0.012 * side, 0.016, 0.0]), 0.014)  # cheek
    across = np.exp(-0.5 * ((v[:, 0] - mouth[0]) / 0.02) ** 2) * _gauss(v, mouth, 0.022)
    moves[:, 1] += amounts["lips_apart_m"] * across * np.tanh((v[:, 1] - mouth[1]) / 0.002)
    moves[:, 2] += amounts["lips_forward_m"] * _gauss(v, mouth + np.array([0, 0, 0.005]), 0.011)
    brows = amounts["brows_m"]
    for side, region in ((-1.0, "right_eye_region"), (1.0, "left_eye_region")):
        centre = v[masks[region]].mean(0) + np.array([0.0, 0.012, 0.004])
        way = np.array([0.0, 1.0, 0.0]) if brows > 0 else _unit(np.array([-0.5 * side, 1.0, 0.0]))
        moves += brows * _gauss(v, centre, 0.016)[:, None] * way
    return moves


def random_head(model: FlameModel, layer: FLAME, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """(V, 3) a random head of ``model`` (metres, FLAME frame) with an everyday expression, and its draw:
    identity coefficients at one standard deviation (up to :data:`DETAIL_SD` beyond
    :data:`REAL_COMPONENTS`), sharpened (:func:`sharpened`, gain up to :data:`SHARPEN_GAIN`)."""
    shape = rng.normal(0.0, 1.0, model.n_shape)
    detail_sd = rng.uniform(0.0, DETAIL_SD)
    shape[REAL_COMPONENTS:] *= detail_sd
    expression_sd = rng.uniform(0.0, EXPRESSION_SD)
    gain = rng.uniform(0.0, SHARPEN_GAIN)
    expression = rng.normal(0.0, expression_sd, model.n_expression)
    amounts = draw_expression(rng)
    pose = np.zeros(15)
    pose[3:6] = rng.normal(0.0, 0.08, 3)  # neck
    pose[6] = amounts["jaw_rad"]
    pose[7] = rng.normal(0.0, 0.02)  # jaw sideways
    pose[9:15] = rng.normal(0.0, 0.15, 6)  # eyes
    with torch.no_grad():
        out = layer(torch.as_tensor(shape[None]), torch.as_tensor(expression[None]), torch.as_tensor(pose[None]))
    v = out.vertices[0].numpy().astype(np.float64)
    v = sharpened(v + procedural_moves(v, model.masks, amounts), model.faces, gain)
    return v, {"detail_sd": detail_sd, "expression_sd": expression_sd, "sharpen": gain, **amounts}


def sharpened(v: np.ndarray, faces: np.ndarray, gain: float, passes: int = SHARPEN_PASSES) -> np.ndarray:
    """``v + gain (v − smooth(v))`` (V, 3): ``smooth`` averages each vertex half with its neighbours'
    mean, ``passes`` times."""
    if gain == 0.0:
        return v
    A = vertex_adjacency(np.asarray(faces, dtype=np.int64), len(v))
    mean = sp.diags(1.0 / np.maximum(np.asarray(A.sum(1)).ravel(), 1.0)) @ A
    smooth = v
    for _ in range(passes):
        smooth = 0.5 * smooth + 0.5 * (mean @ smooth)
    return v + gain * (v - smooth)


def random_scan_settings(rng: np.random.Generator) -> dict[str, Any]:
    """Keyword arguments of :func:`~onflame.synthetic.scans.simulate_scan` for a random scanner, and the
    crop (``crop_back_m``: nothing behind this depth, ``crop_top_m``: nothing above this height;
    ``keep_eyes``: the eyeballs' surface is scanned)."""
    return {"subdivisions": int(rng.choice([1, 2], p=[0.3, 0.7])),
            "noise_m": float(rng.uniform(0.00005, 0.00035)),
            "n_holes": int(rng.integers(0, 7)), "hole_radius_m": float(rng.uniform(0.003, 0.010)),
            "min_height_m": float(rng.uniform(-0.12, -0.05)),
            "crop_back_m": float(rng.uniform(-0.10, -0.03)), "crop_top_m": float(rng.uniform(0.06, 0.14)),
            "keep_eyes": bool(rng.random() < 0.2)}


def expressive_head(model: FlameModel, seed: int, layer: FLAME | None = None, scanner: str = "random",
                    landmarks: SurfacePoints | None = None) -> ExpressiveHead:
    """The head and scan of ``seed``.

    Args:
        model: a FLAME-format model with FLAME's region masks (``lips``, eye regions, eyeballs).
        seed: names the head and its scan.
        layer: the model's FLAME layer (float64), to build it once for many heads.
        scanner: ``"random"`` (:func:`random_scan_settings`) or ``"default"`` (``simulate_scan``'s own
            settings, as the benchmark scans real heads).
        landmarks: landmarks fixed on the model's topology for the scan's clicks (``scan.landmarks``,
            with click noise); None: no clicks (zeros).
    """
    layer = layer or FLAME(model, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    v, draw = random_head(model, layer, rng)
    eyes = np.concatenate([model.masks["left_eyeball"], model.masks["right_eyeball"]])
    clicks = np.zeros((51, 3)) if landmarks is None else landmarks.locate(v, model.faces)
    if scanner == "default":
        settings: dict[str, Any] = {}
        sim = simulate_scan(v, model.faces, clicks, eyes, seed=seed)
    else:
        settings = random_scan_settings(rng)
        exclude = np.flatnonzero((v[:, 2] < settings["crop_back_m"]) | (v[:, 1] > settings["crop_top_m"]))
        if not settings["keep_eyes"]:
            exclude = np.union1d(exclude, eyes)
        kw = {k: settings[k] for k in ("subdivisions", "noise_m", "n_holes", "hole_radius_m", "min_height_m")}
        sim = simulate_scan(v, model.faces, clicks, exclude, seed=seed, **kw)
    return ExpressiveHead(seed, v, sim, {**draw, "scanner": scanner, **settings})
