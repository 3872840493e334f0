"""``init: {type: smplr}``: SMPLR on the observations' keypoints.

Input, in order of preference:

1. ``Observations.keypoints3d`` (e.g. MediaPipe world landmarks from
   ``fitkit detect``): 3D keypoints in camera-aligned axes, read as they are.
2. Otherwise the 2D keypoints, lifted (seed 003 Sec. 4.4.2, depth set to 0):
   the mean body is placed by its torso (:func:`~fitkit.fitting.engine.torso_translation`),
   and each keypoint's pixel offset is turned into meters at that depth.

SMPLR needs a denoiser trained for the observations' keypoint set (the
shipped weights cover ``body25``, ``blazepose33`` and SMPLR's own ``jl42``)
and at least :data:`MIN_POINTS` observed keypoints; other frames fall back
to the mean pose.
"""
from __future__ import annotations

import torch

from fitkit.init import InitError

__all__ = ["smplr_params", "GENDERS"]

#: frames with fewer observed keypoints fall back to the mean pose
MIN_POINTS = 6
GENDERS = {None: 0.0, "unknown": 0.0, "neutral": 0.0, "male": -1.0, "female": 1.0}


def smplr_params(model, observations, camera, *, path=None, procrustes: bool = False, gender=None,
                 source: str = "recipe") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """SMPLR's ``global_orient``, ``body_pose``, ``betas`` (N, ...) and (N,) bool: usable input."""
    from fitkit.fitting.engine import torso_translation
    from fitkit.init import mean_params
    from fitkit.init.smplr import load_smplr

    if gender not in GENDERS:
        raise InitError(f"{source}: init.gender must be male, female or unknown, got {gender!r}")
    obs = observations
    N = len(obs)
    dtype, device = obs.keypoints.dtype, obs.keypoints.device
    net = load_smplr(path, device=device, dtype=dtype)
    fmt = obs.keypoint_format
    if fmt not in net.input_formats:
        raise InitError(f"{obs.source}: keypoint_format {fmt!r} has no SMPLR denoiser in {net.source} "
                        f"(it has {', '.join(net.input_formats)}; tools/train_smplr.py --input-formats adds more)")
    if obs.keypoints3d is not None:
        points, conf, flat = obs.keypoints3d[..., :3], obs.keypoints3d[..., 3], False
    else:
        mean = dict(mean_params(model, N, dtype, device), transl=torch.zeros(N, 3, dtype=dtype, device=device))
        with torch.no_grad():
            transl, _ = torso_translation(mean, model, obs, camera)
            root = model(mean["global_orient"], mean["body_pose"], mean["betas"], transl, validate=False).joints[:, 0]
        z = root[:, 2].clamp(min=0.1)[:, None]
        K = camera.K
        uv = obs.keypoints[..., :2]
        x = (uv[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0] * z
        y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1] * z
        points, conf, flat = torch.stack([x, y, torch.zeros_like(x)], -1), obs.keypoints[..., 2], True
    ok = ((conf > 0).sum(1) >= MIN_POINTS) & torch.isfinite(points).all(-1).all(-1)
    g = torch.full((N,), GENDERS[gender], dtype=dtype, device=device)
    pred = net.predict(model, torch.nan_to_num(points), conf, fmt, flat=flat, gender=g, procrustes=procrustes)
    pred.pop("jl")
    return pred, ok
