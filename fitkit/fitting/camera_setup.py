"""The camera a fit projects with: full-image intrinsics or a square crop camera.

Both modes are expressed as full-image intrinsics ``K`` (N, 3, 3) plus a
per-sample ``pixel_scale`` (N,) that converts full-image pixels into the
pixels the recipe's pixel quantities (robust-kernel sigma) are written in:

- ``mode: full`` — the observation file's intrinsics when it has them
  (``use_observed_intrinsics: true``), else focal ``sqrt(w^2 + h^2)`` (or the
  recipe's ``focal``) and the principal point at the image centre
  (seed 001, Sec. 4.1). ``pixel_scale = 1``.
- ``mode: crop`` — SPIN's set-up: a square box of side ``b`` around the
  person (the observation's ``bbox`` or the confident keypoints, enlarged by
  ``bbox_scale``), resampled to ``crop_size`` pixels and seen by a camera of
  focal ``focal`` (5000 in SPIN) centred on the crop. Written in full-image
  pixels this camera is exactly ``fx = fy = focal * b / crop_size`` with the
  principal point at the box centre, and ``pixel_scale = crop_size / b``.
  Results store this ``K``, so projecting the fitted body with it lands on
  the original image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from fitkit.camera import default_focal, make_intrinsics

__all__ = ["FitCamera", "build_fit_camera", "confident_box", "CAMERA_DEFAULTS"]

CAMERA_DEFAULTS = {
    "mode": "full",
    "focal": "auto",
    "use_observed_intrinsics": True,
    "crop_size": 224,
    "bbox_scale": 1.2,
    "min_confidence": 0.1,
}


@dataclass
class FitCamera:
    """Per-sample camera of a fit (N samples).

    Attributes:
        K: (N, 3, 3) intrinsics in full-image pixels.
        pixel_scale: (N,) recipe pixels per full-image pixel.
        image_size: (N, 2) width, height in pixels.
        mode: ``'full'`` or ``'crop'``.
    """

    K: torch.Tensor
    pixel_scale: torch.Tensor
    image_size: torch.Tensor
    mode: str


def confident_box(kps: torch.Tensor, min_conf: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square boxes around each sample's confident keypoints.

    Args:
        kps: (N, K, 3) pixels and confidences.
        min_conf: keypoints with confidence above this count.
    Returns:
        centre (N, 2) pixels, side (N,) pixels (the box's longest side), and
        has (N,) bool (False: no confident keypoint; centre and side are then 0).
    """
    return masked_box(kps[..., :2], kps[..., 2] > min_conf)


def masked_box(points: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square boxes around each sample's points where ``mask`` holds.

    Args:
        points: (N, P, 2) pixels.
        mask: (N, P) bool, the points that count.
    Returns:
        centre (N, 2), side (N,) (the box's longest side) and has (N,) bool
        (False: no point counts; centre and side are then 0).
    """
    big = torch.finfo(points.dtype).max
    lo = torch.where(mask[..., None], points, big).amin(dim=1)
    hi = torch.where(mask[..., None], points, -big).amax(dim=1)
    has = mask.any(dim=1)
    center = torch.where(has[:, None], (lo + hi) / 2, torch.zeros_like(lo))
    side = torch.where(has, (hi - lo).amax(dim=1), torch.zeros_like(lo[:, 0]))
    return center, side, has


def build_fit_camera(spec: Mapping[str, Any] | None, observations, *, dtype=torch.float32,
                     device=None) -> FitCamera:
    """Make the :class:`FitCamera` a recipe's ``camera:`` section asks for.

    Args:
        spec: the recipe's ``camera`` mapping (keys of :data:`CAMERA_DEFAULTS`).
        observations: :class:`fitkit.io.observations.Observations` (N samples).
    """
    cfg = dict(CAMERA_DEFAULTS)
    unknown = set(spec or {}) - set(cfg)
    if unknown:
        raise ValueError(f"camera: unknown key(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(spec or {})
    size = observations.image_size.to(device=device, dtype=dtype)
    N = size.shape[0]
    mode = cfg["mode"]
    focal = cfg["focal"]
    if not (focal == "auto" or (isinstance(focal, (int, float)) and focal > 0)):
        raise ValueError(f"camera.focal: expected 'auto' or a positive number of pixels, got {focal!r}")
    if mode == "full":
        if cfg["use_observed_intrinsics"] and observations.intrinsics is not None:
            K = observations.intrinsics.to(device=device, dtype=dtype).clone()
        else:
            f = default_focal(size[:, 0], size[:, 1]) if focal == "auto" else torch.full_like(size[:, 0], float(focal))
            K = make_intrinsics(f, f, (size[:, 0] - 1) / 2, (size[:, 1] - 1) / 2)
        return FitCamera(K=K, pixel_scale=torch.ones(N, dtype=dtype, device=device), image_size=size, mode="full")
    if mode == "crop":
        crop = float(cfg["crop_size"])
        f_crop = 5000.0 if focal == "auto" else float(focal)
        if observations.bbox is not None:
            box = observations.bbox.to(device=device, dtype=dtype)
            center = (box[:, :2] + box[:, 2:]) / 2
            side = (box[:, 2:] - box[:, :2]).amax(dim=1).clamp(min=1.0)
        else:
            kps = observations.keypoints.to(device=device, dtype=dtype)
            center, side, has = confident_box(kps, float(cfg["min_confidence"]))
            # nothing observed: the whole image (such frames are not fitted anyway)
            center = torch.where(has[:, None], center, (size - 1) / 2)
            side = torch.where(has, side, size.amax(dim=1)).clamp(min=1.0)
        side = side * float(cfg["bbox_scale"])
        f = f_crop * side / crop
        K = make_intrinsics(f, f, center[:, 0], center[:, 1])
        return FitCamera(K=K, pixel_scale=crop / side, image_size=size, mode="crop")
    raise ValueError(f"camera.mode: expected 'full' or 'crop', got {mode!r}")
