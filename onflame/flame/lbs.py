"""FLAME's math in one place: axis-angle rotations, kinematics and linear blend skinning.

All functions are differentiable and work for any float dtype / device. Shapes use B batch items,
V vertices and J joints. Skinning works *batch-last*: vertices are (V, 3, B), so that the blendshape
product (3V, C) x (C, B) and the skinning product (V, J) x (J, 12 B) are single plain matrix products
and the per-vertex 3 x 4 transforms are applied by a few element-wise passes over contiguous memory.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: Below this squared angle (rad²) Rodrigues' coefficients use their Taylor series (exact to 1e-18).
_SMALL_ANGLE2 = 1e-8


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) in radians (Rodrigues' formula).

    ``R = I + a K + b K²`` with ``K`` the cross-product matrix of ``aa``, ``a = sin θ / θ`` and
    ``b = (1 - cos θ) / θ²``, the latter written as ``2 sin²(θ/2) / θ²`` so that it keeps full precision
    for small angles in float32. Near θ = 0 both use their Taylor series, so values and gradients stay
    finite at the zero pose.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)
    small = theta2 < _SMALL_ANGLE2
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()  # never 0: sqrt's gradient stays finite
    half_sinc = torch.sin(theta / 2) / (theta / 2)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, 0.5 * half_sinc * half_sinc)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def joint_levels(parents: list[int]) -> list[list[int]]:
    """Group joints by depth in the tree, so each level is posed in one batched step.

    FLAME: ``[[0], [1], [2, 3, 4]]`` (root; neck; jaw and both eyes).
    """
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j, d in enumerate(depth) if d == level] for level in range(max(depth) + 1)]


def skinning_transforms(rot: Tensor, joints: Tensor, parents: list[int], levels: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Per-joint skinning transforms (B, J, 3, 4) and posed joint positions (B, J, 3).

    Args:
        rot: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest-pose joint positions (metres).
        parents: parent of each joint (-1 for the root).
        levels: :func:`joint_levels` of ``parents``.

    Returns:
        ``(A, posed)``: ``A[b, j] = [R_j | t_j]`` maps a rest-pose point to its posed place when bound
        entirely to joint j, and ``posed`` are the posed joint positions.
    """
    J = joints.shape[1]
    glob_R: list[Tensor] = [rot[:, 0]] * J
    glob_t: list[Tensor] = [joints[:, 0]] * J
    for level in levels[1:]:  # one batched step per tree level, not per joint
        par = [parents[j] for j in level]
        pR = torch.stack([glob_R[p] for p in par], 1)                                 # (B, L, 3, 3)
        rel = joints[:, level] - joints[:, par]
        R = pR @ rot[:, level]
        t = torch.stack([glob_t[p] for p in par], 1) + (pR @ rel.unsqueeze(-1)).squeeze(-1)
        for k, j in enumerate(level):
            glob_R[j], glob_t[j] = R[:, k], t[:, k]
    R, posed = torch.stack(glob_R, 1), torch.stack(glob_t, 1)
    # remove the rest pose: a point bound to joint j moves by R_j (x - J_j) + posed_j
    t = posed - (R @ joints.unsqueeze(-1)).squeeze(-1)
    return torch.cat([R, t.unsqueeze(-1)], -1), posed


def blend_transforms(weights: Tensor, transforms: Tensor) -> Tensor:
    """Each vertex's skinning transform, batch-last: (V, 3, 4, B) = ``weights`` (V, J) x ``transforms`` (B, J, 3, 4)."""
    B, J = transforms.shape[:2]
    return (weights @ transforms.permute(1, 2, 3, 0).reshape(J, 12 * B)).view(-1, 3, 4, B)


def apply_transforms(T: Tensor, vertices: Tensor, offset: Tensor | None = None) -> Tensor:
    """``T[:, :, :3] @ v + T[:, :, 3] (+ offset)`` for batch-last vertices (V, 3, B).

    ``T`` is (V, 3, 4, B), one transform per vertex, or (1, 3, 4, B), one per batch item (rigid motion).
    ``offset`` (3, B), e.g. a translation, is added in the same pass. Returns (V, 3, B).
    """
    return _ApplyTransforms.apply(T, vertices, offset)


class _ApplyTransforms(torch.autograd.Function):
    """:func:`apply_transforms` as a few element-wise passes, with its backward written out.

    Autograd's own backward of the same passes handles T's four columns and the three coordinates one
    by one and stacks the pieces again: about twice the memory traffic of the backward written here
    (one pass for T's gradient, three for the vertices'). It is made of differentiable operations, so
    higher derivatives still work.
    """

    @staticmethod
    def forward(ctx, T: Tensor, vertices: Tensor, offset: Tensor | None) -> Tensor:
        ctx.save_for_backward(T, vertices)
        R0, R1, R2, t = T.unbind(2)
        x, y, z = (c.unsqueeze(1) for c in vertices.unbind(1))
        out = torch.addcmul(t if offset is None else t + offset, R0, x)
        return out.addcmul_(R1, y).addcmul_(R2, z)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        T, vertices = ctx.saved_tensors
        grad = grad.contiguous()                                                   # (V, 3, B)
        grad_T = grad_v = grad_offset = None
        if ctx.needs_input_grad[0]:  # d out[k] / d T[k, l] = (x, y, z, 1)[l]
            homogeneous = torch.cat([vertices, torch.ones_like(vertices[:, :1])], 1)  # (V, 4, B)
            if T.shape[0] == 1:
                grad_T = torch.einsum("vkb,vlb->klb", grad, homogeneous).unsqueeze(0)
            else:
                grad_T = grad.unsqueeze(2) * homogeneous.unsqueeze(1)              # (V, 3, 4, B)
        if ctx.needs_input_grad[1]:  # d out[k] / d v[l] = R[k, l]: the gradient is Rᵀ grad
            R = T[:, :, :3]
            grad_v = R[:, 0] * grad[:, 0:1]
            grad_v = grad_v.addcmul_(R[:, 1], grad[:, 1:2]).addcmul_(R[:, 2], grad[:, 2:3])
        if ctx.needs_input_grad[2]:
            grad_offset = grad.sum(0)
        return grad_T, grad_v, grad_offset


def points_on_surface(vertices: Tensor, corner_idx: Tensor, bary: Tensor) -> Tensor:
    """Points (B, N, 3) on a mesh from triangle corners ``corner_idx`` ((B,) N, 3) and ``bary`` ((B,) N, 3)."""
    B = vertices.shape[0]
    if corner_idx.dim() == 2:
        corners = vertices[:, corner_idx]  # (B, N, 3, 3)
    else:
        batch = torch.arange(B, device=vertices.device).view(B, 1, 1)
        corners = vertices[batch, corner_idx]
    return (bary.unsqueeze(-1) * corners).sum(-2)


def yaw_from_rotation(R: Tensor) -> Tensor:
    """Rotation about +y in radians, (B,), from rotation matrices (B, 3, 3) (y-x-z Euler order)."""
    return torch.atan2(-R[:, 2, 0], torch.sqrt(R[:, 0, 0] ** 2 + R[:, 1, 0] ** 2))
