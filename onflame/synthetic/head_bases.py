"""Blendshape bases of the procedural head: identity (300), expression (100), pose correctives (36).

Every component is a smooth displacement *field* (metres per unit coefficient) evaluated at the head's
vertices. Eyeball vertices take the field's value at their eyeball's centre, so a blendshape moves an
eyeball rigidly and it stays round; for identity the eyelids and socket skin around it blend to that
same translation, so the eyeball stays seated in its socket whatever the shape.

- Identity: 17 designed components first (size, width, height, depth, face length, jaw width, nose
  length and width, brows, cheekbones, chin, lips, eye spacing, ears, neck, forehead slope, back of
  the skull), then seeded random smooth fields from broad to fine; peak or RMS sizes decrease with
  the index, the first ones a few millimetres like FLAME's.
- Expression: 20 designed components on the face (mouth open, smile, pucker, brows, blinks, ...),
  then seeded random smooth fields masked to the face; zero on the eyeballs, the back of the head and
  the neck.
- Pose correctives: 9 per non-root joint, driven by the entries of (R - I); small random smooth fields
  on the neck (neck joint) and the lower face and jaw underside (jaw joint); none for the eyes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial.distance import cdist

from . import anatomy as A
from . import head_regions as R
from .head_mesh import HeadMesh

N_SHAPE = 300
N_EXPRESSION = 100
N_POSE = 36

Field = Callable[[np.ndarray], np.ndarray]  # points (N, 3) -> displacements (N, 3)


def place(mesh: HeadMesh, at_head: np.ndarray, at_centres: np.ndarray, rigid_sockets: bool) -> np.ndarray:
    """(V, 3, K) displacements from a field's values at the head vertices (Vh, 3, K) and at the two
    eyeball centres (2, 3, K): eyeballs move rigidly; with ``rigid_sockets`` the skin around each eye
    blends to its eyeball's translation."""
    out = np.zeros((len(mesh.vertices),) + at_head.shape[1:])
    if rigid_sockets:
        p = mesh.vertices[mesh.head]
        w = R.socket_weight(p)[:, None, None]
        nearest = np.where(p[:, 0] >= 0, 0, 1)  # left eye for x >= 0
        at_head = (1.0 - w) * at_head + w * at_centres[nearest]
    out[mesh.head] = at_head
    for e in range(2):
        out[mesh.eyeballs[e]] = at_centres[e]
    return out


def evaluate(mesh: HeadMesh, field: Field, rigid_sockets: bool = False) -> np.ndarray:
    """(V, 3) displacement of one ``field`` on the mesh (see :func:`place`)."""
    at_head = field(mesh.vertices[mesh.head])[:, :, None]
    at_centres = field(A.eye_centres())[:, :, None]
    return place(mesh, at_head, at_centres, rigid_sockets)[:, :, 0]


def _scaled(disp: np.ndarray, peak: float) -> np.ndarray:
    """``disp`` (V, 3) rescaled so its largest vertex displacement is ``peak`` metres."""
    m = np.linalg.norm(disp, axis=1).max()
    return disp * (peak / m) if m > 0 else disp


def _side(p: np.ndarray) -> np.ndarray:
    """+1 on the left (x > 0), -1 on the right: smooth across the midline (over 5 mm)."""
    return np.tanh(p[:, 0] / 0.005)


def _vec(p: np.ndarray, x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float) -> np.ndarray:
    return np.stack(np.broadcast_arrays(x, y, z, np.zeros(len(p)))[:3], -1).astype(np.float64)


