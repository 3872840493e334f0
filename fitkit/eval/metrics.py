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


# ---------------------------------------------------------------- scale-normalized and mesh errors

def _root_align(pred: Tensor, gt: Tensor, root: Optional[int]) -> tuple[Tensor, Tensor]:
    if root is None:
        return pred, gt
    if not isinstance(root, int) or not -pred.shape[1] <= root < pred.shape[1]:
        raise ParameterError(f"root={root!r} is not a joint index for J={pred.shape[1]}")
    return pred - pred[:, root, None], gt - gt[:, root, None]


def _scale_normalized_error(pred: Tensor, gt: Tensor) -> Tensor:
    """(B,) mean distance between ``s * pred`` and ``gt``, s = <pred, gt> / <pred, pred>, float64."""
    x = pred.to(torch.float64)
    y = gt.to(torch.float64)
    num = (x * y).sum(dim=(1, 2))
    den = (x * x).sum(dim=(1, 2))
    s = torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(den))
    return torch.linalg.vector_norm(s[:, None, None] * x - y, dim=-1).mean(dim=1)


def n_mpjpe(pred, gt, *, root: Optional[int] = 0) -> Tensor:
    """Scale-normalized MPJPE (N-MPJPE, Rhodin et al., CVPR 2018).

    Both sets are translated to their ``root`` joint, then each predicted set
    is multiplied by the least-squares optimal scalar
    ``s = <pred, gt> / <pred, pred>`` (sums over all joints and coordinates,
    per sample; this minimizes ``|s pred - gt|^2``, as in VideoPose3D's
    ``n_mpjpe``), and the mean per-joint Euclidean distance is taken. No
    rotation is applied (that is :func:`pa_mpjpe`).

    Args:
        pred: (B, J, 3) predicted joints, meters.
        gt: (B, J, 3) ground-truth joints, meters.
        root: joint index for the translation alignment (0 = pelvis in SMPL
            order), or None to scale the sets as given (about the origin).
    Returns:
        (B,) mean joint error after the scale, meters (units of the input),
        computed in float64, returned in the dtype of ``pred``. A sample whose
        root-aligned pred is all zero gets s = 0.
    """
    pred, gt = _pair(pred, gt)
    pred, gt = _root_align(pred, gt, root)
    return _scale_normalized_error(pred, gt).to(pred.dtype)


