"""onflame's embedded default model: a procedural head with exactly FLAME's structure.

FLAME itself is licensed and cannot ship with onflame, so :func:`make_head_model` builds a stand-in
from code alone (no data files): its own topology of about 5,200 vertices (head surface with an open
neck rim, two separate eyeballs), in FLAME's frame and size (metres, +y up, face towards +z), with
FLAME's five joints, 300 identity / 100 expression / 36 pose-corrective blendshapes, skinning weights,
51- / 68-point and dynamic-contour landmark embeddings and FLAME-named region masks. Everything that
reads a FLAME model (the layer, registration, rendering, the dataset tools) works on it unchanged.

The mean shape, topology, joints, weights, landmarks and masks are fixed; ``seed`` only draws the
random part of the bases (identity components 17-299, expression 20-99 and the pose correctives).
"""
from __future__ import annotations

import numpy as np

from ..flame.model import FlameModel
from .head_bases import build_exprdirs, build_posedirs, build_shapedirs
from .head_landmarks import build_landmarks
from .head_mesh import build_head_mesh
from .head_rig import PARENTS, build_joint_regressor, build_masks, build_weights


def make_head_model(seed: int = 0) -> FlameModel:
    """Build the procedural FLAME-structured head model (deterministic for a given ``seed``; ~1 s).

    Returns:
        A :class:`FlameModel` with ``v_template`` (V, 3) in metres, ``faces`` (F, 3), ``shapedirs``
        (V, 3, 300), ``exprdirs`` (V, 3, 100), ``posedirs`` (V, 3, 36), ``J_regressor`` (5, V),
        ``weights`` (V, 5), ``parents`` [-1, 0, 1, 1, 1], the landmark embeddings and 14 masks;
        ``source`` is ``"onflame procedural head (seed N)"``.
    """
    rng = np.random.default_rng(seed)
    mesh = build_head_mesh()
    masks = build_masks(mesh)
    n_head_faces = int((mesh.faces < len(mesh.head)).all(1).sum())
    return FlameModel(
        v_template=mesh.vertices,
        faces=mesh.faces,
        shapedirs=build_shapedirs(mesh, rng),
        exprdirs=build_exprdirs(mesh, rng),
        posedirs=build_posedirs(mesh, rng),
        J_regressor=build_joint_regressor(mesh),
        weights=build_weights(mesh),
        parents=PARENTS.copy(),
        landmarks=build_landmarks(mesh, masks, n_head_faces),
        masks=masks,
        source=f"onflame procedural head (seed {seed})",
    )