def _rotation_field(p: np.ndarray, axis: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Linearised rotation about ``axis`` through ``centre``: axis x (p - centre)."""
    return np.cross(axis, p - centre)


def designed_identity() -> list[tuple[Field, float]]:
    """(field, peak displacement in metres per unit coefficient) of the 17 designed identity components."""
    c = np.array([0.0, -0.02, -0.04])
    jaw_zone = lambda p: R.sigmoid((-0.03 - p[:, 1]) / 0.012)  # noqa: E731
    brows = lambda p: R.gaussian(p, A.EYE_CENTRE + [0.0, 0.018, 0.005], 0.013, paired=True)  # noqa: E731
    cheekbones = lambda p: R.gaussian(p, np.array([0.048, 0.004, 0.030]), 0.014, paired=True)  # noqa: E731
    chin = lambda p: R.gaussian(p, A.MENTON + [0.0, 0.008, -0.008], 0.016)  # noqa: E731
    ears = lambda p: R.gaussian(p, A.EAR_CENTRE, 0.022, paired=True)  # noqa: E731
    neck = lambda p: R.sigmoid((-0.09 - p[:, 1]) / 0.01)  # noqa: E731
    neck_axis_z = lambda p: -0.062 + 0.25 * (p[:, 1] + 0.10)  # noqa: E731
    back = lambda p: R.sigmoid((-0.07 - p[:, 2]) / 0.02) * R.sigmoid((p[:, 1] + 0.06) / 0.02)  # noqa: E731
    forehead = lambda p: R.sigmoid((p[:, 1] - 0.04) / 0.01) * R.sigmoid(p[:, 2] / 0.01)  # noqa: E731
    eyes = lambda p: R.gaussian(p, A.EYE_CENTRE, 0.016, paired=True)  # noqa: E731
    return [
        (lambda p: p - c, 0.0060),                                                          # overall size
        (lambda p: _vec(p, p[:, 0], 0.0, 0.0), 0.0050),                                     # width
        (lambda p: _vec(p, 0.0, p[:, 1] - c[1], 0.0), 0.0050),                              # height
        (lambda p: _vec(p, 0.0, 0.0, p[:, 2] - c[2]), 0.0050),                              # depth
        (lambda p: _vec(p, 0.0, -jaw_zone(p) * R.sigmoid(p[:, 2] / 0.02), 0.0), 0.0050),    # face length
        (lambda p: _vec(p, p[:, 0] * jaw_zone(p), 0.0, 0.0), 0.0040),                       # jaw width
        (lambda p: _vec(p, 0.0, -0.3, 1.0) * R.gaussian(p, A.NOSE_TIP, 0.012)[:, None], 0.0040),  # nose length
        (lambda p: _vec(p, p[:, 0], 0.0, 0.0) * R.gaussian(p, A.ALA * [0, 1, 1], 0.014)[:, None], 0.0030),  # nose width
        (lambda p: _vec(p, 0.0, 0.2, 1.0) * brows(p)[:, None], 0.0030),                     # brow ridge
        (lambda p: _vec(p, _side(p), 0.0, 0.5) * cheekbones(p)[:, None], 0.0030),           # cheekbones
        (lambda p: _vec(p, 0.0, -0.2, 1.0) * chin(p)[:, None], 0.0040),                     # chin
        (lambda p: _vec(p, 0.0, 0.4 * np.tanh((p[:, 1] - A.MOUTH_Y) / 0.005), 1.0) * R.lips_weight(p)[:, None],
         0.0020),                                                                           # lip fullness
        (lambda p: _vec(p, _side(p), 0.0, 0.0) * eyes(p)[:, None], 0.0020),                 # eye spacing
        (lambda p: _vec(p, _side(p), 0.0, 0.3) * ears(p)[:, None], 0.0040),                 # ears
        (lambda p: _vec(p, p[:, 0], 0.0, p[:, 2] - neck_axis_z(p)) * neck(p)[:, None], 0.0050),  # neck girth
        (lambda p: _vec(p, 0.0, 0.0, p[:, 1] - 0.04) * forehead(p)[:, None], 0.0030),       # forehead slope
        (lambda p: _vec(p, 0.0, 0.0, -1.0) * back(p)[:, None], 0.0050),                     # back of the skull
    ]


def designed_expressions() -> list[tuple[Field, float]]:
    """(field, peak displacement per unit coefficient) of the 20 designed expression components."""
    hinge = np.array([0.0, A.CONDYLE[1], A.CONDYLE[2]])
    corner = np.array([A.MOUTH_HALF_WIDTH, A.MOUTH_Y, A.MOUTH_CORNER_Z])
    corners = lambda p: R.gaussian(p, corner, 0.010, paired=True)  # noqa: E731
    cheeks = lambda p: R.gaussian(p, np.array([0.040, -0.012, 0.040]), 0.015, paired=True)  # noqa: E731
    brows = lambda p: R.gaussian(p, A.EYE_CENTRE + [0.0, 0.020, 0.010], 0.012, paired=True)  # noqa: E731
    inner_brows = lambda p: R.gaussian(p, np.array([0.014, 0.038, 0.046]), 0.010, paired=True)  # noqa: E731
    nose_sides = lambda p: R.gaussian(p, A.ALA + [0.0, 0.012, 0.0], 0.010, paired=True)  # noqa: E731
    face = R.face_weight

    def upper_lid(p: np.ndarray) -> np.ndarray:  # upper eyelid, fading toward the brow
        rel_y = p[:, 1] - (A.EYE_CENTRE[1] - A.EYE_OPEN_DROP)
        return R.gaussian(p, A.EYE_CENTRE + [0.0, 0.006, 0.012], 0.008, paired=True) * R.sigmoid(rel_y / 0.001)

    def lower_lid(p: np.ndarray) -> np.ndarray:
        rel_y = p[:, 1] - (A.EYE_CENTRE[1] - A.EYE_OPEN_DROP)
        return R.gaussian(p, A.EYE_CENTRE + [0.0, -0.006, 0.012], 0.008, paired=True) * R.sigmoid(-rel_y / 0.001)

    def blink(p: np.ndarray) -> np.ndarray:  # the upper lid rolls down over the eyeball
        s = p.copy()
        s[:, 0] = np.abs(s[:, 0])
        d = _rotation_field(s, np.array([1.0, 0.0, 0.0]), A.EYE_CENTRE)
        return d * upper_lid(p)[:, None]

    def jaw_open(p: np.ndarray) -> np.ndarray:
        return _rotation_field(p, np.array([1.0, 0.0, 0.0]), hinge) * R.jaw_weight(p)[:, None]

    def smile(p: np.ndarray) -> np.ndarray:
        return (_vec(p, 0.4 * _side(p), 0.6, -0.3) * corners(p)[:, None]
                + _vec(p, 0.0, 0.3, 0.1) * cheeks(p)[:, None])

    def left(field: Field) -> Field:
        return lambda p: field(p) * R.sigmoid(p[:, 0] / 0.004)[:, None]

    def right(field: Field) -> Field:
        return lambda p: field(p) * R.sigmoid(-p[:, 0] / 0.004)[:, None]

    brow_raise = lambda p: _vec(p, 0.0, 1.0, 0.1) * brows(p)[:, None] * face(p)[:, None]  # noqa: E731
    return [
        (jaw_open, 0.0080),                                                                       # mouth open
        (smile, 0.0050),
        (lambda p: _vec(p, -p[:, 0] * 20.0, 0.0, 1.0) * R.lips_weight(p)[:, None], 0.0040),      # pucker
        (brow_raise, 0.0050),
        (lambda p: _vec(p, -0.5 * _side(p), -1.0, 0.0) * inner_brows(p)[:, None], 0.0040),      # frown
        (blink, 0.0050),                                                                          # both eyes close
        (lambda p: _vec(p, _side(p), 0.0, -0.3) * corners(p)[:, None], 0.0040),                  # mouth stretch
        (lambda p: _vec(p, 0.0, -1.0, 0.0) * corners(p)[:, None], 0.0040),                       # mouth corners down
        (lambda p: _vec(p, _side(p), 0.0, 0.5) * cheeks(p)[:, None], 0.0040),                    # cheeks puff
        (lambda p: _vec(p, 0.0, 0.5, -0.2) * nose_sides(p)[:, None], 0.0030),                 # nose wrinkle
        (lambda p: _vec(p, 0.0, 1.0, 0.3) * R.upper_lip_weight(p)[:, None], 0.0030),             # upper lip raise
        (lambda p: _vec(p, 0.0, -1.0, 0.2) * R.lower_lip_weight(p)[:, None], 0.0030),            # lower lip down
        (lambda p: _vec(p, 1.0, 0.0, 0.0) * R.jaw_weight(p)[:, None], 0.0040),                   # jaw sideways
        (left(smile), 0.0050),
        (right(smile), 0.0050),
        (left(brow_raise), 0.0050),
        (right(brow_raise), 0.0050),
        (left(blink), 0.0050),
        (right(blink), 0.0050),
        (lambda p: _vec(p, 0.0, 1.0, 0.2) * (lower_lid(p) + 0.5 * cheeks(p))[:, None], 0.0030),  # squint
    ]


def _farthest_points(p: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` well-spread points of ``p`` (greedy farthest-point sampling from a random start)."""
    idx = [int(rng.integers(len(p)))]
    d = cdist(p, p[idx[0]][None], "sqeuclidean")[:, 0]
    for _ in range(k - 1):
        i = int(np.argmax(d))
        idx.append(i)
        np.minimum(d, cdist(p, p[i][None], "sqeuclidean")[:, 0], out=d)
    return np.array(idx)


def random_fields(mesh: HeadMesh, n: int, bands: list[tuple[int, float]], rms: np.ndarray,
                  rng: np.random.Generator, weight: Callable[[np.ndarray], np.ndarray] | None = None,
                  support: np.ndarray | None = None, rigid_sockets: bool = False) -> np.ndarray:
    """(V, 3, n) smooth random fields: normalised Gaussian-RBF blends of random vectors.

    ``bands`` splits the ``n`` components into groups of (count, kernel width in metres), broad first;
    each component is scaled to ``rms[k]`` metres RMS over the head (or over ``support`` vertices).
    ``weight`` (points -> (N,)) multiplies every field (e.g. to keep it on the face).
    """
    head_p = mesh.vertices[mesh.head]
    points = np.concatenate([head_p, A.eye_centres()])
    out = np.zeros((len(mesh.vertices), 3, n))
    k0 = 0
    for count, width in bands:
        n_centres = int(np.clip(2.0 * (0.16 / width) ** 2, 12, 400))
        pool = head_p if support is None else mesh.vertices[support]
        centres = pool[_farthest_points(pool, n_centres, rng)]
        phi = np.exp(cdist(points, centres, "sqeuclidean") * (-0.5 / width**2))
        phi /= phi.sum(1, keepdims=True) + 1e-12
        fields = (phi @ rng.standard_normal((len(centres), 3 * count))).reshape(len(points), 3, count)
        if weight is not None:
            fields *= weight(points)[:, None, None]
        out[:, :, k0:k0 + count] = place(mesh, fields[: len(head_p)], fields[len(head_p):], rigid_sockets)
        k0 += count
    sel = mesh.head if support is None else support
    norm = np.sqrt((out[sel] ** 2).sum(1).mean(0))
    return out * (rms / np.maximum(norm, 1e-12))[None, None, :]


def build_shapedirs(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 300) identity basis (metres per unit coefficient)."""
    designed = designed_identity()
    dirs = np.zeros((len(mesh.vertices), 3, N_SHAPE))
    for k, (field, peak) in enumerate(designed):
        dirs[:, :, k] = _scaled(evaluate(mesh, field, rigid_sockets=True), peak)
    k = np.arange(len(designed), N_SHAPE)
    rms = 0.0025 / np.sqrt(1.0 + k - len(designed))
    n = N_SHAPE - len(designed)
    dirs[:, :, len(designed):] = random_fields(mesh, n, [(40, 0.06), (80, 0.035), (n - 120, 0.02)], rms, rng,
                                               rigid_sockets=True)
    return dirs


def build_exprdirs(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 100) expression basis: designed face motions, then random face-only fields; 0 on the eyeballs."""
    designed = designed_expressions()
    dirs = np.zeros((len(mesh.vertices), 3, N_EXPRESSION))
    for k, (field, peak) in enumerate(designed):
        dirs[:, :, k] = _scaled(evaluate(mesh, field), peak)
    n = N_EXPRESSION - len(designed)
    face = np.nonzero(R.face_weight(mesh.vertices) > 0.5)[0]
    face = np.intersect1d(face, mesh.head)
    rms = 0.0015 / np.sqrt(1.0 + 0.3 * np.arange(n))
    # random face motions leave the eyelids still (they would push through the eyeballs)
    weight = lambda p: R.face_weight(p) * (1.0 - R.socket_weight(p))  # noqa: E731
    dirs[:, :, len(designed):] = random_fields(mesh, n, [(n, 0.02)], rms, rng, weight=weight, support=face)
    # exactly zero off the face (the smooth weights only fade), and on the eyeballs
    dirs *= np.clip((R.face_weight(mesh.vertices) - 0.02) / 0.98, 0.0, 1.0)[:, None, None]
    dirs[mesh.eyeballs.ravel()] = 0.0
    return dirs


def build_posedirs(mesh: HeadMesh, rng: np.random.Generator) -> np.ndarray:
    """(V, 3, 36) pose correctives, about 1 mm at most per unit of (R - I); zero for the eye joints."""
    dirs = np.zeros((len(mesh.vertices), 3, N_POSE))
    head = mesh.head
    neck = lambda p: R.neck_weight(p) * (1.0 - R.root_weight(p))  # noqa: E731
    under_jaw = lambda p: R.neck_weight(p) * R.sigmoid((p[:, 2] + 0.02) / 0.01)  # noqa: E731
    jaw = lambda p: np.clip(R.jaw_weight(p) + 0.5 * under_jaw(p), 0.0, 1.0)  # noqa: E731
    for joint, region in ((1, neck), (2, jaw)):
        fields = random_fields(mesh, 9, [(9, 0.04)], np.full(9, 1.0), rng, weight=region)
        peak = np.linalg.norm(fields[head], axis=1).max(0)
        dirs[:, :, 9 * (joint - 1): 9 * joint] = fields * (0.001 / np.maximum(peak, 1e-12))[None, None, :]
    dirs[mesh.eyeballs.ravel()] = 0.0
    return dirs
