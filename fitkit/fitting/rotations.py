"""Rotation parameterizations for fitting: axis-angle and the continuous 6D form.

The 6D form (Zhou et al., CVPR 2019) stores the first two columns of a
rotation matrix; Gram–Schmidt turns any 6 numbers back into a rotation, so a
gradient step can never leave SO(3) and there is no singularity at pi.
"""
from __future__ import annotations

import roma
import torch

from fitkit.body.lbs import axis_angle_to_matrix

__all__ = ["axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_rot6d", "rot6d_to_matrix",
           "axis_angle_to_rot6d", "rot6d_to_axis_angle", "interleaved_rot6d_to_matrix",
           "matrix_to_interleaved_rot6d"]


def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations -> (..., 6): first column then second column."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotations by Gram–Schmidt on the two 3-vectors."""
    a, b = x[..., :3], x[..., 3:]
    c0 = torch.nn.functional.normalize(a, dim=-1)
    b = b - (c0 * b).sum(-1, keepdim=True) * c0
    c1 = torch.nn.functional.normalize(b, dim=-1)
    c2 = torch.linalg.cross(c0, c1, dim=-1)
    return torch.stack([c0, c1, c2], dim=-1)


def interleaved_rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3): the 6 numbers read row-major as a (3, 2) matrix whose
    columns are made orthonormal (the layout of HMR-style regressors and VPoser, and
    of fitkit's SMPLR and DaNet heads; not :func:`rot6d_to_matrix`'s column order)."""
    return roma.special_gramschmidt(x.reshape(*x.shape[:-1], 3, 2))


def matrix_to_interleaved_rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6), the inverse of :func:`interleaved_rot6d_to_matrix` on rotations."""
    return R[..., :2].reshape(*R.shape[:-2], 6)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations -> (..., 3) axis-angle with angle in [0, pi].

    Goes through a unit quaternion chosen with the largest of its four
    components computed directly (numerically safe near 0 and near pi).
    """
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Squared quaternion components, each from a different combination of the diagonal.
    cand = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], dim=-1)
    k = cand.argmax(dim=-1, keepdim=True)
    s = torch.sqrt(cand.gather(-1, k).clamp(min=1e-12)) * 2  # 4 * |q_k|
    s = s[..., 0]
    w_from = torch.stack([
        torch.stack([s / 4, (m[..., 2, 1] - m[..., 1, 2]) / s, (m[..., 0, 2] - m[..., 2, 0]) / s,
                     (m[..., 1, 0] - m[..., 0, 1]) / s], -1),
        torch.stack([(m[..., 2, 1] - m[..., 1, 2]) / s, s / 4, (m[..., 0, 1] + m[..., 1, 0]) / s,
                     (m[..., 0, 2] + m[..., 2, 0]) / s], -1),
        torch.stack([(m[..., 0, 2] - m[..., 2, 0]) / s, (m[..., 0, 1] + m[..., 1, 0]) / s, s / 4,
                     (m[..., 1, 2] + m[..., 2, 1]) / s], -1),
        torch.stack([(m[..., 1, 0] - m[..., 0, 1]) / s, (m[..., 0, 2] + m[..., 2, 0]) / s,
                     (m[..., 1, 2] + m[..., 2, 1]) / s, s / 4], -1),
    ], dim=-2)  # (..., 4 choices, 4 quaternion components w, x, y, z)
    q = w_from.gather(-2, k[..., None].expand(*k.shape[:-1], 1, 4))[..., 0, :]
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0 -> angle in [0, pi]
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle/2) -> 2 as the angle -> 0
    factor = torch.where(sin_half > 1e-6, angle / sin_half.clamp(min=1e-12), 2.0 + angle * angle / 12)
    return vec * factor


def axis_angle_to_rot6d(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 6)."""
    shape = aa.shape[:-1]
    R = axis_angle_to_matrix(aa.reshape(-1, 3)).reshape(*shape, 3, 3)
    return matrix_to_rot6d(R)


def rot6d_to_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3) axis-angle."""
    return matrix_to_axis_angle(rot6d_to_matrix(x))
