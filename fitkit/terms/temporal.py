"""Temporal smoothness terms for sequence stages (``sequence: true``).

All three are priors on the motion of one chunk of consecutive frames (see
:mod:`fitkit.fitting.sequence`); they read no observations. With ``X_t`` the
(J, 3) skeleton joints of frame t in the camera frame (meters):

- ``joint_acceleration`` -- seed 000's Eq. 12 used as a penalty: residuals
  ``X_{t-1} - 2 X_t + X_{t+1}`` for every three consecutive frames (meters per
  frame squared). Against ground truth the same difference is the accel-error
  metric (:func:`fitkit.eval.metrics.accel_error`).
- ``joint_velocity`` -- residuals ``X_{t+1} - X_t`` (meters per frame).
- ``pose_rate`` -- residuals ``R_{t+1} - R_t`` over the joints' rotation
  matrices (9 numbers per joint; ``||R_{t+1} - R_t||_F^2 = 8 sin^2(angle / 2)``,
  so it is smooth everywhere, unlike a difference of axis-angle vectors), for
  ``body_pose`` and, with ``global_orient: true``, the root.

Residuals of frames that are padding or not consecutive (``batch.sequence``)
are zero. ``fps`` (optional) rescales the differences to per-second units
(velocity times fps, acceleration times fps^2), so one weight carries over
between videos of different frame rates; the default (None) keeps per-frame
units.
"""
from __future__ import annotations

import math

import torch

from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["JointAcceleration", "JointVelocity", "PoseRate"]


def _check_fps(fps):
    if fps is not None and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps < math.inf):
        raise ValueError(f"fps must be a positive finite number or null, got {fps!r}")
    return None if fps is None else float(fps)


class _Temporal(Term):
    kind = "prior"
    temporal = True

    def __init__(self, fps=None):
        self.fps = _check_fps(fps)

    def _grid(self, batch: Batch, per_frame: torch.Tensor) -> torch.Tensor:
        if batch.sequence is None:
            raise ValueError(f"term {self.name!r} couples frames: it runs only in a sequence stage")
        return batch.sequence.grid(per_frame)

    def _scale(self, order: int) -> float:
        return 1.0 if self.fps is None else self.fps ** order


@register_term("joint_acceleration")
class JointAcceleration(_Temporal):
    """Second differences of the joints over three consecutive frames (seed 000, Eq. 12).
    Residuals (C, (T-2)*J*3)."""

    def needs(self) -> Needs:
        return Needs(joints=True)

    def residuals(self, batch: Batch) -> torch.Tensor:
        X = self._grid(batch, batch.joints)  # (C, T, J, 3)
        acc = X[:, :-2] - 2 * X[:, 1:-1] + X[:, 2:]
        pairs = batch.sequence.pairs
        ok = (pairs[:, :-1] & pairs[:, 1:]).to(acc.dtype)  # (C, T-2)
        return (self._scale(2) * acc * ok[..., None, None]).reshape(acc.shape[0], -1)


@register_term("joint_velocity")
class JointVelocity(_Temporal):
    """First differences of the joints between consecutive frames. Residuals (C, (T-1)*J*3)."""

    def needs(self) -> Needs:
        return Needs(joints=True)

    def residuals(self, batch: Batch) -> torch.Tensor:
        X = self._grid(batch, batch.joints)
        vel = X[:, 1:] - X[:, :-1]
        ok = batch.sequence.pairs.to(vel.dtype)
        return (self._scale(1) * vel * ok[..., None, None]).reshape(vel.shape[0], -1)


@register_term("pose_rate")
class PoseRate(_Temporal):
    """Change of the joint rotations between consecutive frames, as rotation-matrix
    differences. Residuals (C, (T-1)*J*9), J = 23 body joints (+1 with ``global_orient``)."""

    def __init__(self, fps=None, global_orient: bool = False):
        super().__init__(fps)
        if not isinstance(global_orient, bool):
            raise ValueError(f"global_orient must be true or false, got {global_orient!r}")
        self.global_orient = global_orient

    def needs(self) -> Needs:
        return Needs(params=("global_orient", "body_pose") if self.global_orient else ("body_pose",))

    def residuals(self, batch: Batch) -> torch.Tensor:
        pose = batch.params["body_pose"]
        if self.global_orient:
            pose = torch.cat([batch.params["global_orient"], pose], dim=1)
        R = axis_angle_to_matrix(pose.reshape(pose.shape[0], -1, 3))  # (B, J, 3, 3)
        R = self._grid(batch, R.reshape(R.shape[0], R.shape[1], 9))  # (C, T, J, 9)
        diff = R[:, 1:] - R[:, :-1]
        ok = batch.sequence.pairs.to(diff.dtype)
        return (self._scale(1) * diff * ok[..., None, None]).reshape(diff.shape[0], -1)
