"""FLAME's math in one place: blendshapes, axis-angle rotations, kinematics and linear blend skinning.

All functions are batched over a leading axis B, differentiable, and work for any float dtype / device.
Shapes use V vertices, J joints and C = S + E blendshape coefficients.
"""
from __future__ import annotations

import torch
from torch import Tensor


def axis_angle_to_matrix(aa: Tensor) -> Tensor:
    """Rotation matrices (..., 3, 3) from axis-angle vectors (..., 3) (Rodrigues' formula).

    ``R = I + a K + b K²`` with ``K`` the cross-product matrix of ``aa``, ``a = sin θ / θ`` and
    ``b = (1 - cos θ) / θ²``; near θ = 0 both use their Taylor series, so values and gradients stay
    finite at the zero pose.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe2)
    x, y, z = aa.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + a[..., None] * K + b[..., None] * (K @ K)


def joint_levels(parents: list[int]) -> list[list[int]]:
    """Group joints by depth in the tree, so each level is posed in one batched step.

    FLAME: ``[[0], [1], [2, 3, 4]]`` (root; neck; jaw and both eyes).
    """
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        depth[j] = depth[parents[j]] + 1
    return [[j for j, d in enumerate(depth) if d == level] for level in range(max(depth) + 1)]


def skinning_transforms(rot: Tensor, joints: Tensor, parents: list[int], levels: list[list[int]]) -> Tensor:
    """Per-joint skinning transforms (B, J, 3, 4) and posed joint positions.

    Args:
        rot: (B, J, 3, 3) local joint rotations.
        joints: (B, J, 3) rest-pose joint positions.
        parents: parent of each joint (-1 for the root).
        levels: :func:`joint_levels` of ``parents``.

    Returns:
        ``(A, posed)``: ``A[b, j] = [R_j | t_j]`` maps a rest-pose point to its posed place when bound
        entirely to joint j, and ``posed`` (B, J, 3) are the posed joint positions.
    """
    B, J = joints.shape[:2]
    glob_R = [None] * J
    glob_t = [None] * J
    root = levels[0]
    glob_R[root[0]] = rot[:, root[0]]
    glob_t[root[0]] = joints[:, root[0]]
    for level in levels[1:]:
        par = [parents[j] for j in level]
        pR = torch.stack([glob_R[p] for p in par], 1)  # (B, L, 3, 3)
        pt = torch.stack([glob_t[p] for p in par], 1)  # (B, L, 3)
        rel = joints[:, level] - joints[:, par]
        R = pR @ rot[:, level]
        t = pt + (pR @ rel.unsqueeze(-1)).squeeze(-1)
        for k, j in enumerate(level):
            glob_R[j], glob_t[j] = R[:, k], t[:, k]
    R = torch.stack(glob_R, 1)
    posed = torch.stack(glob_t, 1)
    # remove the rest pose: a point bound to joint j moves by R_j (x - J_j) + posed_j
    t = posed - (R @ joints.unsqueeze(-1)).squeeze(-1)
    return torch.cat([R, t.unsqueeze(-1)], -1), posed


def linear_blend_skinning(vertices: Tensor, weights: Tensor, transforms: Tensor) -> Tensor:
    """Skin rest-pose ``vertices`` (B, V, 3) with ``weights`` (V, J) and ``transforms`` (B, J, 3, 4)."""
    B, J = transforms.shape[:2]
    T = torch.matmul(weights, transforms.reshape(B, J, 12)).reshape(B, -1, 3, 4)  # (B, V, 3, 4)
    return (T[..., :3] @ vertices.unsqueeze(-1)).squeeze(-1) + T[..., 3]


def rigid_transform(vertices: Tensor, rot: Tensor, center: Tensor) -> Tensor:
    """Rotate ``vertices`` (B, N, 3) by ``rot`` (B, 3, 3) about ``center`` (B, 3)."""
    c = center.unsqueeze(1)
    return (vertices - c) @ rot.transpose(1, 2) + c


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
