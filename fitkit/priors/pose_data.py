"""Body-pose data for training and testing pose priors.

fitkit ships an open pose set, ``fitkit/assets/pose_data/open_poses.npz``:
the DeepMimic motion clips of the ``pybullet`` wheel (CMU/SFU mocap
retargeted to a simple humanoid; zlib licence) retargeted to SMPL's 23 body
joints by ``tools/prepare_pose_data.py`` (mapping in
:mod:`fitkit.build.deepmimic`), plus a left–right mirrored copy of every
frame. Train, validation and test are split **by clip** (a clip and its
mirror image are in the same split): priors are trained on ``train``, every
choice (epochs, regularisers, recipe weights) is made on ``val``, and
``test`` poses come from motions that neither training nor tuning saw.

Users with AMASS read its per-sequence ``.npz`` files with
:func:`read_amass_npz`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from fitkit.errors import ModelFileError, ParameterError

__all__ = ["PoseData", "load_pose_data", "read_amass_npz", "mirror_body_pose", "mirror_global_orient",
           "random_rotation_poses",
           "OPEN_POSE_DATA", "SPLITS"]

PathLike = Union[str, os.PathLike]

OPEN_POSE_DATA = Path(__file__).resolve().parents[1] / "assets" / "pose_data" / "open_poses.npz"
SPLITS = ("train", "val", "test", "all")

# SMPL body_pose joint slots (joint id - 1) that swap under a left-right mirror
_MIRROR_PAIRS = ((0, 1), (3, 4), (6, 7), (9, 10), (12, 13), (15, 16), (17, 18), (19, 20), (21, 22))


def _mirror_rotvec(r: np.ndarray) -> np.ndarray:
    """Reflection x -> -x of axis-angle vectors (..., 3): (x, y, z) -> (x, -y, -z)."""
    return r * np.array([1.0, -1.0, -1.0], dtype=r.dtype)


def mirror_body_pose(body_pose: np.ndarray) -> np.ndarray:
    """(N, 69) SMPL body pose of the left–right mirror image (left and right joints swapped,
    every rotation reflected through the body's sagittal plane x = 0)."""
    p = np.asarray(body_pose)
    if p.ndim != 2 or p.shape[1] != 69:
        raise ParameterError(f"body_pose: expected (N, 69), got {p.shape}")
    j = p.reshape(len(p), 23, 3).copy()
    for a, b in _MIRROR_PAIRS:
        j[:, [a, b]] = j[:, [b, a]]
    return _mirror_rotvec(j).reshape(len(p), 69)


def mirror_global_orient(global_orient: np.ndarray) -> np.ndarray:
    """(N, 3) root rotation of the mirror image (world mirrored through x = 0)."""
    return _mirror_rotvec(np.asarray(global_orient))


def random_rotation_poses(n: int, seed: int = 0) -> np.ndarray:
    """(n, 69) float64 poses whose 23 joint rotations are independent and uniform on
    SO(3), as axis-angle: the "anything goes" reference priors are tested against."""
    import roma
    import torch

    g = torch.Generator().manual_seed(int(seed))
    R = roma.random_rotmat(n * 23, dtype=torch.float64, generator=g)
    return roma.rotmat_to_rotvec(R).reshape(n, 69).numpy()


@dataclass
class PoseData:
    """Frames of body poses (numpy, float32).

    Attributes:
        body_pose: (N, 69) axis-angle, SMPL joints 1..23.
        global_orient: (N, 3) root rotation in a y-up world (None if unknown).
        transl: (N, 3) root position in meters (None if unknown).
        clip: (N,) int, index into ``clip_names``.
        frame: (N,) int, frame number within its clip.
        mirrored: (N,) bool, the frame is a left–right mirrored copy.
        clip_names, clip_fps, clip_split: per clip.
        provenance: where the data came from (dict, from the file).
    """

    body_pose: np.ndarray
    global_orient: np.ndarray | None
    transl: np.ndarray | None
    clip: np.ndarray
    frame: np.ndarray
    mirrored: np.ndarray
    clip_names: list[str]
    clip_fps: np.ndarray
    clip_split: list[str]
    provenance: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.body_pose)

    def select(self, mask: np.ndarray) -> "PoseData":
        """The frames where ``mask`` (N,) is True (clip tables kept whole)."""
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return PoseData(self.body_pose[mask], pick(self.global_orient), pick(self.transl),
                        self.clip[mask], self.frame[mask], self.mirrored[mask], self.clip_names,
                        self.clip_fps, self.clip_split, self.provenance)

    def clip_frames(self, name: str, mirrored: bool = False) -> "PoseData":
        """All frames of one clip, in time order."""
        if name not in self.clip_names:
            raise ParameterError(f"no clip {name!r}; clips: {self.clip_names}")
        mask = (self.clip == self.clip_names.index(name)) & (self.mirrored == mirrored)
        order = np.argsort(self.frame[mask], kind="stable")
        return self.select(np.flatnonzero(mask)[order])


