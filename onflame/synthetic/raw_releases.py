"""Miniature raw releases of MICA's source datasets, in each release's native layout and formats.

:func:`write_raw_release` writes a few actors of one source the way the real release (or the layout its
:mod:`onflame.sources` module documents) stores them: FRGC range images (``.abs.gz`` + ``.ppm``), BU-3DFE
two-pod VRML with one texture per pod, Florence VRML, Stirling OBJ with malformed ``usemtl``/``newmtl``
lines, LYHM OBJ in its turned axes, FaceWarehouse quad meshes in a topology of their own with ``.land``
files, BP4D+/D3DFACS OBJ with textures, plus the photos each source lists. Actor and capture ids are
MICA's (facts copied from its image lists, so the package needs nothing outside itself).

Each scan is the front of a FLAME head made by :class:`onflame.flame.FLAME` with random identity and
expression, cut to what a frontal scanner sees (:func:`onflame.synthetic.scans.visible_faces`), in the
source's unit and axes; vertices keep FLAME's origin (real scans do not: registration solves the
translation). Beside each scan, ``<scan stem>.lmk51.npy`` holds its 51 landmarks in the scan's unit and
axes, as a user who clicked them would save them (:data:`onflame.mesh.scan_names.LANDMARK_SIDECAR_SUFFIXES`).
Scans are small (a few thousand vertices) so tests stay fast. The returned :class:`RawRelease` keeps each
generating FLAME mesh, so a reader can be checked against it.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from ..fileio import atomic_open, write_bytes, write_text
from ..flame.layer import FLAME
from ..flame.model import FlameModel
from ..flame.params import N_EXPRESSION, N_SHAPE, FlameParams
from ..mesh import Mesh, write_obj
from ..sources import get_source
from ..mesh.scan_names import LANDMARK_SIDECAR_SUFFIXES, scan_stem
from ..units import METRES_PER_UNIT
from ..sources.lyhm import ROTATION as LYHM_ROTATION
from .raw_formats import (abs_text, compact, planar_uv, range_grid, write_image, write_photos,
                          write_textured_obj, wrl_text)
from .scans import visible_faces

#: Per source: (actor, capture stem, photo names) of a few MICA subjects, as MICA's image lists name them.
MICA_FACTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "BP4D": [("F001", "F001", ("0001.jpg", "0013.jpg")), ("F002", "F002", ("0004.jpg", "0014.jpg")),
             ("M058", "M058", ("0029.jpg", "0072.jpg"))],
    "BU3DFE": [("F0001", "F0001_NE00WH_RAW", ("F0001_AN01WH_RAW_0.jpg", "F0001_AN01WH_RAW_1.jpg")),
               ("F0002", "F0002_NE00BL_RAW", ("F0002_AN01BL_RAW_0.jpg", "F0002_AN01BL_RAW_1.jpg")),
               ("M0044", "M0044_NE00IN_RAW", ("M0044_AN01IN_RAW_0.jpg", "M0044_AN01IN_RAW_1.jpg"))],
    "D3DFACS": [("Adrian", "Adrian", ("texture_1C_000.jpg", "texture_2C_061.jpg")),
                ("Darren", "Darren", ("texture_1C_000.jpg", "texture_1C_114.jpg")),
                ("Nat", "Nat", ("texture_1C_000.jpg", "texture_1C_001.jpg"))],
    "FACEWAREHOUSE": [("Tester_1", "pose_0", ("pose_0.png", "pose_11.png")),
                      ("Tester_10", "pose_0", ("pose_0.png", "pose_9.png")),
                      ("Tester_99", "pose_0", ("pose_0.png", "pose_1.png"))],
    "FLORENCE": [("subject_01", "110920150452", ("frame_0001.jpg", "frame_2300.jpg")),
                 ("subject_02", "110921110609", ("frame_0003.jpg", "frame_1277.jpg")),
                 ("subject_53", "110616114712", ("frame_0001.jpg", "frame_0003.jpg"))],
    "FRGC": [("02463", "02463d546", ("02463d567.jpg", "02463d592.jpg")),
             ("04200", "04200d74", ("04200d72.jpg", "04200d75.jpg")),
             ("04936", "04936d100", ("04936d02.jpg", "04936d03.jpg"))],
    "LYHM": [("00001", "130925161618", ("1C.png", "2C.png")), ("00002", "130925160744", ("1C.png", "2C.png")),
             ("01518", "131218103628", ("1C.png", "2C.png"))],
    "STIRLING": [("F1001", "F1001_N", ("F1001_001.jpg", "F1001_003.jpg")),
                 ("F1004", "f1004b_N", ("F1004_001.jpg", "F1004_004.jpg")),
                 ("M1044", "m1044_NH", ("M1044_001.jpg", "M1044_002.jpg"))],
}
#: FaceWarehouse states no unit; the synthetic meshes use centimetres (found again by unit detection).
FACEWAREHOUSE_UNITS_PER_METRE = 100.0


@dataclass
class RawScan:
    """One written scan and the FLAME mesh it was made from.

    Attributes:
        actor, stem: MICA's actor id and capture stem.
        path: the scan file written.
        truth: (V, 3) the whole generating FLAME mesh, metres, FLAME's frame.
        faces: (F, 3) FLAME's triangles.
        landmarks: (51, 3) its static landmarks (metres), if the model has the embedding.
        params: the FLAME parameters that make ``truth``.
    """

    actor: str
    stem: str
    path: Path
    truth: np.ndarray
    faces: np.ndarray
    landmarks: np.ndarray | None
    params: FlameParams | None = None


@dataclass
class RawRelease:
    """What :func:`write_raw_release` wrote: the source's MICA name, the release folder and its scans."""

    source: str
    root: Path
    scans: list[RawScan]

    def scan(self, actor: str) -> RawScan:
        return next(s for s in self.scans if s.actor == actor)


