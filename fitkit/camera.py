"""Batched, differentiable pinhole cameras and the conversions fitkit needs.

Conventions (also in docs/conventions.md):

* Units: meters in 3D, pixels in 2D. Batch dimension first; every function
  works on a whole batch with tensor ops (no loop over samples) and returns
  tensors on the device and in the dtype of its main tensor input.
* Camera axes are OpenCV's: x right, y down, z forward (into the scene).
  A camera-frame point (X, Y, Z) projects to
  ``u = fx*X/Z + skew*Y/Z + cx``, ``v = fy*Y/Z + cy``.
* Pixel-centre convention (OpenCV's): integer pixel coordinates are pixel
  *centres*. The top-left pixel's centre is (0, 0); the image of width w and
  height h covers the continuous rectangle [-0.5, w-0.5] x [-0.5, h-0.5], so
  its centre is ((w-1)/2, (h-1)/2). Every function here, including crops
  and the default principal point, uses this convention.
* SMPL bodies are y-up and face +z. Seen from an OpenCV camera looking along
  +z, a body facing the camera must be rotated 180 degrees about x:
  ``global_orient = [pi, 0, 0]`` (axis-angle), which maps (x, y, z) to
  (x, -y, -z). See :func:`facing_camera_orient`.
* Weak perspective (HMR/SPIN): ``cam = (s, tx, ty)`` maps a camera-frame
  point to normalized crop coordinates ``s * (X + tx, Y + ty)`` in [-1, 1],
  -1 being the crop's left/top edge and +1 its right/bottom edge.
* Crops are square boxes given by their centre (pixels, full image) and side
  length b (pixels), resampled to ``crop_res`` x ``crop_res`` pixels.

Validation: shape errors and invalid values (non-positive focal / box size /
scale / depth, NaN) raise :class:`fitkit.errors.ParameterError` naming the
argument and the expected shape. :func:`project`, :func:`world_to_camera` and
:func:`camera_to_world` run inside optimizer loops, so they check shapes only:
value checks would force a device synchronisation every iteration, and a NaN
point must flow through per sample so that the solver can isolate it.
Intrinsics are value-checked where they are made (:func:`make_intrinsics`,
:func:`default_intrinsics`, :func:`crop_intrinsics`, :func:`check_intrinsics`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from fitkit.errors import ParameterError

Number = Union[int, float]
PerSample = Union[Number, Tensor]

#: Depth (meters) below which :func:`project` clamps z, so points on or behind
#: the image plane give large but finite pixels instead of inf/NaN.
MIN_DEPTH = 1e-3


# ---------------------------------------------------------------- validation

def _fmt_shape(expected: Sequence[Union[int, str]]) -> str:
    inner = ", ".join(str(d) for d in expected)
    return f"({inner},)" if len(expected) == 1 else f"({inner})"


def _check_shape(x, name: str, expected: Sequence[Union[int, str]], dims: Dict[str, int]) -> Tensor:
    """Check ``x`` is a floating tensor of shape ``expected``.

    ``expected`` holds ints or symbols ("B", "N"); a symbol seen before (in
    ``dims``) must take the same size again, so batch sizes agree across
    arguments.
    """
    want = _fmt_shape(expected)
    if not isinstance(x, Tensor):
        raise ParameterError(f"{name} must be a tensor of shape {want}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ParameterError(f"{name} must be a floating-point tensor of shape {want}, got dtype {x.dtype}")
    bound = ", ".join(f"{k}={v}" for k, v in dims.items() if k in expected)
    ok = x.dim() == len(expected)
    if ok:
        for size, d in zip(x.shape, expected):
            if isinstance(d, int):
                ok = ok and size == d
            elif d in dims:
                ok = ok and size == dims[d]
    if not ok:
        where = f" with {bound}" if bound else ""
        raise ParameterError(f"{name} must have shape {want}{where}, got {tuple(x.shape)}")
    for size, d in zip(x.shape, expected):
        if isinstance(d, str):
            dims.setdefault(d, size)
    return x


def _check_values(x: Tensor, name: str, want: str, positive: bool = False) -> None:
    bad = ~torch.isfinite(x)
    if positive:
        bad = bad | (x <= 0)
    if bool(bad.any()):
        samples = torch.nonzero(bad.reshape(bad.shape[0], -1).any(dim=1)).flatten().tolist()
        rule = "finite and > 0" if positive else "finite"
        raise ParameterError(f"{name} {want} must be {rule}; bad sample indices {samples[:10]}")


def _per_sample(x: PerSample, name: str, ref: Tensor, dims: Dict[str, int], positive: bool = False) -> Tensor:
    """A number, 0-d tensor or (B,) tensor as a checked (B,) tensor like ``ref``."""
    batch = dims["B"]
    if isinstance(x, Tensor) and x.dim() > 0:
        x = _check_shape(x.to(ref.dtype), name, ("B",), dims)
    elif isinstance(x, (Tensor, int, float)) and not isinstance(x, bool):
        x = torch.as_tensor(x, dtype=ref.dtype, device=ref.device).expand(batch)
    else:
        raise ParameterError(f"{name} must be a number or a tensor of shape (B,), got {type(x).__name__}")
    _check_values(x, name, "(B,)", positive)
    return x


def _per_sample_pair(x, name: str, ref: Tensor, dims: Dict[str, int], positive: bool = False) -> Tensor:
    """A pair of numbers, a (2,) tensor or a (B,2) tensor as a checked (B,2) tensor."""
    batch = dims["B"]
    if isinstance(x, Tensor) and x.dim() == 2:
        x = _check_shape(x.to(ref.dtype), name, ("B", 2), dims)
    else:
        try:
            x = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        except (TypeError, ValueError, RuntimeError):
            raise ParameterError(f"{name} must be a tensor of shape (B, 2) or a pair of numbers") from None
        if x.shape != (2,):
            raise ParameterError(f"{name} must have shape (B, 2) or (2,), got {tuple(x.shape)}")
        x = x.expand(batch, 2)
    _check_values(x, name, "(B, 2)", positive)
    return x


def check_intrinsics(K: Tensor, name: str = "K") -> Tensor:
    """Check a batch of intrinsic matrices; return it unchanged.

    Args:
        K: (B, 3, 3) float, pixels. Finite; fx = K[:,0,0] and fy = K[:,1,1]
            positive; last row (0, 0, 1).
    Raises:
        ParameterError naming ``name``.
    """
    _check_shape(K, name, ("B", 3, 3), {})
    _check_values(K, name, "(B, 3, 3)")
    _check_values(torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=1), f"{name} focal lengths", "(K[:,0,0], K[:,1,1])", positive=True)
    last = K.new_tensor([0.0, 0.0, 1.0])
    if not bool(torch.all(K[:, 2, :] == last)):
        raise ParameterError(f"{name} (B, 3, 3) must have last row (0, 0, 1)")
    return K


# ---------------------------------------------------------------- orientation

def facing_camera_orient(batch_size: int, dtype: torch.dtype = torch.float32,
                         device: Optional[torch.device] = None) -> Tensor:
    """SMPL ``global_orient`` that makes a body face an OpenCV camera.

    SMPL is y-up and faces +z; the camera looks along +z with y down. A
    rotation of pi about x (axis-angle (pi, 0, 0)) turns the body upright in
    the image and towards the camera: (x, y, z) -> (x, -y, -z).

    Returns:
        (batch_size, 3) axis-angle, radians.
    """
    if batch_size < 1:
        raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
    orient = torch.zeros(batch_size, 3, dtype=dtype, device=device)
    orient[:, 0] = math.pi
    return orient


# ---------------------------------------------------------------- intrinsics

def default_focal(width: PerSample, height: PerSample) -> PerSample:
    """Default focal length sqrt(w^2 + h^2) in pixels (seed 001, Sec. 4.1).

    Args:
        width, height: image size in pixels; numbers or (B,) tensors.
    Returns:
        A float for numbers, else a (B,) tensor.
    """
    if isinstance(width, Tensor) or isinstance(height, Tensor):
        ref = width if isinstance(width, Tensor) else height
        ref = ref if ref.is_floating_point() else ref.double()
        dims = {"B": ref.reshape(-1).shape[0]}
        w = _per_sample(width, "width", ref, dims, positive=True)
        h = _per_sample(height, "height", ref, dims, positive=True)
        return torch.sqrt(w * w + h * h)
    for value, name in ((width, "width"), (height, "height")):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ParameterError(f"{name} must be a positive number of pixels, got {value!r}")
    return math.hypot(width, height)


def image_center(image_size: Tensor) -> Tensor:
    """Centre of the image in pixels under the pixel-centre convention.

    Args:
        image_size: (B, 2) as (width, height), pixels.
    Returns:
        (B, 2) ``((w-1)/2, (h-1)/2)``.
    """
    _check_shape(image_size, "image_size", ("B", 2), {})
    return (image_size - 1.0) / 2.0


def make_intrinsics(fx: PerSample, fy: PerSample, cx: PerSample, cy: PerSample,
                    batch_size: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                    device: Optional[torch.device] = None) -> Tensor:
    """Build (B, 3, 3) intrinsic matrices ``[[fx,0,cx],[0,fy,cy],[0,0,1]]``.

    Args:
        fx, fy: focal lengths in pixels (> 0); numbers or (B,) tensors.
        cx, cy: principal point in pixels; numbers or (B,) tensors.
        batch_size: B when every argument is a number (default 1).
        dtype, device: used when no argument is a tensor (default float32, CPU);
            otherwise those of the first tensor argument.
    Returns:
        (B, 3, 3) K, differentiable with respect to tensor arguments.
    """
    tensors = [a for a in (fx, fy, cx, cy) if isinstance(a, Tensor) and a.dim() > 0]
    if tensors:
        ref = tensors[0]
        if not ref.is_floating_point():
            ref = ref.to(dtype or torch.float32)
        batch = ref.shape[0]
    else:
        ref = torch.empty(0, dtype=dtype or torch.float32, device=device)
        batch = 1 if batch_size is None else batch_size
    if batch_size is not None and batch_size != batch:
        raise ParameterError(f"batch_size={batch_size} does not match the (B,) tensors given (B={batch})")
    dims = {"B": batch}
    fx = _per_sample(fx, "fx", ref, dims, positive=True)
    fy = _per_sample(fy, "fy", ref, dims, positive=True)
    cx = _per_sample(cx, "cx", ref, dims)
    cy = _per_sample(cy, "cy", ref, dims)
    zero, one = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [torch.stack([fx, zero, cx], -1), torch.stack([zero, fy, cy], -1), torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, dim=1)


def default_intrinsics(width: PerSample, height: PerSample, batch_size: Optional[int] = None,
                       dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> Tensor:
    """Intrinsics with focal sqrt(w^2+h^2) and the principal point at the image centre.

    Args:
        width, height: image size in pixels; numbers or (B,) tensors.
        batch_size: B when width and height are numbers (default 1).
        dtype, device: of the result (device defaults to that of a tensor argument).
    Returns:
        (B, 3, 3) K with fx = fy = sqrt(w^2+h^2), cx = (w-1)/2, cy = (h-1)/2.
    """
    if isinstance(width, Tensor) or isinstance(height, Tensor):
        ref = width if isinstance(width, Tensor) else height
        device = ref.device if device is None else device
        width = torch.as_tensor(width, dtype=dtype, device=device)
        height = torch.as_tensor(height, dtype=dtype, device=device)
    f = default_focal(width, height)
    return make_intrinsics(f, f, (width - 1.0) / 2.0, (height - 1.0) / 2.0,
                           batch_size=batch_size, dtype=dtype, device=device)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics as four (B,) tensors in pixels (no skew).

    ``matrix()`` gives the (B, 3, 3) K that the functions of this module take.
    """

    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor

    @property
    def batch_size(self) -> int:
        return self.fx.shape[0]

    def matrix(self) -> Tensor:
        """(B, 3, 3) K."""
        return make_intrinsics(self.fx, self.fy, self.cx, self.cy)

    @classmethod
    def from_matrix(cls, K: Tensor) -> "Intrinsics":
        """From (B, 3, 3) K; the skew entry K[:,0,1] must be zero."""
        check_intrinsics(K)
        if bool((K[:, 0, 1] != 0).any()):
            raise ParameterError("K (B, 3, 3) must have zero skew K[:,0,1] to become Intrinsics")
        return cls(K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2])