_FIELDS = ("body_pose", "global_orient", "transl", "clip", "frame", "mirrored", "clip_names",
           "clip_fps", "clip_split", "provenance")


def load_pose_data(split: str = "train", path: PathLike | None = None) -> PoseData:
    """The open pose set (or a file written in its layout by ``tools/prepare_pose_data.py``).

    Args:
        split: ``'train'``, ``'val'``, ``'test'`` or ``'all'``.
        path: default :data:`OPEN_POSE_DATA`.
    Raises:
        ModelFileError: missing/corrupt file or missing fields (naming them).
    """
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, got {split!r}")
    path = Path(path) if path is not None else OPEN_POSE_DATA
    if not path.is_file():
        raise ModelFileError(f"{path}: pose data file not found (tools/prepare_pose_data.py writes it)")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _FIELDS if k not in z.files]
            if missing:
                raise ModelFileError(f"{path}: missing field(s) {missing}")
            arrays = {k: z[k] for k in _FIELDS}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the pose data ({exc})") from None
    data = PoseData(
        body_pose=arrays["body_pose"].astype(np.float32), global_orient=arrays["global_orient"].astype(np.float32),
        transl=arrays["transl"].astype(np.float32), clip=arrays["clip"].astype(np.int64),
        frame=arrays["frame"].astype(np.int64), mirrored=arrays["mirrored"].astype(bool),
        clip_names=[str(s) for s in arrays["clip_names"]], clip_fps=arrays["clip_fps"].astype(np.float32),
        clip_split=[str(s) for s in arrays["clip_split"]], provenance=json.loads(str(arrays["provenance"])))
    if data.body_pose.ndim != 2 or data.body_pose.shape[1] != 69:
        raise ModelFileError(f"{path}: field 'body_pose' has shape {data.body_pose.shape}, expected (N, 69)")
    if split == "all":
        return data
    in_split = np.array([s == split for s in data.clip_split])
    return data.select(in_split[data.clip])


def read_amass_npz(path: PathLike, *, target_fps: float | None = None) -> PoseData:
    """One AMASS sequence (``poses`` (T, 156 or 72), ``trans``, ``mocap_framerate``) as SMPL pose data.

    ``body_pose`` takes joints 1..21 of ``poses`` (SMPL-H and SMPL share them)
    and sets SMPL's two hand joints (22, 23) to zero, since SMPL-H replaces them
    by finger chains. AMASS worlds are z-up: ``global_orient`` and ``transl``
    are returned as stored (z-up), unlike the open set's y-up. ``betas`` are
    not needed by the priors and are ignored.

    Args:
        target_fps: subsample (by striding) to about this frame rate.
    Raises:
        ModelFileError: missing file or field, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: AMASS file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            if "poses" not in z.files:
                raise ModelFileError(f"{path}: field 'poses' is missing (found {sorted(z.files)})")
            poses = z["poses"].astype(np.float32)
            trans = z["trans"].astype(np.float32) if "trans" in z.files else None
            fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in z.files), None)
            fps = float(z[fps_key]) if fps_key else float("nan")
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: cannot read the AMASS file ({exc})") from None
    if poses.ndim != 2 or poses.shape[1] < 66:
        raise ModelFileError(f"{path}: field 'poses' has shape {poses.shape}, expected (T, >= 66)")
    step = 1
    if target_fps is not None and np.isfinite(fps) and fps > target_fps:
        step = max(1, int(round(fps / target_fps)))
    poses = poses[::step]
    T = len(poses)
    body_pose = np.zeros((T, 69), dtype=np.float32)
    body_pose[:, :63] = poses[:, 3:66]
    return PoseData(body_pose=body_pose, global_orient=poses[:, :3].copy(),
                    transl=None if trans is None else trans[::step], clip=np.zeros(T, dtype=np.int64),
                    frame=np.arange(T) * step, mirrored=np.zeros(T, dtype=bool), clip_names=[path.stem],
                    clip_fps=np.array([fps / step], dtype=np.float32), clip_split=["all"],
                    provenance={"source": str(path), "format": "AMASS npz", "world": "z-up"})