def write_raw_release(source_name: str, out_dir: str | os.PathLike, model: FlameModel, n_actors: int = 2,
                      seed: int = 0, facts: list[tuple[str, str, tuple[str, ...]]] | None = None) -> RawRelease:
    """Write a miniature raw release of ``source_name`` into ``out_dir`` (the release's root).

    Args:
        source_name: a MICA subset name (``"FRGC"``, ``"BU3DFE"``, ...; see :func:`onflame.sources.get_source`).
        out_dir: folder to write (created).
        model: FLAME model the heads are made from.
        n_actors: actors to write (at most as many as there are facts: 3 MICA subjects in :data:`MICA_FACTS`).
        seed: random seed; the same seed writes the same files.
        facts: ``(actor, capture stem, photo names)`` to write instead of MICA's subjects in :data:`MICA_FACTS`
            (e.g. many made-up actors for a benchmark; the names must follow the source's layout).

    Returns:
        What was written, with each scan's generating FLAME mesh (metres, FLAME's frame).
    """
    name = get_source(source_name).name
    facts = MICA_FACTS[name] if facts is None else list(facts)
    if not 1 <= n_actors <= len(facts):
        raise ValueError(f"n_actors must be 1..{len(facts)} for {name}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    heads = _Heads(model)
    writer = _WRITERS[name]
    scans = []
    for actor, stem, photos in facts[:n_actors]:
        head = heads.random(rng)
        path = writer(root, actor, stem, photos, head, heads, rng)
        if head.landmarks is not None:
            _write_landmark_sidecar(path, head.landmarks, get_source(name))
        scans.append(RawScan(actor, stem, path, head.truth, head.faces, head.landmarks, head.params))
    return RawRelease(name, root, scans)


def write_truth_root(releases: Iterable[RawRelease], root: str | os.PathLike) -> Path:
    """The releases' generating FLAME meshes and parameters as a MICA root: what a perfect build would give.

    Writes ``root/<SUBSET>/registrations/<actor>/<stem>.obj`` (metres, FLAME's frame and origin, as the
    scans) and ``FLAME_parameters/<actor>/<stem>.npz``, so ``onflame evaluate flame --ref root`` scores a
    build of the releases against the truth.
    """
    root = Path(root)
    for release in releases:
        for scan in release.scans:
            write_obj(root / release.source / "registrations" / scan.actor / f"{scan.stem}.obj",
                      Mesh(scan.truth, scan.faces), precision=9)
            if scan.params is not None:
                scan.params.save(root / release.source / "FLAME_parameters" / scan.actor / f"{scan.stem}.npz")
    return root


def _write_landmark_sidecar(scan_path: Path, landmarks_m: np.ndarray, source) -> Path:
    """``<scan stem>.lmk51.npy``: the (51, 3) landmarks as a user clicking them on the scan would save them,
    in the scan's own unit and axes (``x_raw = Rᵀ x_flame / metres_per_unit``)."""
    units_per_metre = FACEWAREHOUSE_UNITS_PER_METRE if source.units is None else 1.0 / METRES_PER_UNIT[source.units]
    path = scan_path.parent / f"{scan_stem(scan_path)}{LANDMARK_SIDECAR_SUFFIXES[0]}"
    with atomic_open(path, "wb") as fh:
        np.save(fh, (landmarks_m @ source.rotation) * units_per_metre)
    return path


# --- heads --------------------------------------------------------------------------------------------------

@dataclass
class _Head:
    truth: np.ndarray
    faces: np.ndarray
    landmarks: np.ndarray | None
    exclude: np.ndarray
    params: FlameParams | None = None

    def front(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """What a frontal scanner sees: (vertices (N, 3) in shuffled order, triangles), metres."""
        keep = visible_faces(self.truth, self.faces, self.exclude)
        keep &= self.truth[self.faces].mean(1)[:, 1] > -0.09  # the lower neck is out of the scanner's view
        f = self.faces[keep]
        used = np.unique(f)
        order = rng.permutation(len(used))  # scanners know nothing of FLAME's vertex order
        remap = np.full(len(self.truth), -1)
        remap[used[order]] = np.arange(len(used))
        return self.truth[used[order]], remap[f]


class _Heads:
    """Random FLAME heads (identity and expression; no pose: the scans are neutral captures)."""

    def __init__(self, model: FlameModel):
        self.layer = FLAME(model, n_shape=min(20, model.n_shape), n_expression=min(10, model.n_expression))
        self.faces = model.faces
        self.exclude = np.concatenate([model.masks.get(k, np.zeros(0, np.int64))
                                       for k in ("left_eyeball", "right_eyeball")]).astype(np.int64)

    def random(self, rng: np.random.Generator) -> _Head:
        shape = torch.as_tensor(rng.normal(0.0, 1.0, (1, self.layer.n_shape)), dtype=torch.float32)
        expr = torch.as_tensor(rng.normal(0.0, 0.3, (1, self.layer.n_expression)), dtype=torch.float32)
        with torch.no_grad():
            out = self.layer(shape=shape, expression=expr)
        lmk = None if out.landmarks is None else out.landmarks[0].double().numpy()
        betas = np.zeros(N_SHAPE + N_EXPRESSION)
        betas[: self.layer.n_shape] = shape[0].double().numpy()
        betas[N_SHAPE: N_SHAPE + self.layer.n_expression] = expr[0].double().numpy()
        params = FlameParams.from_mica(betas, np.zeros(15), np.zeros(3))
        return _Head(out.vertices[0].double().numpy(), self.faces, lmk, self.exclude, params)


# --- one writer per source ----------------------------------------------------------------------------------

def _write_bp4d(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    write_photos(root / "images" / actor, photos, rng)
    return write_textured_obj(root / "scans" / f"{stem}.obj", v * 1000.0, f, planar_uv(v), ".jpg", rng)


def _write_d3dfacs(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    write_photos(root / "images" / actor, photos, rng)
    return write_textured_obj(root / "scans" / f"{stem}.obj", v * 1000.0, f, planar_uv(v), ".jpg", rng)


def _write_bu3dfe(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    folder = root / actor
    # two camera pods: the left and right halves, each a Shape with its own texture <stem>_<k>.bmp
    right = v[f].mean(1)[:, 0] >= 0
    shapes = []
    for k, side in enumerate((~right, right)):
        sv, sf = compact(v, f[side])
        tex = f"{stem}_{k}.bmp"
        write_image(folder / tex, rng, (64, 64))
        shapes.append((sv * 1000.0, sf, planar_uv(sv), tex))
    write_photos(folder, photos, rng, suffix=".bmp")  # other captures' raw textures
    path = folder / f"{stem}.wrl"
    write_text(path, wrl_text(shapes))
    return path


def _write_florence(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    folder = root / actor / "Model" / "frontal1" / "vrml"
    write_image(folder / f"{stem}.bmp", rng, (64, 64))
    path = folder / f"{stem}.wrl"
    write_text(path, wrl_text([(v * 1000.0, f, planar_uv(v), f"{stem}.bmp")]))
    videos = ("Indoor-Cooperative", "PTZ-Outdoor")
    for k, name in enumerate(photos):
        write_image(root / actor / "Video" / videos[k % 2] / name, rng)
    return path


def _write_frgc(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    grid = range_grid(v, f, 80, rng)
    session = root / "nd1" / "Fall2003range"
    path = session / f"{stem}.abs.gz"
    write_bytes(path, gzip.compress(abs_text(grid, 1000.0).encode("ascii"), mtime=0))
    write_image(session / f"{stem}.ppm", rng, (grid.cols, grid.rows))
    write_photos(root / "nd1" / "Fall2003", photos, rng)
    # a capture of the session MICA leaves out (capture id made up): must not be picked up
    decoy = root / "nd1" / "Spring2003range" / f"{actor}d001.abs.gz"
    write_bytes(decoy, gzip.compress(abs_text(grid, 1000.0).encode("ascii"), mtime=0))
    write_image(root / "nd1" / "Spring2003range" / f"{actor}d002.jpg", rng)
    return path


def _write_lyhm(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    raw = v @ LYHM_ROTATION  # x_raw = Rᵀ x_flame: undone by the source's rotation
    write_photos(root / actor, photos, rng)
    return write_textured_obj(root / actor / "scan" / f"{stem}.obj", raw * 1000.0, f, planar_uv(v), ".bmp", rng)


def _write_stirling(root, actor, stem, photos, head, heads, rng) -> Path:
    folder = root / "scans" / actor[0]
    if stem.lower() != f"{actor}_N".lower():
        # an earlier scan of the same actor (another head): MICA keeps the later one, ``stem``
        other_v, other_f = heads.random(rng).front(rng)
        _write_stirling_obj(folder / f"{actor}_N.obj", other_v, other_f, rng)
    v, f = head.front(rng)
    write_photos(root / "images" / "Real_images__Subset_2D_FG2018" / "HQ", photos, rng)
    return _write_stirling_obj(folder / f"{stem}.obj", v, f, rng)


def _write_stirling_obj(path: Path, v: np.ndarray, f: np.ndarray, rng: np.random.Generator) -> Path:
    write_textured_obj(path, v * 1000.0, f, planar_uv(v), ".bmp", rng)
    # break the material lines as some Stirling files have them: a nameless newmtl, a usemtl naming no
    # material, a stray usemtl among the faces
    text = path.read_text(encoding="utf-8").replace("usemtl material0\n", f"usemtl {path.stem}.bmp_0\n", 1)
    first_face = text.index("\nf ") + 1
    text = text[:first_face] + "usemtl\n" + text[first_face:]
    write_text(path, text)
    mtl = path.with_suffix(".mtl")
    write_text(mtl, mtl.read_text(encoding="utf-8").replace("newmtl material0", "newmtl"))
    return path


def _write_facewarehouse(root, actor, stem, photos, head, heads, rng) -> Path:
    v, f = head.front(rng)
    grid = range_grid(v, f, 110, rng)  # ~1.5 mm pixels, about a Kinect's at arm's length
    R, C = grid.rows, grid.cols
    valid = grid.valid.reshape(R, C)
    idx = np.arange(R * C).reshape(R, C)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    ok = valid[:-1, :-1] & valid[:-1, 1:] & valid[1:, :-1] & valid[1:, 1:]
    quads = np.stack([a[ok], c[ok], d[ok], b[ok]], 1)  # counter-clockwise seen from the front (+z)
    corners = grid.xyz[quads]
    longest = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=2).max(1)
    quads = quads[longest < 6 * grid.pixel]  # no quad across a depth jump
    used = np.unique(quads)
    remap = np.full(R * C, -1)
    remap[used] = np.arange(len(used))
    q = remap[quads] + 1
    rows, cols = np.divmod(used, C)
    uv = np.stack([(cols + 0.5) / C, 1 - (rows + 0.5) / R], 1)
    xyz = grid.xyz[used] * FACEWAREHOUSE_UNITS_PER_METRE
    text = ("v %.6f %.6f %.6f\n" * len(xyz)) % tuple(xyz.ravel())
    text += ("vt %.6f %.6f\n" * len(uv)) % tuple(uv.ravel())
    text += ("f %d/%d %d/%d %d/%d %d/%d\n" * len(q)) % tuple(np.repeat(q, 2, axis=1).ravel())
    folder = root / actor / "TrainingPose"
    path = folder / f"{stem}.obj"
    write_text(path, text)
    write_image(folder / f"{stem}.png", rng, (C, R))  # the Kinect photo, on the same pixel grid
    write_photos(folder, tuple(p for p in photos if Path(p).stem != stem), rng)
    if head.landmarks is not None:  # landmarks as image points (x right, y down, pixels) in pose_0.png
        px = np.stack([(head.landmarks[:, 0] - grid.x0) / grid.pixel, (grid.y0 - head.landmarks[:, 1]) / grid.pixel], 1)
        write_text(folder / f"{stem}.land", f"{len(px)}\n" + ("%.3f %.3f\n" * len(px)) % tuple(px.ravel()))
    return path


_WRITERS = {"BP4D": _write_bp4d, "BU3DFE": _write_bu3dfe, "D3DFACS": _write_d3dfacs,
            "FACEWAREHOUSE": _write_facewarehouse, "FLORENCE": _write_florence, "FRGC": _write_frgc,
            "LYHM": _write_lyhm, "STIRLING": _write_stirling}


def build_all_synthetic(out_dir: str | os.PathLike, model: FlameModel | None = None, n_actors: int = 1,
                        **options: Any) -> dict:
    """Write the eight synthetic raw releases and build them (:func:`onflame.dataset.build.build`).

    Raw releases go to ``out_dir/raw/<SUBSET>/`` (with landmark sidecars), the FLAME meshes and parameters
    they were made from to ``out_dir/truth/`` (:func:`write_truth_root`: the build's ground truth), the MICA
    root to ``out_dir/mica/``; ``model`` defaults to onflame's procedural head; ``options`` as for
    :func:`onflame.dataset.build_subset`. Re-running rewrites the same raw files and builds nothing again.

    Returns:
        subset name -> :class:`onflame.dataset.build.BuildReport`.
    """
    from ..dataset.build import build
    from ..sources import SOURCES
    from .head import make_head_model

    model = model or make_head_model()
    out_dir = Path(out_dir)
    jobs, releases = [], []
    for seed, name in enumerate(SOURCES):
        releases.append(write_raw_release(name, out_dir / "raw" / name, model, n_actors=n_actors, seed=seed))
        jobs.append((name, releases[-1].root))
    write_truth_root(releases, out_dir / "truth")
    return build(jobs, out_dir / "mica", model, **options)