# ---------------------------------------------------------------- projection

def project(points: Tensor, K: Tensor, min_depth: float = MIN_DEPTH) -> Tensor:
    """Perspective projection of camera-frame points to pixels.

    Args:
        points: (B, N, 3) camera frame (OpenCV axes), meters.
        K: (B, 3, 3) intrinsics, pixels; last row assumed (0, 0, 1).
        min_depth: depth is clamped to at least this many meters, so points on
            or behind the image plane give finite (huge) pixels, not inf/NaN;
            the gradient with respect to z is zero for clamped points.
    Returns:
        (B, N, 2) pixels (u right, v down).
    """
    dims: Dict[str, int] = {}
    _check_shape(points, "points", ("B", "N", 3), dims)
    _check_shape(K, "K", ("B", 3, 3), dims)
    z = points[..., 2].clamp(min=min_depth)
    x, y = points[..., 0] / z, points[..., 1] / z
    k = K.to(points.dtype)[:, :2, :, None]  # (B, 2, 3, 1): broadcast over the N points
    # written out rather than as a matrix product, so that every sample's pixels
    # are computed the same way whatever batch it is in (and under vmap)
    u = k[:, 0, 0] * x + k[:, 0, 1] * y + k[:, 0, 2]
    v = k[:, 1, 0] * x + k[:, 1, 1] * y + k[:, 1, 2]
    return torch.stack([u, v], dim=-1)


