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
    """(..., 6) -> (..., 3, 3) rotations by Gram–Schmidt on the two 3-vectors.

    The same numbers as ``roma.special_gramschmidt`` on the columns (tested), written
    out because this column-first layout reaches roma only through a transposed
    view, which was not faster (docs/conventions.md).
    """
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

    :func:`roma.rotmat_to_rotvec`: a unit quaternion by Markley's variant of
    Shepperd's method (the best-conditioned of four candidates), then its
    rotation vector with a series for sin(x)/x near 0, so values and gradients
    are finite at angle 0 and accurate up to pi (tools/bench_replacements.py).
    """
    return roma.rotmat_to_rotvec(R)


def axis_angle_to_rot6d(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 6)."""
    shape = aa.shape[:-1]
    R = axis_angle_to_matrix(aa.reshape(-1, 3)).reshape(*shape, 3, 3)
    return matrix_to_rot6d(R)


def rot6d_to_axis_angle(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3) axis-angle."""
    return matrix_to_axis_angle(rot6d_to_matrix(x))
