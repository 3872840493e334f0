"""Data for the DaNet-style IUV -> SMPL initializer (seed 004, Sec. 4.1-4.2): IUV
crops, DaNet's per-part input layout, PartDrop (Eq. 5), and synthetic bodies
of the open body rendered to IUV maps for training and evaluation.

Conventions (those of :mod:`fitkit.camera`): batch first, meters, pixels with
integer coordinates at pixel *centres*, OpenCV camera axes (x right, y down,
z forward), SMPL joint order, axis-angle in radians. IUV maps are (N, H, W, 3)
float tensors: I (part 1..24, 0 = background; see :mod:`fitkit.render.iuv`),
U, V in [0, 1] (0 on background).

**Crop.** The square box around the IUV foreground (pixels with I > 0):
centre = the centre of the foreground's bounding box, side
``b = CROP_SCALE * max(w, h)`` with w, h the box's extent in pixels (a
foreground spanning columns x0..x1 has w = x1 - x0 + 1). The box is
resampled to R x R (R = :data:`DEFAULT_RES`) by *nearest* sampling of I, U
and V together (part ids are never interpolated, and no U, V is blended with
a neighbouring part or the background), zero (background) outside the image.
Crop pixel q and full-image pixel p are related by
:func:`fitkit.camera.points_full_to_crop` / ``points_crop_to_full``.

**Per-part layout** (:func:`iuv_to_parts`, DaNet's IUV "H" maps): (N, 73, R, R)
float channels: channel 0 the background indicator, channel p (1..24) the
indicator of part p, channel 24 + p the U of part p and channel 48 + p its V
(zero outside part p).

**PartDrop** (Eq. 5, ``H[p] = 0``; :func:`part_drop`): dropping part p zeroes
its three channels p, 24 + p and 48 + p and nothing else. The background
channel is left as it was, so the dropped pixels become "unlabelled" (all 73
channels zero) rather than background: that is Eq. 5 taken literally, as
DaNet applies it to the soft IUV estimates of its first stage. (An IUV map in
which a part is missing for real, e.g. occluded, has background or another
part there instead; :func:`remove_parts` does that on a full IUV map, for
comparison.)

**Synthetic bodies** (:func:`sample_bodies`, :func:`render_bodies`): body
poses from the open pose data (mirrored copies included) and/or
:func:`fitkit.eval.synthetic.sample_body_poses`; a global orientation with
the full yaw range, modest pitch and roll (:data:`ORIENT_RANGES`); betas ~
N(0, 1); a random focal length, principal point and placement in a
(H, W) = :data:`IMAGE_SIZE` image (body height a random fraction of H, pelvis
anywhere near the image centre). Every random number comes from one CPU
``torch.Generator``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from fitkit.camera import full_translation_to_crop_cam, points_full_to_crop, project
from fitkit.errors import ParameterError

__all__ = ["NUM_PARTS", "NUM_CHANNELS", "DEFAULT_RES", "CROP_SCALE", "IMAGE_SIZE", "ORIENT_RANGES",
           "check_iuv", "foreground_boxes", "crop_iuv", "iuv_to_parts", "part_drop", "sample_part_drop",
           "remove_parts", "crop_pixels_to_normalized", "crop_normalized_to_pixels", "random_orient",
           "sample_bodies", "render_bodies", "DaNetData", "targets_from_render", "make_dataset", "part_channels"]

NUM_PARTS = 24
#: Channels of the per-part layout: background + 24 part indicators + 24 U + 24 V.
NUM_CHANNELS = 1 + 3 * NUM_PARTS
#: Side of the body crop fed to the network, pixels.
DEFAULT_RES = 64
#: Crop side / largest side of the foreground box.
CROP_SCALE = 1.2
#: (H, W) of the synthetic full images, pixels.
IMAGE_SIZE = (160, 128)
#: Ranges (radians) of the rotation applied on top of the facing-camera orientation
#: (about the camera's y, x and z axes, as in sample_body_poses): yaw covers the full circle.
ORIENT_RANGES = {"yaw": (-math.pi, math.pi), "pitch": (-0.3, 0.3), "roll": (-0.3, 0.3)}


# ---------------------------------------------------------------- validation

def check_iuv(iuv, name: str = "iuv") -> Tensor:
    """Check an IUV map; return it as a float tensor.

    Args:
        iuv: (N, H, W, 3) floating tensor: I in 0..24 (whole numbers), U, V in [0, 1].
        name: the argument's name for error messages.
    Raises:
        ParameterError naming ``name`` and the channel at fault (wrong type, shape or
        dtype, NaN/inf, I not a whole number in 0..24, U or V outside [0, 1]).
    """
    if not isinstance(iuv, Tensor):
        raise ParameterError(f"{name} must be a tensor of shape (N, H, W, 3), got {type(iuv).__name__}")
    if iuv.dim() != 4 or iuv.shape[-1] != 3 or min(iuv.shape) < 1:
        raise ParameterError(f"{name} must have shape (N, H, W, 3) with N, H, W >= 1 (I, U, V last), "
                             f"got {tuple(iuv.shape)}")
    if not iuv.is_floating_point():
        raise ParameterError(f"{name} must be a floating-point tensor (I, U, V as floats), got dtype {iuv.dtype}")
    bad = ~torch.isfinite(iuv)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(bad.shape[0], -1).any(1)).flatten().tolist()
        raise ParameterError(f"{name} (N, H, W, 3) must be finite; NaN or inf in samples {rows[:10]}")
    part = iuv[..., 0]
    bad = (part < 0) | (part > NUM_PARTS) | (part != part.round())
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(bad.shape[0], -1).any(1)).flatten().tolist()
        raise ParameterError(f"{name}[..., 0] (I, the part index) must hold whole numbers in 0..{NUM_PARTS}; "
                             f"found {float(part[bad][0])} in samples {rows[:10]}")
    uv = iuv[..., 1:]
    bad = (uv < 0) | (uv > 1)
    if bool(bad.any()):
        rows = torch.nonzero(bad.reshape(bad.shape[0], -1).any(1)).flatten().tolist()
        raise ParameterError(f"{name}[..., 1:] (U, V) must lie in [0, 1]; found {float(uv[bad][0])} in "
                             f"samples {rows[:10]}")
    return iuv


# ---------------------------------------------------------------- crops

def foreground_boxes(iuv: Tensor, scale: float = CROP_SCALE) -> tuple[Tensor, Tensor, Tensor]:
    """Square crop boxes around the IUV foreground (see the module docstring).

    Args:
        iuv: (N, H, W, 3) IUV maps (I > 0 is foreground).
        scale: box side / largest side of the foreground's bounding box.
    Returns:
        center (N, 2) box centres (u, v) in full-image pixels, size (N,) box sides
        in pixels, valid (N,) bool: False where there is no foreground (those rows
        get the image centre and side max(H, W), so that later steps stay finite).
    """
    n, h, w = iuv.shape[:3]
    fg = iuv[..., 0] > 0
    rows, cols = fg.any(dim=2), fg.any(dim=1)  # (N, H), (N, W)
    valid = rows.any(dim=1)
    dt = iuv.dtype if iuv.is_floating_point() else torch.float32
    ys = torch.arange(h, device=iuv.device, dtype=dt)
    xs = torch.arange(w, device=iuv.device, dtype=dt)
    big = float(max(h, w)) + 1.0
    y0 = torch.where(rows, ys, big).amin(dim=1)
    y1 = torch.where(rows, ys, -big).amax(dim=1)
    x0 = torch.where(cols, xs, big).amin(dim=1)
    x1 = torch.where(cols, xs, -big).amax(dim=1)
    center = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2], dim=-1)
    size = scale * torch.maximum(x1 - x0 + 1, y1 - y0 + 1)
    default_c = torch.tensor([(w - 1) / 2, (h - 1) / 2], dtype=dt, device=iuv.device).expand(n, 2)
    center = torch.where(valid[:, None], center, default_c)
    size = torch.where(valid, size, torch.full_like(size, float(max(h, w))))
    return center, size, valid


def crop_iuv(iuv: Tensor, center: Tensor, size: Tensor, res: int = DEFAULT_RES) -> Tensor:
    """Nearest resampling of square boxes of IUV maps.

    Args:
        iuv: (N, H, W, 3) IUV maps.
        center: (N, 2) box centres, full-image pixels.
        size: (N,) box sides, pixels.
        res: side R of the crop, pixels.
    Returns:
        (N, R, R, 3) IUV crops; crop pixel q shows full-image pixel
        ``(q - (R - 1) / 2) * size / R + center`` (nearest), background outside the image.
    """
    n, h, w = iuv.shape[:3]
    q = torch.arange(res, device=iuv.device, dtype=iuv.dtype) - (res - 1) / 2
    step = (size / res)[:, None]
    px = q[None] * step + center[:, :1]  # (N, R) full-image u of each crop column
    py = q[None] * step + center[:, 1:]  # (N, R) full-image v of each crop row
    gx = (2 * px + 1) / w - 1  # grid_sample, align_corners=False: -1/+1 are the image's outer edges
    gy = (2 * py + 1) / h - 1
    grid = torch.stack([gx[:, None, :].expand(n, res, res), gy[:, :, None].expand(n, res, res)], dim=-1)
    out = F.grid_sample(iuv.permute(0, 3, 1, 2), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 1)


def crop_pixels_to_normalized(q: Tensor, res: int) -> Tensor:
    """Crop pixels (pixel-centre convention) to normalized crop coordinates: -1 and +1 are
    the crop's outer edges (``affine_grid``/``grid_sample`` with ``align_corners=False``).
    (..., 2) -> (..., 2)."""
    return (2.0 * q + 1.0) / res - 1.0


def crop_normalized_to_pixels(xy: Tensor, res: int) -> Tensor:
    """Inverse of :func:`crop_pixels_to_normalized`, (..., 2) -> (..., 2) (any leading shape)."""
    return (xy + 1.0) * res / 2.0 - 0.5


def iuv_to_parts(iuv: Tensor, drop: Optional[Tensor] = None) -> Tensor:
    """DaNet's per-part layout of IUV crops (see the module docstring).

    Args:
        iuv: (N, R, R, 3) IUV crops (I whole numbers 0..24).
        drop: optional (N, 24) bool PartDrop mask: the result is then
            ``part_drop(iuv_to_parts(iuv), drop)``, made in one pass.
    Returns:
        (N, 73, R, R) float: [background, part 1..24 indicators, U of parts 1..24, V of parts 1..24],
        in channels-last memory layout.
    """
    dt = iuv.dtype if iuv.is_floating_point() and iuv.dtype != torch.float16 else torch.float32
    n = iuv.shape[0]
    part = iuv[..., 0].round().long().clamp(0, NUM_PARTS)[..., None]  # (N, R, R, 1)
    if drop is None:
        kept = torch.ones_like(part, dtype=dt)
    else:
        if drop.shape != (n, NUM_PARTS):
            raise ParameterError(f"drop must have shape (N={n}, {NUM_PARTS}), got {tuple(drop.shape)}")
        keep = torch.cat([torch.ones_like(drop[:, :1]), ~drop.bool()], 1).to(device=iuv.device, dtype=dt)
        kept = torch.gather(keep, 1, part.reshape(n, -1)).reshape(part.shape)  # 0 on dropped parts
    fg = (part > 0).to(dt) * kept
    part = part * kept.long()  # a dropped pixel adds 0 to channels 0, 24, 48: all its channels stay 0
    # background pixels add U = V = 0 to channels 24 and 48 (part 24's I and V): no change either
    x = torch.zeros(*iuv.shape[:3], NUM_CHANNELS, dtype=dt, device=iuv.device)
    x.scatter_add_(-1, part, kept)
    x.scatter_add_(-1, part + NUM_PARTS, iuv[..., 1:2].to(dt) * fg)
    x.scatter_add_(-1, part + 2 * NUM_PARTS, iuv[..., 2:3].to(dt) * fg)
    return x.permute(0, 3, 1, 2)  # channels-last memory layout (what the network's convolutions want)


def part_channels(part: int) -> tuple[int, int, int]:
    """The three channels of part ``part`` (1..24) in the per-part layout: (I, U, V)."""
    return part, NUM_PARTS + part, 2 * NUM_PARTS + part


def sample_part_drop(n: int, rate: float, generator: Optional[torch.Generator] = None,
                     device=None) -> Tensor:
    """(n, 24) bool: part p + 1 of sample i is dropped, independently with probability ``rate``
    (PartDrop's gamma; Eq. 5)."""
    if not 0.0 <= rate <= 1.0:
        raise ParameterError(f"part-drop rate must be in [0, 1], got {rate}")
    return (torch.rand(n, NUM_PARTS, generator=generator) < rate).to(device)


def part_drop(x: Tensor, drop: Tensor) -> Tensor:
    """PartDrop (Eq. 5): zero the I, U and V channels of the dropped parts.

    Args:
        x: (N, 73, R, R) per-part layout (:func:`iuv_to_parts`).
        drop: (N, 24) bool, part p + 1 of sample i is dropped.
    Returns:
        (N, 73, R, R): x with channels p, 24 + p, 48 + p zeroed for every dropped part p
        (background channel and other parts untouched). ``x`` itself is not modified.
    """
    if x.dim() != 4 or x.shape[1] != NUM_CHANNELS:
        raise ParameterError(f"x must have shape (N, {NUM_CHANNELS}, R, R), got {tuple(x.shape)}")
    if drop.shape != (x.shape[0], NUM_PARTS):
        raise ParameterError(f"drop must have shape (N={x.shape[0]}, {NUM_PARTS}), got {tuple(drop.shape)}")
    keep = (~drop.to(device=x.device, dtype=torch.bool)).to(x.dtype)
    keep = torch.cat([torch.ones_like(keep[:, :1]), keep, keep, keep], dim=1)  # (N, 73)
    return x * keep[:, :, None, None]


def remove_parts(iuv: Tensor, drop: Tensor) -> Tensor:
    """Parts missing from a full IUV map: pixels of each dropped part become background.

    Args:
        iuv: (N, H, W, 3) IUV maps.
        drop: (N, 24) bool, part p + 1 of sample i is removed.
    Returns:
        (N, H, W, 3) with I, U, V = 0 on the removed parts' pixels.
    """
    part = iuv[..., 0].round().long().clamp(0, NUM_PARTS)
    table = torch.cat([torch.zeros_like(drop[:, :1]), drop], dim=1).to(iuv.device)  # (N, 25)
    gone = torch.gather(table, 1, part.reshape(part.shape[0], -1)).reshape(part.shape)
    return torch.where(gone[..., None], torch.zeros_like(iuv), iuv)


# ---------------------------------------------------------------- synthetic bodies

def random_orient(n: int, generator: torch.Generator, ranges=ORIENT_RANGES, dtype=torch.float32) -> Tensor:
    """(n, 3) global orientations ``R_y(yaw) R_x(pitch) R_z(roll) R_facing`` (camera axes),
    angles uniform in ``ranges`` (radians); axis-angle."""
    import roma

    from fitkit.camera import facing_camera_orient

    f64 = torch.float64
    ang = [ranges[k][0] + (ranges[k][1] - ranges[k][0]) * torch.rand(n, generator=generator, dtype=f64)
           for k in ("yaw", "pitch", "roll")]
    zero = torch.zeros(n, dtype=f64)
    R = (roma.rotvec_to_rotmat(torch.stack([zero, ang[0], zero], -1))
         @ roma.rotvec_to_rotmat(torch.stack([ang[1], zero, zero], -1))
         @ roma.rotvec_to_rotmat(torch.stack([zero, zero, ang[2]], -1))
         @ roma.rotvec_to_rotmat(facing_camera_orient(n, dtype=f64)))
    return roma.rotmat_to_rotvec(R).to(dtype)


def sample_bodies(n: int, generator: torch.Generator, *, split: Optional[str] = "train",
                  data_fraction: float = 0.5, spread: float = 1.0, dtype=torch.float32) -> dict:
    """Random body parameters (no camera yet).

    A fraction ``data_fraction`` of the bodies take a pose drawn uniformly from the
    open pose data's ``split`` (mirrored copies included), the others a
    :func:`~fitkit.eval.synthetic.sample_body_poses` pose (``spread``). Every body gets
    :func:`random_orient` and betas ~ N(0, 1) (10 coefficients).

    Returns:
        dict of global_orient (n, 3), body_pose (n, 69), betas (n, 10), CPU, ``dtype``.
    """
    from fitkit.eval.synthetic import sample_body_poses

    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    n_data = 0 if split is None else int(round(n * data_fraction))
    poses = []
    if n_data:
        from fitkit.priors.pose_data import load_pose_data

        data = torch.from_numpy(load_pose_data(split).body_pose)
        idx = torch.randint(0, data.shape[0], (n_data,), generator=generator)
        poses.append(data[idx].to(dtype))
    if n - n_data:
        poses.append(sample_body_poses(n - n_data, generator=generator, spread=spread, dtype=dtype)[1])
    body_pose = torch.cat(poses, dim=0)
    perm = torch.randperm(n, generator=generator)
    global_orient = random_orient(n, generator, dtype=dtype)
    betas = torch.randn(n, 10, generator=generator, dtype=torch.float64).to(dtype)
    return {"global_orient": global_orient, "body_pose": body_pose[perm], "betas": betas}


def _uniform(n, lo, hi, generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)


@torch.no_grad()
def render_bodies(model, charts, params: dict, generator: torch.Generator,
                  image_size: Sequence[int] = IMAGE_SIZE, height_frac=(0.45, 0.8),
                  focal_frac=(0.7, 1.6), offset_frac=0.12) -> dict:
    """Place bodies in front of random cameras and render their IUV maps.

    Camera: focal f = U(focal_frac) * sqrt(H^2 + W^2) pixels (fx = fy), principal point
    the image centre + U(+-5%) of the image size. Placement: the pelvis projects
    U(+-offset_frac) of the image size from the image centre; the depth makes the
    rest-pose body height (head top minus heel, from the shaped template) U(height_frac)
    of H.

    Args:
        model: the body model (``load_body_model('open', num_betas=10)``).
        charts: its :class:`fitkit.render.iuv.IUVCharts`.
        params: global_orient (n, 3), body_pose (n, 69), betas (n, 10).
        image_size: (H, W) pixels.
    Returns:
        dict: the params plus transl (n, 3), K (n, 3, 3), iuv (n, H, W, 3),
        joints (n, 24, 3) camera frame (meters), vertices (n, V, 3) camera frame.
    """
    h, w = int(image_size[0]), int(image_size[1])
    go, bp, betas = params["global_orient"], params["body_pose"], params["betas"]
    n = go.shape[0]
    dt = model.dtype
    diag = math.hypot(h, w)
    f = _uniform(n, *focal_frac, generator) * diag
    cx = (w - 1) / 2 + _uniform(n, -0.05, 0.05, generator) * w
    cy = (h - 1) / 2 + _uniform(n, -0.05, 0.05, generator) * h
    frac = _uniform(n, *height_frac, generator)
    ou = _uniform(n, -offset_frac, offset_frac, generator) * w
    ov = _uniform(n, -offset_frac, offset_frac, generator) * h
    # rest-pose height of each shaped body (template + shape blend), meters
    rest = model.v_template + (betas.to(dt) @ model.shapedirs_flat).reshape(n, -1, 3)
    height = (rest[..., 1].amax(1) - rest[..., 1].amin(1)).double()
    tz = f * height / (frac * h)
    zero = torch.zeros(n, 3, dtype=dt)
    j0 = model(go.to(dt), bp.to(dt), betas.to(dt), zero).joints[:, 0].double()  # pelvis without transl
    u, v = cx + ou, cy + ov
    # pelvis at depth tz projecting to (u, v): transl = target - pelvis offset (depth of the pelvis ~ tz)
    target = torch.stack([(u - cx) / f * tz, (v - cy) / f * tz, tz], dim=-1)
    transl = (target - j0).to(dt)
    K = torch.zeros(n, 3, 3, dtype=dt)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f.to(dt), f.to(dt), cx.to(dt), cy.to(dt), 1.0
    out = model(go.to(dt), bp.to(dt), betas.to(dt), transl, vertices="all")
    iuv = charts.render(out.vertices, K, (h, w))
    return dict(params, transl=transl, K=K, iuv=iuv, joints=out.joints, vertices=out.vertices)


# ---------------------------------------------------------------- datasets

@dataclass
class DaNetData:
    """Rendered bodies as network inputs and targets (CPU tensors; n samples).

    Attributes:
        crop: (n, R, R, 3) float16 IUV crops (nearest; I exact, U, V to ~1e-3).
        global_orient (n, 3), body_pose (n, 69), betas (n, 10), transl (n, 3): ground truth
            (transl in the full-image camera frame of K).
        K: (n, 3, 3) full-image intrinsics. image_size: (H, W) of the full images.
        center (n, 2), size (n,), valid (n,): the crop boxes (full-image pixels).
        cam: (n, 3) ground-truth weak-perspective crop camera (s, tx, ty)
            (:func:`fitkit.camera.full_translation_to_crop_cam` with focal fx and
            principal point K[:, :2, 2]).
        joints2d: (n, 24, 2) ground-truth joints projected with K, in normalized crop
            coordinates (-1/+1 = the crop's outer edges).
    """

    crop: Tensor
    global_orient: Tensor
    body_pose: Tensor
    betas: Tensor
    transl: Tensor
    K: Tensor
    center: Tensor
    size: Tensor
    valid: Tensor
    cam: Tensor
    joints2d: Tensor
    image_size: tuple = IMAGE_SIZE

    def __len__(self) -> int:
        return self.crop.shape[0]

    def subset(self, idx: Tensor) -> "DaNetData":
        """The samples ``idx`` (a (k,) long or (n,) bool tensor)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        return DaNetData(**{k: (v[idx] if isinstance(v, Tensor) else v) for k, v in kw.items()})

    @staticmethod
    def cat(parts: Sequence["DaNetData"]) -> "DaNetData":
        kw = {}
        for f in fields(DaNetData):
            vals = [getattr(p, f.name) for p in parts]
            kw[f.name] = torch.cat(vals, dim=0) if isinstance(vals[0], Tensor) else vals[0]
        return DaNetData(**kw)


def targets_from_render(rendered: dict, res: int = DEFAULT_RES) -> DaNetData:
    """Crop boxes, crops, crop camera and 2D joints of :func:`render_bodies`' output."""
    iuv, K = rendered["iuv"], rendered["K"]
    h, w = iuv.shape[1:3]
    center, size, valid = foreground_boxes(iuv)
    crop = crop_iuv(iuv, center, size, res)
    cam = full_translation_to_crop_cam(rendered["transl"], center, size, None, K[:, 0, 0],
                                       principal_point=K[:, :2, 2])
    j2d = points_full_to_crop(project(rendered["joints"], K), center, size, res)
    return DaNetData(crop=crop.half(), global_orient=rendered["global_orient"], body_pose=rendered["body_pose"],
                     betas=rendered["betas"], transl=rendered["transl"], K=K, center=center, size=size,
                     valid=valid, cam=cam, joints2d=crop_pixels_to_normalized(j2d, res), image_size=(h, w))


def make_dataset(model, charts, n: int, seed: int, *, split: Optional[str] = "train", data_fraction: float = 0.5,
                 res: int = DEFAULT_RES, image_size: Sequence[int] = IMAGE_SIZE, chunk: int = 256,
                 drop_empty: bool = True) -> DaNetData:
    """``n`` rendered bodies (:func:`sample_bodies` + :func:`render_bodies`) as a :class:`DaNetData`.

    Args:
        split: pose-data split the data-driven poses come from ('train' for training,
            'test' for evaluation), or None for sample_body_poses poses only.
        seed: the seed of the one generator every random number comes from.
        chunk: bodies rendered at once (memory: ~H*W*24 bytes + V*12 bytes each).
        drop_empty: leave out samples whose IUV map has no foreground (none in practice).
    """
    g = torch.Generator().manual_seed(int(seed))
    params = sample_bodies(n, g, split=split, data_fraction=data_fraction)
    parts = []
    for i in range(0, n, chunk):
        sub = {k: v[i:i + chunk] for k, v in params.items()}
        parts.append(targets_from_render(render_bodies(model, charts, sub, g, image_size=image_size), res))
    data = DaNetData.cat(parts)
    if drop_empty and not bool(data.valid.all()):
        data = data.subset(data.valid)
    return data
