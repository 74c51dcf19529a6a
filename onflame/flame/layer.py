"""The FLAME layer: a batched, differentiable PyTorch module from parameters to meshes.

Everything that does not depend on the inputs is computed once in ``__init__``: the blendshape bases
as one (C, 3V) matrix, the joints' own blendshape basis (so joints cost a (B, C) x (C, 3J) product instead
of regressing them from every vertex), the triangle corners of each landmark, and the joint tree's
levels. Vertices are computed batch-last, (V, 3, B), in cache-sized chunks of vertices, and turned to
(B, V, 3) once at the end (see :mod:`.lbs` and :meth:`FLAME._vertices`). When no joint other than the
root is rotated (and no gradient flows to the pose), pose correctives and per-vertex skinning reduce to
one rigid motion per head; at the zero pose to none.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from . import lbs
from .model import FlameModel
from .params import FlameParams

#: Joint whose global rotation sets the contour's yaw: the neck, as in FLAME's TensorFlow code, DECA and
#: MICA. smplx's FLAME uses the root (0); pass ``contour_joint=0`` for its exact contour.
NECK = 1
#: Largest yaw (degrees) the dynamic contour embedding covers; it has 2 * 39 + 1 rows.
MAX_CONTOUR_YAW = 39
#: Numbers in one chunk's per-vertex skinning transforms on the CPU (4 MB in float32): stays in cache.
_CHUNK_NUMBERS = 1 << 20


@dataclass
class FlameOutput:
    """What :class:`FLAME` returns; every tensor has a leading batch axis B and is in metres.

    Attributes:
        vertices: (B, V, 3) posed, translated vertices.
        joints: (B, J, 3) posed joint positions.
        landmarks: (B, 51, 3) static landmarks, if the model has a 51-point embedding.
        landmarks68: (B, 68, 3) static 68-point landmarks, if the model has that embedding.
        contour: (B, 17, 3) yaw-dependent jaw-contour landmarks, if the model has the dynamic embedding.
    """

    vertices: Tensor
    joints: Tensor
    landmarks: Tensor | None = None
    landmarks68: Tensor | None = None
    contour: Tensor | None = None


class FLAME(nn.Module):
    """FLAME as a PyTorch module.

    Args:
        model: the model arrays (see :func:`onflame.flame.load_model`).
        n_shape: identity coefficients used (≤ the model's, 300 for FLAME).
        n_expression: expression coefficients used (≤ the model's, 100 for FLAME).
        dtype: floating dtype of the buffers; ``.to(...)`` moves and casts as for any module.
        contour_joint: joint whose global yaw selects the dynamic contour row (1, the neck, as in MICA
            and DECA; 0 as in smplx).
        convention: landmark convention family of the ``landmarks`` / ``landmarks68`` outputs
            (``"mica"``, ``"flame"``; see :mod:`onflame.flame.embedding`); None: the model's default.

    Call with tensors ``shape`` (B, ≤ n_shape), ``expression`` (B, ≤ n_expression), ``pose`` as FLAME's
    (B, 15) or (B, 5, 3) axis-angle (global, neck, jaw, left eye, right eye) or MICA's (B, 6) (global,
    jaw), and ``trans`` (B, 3); any may be omitted (zeros). Or call with a :class:`FlameParams`.
    """

    def __init__(self, model: FlameModel, n_shape: int = 300, n_expression: int = 100,
                 dtype: torch.dtype = torch.float32, contour_joint: int = NECK, convention: str | None = None):
        super().__init__()
        n_shape = min(n_shape, model.n_shape)
        n_expression = min(n_expression, model.n_expression)
        self.n_shape, self.n_expression = n_shape, n_expression
        self.parents = model.parents.tolist()
        self.levels = lbs.joint_levels(self.parents)
        V, J = model.n_vertices, model.n_joints

        dirs = np.concatenate([model.shapedirs[:, :, :n_shape], model.exprdirs[:, :, :n_expression]], 2)
        f = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)  # noqa: E731
        self.register_buffer("v_template", f(model.v_template.reshape(-1)))        # (3V,)
        self.register_buffer("blend_basis", f(dirs.reshape(3 * V, -1)))            # (3V, C)
        self.register_buffer("j_template", f((model.J_regressor @ model.v_template).reshape(-1)))  # (3J,)
        self.register_buffer("j_dirs", f(np.einsum("jv,vkc->cjk", model.J_regressor, dirs).reshape(dirs.shape[2], -1)))  # (C, 3J)
        self.register_buffer("pose_basis", f(model.posedirs.reshape(3 * V, -1)))   # (3V, 9(J-1))
        self.register_buffer("weights", f(model.weights))                          # (V, J)
        self.register_buffer("faces", torch.as_tensor(model.faces, dtype=torch.long))
        self.n_vertices, self.n_joints = V, J

        emb = model.landmarks
        static51, full68 = emb.static51, emb.full68
        if convention is not None:
            static51, full68 = (emb.conventions.get(f"{convention}{n}") for n in (51, 68))
            if static51 is None and full68 is None:
                raise ValueError(f"model has no {convention!r} landmarks; it has {sorted(emb.conventions)}")
        for name, pts in (("static51", static51), ("full68", full68), ("dynamic", emb.dynamic)):
            corners = None if pts is None else torch.as_tensor(model.faces[pts.face_idx], dtype=torch.long)
            # weights summing to exactly 1 (MICA stores them in float32) keep landmarks on the translated mesh
            bary = None if pts is None else f(pts.bary / pts.bary.sum(-1, keepdims=True))
            self.register_buffer(f"{name}_corners", corners)
            self.register_buffer(f"{name}_bary", bary)
        # the neck's chain to the root, child first: its global rotation decides the contour's yaw
        chain = [contour_joint]
        while self.parents[chain[-1]] >= 0:
            chain.append(self.parents[chain[-1]])
        self.neck_chain = chain
        # skipping per-vertex skinning for a rigid head needs each vertex's weights to sum to 1
        self.rigid_ok = bool(np.abs(model.weights.sum(1) - 1).max() < 1e-6)

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    def vertices_of(self, params: list[FlameParams]) -> np.ndarray:
        """(B, V, 3) vertices of FLAME(params) for B parameter sets, as numpy, without gradients; shape
        and expression coefficients beyond the layer's are dropped (they cannot be evaluated)."""
        stacked = FlameParams(np.stack([p.shape[:self.n_shape] for p in params]),
                              np.stack([p.expression[:self.n_expression] for p in params]),
                              np.stack([p.pose for p in params]), np.stack([p.trans for p in params]))
        with torch.no_grad():
            return self(stacked).vertices.cpu().numpy()

    def forward(self, shape: Tensor | FlameParams | None = None, expression: Tensor | None = None,
                pose: Tensor | None = None, trans: Tensor | None = None) -> FlameOutput:
        if isinstance(shape, FlameParams):
            p = shape.to_torch(dtype=self.dtype, device=self.v_template.device)
            shape, expression, pose, trans = p["shape"], p["expression"], p["pose"], p["trans"]
        B = next((t.shape[0] for t in (shape, expression, pose, trans) if t is not None), 1)
        coeffs = self._coefficients(shape, expression, B)
        J = self.n_joints
        joints = torch.addmm(self.j_template, coeffs, self.j_dirs).view(B, J, 3)
        offset = None if trans is None else trans.reshape(B, 3).to(self.dtype).t()           # (3, B)
        rot = pose_feature = skin = rigid = None
        posed_joints = joints
        if pose is not None:
            pose = self._full_pose(pose.to(self.dtype), B)
            rot = lbs.axis_angle_to_matrix(pose)                                                # (B, J, 3, 3)
            A, posed_joints = lbs.skinning_transforms(rot, joints, self.parents, self.levels)
            turned = self._turned_joints(pose)
            if turned == "root":  # every vertex moves rigidly with the root: one transform per head
                rigid = A[:, 0].permute(1, 2, 0).unsqueeze(0)                                  # (1, 3, 4, B)
            elif turned == "all":  # pose correctives and per-vertex skinning
                pose_feature = (rot[:, 1:] - torch.eye(3, dtype=rot.dtype, device=rot.device)).reshape(B, -1)
                skin = A
        vertices = self._vertices(coeffs, offset, pose_feature, skin, rigid)
        joints = posed_joints if trans is None else posed_joints + offset.t().unsqueeze(1)
        return FlameOutput(vertices, joints, **self._landmarks(vertices, rot, B))

    def _vertices(self, coeffs: Tensor, offset: Tensor | None, pose_feature: Tensor | None = None,
                  skin: Tensor | None = None, rigid: Tensor | None = None) -> Tensor:
        """Vertices (B, V, 3) from blendshape coefficients (B, C) and a translation ``offset`` (3, B), with
        pose correctives (``pose_feature`` (B, 9(J-1))) and per-joint skinning transforms ``skin``
        (B, J, 3, 4), or one ``rigid`` transform (1, 3, 4, B) for the whole head, or neither.

        Vertices are built batch-last, (V, 3, B) (see :mod:`.lbs`), in chunks of vertices on the CPU: each
        chunk's per-vertex transforms (12 B numbers a vertex) are used while still in cache. At B = 128 the
        whole (V, 3, 4, B) array is 31 MB and skinning it through main memory takes twice as long.
        """
        B, V = coeffs.shape[0], self.n_vertices
        basis = self.blend_basis                                                            # (3V, C)
        step = V if coeffs.device.type != "cpu" else max(1, _CHUNK_NUMBERS // (12 * B))
        chunks = []
        for s in range(0, V, step):
            e = min(s + step, V)
            v = torch.addmm(self.v_template[3 * s:3 * e, None], basis[3 * s:3 * e], coeffs.t())   # (3Vc, B)
            T = rigid
            if skin is not None:
                v = v.addmm_(self.pose_basis[3 * s:3 * e], pose_feature.t())  # in place: no second buffer
                T = lbs.blend_transforms(self.weights[s:e], skin)                               # (Vc, 3, 4, B)
            v = v.view(e - s, 3, B)
            if T is not None:
                v = lbs.apply_transforms(T, v, offset)
            elif offset is not None:
                v = v + offset
            chunks.append(v.permute(2, 0, 1))
        return torch.cat(chunks, 1) if len(chunks) > 1 else chunks[0].contiguous()

    def _landmarks(self, vertices: Tensor, rot: Tensor | None, B: int) -> dict[str, Tensor]:
        """Every landmark set as points (B, N, 3) on the output (translated) mesh ``vertices`` (B, V, 3).

        All sets are gathered at once, so that the backward pass scatters into one zero-filled (B, V, 3)
        gradient rather than one per set.
        """
        sets = [(field, getattr(self, f"{name}_corners"), getattr(self, f"{name}_bary"))
                for field, name in (("landmarks", "static51"), ("landmarks68", "full68"))]
        sets = [(field, c.expand(B, -1, -1), b.expand(B, -1, -1)) for field, c, b in sets if c is not None]
        if self.dynamic_corners is not None:
            row = self.contour_row(rot, B)
            sets.append(("contour", self.dynamic_corners[row], self.dynamic_bary[row]))
        if not sets:
            return {}
        fields, corners, bary = zip(*sets)
        points = lbs.points_on_surface(vertices, torch.cat(corners, 1), torch.cat(bary, 1))
        return dict(zip(fields, points.split([c.shape[1] for c in corners], 1)))

    def _turned_joints(self, pose: Tensor) -> str:
        """Which joints ``pose`` (B, J, 3) rotates: ``"none"``, only the ``"root"``, or ``"all"``.

        Anything but ``"all"`` lets :meth:`forward` skip the pose correctives and per-vertex skinning,
        which is exact only when no gradient must flow to the pose (its derivative is not zero at rest)
        and each vertex's skinning weights sum to 1.
        """
        if not self.rigid_ok or (pose.requires_grad and torch.is_grad_enabled()):
            return "all"
        moving = pose.detach().ne(0).any(2).any(0).tolist()  # (J,): one device sync for all joints
        if any(moving[1:]):
            return "all"
        return "root" if moving[0] else "none"

    def contour_row(self, rot: Tensor | None, B: int) -> Tensor:
        """Row (B,) of the dynamic embedding for each head's yaw: 0..39 for yaw ≤ 0°, 40..78 for yaw > 0°.

        The yaw is that of the neck's global rotation, rounded to whole degrees and clamped to ±39°
        (the layout of FLAME's dynamic embedding).
        """
        if rot is None:
            return torch.zeros(B, dtype=torch.long, device=self.v_template.device)
        R = rot[:, self.neck_chain[0]]
        for j in self.neck_chain[1:]:
            R = rot[:, j] @ R
        deg = torch.round(-lbs.yaw_from_rotation(R) * (180.0 / np.pi)).clamp(max=MAX_CONTOUR_YAW).long()
        return torch.where(deg < 0, (MAX_CONTOUR_YAW - deg).clamp(max=2 * MAX_CONTOUR_YAW), deg).detach()

    def _coefficients(self, shape: Tensor | None, expression: Tensor | None, B: int) -> Tensor:
        """(B, n_shape + n_expression): the given coefficients, zero-padded to the layer's counts."""
        parts = []
        for x, n, name in ((shape, self.n_shape, "shape"), (expression, self.n_expression, "expression")):
            if x is None:
                parts.append(torch.zeros(B, n, dtype=self.dtype, device=self.v_template.device))
            elif x.shape[-1] > n:
                raise ValueError(f"{name} has {x.shape[-1]} coefficients; this layer uses {n}")
            else:
                parts.append(nn.functional.pad(x.reshape(B, -1).to(self.dtype), (0, n - x.shape[-1])))
        return torch.cat(parts, 1)

    def _full_pose(self, pose: Tensor, B: int) -> Tensor:
        J = self.n_joints
        if pose.dim() == 3:
            pose = pose.reshape(B, -1)
        if pose.shape[-1] == 3 * J:
            return pose.view(B, J, 3)
        if pose.shape[-1] == 6 and J == 5:  # MICA: global and jaw; neck and eyes at rest
            z = torch.zeros(B, 3, dtype=pose.dtype, device=pose.device)
            return torch.stack([pose[:, :3], z, pose[:, 3:], z, z], 1)
        raise ValueError(f"pose has {pose.shape[-1]} values; expected {3 * J} (FLAME) or 6 (MICA: global + jaw)")
