"""Error metrics for fitted bodies.

Joint errors (MPJPE, PA-MPJPE, N-MPJPE), mesh errors (PVE, PA-PVE, N-PVE and
DaNet's PVE-S / PVE-P), temporal acceleration error, silhouette IoU, 2D
reprojection error, and :func:`evaluate_bodies`, which computes the set from
body-model parameters in millimetres.

All functions take a batch first and return one value per sample, shape (B,),
as a torch tensor in the dtype of ``pred`` (numpy arrays are accepted and
converted). 3D errors are in the units of the inputs (meters in fitkit), 2D
errors in pixels; :func:`evaluate_bodies` alone converts to millimetres.
Everything is computed with batched tensor ops: there is no Python loop over
samples.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from fitkit.errors import ParameterError

__all__ = ["mpjpe", "pa_mpjpe", "procrustes_align", "err2d", "n_mpjpe", "pve", "pa_pve", "n_pve",
           "accel_error", "silhouette_iou", "pve_shape", "pve_pose", "evaluate_bodies"]


def _as_points(x, name: str, last: int) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.ndim != 3 or x.shape[-1] != last:
        raise ParameterError(f"{name}: expected shape (B, N, {last}), got {tuple(x.shape)}")
    return x


def _pair(pred, gt) -> tuple[Tensor, Tensor]:
    pred = _as_points(pred, "pred", 3)
    gt = _as_points(gt, "gt", 3).to(device=pred.device)
    if pred.shape != gt.shape:
        raise ParameterError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape (B, J, 3)")
    return pred, gt


def mpjpe(pred, gt, *, root: Optional[int] = 0) -> Tensor:
    """Mean per-joint position error.

    Args:
        pred: (B, J, 3) predicted joints, meters.
        gt: (B, J, 3) ground-truth joints, meters.
        root: joint index both sets are translated to before comparing
            (0 = pelvis in SMPL order), or None to compare them as given.
    Returns:
        (B,) mean Euclidean distance over the J joints, meters.
    """
    pred, gt = _pair(pred, gt)
    if root is not None:
        if not -pred.shape[1] <= root < pred.shape[1]:
            raise ParameterError(f"root={root} is not a joint index for J={pred.shape[1]}")
        pred = pred - pred[:, root, None]
        gt = gt - gt[:, root, None]
    return torch.linalg.vector_norm(pred - gt.to(pred.dtype), dim=-1).mean(dim=1)


def procrustes_align(pred, gt) -> Tensor:
    """Similarity-align each predicted point set onto its ground truth.

    For every sample finds the scale s > 0, rotation R (det R = +1, a
    reflection is never used) and translation t minimizing
    ``sum_j |s R pred_j + t - gt_j|^2`` (Umeyama's closed form: SVD of the
    3x3 cross-covariance, with the sign of the last singular direction flipped
    when the best orthogonal map would be a reflection). Computed in float64.

    Args:
        pred: (B, J, 3) points to move, meters.
        gt: (B, J, 3) target points, meters.
    Returns:
        (B, J, 3) ``s R pred + t`` in the dtype of ``pred``. A sample whose
        pred points all coincide gets scale 0, i.e. every point lands on the
        centroid of gt.
    """
    pred, gt = _pair(pred, gt)
    x = pred.to(torch.float64)
    y = gt.to(torch.float64)
    mu_x = x.mean(dim=1, keepdim=True)
    mu_y = y.mean(dim=1, keepdim=True)
    xc, yc = x - mu_x, y - mu_y
    # cov = sum_j yc_j xc_j^T; the best rotation maximizes trace(R^T cov).
    cov = yc.transpose(1, 2) @ xc
    U, S, Vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(U @ Vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.ones_like(S)
    d[:, 2] = sign
    R = U @ (d[:, :, None] * Vh)  # U diag(d) Vh
    var_x = (xc * xc).sum(dim=(1, 2))
    scale = (S * d).sum(dim=1) / var_x.clamp_min(torch.finfo(torch.float64).tiny)
    scale = torch.where(var_x > 0, scale, torch.zeros_like(scale))
    aligned = scale[:, None, None] * (xc @ R.transpose(1, 2)) + mu_y
    return aligned.to(pred.dtype)


def pa_mpjpe(pred, gt) -> Tensor:
    """Procrustes-aligned MPJPE: :func:`mpjpe` after :func:`procrustes_align`.

    Args:
        pred: (B, J, 3) predicted joints, meters.
        gt: (B, J, 3) ground-truth joints, meters.
    Returns:
        (B,) mean joint error after the best per-sample similarity transform
        (rotation, uniform scale, translation) of pred onto gt, meters.
        Computed in float64, returned in the dtype of ``pred``.
    """
    pred, gt = _pair(pred, gt)
    aligned = procrustes_align(pred.to(torch.float64), gt.to(torch.float64))
    err = torch.linalg.vector_norm(aligned - gt.to(torch.float64), dim=-1).mean(dim=1)
    return err.to(pred.dtype)


def err2d(pred_2d, obs) -> Tensor:
    """Mean 2D distance between predicted keypoints and confident observations.

    Args:
        pred_2d: (B, K, 2) predicted keypoints, pixels.
        obs: (B, K, 3) observed keypoints as (u, v, confidence), pixels.
            Keypoints with confidence <= 0 (or NaN) are ignored; their
            coordinates may be anything, NaN included.
    Returns:
        (B,) mean Euclidean distance in pixels over each sample's keypoints
        with confidence > 0 (unweighted). A sample with no such keypoint gets
        NaN, so that it cannot pass for a perfect fit; use ``torch.nanmean``
        to average over a batch.
    """
    pred_2d = _as_points(pred_2d, "pred_2d", 2)
    obs = _as_points(obs, "obs", 3).to(device=pred_2d.device, dtype=pred_2d.dtype)
    if obs.shape[:2] != pred_2d.shape[:2]:
        raise ParameterError(f"pred_2d {tuple(pred_2d.shape)} and obs {tuple(obs.shape)} must agree "
                             "in (B, K)")
    valid = obs[..., 2] > 0  # NaN confidence compares False
    dist = torch.linalg.vector_norm(pred_2d - obs[..., :2], dim=-1)
    dist = torch.where(valid, dist, torch.zeros_like(dist))
    count = valid.sum(dim=1)
    mean = dist.sum(dim=1) / count.clamp_min(1).to(dist.dtype)
    return torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