def world_to_camera(points: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Apply extrinsics: ``p_cam = R @ p_world + t``.

    Args:
        points: (B, N, 3) world frame, meters.
        R: (B, 3, 3) world-to-camera rotation.
        t: (B, 3) world-to-camera translation, meters.
    Returns:
        (B, N, 3) camera frame (OpenCV axes), meters.
    """
    dims: Dict[str, int] = {}
    _check_shape(points, "points", ("B", "N", 3), dims)
    _check_shape(R, "R", ("B", 3, 3), dims)
    _check_shape(t, "t", ("B", 3), dims)
    return points @ R.to(points.dtype).transpose(1, 2) + t.to(points.dtype)[:, None, :]


def camera_to_world(points: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Inverse of :func:`world_to_camera`: ``p_world = R^T (p_cam - t)``.

    Args:
        points: (B, N, 3) camera frame, meters.
        R: (B, 3, 3) world-to-camera rotation (orthonormal).
        t: (B, 3) world-to-camera translation, meters.
    Returns:
        (B, N, 3) world frame, meters.
    """
    dims: Dict[str, int] = {}
    _check_shape(points, "points", ("B", "N", 3), dims)
    _check_shape(R, "R", ("B", 3, 3), dims)
    _check_shape(t, "t", ("B", 3), dims)
    return (points - t.to(points.dtype)[:, None, :]) @ R.to(points.dtype)


# ---------------------------------------------------------------- weak perspective

def _check_cam(cam: Tensor, dims: Dict[str, int]) -> Tensor:
    _check_shape(cam, "cam", ("B", 3), dims)
    _check_values(cam, "cam", "(B, 3)")
    _check_values(cam[:, 0], "cam scale s = cam[:, 0]", "(B,)", positive=True)
    return cam


def _check_transl(transl: Tensor, dims: Dict[str, int]) -> Tensor:
    _check_shape(transl, "transl", ("B", 3), dims)
    _check_values(transl, "transl", "(B, 3)")
    _check_values(transl[:, 2], "transl depth tz = transl[:, 2]", "(B,)", positive=True)
    return transl


def weak_perspective_project(points: Tensor, cam: Tensor) -> Tensor:
    """HMR/SPIN weak perspective: ``s * (X + tx, Y + ty)``.

    Args:
        points: (B, N, 3) camera-frame points (OpenCV axes, body rotated by
            its global_orient, no translation), meters.
        cam: (B, 3) as (s, tx, ty); s > 0 relative to the crop, tx, ty meters.
    Returns:
        (B, N, 2) normalized crop coordinates: -1 left/top edge, +1 right/bottom edge.
    """
    dims: Dict[str, int] = {}
    _check_shape(points, "points", ("B", "N", 3), dims)
    _check_shape(cam, "cam", ("B", 3), dims)
    cam = cam.to(points.dtype)
    return cam[:, None, :1] * (points[..., :2] + cam[:, None, 1:])


def normalized_to_crop_pixels(xy: Tensor, crop_res: PerSample) -> Tensor:
    """Normalized crop coordinates [-1, 1] to crop pixels.

    Args:
        xy: (B, N, 2) normalized; -1 and +1 are the crop's outer edges.
        crop_res: crop side in pixels; number or (B,) tensor.
    Returns:
        (B, N, 2) pixels: ``(xy + 1) * R / 2 - 0.5`` (pixel-centre convention).
    """
    dims: Dict[str, int] = {}
    _check_shape(xy, "xy", ("B", "N", 2), dims)
    res = _per_sample(crop_res, "crop_res", xy, dims, positive=True)[:, None, None]
    return (xy + 1.0) * res / 2.0 - 0.5


def weak_perspective_to_translation(cam: Tensor, focal: PerSample, crop_size: PerSample) -> Tensor:
    """Weak-perspective camera to the equivalent full-perspective translation.

    With the principal point at the crop centre, the perspective projection
    of points at the root depth equals the weak-perspective one when
    ``tz = 2 * focal / (crop_size * s)``; tx, ty are unchanged.

    Args:
        cam: (B, 3) as (s, tx, ty); s > 0.
        focal: focal length in crop pixels; number or (B,) tensor, > 0.
        crop_size: crop side in pixels; number or (B,) tensor, > 0.
    Returns:
        (B, 3) transl (tx, ty, tz), meters.
    """
    dims: Dict[str, int] = {}
    _check_cam(cam, dims)
    f = _per_sample(focal, "focal", cam, dims, positive=True)
    size = _per_sample(crop_size, "crop_size", cam, dims, positive=True)
    tz = 2.0 * f / (size * cam[:, 0])
    return torch.stack([cam[:, 1], cam[:, 2], tz], dim=-1)


def translation_to_weak_perspective(transl: Tensor, focal: PerSample, crop_size: PerSample) -> Tensor:
    """Inverse of :func:`weak_perspective_to_translation`: ``s = 2 f / (crop_size tz)``.

    Args:
        transl: (B, 3) meters; tz > 0.
        focal: focal length in crop pixels; number or (B,) tensor, > 0.
        crop_size: crop side in pixels; number or (B,) tensor, > 0.
    Returns:
        (B, 3) cam (s, tx, ty).
    """
    dims: Dict[str, int] = {}
    _check_transl(transl, dims)
    f = _per_sample(focal, "focal", transl, dims, positive=True)
    size = _per_sample(crop_size, "crop_size", transl, dims, positive=True)
    s = 2.0 * f / (size * transl[:, 2])
    return torch.stack([s, transl[:, 0], transl[:, 1]], dim=-1)


# ---------------------------------------------------------------- crop <-> full image (CLIFF)

def _principal_point(principal_point, image_size, ref: Tensor, dims: Dict[str, int]) -> Tensor:
    if principal_point is not None:
        return _per_sample_pair(principal_point, "principal_point", ref, dims)
    if image_size is None:
        raise ParameterError("image_size (B, 2) as (width, height) is required when principal_point is not given")
    return (_per_sample_pair(image_size, "image_size", ref, dims, positive=True) - 1.0) / 2.0


def _cliff_args(ref: Tensor, dims: Dict[str, int], bbox_center, bbox_size, image_size, focal,
                principal_point):
    """Validated (center (B,2), size (B,), focal (B,), principal point (B,2)) for CLIFF."""
    center = _per_sample_pair(bbox_center, "bbox_center", ref, dims)
    size = _per_sample(bbox_size, "bbox_size", ref, dims, positive=True)
    f = _per_sample(focal, "focal", ref, dims, positive=True)
    return center, size, f, _principal_point(principal_point, image_size, ref, dims)


def crop_cam_to_full_translation(cam: Tensor, bbox_center, bbox_size: PerSample, image_size,
                                 focal: PerSample, principal_point=None) -> Tensor:
    """CLIFF: weak-perspective camera of a crop to a full-image translation.

    With ``bs = bbox_size * s`` and principal point (px, py):
    ``tz = 2 f / bs``, ``tx' = tx + 2 (cx - px) / bs``, ``ty' = ty + 2 (cy - py) / bs``.
    Projecting with the full-image K then puts points at the root depth where
    the crop's weak projection, mapped back to the full image, puts them.

    Args:
        cam: (B, 3) (s, tx, ty) predicted for the crop; s > 0.
        bbox_center: (B, 2) or pair, box centre (cx, cy) in full-image pixels.
        bbox_size: box side b in full-image pixels; number or (B,), > 0.
        image_size: (B, 2) or pair (width, height) in pixels; gives the
            principal point ((w-1)/2, (h-1)/2). May be None if principal_point is given.
        focal: full-image focal length in pixels; number or (B,), > 0.
        principal_point: optional (B, 2) or pair, pixels; overrides the image centre
            (use K[:, :2, 2] for a calibrated camera). CLIFF's own code uses
            (w/2, h/2), the centre under the pixel-corner convention.
    Returns:
        (B, 3) transl in the full-image camera frame, meters.
    """
    dims: Dict[str, int] = {}
    _check_cam(cam, dims)
    center, size, f, pp = _cliff_args(cam, dims, bbox_center, bbox_size, image_size, focal, principal_point)
    bs = size * cam[:, 0]
    txy = cam[:, 1:] + 2.0 * (center - pp) / bs[:, None]
    return torch.cat([txy, (2.0 * f / bs)[:, None]], dim=-1)


def full_translation_to_crop_cam(transl: Tensor, bbox_center, bbox_size: PerSample, image_size,
                                 focal: PerSample, principal_point=None) -> Tensor:
    """Inverse of :func:`crop_cam_to_full_translation`.

    ``s = 2 f / (b tz)``, ``tx = tx' - (cx - px) tz / f``, ``ty = ty' - (cy - py) tz / f``.

    Args: as :func:`crop_cam_to_full_translation`, with
        transl: (B, 3) full-image translation, meters; tz > 0.
    Returns:
        (B, 3) cam (s, tx, ty) for the crop.
    """
    dims: Dict[str, int] = {}
    _check_transl(transl, dims)
    center, size, f, pp = _cliff_args(transl, dims, bbox_center, bbox_size, image_size, focal, principal_point)
    tz = transl[:, 2]
    s = 2.0 * f / (size * tz)
    txy = transl[:, :2] - (center - pp) * (tz / f)[:, None]
    return torch.cat([s[:, None], txy], dim=-1)


def crop_transform(bbox_center, bbox_size: PerSample, crop_res: PerSample, ref: Optional[Tensor] = None) -> Tensor:
    """Affine map from full-image pixels to crop pixels, as (B, 3, 3).

    The box [cx - b/2, cx + b/2] x [cy - b/2, cy + b/2] (continuous pixel
    coordinates) becomes the crop's extent [-0.5, R - 0.5]^2:
    ``u_crop = (u - cx) * R / b + (R - 1) / 2`` (same for v).

    Args:
        bbox_center: (B, 2) or pair, box centre in full-image pixels.
        bbox_size: box side b in pixels; number or (B,), > 0.
        crop_res: crop side R in pixels; number or (B,), > 0.
        ref: optional (B, ...) tensor fixing B, dtype and device; otherwise
            they come from the first tensor argument (B = 1 for numbers only).
    Returns:
        (B, 3, 3) A with last row (0, 0, 1).
    """
    if ref is None:
        tensors = [a for a in (bbox_center, bbox_size, crop_res) if isinstance(a, Tensor) and a.is_floating_point()]
        ref = tensors[0] if tensors else torch.empty(0)
    if ref.dim() > 0 and ref.numel() > 0:
        batch = ref.shape[0]
    elif isinstance(bbox_center, Tensor) and bbox_center.dim() == 2:
        batch = bbox_center.shape[0]
    else:
        batch = next((a.shape[0] for a in (bbox_size, crop_res) if isinstance(a, Tensor) and a.dim() == 1), 1)
    dims: Dict[str, int] = {"B": batch}
    center = _per_sample_pair(bbox_center, "bbox_center", ref, dims)
    size = _per_sample(bbox_size, "bbox_size", ref, dims, positive=True)
    res = _per_sample(crop_res, "crop_res", ref, dims, positive=True)
    scale = res / size
    offset = (res[:, None] - 1.0) / 2.0 - scale[:, None] * center
    zero, one = torch.zeros_like(scale), torch.ones_like(scale)
    rows = [torch.stack([scale, zero, offset[:, 0]], -1),
            torch.stack([zero, scale, offset[:, 1]], -1),
            torch.stack([zero, zero, one], -1)]
    return torch.stack(rows, dim=1)


def crop_intrinsics(K_full: Tensor, bbox_center, bbox_size: PerSample, crop_res: PerSample) -> Tensor:
    """Intrinsics of a square crop: ``K_crop = A @ K_full`` (A from :func:`crop_transform`).

    Projecting a 3D point with K_crop equals projecting it with K_full and
    mapping the pixel with :func:`points_full_to_crop`.

    Args:
        K_full: (B, 3, 3) full-image intrinsics, pixels.
        bbox_center: (B, 2) or pair, box centre in full-image pixels.
        bbox_size: box side in pixels; number or (B,), > 0.
        crop_res: crop side in pixels; number or (B,), > 0.
    Returns:
        (B, 3, 3) K_crop: f * R / b, principal point (p - c) * R / b + (R - 1) / 2.
    """
    check_intrinsics(K_full, "K_full")
    return crop_transform(bbox_center, bbox_size, crop_res, ref=K_full) @ K_full


def _crop_affine(points: Tensor, bbox_center, bbox_size: PerSample, crop_res: PerSample) -> Tuple[Tensor, Tensor, Tensor]:
    dims: Dict[str, int] = {}
    _check_shape(points, "points", ("B", "N", 2), dims)
    center = _per_sample_pair(bbox_center, "bbox_center", points, dims)
    size = _per_sample(bbox_size, "bbox_size", points, dims, positive=True)
    res = _per_sample(crop_res, "crop_res", points, dims, positive=True)
    return center[:, None, :], (res / size)[:, None, None], ((res - 1.0) / 2.0)[:, None, None]


def points_full_to_crop(points: Tensor, bbox_center, bbox_size: PerSample, crop_res: PerSample) -> Tensor:
    """Full-image pixels to crop pixels: ``(p - c) * R / b + (R - 1) / 2``.

    Args:
        points: (B, N, 2) full-image pixels.
        bbox_center: (B, 2) or pair, box centre in full-image pixels.
        bbox_size: box side b in pixels; number or (B,), > 0.
        crop_res: crop side R in pixels; number or (B,), > 0.
    Returns:
        (B, N, 2) crop pixels.
    """
    center, scale, crop_center = _crop_affine(points, bbox_center, bbox_size, crop_res)
    return (points - center) * scale + crop_center


def points_crop_to_full(points: Tensor, bbox_center, bbox_size: PerSample, crop_res: PerSample) -> Tensor:
    """Crop pixels to full-image pixels: ``(q - (R - 1) / 2) * b / R + c``.

    Args: as :func:`points_full_to_crop`, with points (B, N, 2) in crop pixels.
    Returns:
        (B, N, 2) full-image pixels.
    """
    center, scale, crop_center = _crop_affine(points, bbox_center, bbox_size, crop_res)
    return (points - crop_center) / scale + center
