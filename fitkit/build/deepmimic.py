"""Retarget DeepMimic humanoid motion clips to SMPL's 23 body joints.

The ``pybullet`` wheel ships the DeepMimic motion clips
(``pybullet_data/data/motions/*.txt``, zlib licence): keyframes of a 15-link
humanoid retargeted from CMU/SFU mocap. This module turns one clip into SMPL
``global_orient``, ``body_pose`` and ``transl`` (axis-angle, radians; meters
up to the humanoid's scale).

Source layout (one keyframe = 44 numbers): duration (s); root position (3);
then unit quaternions stored (w, x, y, z) for root, chest, neck, right hip,
a knee angle (rad) for the right knee, quaternions for the right ankle and
right shoulder, the right elbow angle, and the same for the left side (hip,
knee, ankle, shoulder, elbow). Every joint frame of the humanoid is aligned
with the world at rest: y up, the character facing +x, its right side at +z,
arms hanging down. Knees and elbows turn about the local z axis.

Mapping to SMPL (y up, facing +z, the body's left at +x):

- Axes: a DeepMimic rotation R becomes ``C R C^T`` with ``C`` mapping x -> z,
  y -> y, z -> -x (a proper rotation). The root's position becomes ``C p``.
- Hips, ankles, neck: the converted rotations (SMPL's rest legs also hang down
  and its feet point forward).
- Chest: SMPL has three spine joints; each gets a third of the chest's
  rotation vector, so their product is the chest rotation exactly.
- Knees: the angle about -x (SMPL's knee flexion is positive about +x).
- Shoulders: SMPL's rest arms are horizontal (T-pose), DeepMimic's hang
  down. With ``A`` the rotation taking SMPL's rest arm down (``R_z(-90°)``
  for the left arm, ``R_z(+90°)`` for the right), the shoulder becomes
  ``C R C^T A`` and the elbow ``A^T (C R C^T) A``, so the arm points where
  the source's arm points, palm towards the thigh at rest.
- Joints the source lacks (head, collars, wrists, hands, toes) get small,
  temporally smooth noise around zero (:data:`MISSING_JOINT_NOISE`, std in
  radians per axis-angle component; white noise filtered with a Gaussian
  of :data:`NOISE_SMOOTHING_FRAMES` frames, then rescaled to that std).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import roma
import torch

__all__ = ["DeepMimicClip", "parse_clip", "retarget_clip", "MISSING_JOINT_NOISE",
           "NOISE_SMOOTHING_FRAMES", "SMPL_BODY_JOINTS"]

#: SMPL joints 1..23 in ``body_pose`` order.
SMPL_BODY_JOINTS = (
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar",
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_hand", "right_hand",
)

#: Std (radians, per axis-angle component) of the noise given to joints the source lacks.
MISSING_JOINT_NOISE = {
    "head": 0.08, "left_collar": 0.05, "right_collar": 0.05, "left_wrist": 0.12,
    "right_wrist": 0.12, "left_hand": 0.05, "right_hand": 0.05, "left_foot": 0.08,
    "right_foot": 0.08,
}
#: Std of the Gaussian (in frames) that makes the missing-joint noise smooth in time.
NOISE_SMOOTHING_FRAMES = 6.0

_C = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
# source (w, x, y, z) quaternion offsets in a keyframe
_QUAT = {"root": 4, "chest": 8, "neck": 12, "right_hip": 16, "right_ankle": 21, "right_shoulder": 25,
         "left_hip": 30, "left_ankle": 35, "left_shoulder": 39}
_ANGLE = {"right_knee": 20, "right_elbow": 29, "left_knee": 34, "left_elbow": 43}
FRAME_WIDTH = 44


@dataclass
class DeepMimicClip:
    """One parsed clip: ``frames`` (T, 44) float64 and its frame duration in seconds."""

    name: str
    frames: np.ndarray
    frame_time: float
    loop: str

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time


def parse_clip(name: str, text: str) -> DeepMimicClip:
    """Parse a DeepMimic motion file (JSON with ``Loop`` and ``Frames``).

    Raises:
        ValueError: naming the clip when the JSON or a keyframe's width is wrong.
    """
    try:
        data = json.loads(text)
        frames = np.asarray(data["Frames"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{name}: not a DeepMimic motion file ({exc})") from None
    if frames.ndim != 2 or frames.shape[1] != FRAME_WIDTH or len(frames) < 1:
        raise ValueError(f"{name}: expected keyframes of {FRAME_WIDTH} numbers, got shape {frames.shape}")
    if not np.isfinite(frames).all():
        raise ValueError(f"{name}: keyframes contain NaN/inf")
    return DeepMimicClip(name=name, frames=frames, frame_time=float(frames[0, 0]),
                         loop=str(data.get("Loop", "none")))


def _quat(frames: torch.Tensor, offset: int) -> torch.Tensor:
    wxyz = frames[:, offset:offset + 4]
    xyzw = torch.cat([wxyz[:, 1:], wxyz[:, :1]], dim=1)
    return roma.unitquat_to_rotmat(xyzw / xyzw.norm(dim=1, keepdim=True))


def _to_smpl(R: torch.Tensor) -> torch.Tensor:
    return _C @ R @ _C.T


def _rz(angle: float) -> torch.Tensor:
    return roma.rotvec_to_rotmat(torch.tensor([0.0, 0.0, angle], dtype=torch.float64))


def _smooth_noise(T: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """(T, 3) noise with per-component std ``std``, correlated over ~NOISE_SMOOTHING_FRAMES frames."""
    from scipy.ndimage import gaussian_filter1d

    pad = int(4 * NOISE_SMOOTHING_FRAMES)
    white = rng.standard_normal((T + 2 * pad, 3))
    smooth = gaussian_filter1d(white, NOISE_SMOOTHING_FRAMES, axis=0, mode="wrap")[pad:pad + T]
    smooth /= max(float(smooth.std()), 1e-9)
    return std * smooth


def retarget_clip(clip: DeepMimicClip, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """SMPL parameters of every keyframe of ``clip`` (see the module docstring).

    Returns:
        ``global_orient`` (T, 3), ``body_pose`` (T, 69), ``transl`` (T, 3), float64.
    """
    f = torch.from_numpy(clip.frames)
    T = f.shape[0]
    rot = {k: _to_smpl(_quat(f, off)) for k, off in _QUAT.items()}
    pose = torch.zeros(T, 23, 3, dtype=torch.float64)
    j = {name: i for i, name in enumerate(SMPL_BODY_JOINTS)}

    for side in ("left", "right"):
        pose[:, j[f"{side}_hip"]] = roma.rotmat_to_rotvec(rot[f"{side}_hip"])
        pose[:, j[f"{side}_ankle"]] = roma.rotmat_to_rotvec(rot[f"{side}_ankle"])
        pose[:, j[f"{side}_knee"], 0] = -f[:, _ANGLE[f"{side}_knee"]]  # about C z = -x
        A = _rz(-math.pi / 2 if side == "left" else math.pi / 2)
        pose[:, j[f"{side}_shoulder"]] = roma.rotmat_to_rotvec(rot[f"{side}_shoulder"] @ A)
        elbow = torch.zeros(T, 3, dtype=torch.float64)
        elbow[:, 2] = f[:, _ANGLE[f"{side}_elbow"]]
        pose[:, j[f"{side}_elbow"]] = roma.rotmat_to_rotvec(A.T @ _to_smpl(roma.rotvec_to_rotmat(elbow)) @ A)
    chest = roma.rotmat_to_rotvec(rot["chest"])
    for name in ("spine1", "spine2", "spine3"):
        pose[:, j[name]] = chest / 3.0
    pose[:, j["neck"]] = roma.rotmat_to_rotvec(rot["neck"])
    for name, std in MISSING_JOINT_NOISE.items():
        pose[:, j[name]] = torch.from_numpy(_smooth_noise(T, std, rng))

    return {
        "global_orient": roma.rotmat_to_rotvec(rot["root"]).numpy(),
        "body_pose": pose.reshape(T, 69).numpy(),
        "transl": (f[:, 1:4] @ _C.T).numpy(),
    }