def _as_root(x, name: str, ref: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    x = x.to(device=ref.device, dtype=ref.dtype)
    if x.shape != (ref.shape[0], 3):
        raise ParameterError(f"{name}: expected shape (B, 3) with B={ref.shape[0]}, got {tuple(x.shape)}")
    return x


def _vertex_pair(pred_vertices, gt_vertices, pred_root, gt_root) -> tuple[Tensor, Tensor]:
    pred, gt = _pair(pred_vertices, gt_vertices)
    if (pred_root is None) != (gt_root is None):
        raise ParameterError("pred_root and gt_root must be given together (or both None)")
    if pred_root is not None:
        pred = pred - _as_root(pred_root, "pred_root", pred)[:, None]
        gt = gt - _as_root(gt_root, "gt_root", pred)[:, None].to(gt.dtype)
    return pred, gt


def pve(pred_vertices, gt_vertices, pred_root=None, gt_root=None) -> Tensor:
    """Per-vertex error (PVE, a.k.a. V2V / MPVPE): mean Euclidean vertex distance.

    With roots given (e.g. each mesh's pelvis joint), each mesh is first
    translated by minus its own root (``pred - pred_root``, ``gt - gt_root``),
    the root-aligned convention of 3DPW evaluations (SPIN, VIBE, DaNet);
    without, the meshes are compared as given.

    Args:
        pred_vertices: (B, V, 3) predicted vertices, meters.
        gt_vertices: (B, V, 3) ground-truth vertices (same topology), meters.
        pred_root, gt_root: (B, 3) points to align, both or neither.
    Returns:
        (B,) mean over the V vertices of the Euclidean distance, meters
        (units of the input), in the dtype of ``pred_vertices``.
    """
    pred, gt = _vertex_pair(pred_vertices, gt_vertices, pred_root, gt_root)
    return torch.linalg.vector_norm(pred - gt.to(pred.dtype), dim=-1).mean(dim=1)


def pa_pve(pred_vertices, gt_vertices) -> Tensor:
    """Procrustes-aligned PVE: :func:`pa_mpjpe` over vertices.

    Args:
        pred_vertices, gt_vertices: (B, V, 3), meters.
    Returns:
        (B,) mean vertex error after the best per-sample similarity transform
        (proper rotation, uniform scale, translation; :func:`procrustes_align`)
        of pred onto gt, meters; computed in float64, dtype of ``pred_vertices``.
        A translation-independent metric, so no roots are taken.
    """
    return pa_mpjpe(pred_vertices, gt_vertices)


def n_pve(pred_vertices, gt_vertices, pred_root=None, gt_root=None) -> Tensor:
    """Scale-normalized PVE: :func:`n_mpjpe`'s definition over vertices.

    After the optional root translation of :func:`pve`, pred is scaled by
    ``s = <pred, gt> / <pred, pred>`` (per sample) before the mean vertex
    distance. Without roots the scale acts about the origin, so pass roots
    (e.g. pelvis joints) for a translation-independent value.

    Args:
        pred_vertices, gt_vertices: (B, V, 3), meters.
        pred_root, gt_root: (B, 3) points to align, both or neither.
    Returns:
        (B,) meters, computed in float64, dtype of ``pred_vertices``.
    """
    pred, gt = _vertex_pair(pred_vertices, gt_vertices, pred_root, gt_root)
    return _scale_normalized_error(pred, gt).to(pred.dtype)


# ---------------------------------------------------------------- acceleration error

def accel_error(pred, gt) -> Tensor:
    """Acceleration error of joint trajectories (HMMR, Kanazawa et al. 2019; VIBE).

    With the second finite difference ``a_t = X_{t-1} - 2 X_t + X_{t+1}``
    (seed 000's Eq. 12 smoothness term, used as a metric), the error is

        mean over t = 1..T-2 and joints j of ``| a_t,j(pred) - a_t,j(gt) |``

    (Euclidean norm over xyz). Unlike VIBE's ``compute_error_accel``, which
    returns one value per frame, the frames are averaged per sequence, and no
    visibility mask is applied.

    Args:
        pred: (T, J, 3) one sequence or (B, T, J, 3) a batch, positions per frame.
        gt: same shape as ``pred``.
    Returns:
        () for one sequence, (B,) for a batch, in units of the input per
        frame^2 (callers use mm/frame^2), dtype of ``pred``.
    Raises:
        ParameterError on mismatched shapes or fewer than T = 3 frames.
    """
    if not isinstance(pred, Tensor):
        pred = torch.as_tensor(pred)
    if not pred.is_floating_point():
        pred = pred.to(torch.get_default_dtype())
    if not isinstance(gt, Tensor):
        gt = torch.as_tensor(gt)
    gt = gt.to(device=pred.device, dtype=pred.dtype)
    if pred.ndim not in (3, 4) or pred.shape[-1] != 3:
        raise ParameterError(f"pred: expected shape (T, J, 3) or (B, T, J, 3), got {tuple(pred.shape)}")
    if gt.shape != pred.shape:
        raise ParameterError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must have the same shape")
    T = pred.shape[-3]
    if T < 3:
        raise ParameterError(f"accel_error needs at least 3 frames (T >= 3), got T={T}")
    d = pred - gt  # the second difference is linear: a(pred) - a(gt) = a(pred - gt)
    acc = d[..., :-2, :, :] - 2 * d[..., 1:-1, :, :] + d[..., 2:, :, :]
    return torch.linalg.vector_norm(acc, dim=-1).mean(dim=(-2, -1))


# ---------------------------------------------------------------- silhouettes

def _as_mask(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 3:
        raise ParameterError(f"{name}: expected shape (B, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.bool:
        return x
    return x > 0.5 if x.is_floating_point() else x != 0


def silhouette_iou(mask_pred, mask_gt) -> Tensor:
    """Intersection over union of binary silhouettes, per sample.

    Args:
        mask_pred: (B, H, W) bool (True = body). Float masks are thresholded
            at 0.5, integer masks at != 0.
        mask_gt: (B, H, W), same.
    Returns:
        (B,) ``|pred & gt| / |pred | gt|`` in [0, 1], default float dtype.
        A sample where both masks are empty gets 1.0 (they agree exactly);
        one empty and one not gets 0.0.
    """
    a = _as_mask(mask_pred, "mask_pred")
    b = _as_mask(mask_gt, "mask_gt").to(a.device)
    if a.shape != b.shape:
        raise ParameterError(f"mask_pred {tuple(a.shape)} and mask_gt {tuple(b.shape)} must have the same shape")
    dt = torch.get_default_dtype()
    inter = (a & b).sum(dim=(1, 2)).to(dt)
    union = (a | b).sum(dim=(1, 2)).to(dt)
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# ---------------------------------------------------------------- body-model metrics

def _param(model, params, key: str, required: bool = True) -> Optional[Tensor]:
    value = params.get(key) if hasattr(params, "get") else None
    if value is None:
        if required:
            raise ParameterError(f"params: missing {key!r} (expected smplx-named global_orient, body_pose, "
                                 "betas[, transl])")
        return None
    return torch.as_tensor(value, dtype=model.dtype, device=model.device)


def _zeros_pose(model, batch: int) -> tuple[Tensor, Tensor]:
    return (torch.zeros(batch, 3, dtype=model.dtype, device=model.device),
            torch.zeros(batch, 3 * (model.num_joints - 1), dtype=model.dtype, device=model.device))


def pve_shape(model, pred_betas, gt_betas) -> Tensor:
    """PVE-S: per-vertex error of the shapes alone, in the rest pose (DaNet, seed 004 Sec. 5).

    Both bodies are evaluated with zero global orientation, zero body pose and
    no translation (the model's rest/T-pose), each with its own betas, and
    :func:`pve` is taken with no further alignment (the rest-pose pelvis
    position is part of the shape).

    Args:
        model: a :class:`fitkit.body.BodyModel`.
        pred_betas, gt_betas: (B, k) or (1, k) shape coefficients (k <= num_betas;
            a batch of 1 is shared).
    Returns:
        (B,) mean vertex error, meters, model dtype.
    """
    pb = torch.as_tensor(pred_betas, dtype=model.dtype, device=model.device)
    gb = torch.as_tensor(gt_betas, dtype=model.dtype, device=model.device)
    if pb.ndim != 2 or gb.ndim != 2:
        raise ParameterError(f"betas: expected (B, k), got {tuple(pb.shape)} and {tuple(gb.shape)}")
    batch = max(pb.shape[0], gb.shape[0])
    if pb.shape[0] not in (1, batch) or gb.shape[0] not in (1, batch):
        raise ParameterError(f"pred_betas {tuple(pb.shape)} and gt_betas {tuple(gb.shape)}: batch sizes differ")
    go, bp = _zeros_pose(model, batch)
    pv = model(go, bp, pb, vertices="all").vertices
    gv = model(go, bp, gb, vertices="all").vertices
    return pve(pv, gv)


def pve_pose(model, pred_params, gt_params) -> Tensor:
    """PVE-P: per-vertex error of the poses alone, with the mean shape (DaNet, seed 004 Sec. 5).

    Both bodies are evaluated with zero betas, their own ``global_orient`` and
    ``body_pose``, and no translation; :func:`pve` is then taken with both
    meshes translated to their own root (pelvis) joint, so translation never
    counts (betas and transl in the params are ignored).

    Args:
        model: a :class:`fitkit.body.BodyModel`.
        pred_params, gt_params: dicts with smplx-named ``global_orient`` (B, 3)
            and ``body_pose`` (B, 3 (J-1)), axis-angle radians.
    Returns:
        (B,) mean vertex error, meters, model dtype.
    """
    outs = []
    for params in (pred_params, gt_params):
        go = _param(model, params, "global_orient")
        bp = _param(model, params, "body_pose")
        betas = torch.zeros(1, model.num_betas, dtype=model.dtype, device=model.device)
        outs.append(model(go, bp, betas, vertices="all"))
    p, g = outs
    return pve(p.vertices, g.vertices, p.joints[:, 0], g.joints[:, 0])


def evaluate_bodies(model, pred_params, gt_params, *, keypoints_2d=None, K=None, masks=None,
                    keypoint_format: Optional[str] = None) -> dict[str, Tensor]:
    """The standard metric set for predicted vs ground-truth bodies, in millimetres.

    Both bodies are posed by ``model`` from smplx-named parameters
    (``global_orient`` (B, 3), ``body_pose`` (B, 3 (J-1)), ``betas`` (B, k) or
    (1, k), optional ``transl`` (B, 3), meters; other keys are ignored). Joints
    are the model's J = 24 skeleton joints, root = joint 0 (pelvis).

    Returns a dict of (B,) tensors (model dtype):

    - ``mpjpe_mm``: :func:`mpjpe`, pelvis-aligned.
    - ``pa_mpjpe_mm``: :func:`pa_mpjpe`.
    - ``n_mpjpe_mm``: :func:`n_mpjpe`, pelvis-aligned.
    - ``pve_mm``: :func:`pve` with each mesh translated to its own pelvis joint.
    - ``pa_pve_mm``: :func:`pa_pve`.
    - ``n_pve_mm``: :func:`n_pve`, pelvis-aligned.
    - ``pve_s_mm``: :func:`pve_shape` (rest pose, betas only).
    - ``pve_p_mm``: :func:`pve_pose` (zero betas, pelvis-aligned).
    - ``err2d_px`` (only with ``keypoints_2d``): :func:`err2d` in pixels between
      the observations and the predicted body's ``keypoint_format`` keypoints
      (translation included, i.e. in the camera frame) projected with ``K``.
    - ``silhouette_iou`` (only with ``masks``): :func:`silhouette_iou` between
      the predicted mesh rasterized with ``K`` at the masks' size and ``masks``.

    All 3D values are in millimetres (1000 x the meter values of the functions
    above).

    Args:
        model: a :class:`fitkit.body.BodyModel`, e.g. ``load_body_model("open", num_betas=10)``.
        pred_params, gt_params: dicts of smplx-named parameters as above, same B.
        keypoints_2d: (B, K, 3) observed (u, v, confidence), pixels; needs ``K``
            and ``keypoint_format``.
        K: (B, 3, 3) intrinsics, pixels.
        masks: (B, H, W) ground-truth silhouettes (bool); needs ``K``.
        keypoint_format: name of the model keypoint set the observations are in
            (e.g. ``"coco25"``).
    Raises:
        ParameterError on missing parameters or inputs.
    """
    want_kp = keypoints_2d is not None
    if (want_kp or masks is not None) and K is None:
        raise ParameterError("keypoints_2d and masks need the intrinsics K (B, 3, 3)")
    if want_kp and keypoint_format is None:
        raise ParameterError("keypoints_2d needs keypoint_format, the model keypoint set they are in")
    outs = []
    for params, kp in ((pred_params, keypoint_format if want_kp else None), (gt_params, None)):
        outs.append(model(_param(model, params, "global_orient"), _param(model, params, "body_pose"),
                          _param(model, params, "betas"), _param(model, params, "transl", required=False),
                          vertices="all", keypoints=kp))
    p, g = outs
    pj, gj = p.joints.to(torch.float64), g.joints.to(torch.float64)
    pv, gv = p.vertices.to(torch.float64), g.vertices.to(torch.float64)
    mm = 1000.0
    out = {
        "mpjpe_mm": mpjpe(pj, gj, root=0),
        "pa_mpjpe_mm": pa_mpjpe(pj, gj),
        "n_mpjpe_mm": n_mpjpe(pj, gj, root=0),
        "pve_mm": pve(pv, gv, pj[:, 0], gj[:, 0]),
        "pa_pve_mm": pa_pve(pv, gv),
        "n_pve_mm": n_pve(pv, gv, pj[:, 0], gj[:, 0]),
        "pve_s_mm": pve_shape(model, _param(model, pred_params, "betas"), _param(model, gt_params, "betas")),
        "pve_p_mm": pve_pose(model, pred_params, gt_params),
    }
    out = {k: (v * mm).to(model.dtype) for k, v in out.items()}
    if K is not None:
        K = torch.as_tensor(K, dtype=model.dtype, device=model.device)
    if want_kp:
        from fitkit.camera import project

        out["err2d_px"] = err2d(project(p.keypoints, K), keypoints_2d)
    if masks is not None:
        from fitkit.render.rasterizer import rasterize

        gt_mask = _as_mask(masks, "masks")
        frags = rasterize(p.vertices, model.faces.to(model.device), K, tuple(gt_mask.shape[1:]))
        out["silhouette_iou"] = silhouette_iou(frags.mask, gt_mask).to(model.dtype)
    return out
