"""The mean pose: the starting pose of ``init: {type: mean}`` and the baseline
every learned initializer is measured against.

It is the per-joint rotation mean of the open pose data's training split
(fitkit/assets/pose_data): for each joint, the arithmetic mean of the rotation
matrices projected back onto SO(3) (the chordal L2 mean). Pose data carries
mirrored copies of every clip, so the mean is left/right symmetric.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import roma
import torch

__all__ = ["mean_body_pose"]


@lru_cache(maxsize=1)
def _mean_body_pose_np() -> np.ndarray:
    from fitkit.priors.pose_data import load_pose_data

    pose = torch.as_tensor(load_pose_data("train").body_pose, dtype=torch.float64).reshape(-1, 23, 3)
    R = roma.rotvec_to_rotmat(pose).mean(dim=0)                     # (23, 3, 3), not a rotation
    return roma.rotmat_to_rotvec(roma.special_procrustes(R)).reshape(69).numpy()


def mean_body_pose(n: int = 1, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(n, 69) the mean body pose (axis-angle, joints 1..23), repeated n times."""
    pose = torch.as_tensor(_mean_body_pose_np(), dtype=dtype, device=device)
    return pose[None].expand(n, -1).clone()
