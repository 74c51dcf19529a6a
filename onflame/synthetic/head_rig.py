"""Rigging the procedural head as FLAME: region masks, joint regressor and skinning weights.

Joints, in FLAME's order with parents ``[-1, 0, 1, 1, 1]``:

0. global (root): mean of the neck's open rim, at the neck base;
1. neck: mean of the left and right sides of the neck, 13 cm below the eyes (on the neck's axis);
2. jaw: mean of two skin patches in front of the ears, at the hinge height (x = 0 by symmetry);
3. left eye, 4. right eye: mean of each eyeball's vertices, its centre.

Every regressor row averages a vertex set, so joints follow the shape blendshapes.
"""
from __future__ import annotations

import numpy as np

from . import anatomy as A
from . import head_regions as R
from .head_mesh import HeadMesh

#: FLAME's mask names (FLAME_masks.pkl) in the order they are built here.
MASK_NAMES = ("face", "eye_region", "left_eye_region", "right_eye_region", "left_eyeball", "right_eyeball",
              "nose", "lips", "forehead", "scalp", "neck", "left_ear", "right_ear", "boundary")
PARENTS = np.array([-1, 0, 1, 1, 1], dtype=np.int64)
#: Height (m) of the band of neck skin whose mean is the neck joint.
NECK_JOINT_Y = -0.110


def build_masks(mesh: HeadMesh) -> dict[str, np.ndarray]:
    """FLAME-named region masks: name -> sorted vertex indices (K,) int64.

    As in FLAME, the eyeballs and the ears share no vertex with any other region, lips and nose are
    disjoint, the face holds the eye regions, nose, lips and forehead, and the neck shares nothing with
    the face.
    """
    head = mesh.head
    p = mesh.vertices[head]
    sel = lambda w: head[w > 0.5]  # noqa: E731
    ears = {"left_ear": head[(R.ear_weight(p) > 0.5) & (p[:, 0] > 0)],
            "right_ear": head[(R.ear_weight(p) > 0.5) & (p[:, 0] < 0)]}
    nose = sel(R.nose_weight(p))
    lips = sel(R.lips_weight(p))
    left_eye = sel(R.eye_region_weight(p, +1))
    right_eye = sel(R.eye_region_weight(p, -1))
    eye_region = np.union1d(np.union1d(left_eye, right_eye),
                            head[(np.abs(p[:, 0]) < 0.058) & (p[:, 1] > 0.006) & (p[:, 1] < 0.055) & (p[:, 2] > 0.016)])
    eye_region = np.setdiff1d(eye_region, nose)
    forehead = sel(R.forehead_weight(p))
    face = np.union1d(sel(R.face_weight(p)), np.concatenate([eye_region, nose, lips, forehead]))
    boundary = head[mesh.ring[head] >= mesh.ring.max() - 1]
    neck = np.setdiff1d(sel(R.neck_weight(p)), face)
    masks = {
        "face": face, "eye_region": eye_region, "left_eye_region": left_eye, "right_eye_region": right_eye,
        "left_eyeball": mesh.eyeballs[0], "right_eyeball": mesh.eyeballs[1], "nose": nose, "lips": lips,
        "forehead": forehead, "scalp": sel(R.scalp_weight(p)), "neck": neck, "boundary": boundary, **ears,
    }
    ear_all = np.concatenate(list(ears.values()))
    for name in MASK_NAMES:
        if name not in ("left_ear", "right_ear", "left_eyeball", "right_eyeball"):
            masks[name] = np.setdiff1d(masks[name], ear_all)
    return {name: np.asarray(masks[name], dtype=np.int64) for name in MASK_NAMES}


def build_joint_regressor(mesh: HeadMesh) -> np.ndarray:
    """(5, V) joint regressor; each row is the uniform average of one vertex set (see module doc)."""
    v = mesh.vertices
    head = mesh.head
    rows = np.zeros((5, len(v)))
    rows[0, mesh.rim] = 1.0
    # the sides of a 2 cm band of neck skin: their mean is on the neck's axis
    p = v[head]
    band = (np.abs(p[:, 1] - NECK_JOINT_Y) < 0.01) & (R.neck_weight(p) > 0.5) & (np.abs(p[:, 0]) > 0.045)
    rows[1, head[band]] = 1.0
    # skin within 13 mm of the point in front of each ear at the hinge's height and depth
    s = p.copy()
    s[:, 0] = np.abs(s[:, 0])
    hinge_skin = A.CONDYLE + [0.012, 0.0, 0.0]
    rows[2, head[np.linalg.norm(s - hinge_skin, axis=1) < 0.013]] = 1.0
    rows[3, mesh.eyeballs[0]] = 1.0
    rows[4, mesh.eyeballs[1]] = 1.0
    return rows / rows.sum(1, keepdims=True)


def build_weights(mesh: HeadMesh) -> np.ndarray:
    """(V, 5) skinning weights, rows summing to 1.

    Root for the bottom of the neck, jaw for the lower face and chin (sharp at the mouth line, smooth
    on the cheeks and under the jaw), neck for the rest of the head, each eyeball rigidly on its eye.
    """
    v = mesh.vertices
    w = np.zeros((len(v), 5))
    p = v[mesh.head]
    root = R.root_weight(p)
    jaw = R.jaw_weight(p) * (1.0 - root)
    w[mesh.head, 0] = root
    w[mesh.head, 2] = jaw
    w[mesh.head, 1] = np.clip(1.0 - root - jaw, 0.0, 1.0)
    w[mesh.eyeballs[0], 3] = 1.0
    w[mesh.eyeballs[1], 4] = 1.0
    return w / w.sum(1, keepdims=True)
