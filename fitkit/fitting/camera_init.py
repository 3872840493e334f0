"""Initial body translation from the torso by similar triangles (SMPLify's camera init).

A segment of image-plane length L (meters) at depth z appears about
``f * L / z`` pixels long, so ``z = f * L / l`` once the model's segment
length L and the observed length l are known. SMPLify applies this to the
torso (shoulders to hips), which is long, rigid and rarely occluded, and then
chooses x, y so that the body lands on the observed keypoints.

Conventions: batch first, meters in 3D, full-image pixels in 2D (integer
coordinates at pixel centres), OpenCV camera axes (x right, y down, z
forward), intrinsics K (B, 3, 3) without skew.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fitkit.body.keypoint_formats import get_format
from fitkit.errors import ParameterError

__all__ = ["translation_from_torso", "torso_pairs_for", "FALLBACK_BODY_HEIGHT", "FALLBACK_IMAGE_FILL"]

#: Body height (meters) assumed by the fallback when the keypoints' own extent is unusable.
FALLBACK_BODY_HEIGHT = 1.7
#: Fraction of the image height the body fills in the fallback.
FALLBACK_IMAGE_FILL = 0.8


def torso_pairs_for(keypoint_format: str, *, include_widths: bool = False) -> list[tuple[int, int]]:
    """Keypoint index pairs of the torso segments of a keypoint format.

    The default is the two sides, (left_shoulder, left_hip) and
    (right_shoulder, right_hip), as in SMPLify. They are nearly vertical in
    most images, so their image length changes little when the person turns.
    ``include_widths=True`` adds the shoulder line and the hip line: more
    evidence when one side is occluded, but these shrink to nothing in side
    views and detectors disagree on where the hips are, so they are off by default.

    Args:
        keypoint_format: a format name or alias ('body25', 'coco25', 'blazepose33', ...).
    Returns:
        list of (i, j) indices into the format's keypoints.
    Raises:
        ValueError for an unknown format or one without shoulders and hips.
    """
    fmt = get_format(keypoint_format)
    index = {name: i for i, name in enumerate(fmt.names)}
    wanted = [("left_shoulder", "left_hip"), ("right_shoulder", "right_hip")]
    if include_widths:
        wanted += [("left_shoulder", "right_shoulder"), ("left_hip", "right_hip")]
    missing = sorted({name for pair in wanted for name in pair} - set(index))
    if missing:
        raise ValueError(f"keypoint format {fmt.name!r} has no {', '.join(missing)}")
    return [(index[a], index[b]) for a, b in wanted]


def translation_from_torso(points: Tensor, observed: Tensor, K_intr: Tensor,
                           torso_pairs: Sequence[tuple[int, int]], min_conf: float = 0.1, *,
                           projected_lengths: bool = True) -> tuple[Tensor, Tensor]:
    """Estimate the body translation from the torso's apparent size (similar triangles).

    A pair (i, j) is *used* in a sample when both keypoints have confidence
    > ``min_conf`` (and finite coordinates). With the keypoints of the used
    pairs (each counted once):

    * depth: ``D = mean_pairs(L3) / mean_pairs(l2)``, where ``l2`` is the
      observed segment length in normalized image coordinates
      (``((u - cx) / fx, (v - cy) / fy)``, i.e. pixels divided by the focal
      length, which also handles fx != fy) and ``L3`` the model segment length
      in meters. With ``projected_lengths=True`` (default) ``L3`` is the length
      of the segment's x, y part: the points are already rotated into the
      camera frame, so this is what a camera sees, and a torso leaning
      towards the camera or turned sideways gives the right depth.
      ``projected_lengths=False`` uses the full 3D length, SMPLify's original
      formula, which overestimates the depth of a foreshortened torso.
    * D is the depth of the used points' 3D centroid C; the translation puts
      C exactly on the ray through the observed 2D centroid c at that depth:
      ``t = (D (c_u - cx) / fx - C_x, D (c_v - cy) / fy - C_y, D - C_z)``.

    Samples with no used pair, or whose used segments are degenerate (mean
    observed length under one pixel, or zero model length), get
    ``ok = False`` and a fallback: the body's vertical extent (that of all K
    points, or :data:`FALLBACK_BODY_HEIGHT` if under 0.2 m) filling
    :data:`FALLBACK_IMAGE_FILL` of the image height, taken as ``2 cy + 1``
    pixels, i.e. ``D = fy * H / (0.8 (2 cy + 1))``; the centroid of the
    keypoints with confidence > ``min_conf`` is put on their observed
    centroid, or, when there are none, the centroid of all points on the
    principal point. The result is always finite for finite ``points`` and ``K_intr``.

    Args:
        points: (B, K, 3) model keypoints in the camera frame, meters, posed
            and rotated by global_orient but with zero translation.
        observed: (B, K, 3) observed keypoints (u, v, confidence), full-image
            pixels; NaN coordinates are treated as unobserved.
        K_intr: (B, 3, 3) intrinsics, pixels (skew ignored).
        torso_pairs: (i, j) keypoint index pairs, e.g. from :func:`torso_pairs_for`.
        min_conf: confidence a keypoint needs (strictly more) to be used.
        projected_lengths: see above.
    Returns:
        transl (B, 3) meters, in the dtype and device of ``points``, and
        ok (B,) bool: True where the torso gave the estimate.
    """
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        raise ParameterError(f"points: expected a tensor of shape (B, K, 3), got "
                             f"{tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__}")
    B, num_kp = points.shape[:2]
    if not isinstance(observed, Tensor) or tuple(observed.shape) != (B, num_kp, 3):
        raise ParameterError(f"observed: expected shape ({B}, {num_kp}, 3) (B, K from points), got "
                             f"{tuple(observed.shape) if isinstance(observed, Tensor) else type(observed).__name__}")
    if not isinstance(K_intr, Tensor) or tuple(K_intr.shape) != (B, 3, 3):
        raise ParameterError(f"K_intr: expected shape ({B}, 3, 3), got "
                             f"{tuple(K_intr.shape) if isinstance(K_intr, Tensor) else type(K_intr).__name__}")
    pairs = [(int(i), int(j)) for i, j in torso_pairs]
    bad = [p for p in pairs if not (0 <= p[0] < num_kp and 0 <= p[1] < num_kp)]
    if bad:
        raise ParameterError(f"torso_pairs: {bad[0]} is not a pair of keypoint indices in [0, {num_kp})")

    dtype = points.dtype
    pts = points
    obs = observed.to(device=pts.device, dtype=dtype)
    K = K_intr.to(device=pts.device, dtype=dtype)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]

    finite = torch.isfinite(obs).all(-1)
    seen = finite & (obs[..., 2] > min_conf)  # (B, K)
    uv = torch.where(finite[..., None], obs[..., :2], torch.zeros_like(obs[..., :2]))
    # normalized image coordinates: the camera ray through each observation
    ray = torch.stack([(uv[..., 0] - cx[:, None]) / fx[:, None], (uv[..., 1] - cy[:, None]) / fy[:, None]], -1)

    if pairs:
        i_idx = torch.tensor([p[0] for p in pairs], device=pts.device)
        j_idx = torch.tensor([p[1] for p in pairs], device=pts.device)
        pair_ok = seen[:, i_idx] & seen[:, j_idx]  # (B, P)
        seg3 = pts[:, i_idx] - pts[:, j_idx]
        if projected_lengths:
            seg3 = seg3[..., :2]
        len3 = torch.linalg.vector_norm(seg3, dim=-1)
        len2 = torch.linalg.vector_norm(ray[:, i_idx] - ray[:, j_idx], dim=-1)
        w = pair_ok.to(dtype)
        count = w.sum(1)
        mean3 = (w * len3).sum(1) / count.clamp_min(1)
        mean2 = (w * len2).sum(1) / count.clamp_min(1)
        # at least one pixel of observed torso and a non-degenerate model torso
        one_px = 2.0 / (fx + fy)
        ok = (count > 0) & (mean2 >= one_px) & (mean3 > torch.finfo(dtype).eps) & torch.isfinite(mean3)
        depth = mean3 / torch.where(ok, mean2, torch.ones_like(mean2))
        incidence = torch.zeros(len(pairs), num_kp, dtype=dtype, device=pts.device)  # (P, K)
        incidence[torch.arange(len(pairs)), i_idx] = 1.0
        incidence[torch.arange(len(pairs)), j_idx] = 1.0
        used_kp = (w @ incidence) > 0
    else:
        ok = torch.zeros(B, dtype=torch.bool, device=pts.device)
        depth = torch.zeros(B, dtype=dtype, device=pts.device)
        used_kp = torch.zeros_like(seen)

    # fallback depth: the body's vertical extent fills FALLBACK_IMAGE_FILL of the image height
    height = pts[..., 1].amax(1) - pts[..., 1].amin(1)
    height = torch.where(torch.isfinite(height) & (height >= 0.2), height, torch.full_like(height, FALLBACK_BODY_HEIGHT))
    image_h = (2.0 * cy + 1.0).clamp_min(1.0)
    fallback_depth = fy * height / (FALLBACK_IMAGE_FILL * image_h)
    depth = torch.where(ok, depth, fallback_depth)

    # which keypoints define the centroids: those of used pairs, else any confident one, else all
    any_seen = seen.any(1)
    centroid_kp = torch.where(ok[:, None], used_kp, torch.where(any_seen[:, None], seen, torch.ones_like(seen)))
    wk = centroid_kp.to(dtype)
    nk = wk.sum(1, keepdim=True).clamp_min(1)
    c3 = (wk[..., None] * pts).sum(1) / nk  # (B, 3)
    c2 = (wk[..., None] * ray).sum(1) / nk  # (B, 2) normalized
    c2 = torch.where((ok | any_seen)[:, None], c2, torch.zeros_like(c2))  # principal point
    transl = torch.stack([depth * c2[:, 0] - c3[:, 0], depth * c2[:, 1] - c3[:, 1], depth - c3[:, 2]], -1)
    return transl, ok
