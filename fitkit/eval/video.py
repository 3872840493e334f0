"""A synthetic video with known answers: a textured open body performing a held-out mocap
clip in front of a static camera, for ``fitkit demo --video``, benchmarks and tests.

:func:`make_synthetic_video` returns the rendered frames, noisy 2D keypoints
(as :class:`~fitkit.io.observations.Observations`), an optical-flow cue, the
ground truth (parameters, joints and the exact geometric flow of the body) and
a jittery per-frame initialization. :func:`overlay_video` draws a fitted body
over the frames for a GIF.

Recipe (every random number comes from ``seed``; the same arguments give the
same video):

1. **Motion.** ``frames`` consecutive frames (from ``start``) of one clip of the
   test split of the open pose data (:func:`fitkit.priors.pose_data.load_pose_data`,
   non-mirrored copy), at the clip's own frame rate. These clips were held out
   of every prior's training and tuning.
2. **Shape.** ``betas`` if given, else N(0, 0.5^2) on the first (up to) 10
   coefficients, the same for every frame.
3. **Camera.** A full-image pinhole camera, focal sqrt(w^2 + h^2), principal
   point at the image centre ((w - 1)/2, (h - 1)/2), OpenCV axes. It stands
   level (image y = world down) and looks horizontally at the person from the
   front: along minus the mean horizontal facing direction of the body over
   the frames used. The world motion (y up) is rotated into that camera frame
   and translated so that the whole body stays inside the image over the whole
   clip with a margin of 5% of the smaller side, and as close as that allows
   (so the motion's extent sets the depth, and the person fills a good part of
   the image).
4. **Appearance.** Per-vertex colours made of sinusoids of the rest-pose
   vertex positions (periods of about 8 to 50 cm in every direction, random
   directions and phases), Lambert-shaded by a light at the camera (ambient
   0.4), over a static smooth-noise background (so the true flow there is 0).
   No anti-aliasing, no motion blur.
5. **Keypoints.** The model's ``keypoint_format`` keypoints projected, plus
   N(0, noise_px^2) pixel noise; each is dropped (0, 0, 0) with probability
   ``dropout``; the others get confidences uniform in [0.6, 1].
6. **Flow cue.** ``flow='dis'`` (the realistic case): OpenCV DIS flow
   (:func:`fitkit.io.optical_flow.compute_flow`, preset medium) on the
   rendered frames, with its errors at occlusions, silhouettes and shading
   changes. ``'gt'``: the exact geometric flow ``gt_flow`` (body pixels only,
   NaN elsewhere). None: no flow cue.
7. **Initialization.** Per frame, independently: body_pose + N(0, (0.15 j)^2)
   per component, global_orient rotated by an axis-angle of N(0, (0.1 j)^2)
   per component, transl + N(0, (0.03 j)^2) meters per axis (j = ``jitter``);
   betas zero (mean shape). Independent per-frame noise makes the
   initialization jitter in time, which temporal terms should smooth.

Ground-truth flow (``gt_flow``): :func:`fitkit.terms.flow.gt_flow`. Frame t
is rasterized; each covered pixel's surface point is given by the winning face
and its *screen-space* barycentrics (the rasterizer's perspective-correct
``b_i`` reweighted to ``b_i z_i / sum_j b_j z_j``) and moved to the same
barycentric combination of frame t + 1's projected vertices; the flow is that
position minus the pixel. It is NaN off the body and in the last frame; points
that get occluded in frame t + 1 still get their geometric motion.

Conventions: batch (frame) first, meters, radians (axis-angle), pixels with
integer coordinates at pixel centres, OpenCV camera axes, flow ``(u, v)`` as
in :mod:`fitkit.io.optical_flow`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import roma
import torch
from torch import Tensor

from fitkit.body.keypoint_formats import get_format
from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.camera import default_focal, make_intrinsics, project
from fitkit.errors import ParameterError
from fitkit.eval.synthetic import _place_in_image, _size_pair
from fitkit.io.observations import Observations
from fitkit.io.optical_flow import compute_flow
from fitkit.priors.pose_data import PoseData, load_pose_data
from fitkit.render.rasterizer import interpolate, rasterize
from fitkit.render.shading import overlay, render_normals, shade
from fitkit.terms.flow import gt_flow as true_flow

__all__ = ["INIT_JITTER", "SyntheticVideo", "video_clips", "make_synthetic_video", "overlay_video"]

#: Standard deviations of the initialization noise at ``jitter=1``: radians per
#: axis-angle component for body_pose and global_orient, meters per axis for transl.
INIT_JITTER = {"body_pose": 0.15, "global_orient": 0.1, "transl": 0.03}
#: Frames rasterized at once (bounds memory).
_FRAME_CHUNK = 8
#: Vertex stride of the sample used to place the body in the image.
_PLACEMENT_STRIDE = 7
_FLOW_CHOICES = ("dis", "gt", None)


@dataclass
class SyntheticVideo:
    """A synthetic video of T frames and its answer (see the module docstring for the recipe).

    Attributes:
        observations: :class:`Observations` on the CPU in the model's dtype:
            noisy keypoints (T, K, 3), image_size (T, 2), intrinsics (T, 3, 3)
            (the same K every frame), frame ids ``'<clip>_<frame:06d>'``
            (clip frame numbers), ``dense={'flow': (T, H, W, 2)}`` unless
            ``flow=None``; ``track_ids`` (all ``'0'``) and ``frame_numbers`` (the clip's
            frame numbers) when
            the Observations class has those fields.
        gt: smplx-named parameters in the camera frame on the model's device
            and dtype: ``global_orient`` (T, 3), ``body_pose`` (T, 69),
            ``betas`` (T, num_betas), ``transl`` (T, 3); ``joints`` (T, 24, 3)
            (meters, camera frame), ``keypoints_2d_clean`` (T, K, 2) pixels.
        init: ``global_orient``, ``body_pose``, ``betas``, ``transl`` of the
            jittery initialization (shapes as in ``gt``).
        images: (T, H, W, 3) uint8 RGB rendered frames.
        gt_flow: (T, H, W, 2) float32 geometric forward flow of the body,
            pixels; NaN off the body and in the last frame.
        fps: frames per second of the clip.
        settings: the arguments used, with the clip's full name and frame numbers.
    """

    observations: Observations
    gt: dict
    init: dict
    images: np.ndarray
    gt_flow: np.ndarray
    fps: float
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def K(self) -> Tensor:
        """(3, 3) intrinsics (the same for every frame)."""
        return self.observations.intrinsics[0]


# ---------------------------------------------------------------- motion

def _short_name(clip: str) -> str:
    """'humanoid3d_punch' -> 'punch', 'walker/turn_left1' -> 'turn_left1'."""
    name = clip.rsplit("/", 1)[-1]
    return name[len("humanoid3d_"):] if name.startswith("humanoid3d_") else name


def video_clips(data: Optional[PoseData] = None, split: str = "test") -> dict[str, tuple[str, int, float]]:
    """The clips :func:`make_synthetic_video` can use: short name -> (full name, frames, fps).

    Short names drop the ``humanoid3d_`` prefix and the ``walker/`` folder
    (``'punch'``, ``'turn_left1'``); the clips of ``split`` (default: the held-out
    test clips; ``'val'`` for tuning), non-mirrored.
    """
    data = load_pose_data(split) if data is None else data
    out = {}
    for i, name in enumerate(data.clip_names):
        count = int(((data.clip == i) & ~data.mirrored).sum())
        if count:
            out[_short_name(name)] = (name, count, float(data.clip_fps[i]))
    return out


def _clip_motion(clip: str, frames: int, start: int, split: str = "test"):
    """(global_orient (T, 3), body_pose (T, 69), root (T, 3) y-up world, fps, full name, frame numbers)."""
    data = load_pose_data(split)
    table = video_clips(data)
    listing = ", ".join(f"{k} ({n} frames)" for k, (_, n, _) in table.items())
    short = _short_name(clip)
    if short not in table:
        raise ValueError(f"clip {clip!r} is not a clip of the {split!r} split; choose one of: {listing}")
    full, count, fps = table[short]
    if start < 0 or frames < 1 or start + frames > count:
        raise ValueError(f"clip {short!r} has {count} frames; frames={frames} from start={start} do not fit. "
                         f"Clips and their lengths: {listing}")
    part = data.clip_frames(full)
    rows = slice(start, start + frames)
    return (part.global_orient[rows], part.body_pose[rows], part.transl[rows], fps, full,
            part.frame[rows].tolist())


def _camera_rotation(global_orient_world: Tensor) -> Tensor:
    """(3, 3) world (y up) -> camera (OpenCV) rotation of a level camera looking at the body's
    front: its z axis is minus the mean horizontal facing direction (the body's +z axis)."""
    forward = axis_angle_to_matrix(global_orient_world)[:, :, 2]  # (T, 3) world facing direction
    flat = torch.stack([forward[:, 0], torch.zeros_like(forward[:, 0]), forward[:, 2]], -1)
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    d = flat.mean(0)
    if float(d.norm()) < 0.3:  # the body turns around: face its first frame instead
        d = flat[0]
    d = d / d.norm()
    z = -d
    y = torch.tensor([0.0, -1.0, 0.0], dtype=d.dtype)
    x = torch.linalg.cross(y, z)
    return torch.stack([x, y, z])


# ---------------------------------------------------------------- appearance

def _procedural_colors(rest: Tensor, generator: torch.Generator, waves: int = 8) -> Tensor:
    """(V, 3) float colours in [0.05, 0.95]: per channel, the mean of ``waves`` sinusoids of the
    rest-pose positions ``rest`` (V, 3) (meters) along random directions, with periods
    log-uniform in [0.08, 0.5] m and random phases."""
    dt = rest.dtype
    dirs = torch.randn(3, waves, 3, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    periods = torch.exp(math.log(0.08) + (math.log(0.5) - math.log(0.08))
                        * torch.rand(3, waves, generator=generator, dtype=torch.float64))
    phase = 2 * math.pi * torch.rand(3, waves, generator=generator, dtype=torch.float64)
    arg = 2 * math.pi * torch.einsum("vk,cwk->vcw", rest.double(), dirs) / periods + phase
    value = torch.sin(arg).sum(-1) / math.sqrt(waves)  # (V, 3), std ~0.7
    return (0.5 + 0.3 * value).clamp(0.05, 0.95).to(dt)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 static backdrop: grey smooth noise (two octaves, cubic upsampling) with a
    faint colour tint and a vertical gradient, textured enough for flow (whose truth there is 0)
    and duller than the body."""
    import cv2

    def noise(cell: int, channels: int) -> np.ndarray:
        rows, cols = height // cell + 3, width // cell + 3
        coarse = rng.uniform(-1, 1, (rows, cols, channels)).astype(np.float32)
        big = cv2.resize(coarse, (cols * cell, rows * cell), interpolation=cv2.INTER_CUBIC)
        return big.reshape(rows * cell, cols * cell, channels)[cell:cell + height, cell:cell + width]

    grey = 0.2 * noise(24, 1) + 0.1 * noise(6, 1)
    tint = 0.05 * noise(32, 3)
    ramp = np.linspace(0.5, 0.35, height, dtype=np.float32)[:, None, None]
    return np.clip(np.rint((ramp + grey + tint) * 255), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- rendering

def _chunks(n: int):
    for s in range(0, n, _FRAME_CHUNK):
        yield slice(s, min(n, s + _FRAME_CHUNK))


@torch.no_grad()
def _render(vertices: Tensor, faces: Tensor, K: Tensor, image_size: Sequence[int], colors: Tensor,
            background: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 shaded textured frames over ``background``."""
    n = vertices.shape[0]
    bg = torch.from_numpy(background).to(vertices.device, vertices.dtype) / 255.0
    images = []
    for rows in _chunks(n):
        v = vertices[rows]
        frags = rasterize(v, faces, K[rows], tuple(image_size))
        normals = render_normals(frags, v, faces)
        albedo = interpolate(frags, colors, faces)
        lit = shade(normals, frags.mask, (0.0, -0.3, -1.0), ambient=0.4, albedo=albedo).clamp(0, 1)
        frame = torch.where(frags.mask[..., None], lit, bg)
        images.append((frame * 255).round().to(torch.uint8).cpu().numpy())
    return np.concatenate(images)


# ---------------------------------------------------------------- keypoints and initialization

def _noisy_keypoints(clean: Tensor, noise_px: float, dropout: float, g: torch.Generator) -> Tensor:
    """(T, K, 3) observed keypoints from (T, K, 2) clean float64 projections (recipe step 5)."""
    t, k = clean.shape[:2]
    noisy = clean + noise_px * torch.randn(t, k, 2, generator=g, dtype=torch.float64)
    dropped = torch.rand(t, k, generator=g, dtype=torch.float64) < dropout
    conf = 0.6 + 0.4 * torch.rand(t, k, generator=g, dtype=torch.float64)
    observed = torch.cat([noisy, conf[..., None]], dim=-1)
    observed[dropped] = 0.0
    return observed


def _jittered(gt: Mapping[str, Tensor], jitter: float, num_betas: int, g: torch.Generator) -> dict:
    """Per-frame independent noise on the float64 gt parameters (recipe step 7)."""
    t = gt["transl"].shape[0]
    f64 = torch.float64
    s = {k: v * jitter for k, v in INIT_JITTER.items()}
    pose = gt["body_pose"] + s["body_pose"] * torch.randn(gt["body_pose"].shape, generator=g, dtype=f64)
    tilt = axis_angle_to_matrix(s["global_orient"] * torch.randn(t, 3, generator=g, dtype=f64))
    orient = roma.rotmat_to_rotvec(tilt @ axis_angle_to_matrix(gt["global_orient"]))
    transl = gt["transl"] + s["transl"] * torch.randn(t, 3, generator=g, dtype=f64)
    return {"global_orient": orient, "body_pose": pose, "betas": torch.zeros(t, num_betas, dtype=f64),
            "transl": transl}


def _tracking_fields(frame_numbers: Sequence[int]) -> dict:
    """``track_ids`` (all '0') and ``frame_numbers`` for the Observations fields that exist,
    in the container type their annotation names (tensor, array, or list)."""
    fields = Observations.__dataclass_fields__
    out = {}
    for name, values in (("track_ids", [0] * len(frame_numbers)), ("frame_numbers", list(frame_numbers))):
        if name not in fields:
            continue
        kind = str(fields[name].type)
        if "Tensor" in kind:
            out[name] = torch.as_tensor(values, dtype=torch.long)
        elif "ndarray" in kind:
            out[name] = np.asarray(values, dtype=np.int64)
        elif "str" in kind:
            out[name] = [str(v) for v in values]
        else:
            out[name] = [int(v) for v in values]
    return out


def _shape(betas, num_betas: int, g: torch.Generator) -> Tensor:
    """(num_betas,) float64: the given betas (zero-padded) or N(0, 0.5^2) on the first 10."""
    out = torch.zeros(num_betas, dtype=torch.float64)
    if betas is None:
        k = min(10, num_betas)
        out[:k] = 0.5 * torch.randn(k, generator=g, dtype=torch.float64)
        return out
    b = torch.as_tensor(np.asarray(betas.detach().cpu() if isinstance(betas, Tensor) else betas),
                        dtype=torch.float64).reshape(-1)
    if b.numel() > num_betas or not bool(torch.isfinite(b).all()):
        raise ParameterError(f"betas must be at most {num_betas} finite numbers, got shape "
                             f"{tuple(np.shape(betas))}")
    out[:b.numel()] = b
    return out


# ---------------------------------------------------------------- the video

def make_synthetic_video(model, *, clip: str = "punch", frames: int = 48, start: int = 0,
                         image_size: Sequence[float] = (256, 256), noise_px: float = 2.0,
                         dropout: float = 0.1, jitter: float = 1.0, seed: int = 0,
                         keypoint_format: str = "body25", flow: Optional[str] = "dis",
                         betas: Any = None, split: str = "test") -> SyntheticVideo:
    """Render a textured body performing a held-out mocap clip, with noisy keypoints, flow and answers.

    Args:
        model: :class:`fitkit.body.BodyModel` (its device and dtype are used).
        clip: a held-out clip, short or full name (:func:`video_clips`:
            ``'run'``, ``'punch'``, ``'spin'``, ``'dance_b'``, ``'turn_left1'``).
        frames: number of consecutive frames T (>= 1).
        start: first frame of the clip.
        image_size: (width, height) in pixels.
        noise_px: std of the keypoint noise, pixels.
        dropout: probability that a keypoint is dropped, in [0, 1).
        jitter: scale of the initialization noise (:data:`INIT_JITTER` at 1; 0
            gives the true pose and translation with mean-shape betas).
        seed: random seed (shape, texture, background, keypoint noise, init).
        keypoint_format: the keypoint set observed (one of the model's).
        flow: ``'dis'`` (OpenCV DIS on the rendered frames), ``'gt'`` (the
            geometric ground truth) or None (no flow cue).
        betas: (k,) shape coefficients, k <= model.num_betas, or None for
            random ones (module docstring).
        split: the pose-data split the clip comes from: ``'test'`` (held out,
            the default) or ``'val'`` (``dance_a``, ``kick``, ``turn_right1``: for tuning).
    Returns:
        :class:`SyntheticVideo`.
    Raises:
        ValueError for an unknown clip, a clip shorter than ``start + frames``
        (listing the clips and their lengths) or an unknown ``flow``;
        ParameterError for other bad arguments.
    """
    width, height = _size_pair(image_size)
    w, h = int(round(width)), int(round(height))
    if (w, h) != (width, height):
        raise ParameterError(f"image_size must be whole pixels (width, height), got {image_size!r}")
    if flow not in _FLOW_CHOICES:
        raise ValueError(f"flow must be one of {_FLOW_CHOICES}, got {flow!r}")
    for name, value in (("noise_px", noise_px), ("jitter", jitter)):
        if not (value >= 0 and math.isfinite(value)):
            raise ParameterError(f"{name} must be finite and >= 0, got {value!r}")
    if not 0 <= dropout < 1:
        raise ParameterError(f"dropout must lie in [0, 1), got {dropout!r}")
    fmt = get_format(keypoint_format)
    if fmt.name not in model.keypoint_sets:
        raise ParameterError(f"keypoint_format {keypoint_format!r}: the model has no such keypoint set "
                             f"(it has {sorted(model.keypoint_sets)})")
    orient_w, body_pose, root_w, fps, full_name, numbers = _clip_motion(clip, int(frames), int(start), split)

    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    dev, dt = model.device, model.dtype
    put = lambda x: x.to(device=dev, dtype=dt)  # noqa: E731
    t = len(numbers)
    shape = _shape(betas, model.num_betas, g)
    betas_t = shape.expand(t, -1).clone()

    # camera frame: rotate the world motion, then place it in front of the camera
    orient_w = torch.as_tensor(orient_w, dtype=f64)
    R = _camera_rotation(orient_w)
    orient = roma.rotmat_to_rotvec(R @ axis_angle_to_matrix(orient_w))
    pose = torch.as_tensor(body_pose, dtype=f64)
    root = torch.as_tensor(root_w, dtype=f64) @ R.T  # (T, 3) pelvis, camera axes, unplaced
    focal = default_focal(width, height)
    K = make_intrinsics(focal, focal, (width - 1) / 2, (height - 1) / 2, batch_size=t, dtype=f64)
    pelvis_rest = model(*(put(x) for x in (torch.zeros(1, 3), torch.zeros(1, 69), shape[None]))).joints[0, 0]
    offset = root - pelvis_rest.to("cpu", f64)  # transl before placement
    transl = offset + _placement(model, orient, pose, betas_t, offset, K, width, height, fmt.name)

    gt = {"global_orient": orient, "body_pose": pose, "betas": betas_t, "transl": transl}
    out = model(*(put(gt[k]) for k in ("global_orient", "body_pose", "betas", "transl")),
                vertices="all", keypoints=fmt.name)
    clean = project(out.keypoints.to("cpu", f64), K)

    colors = _procedural_colors(model(put(torch.zeros(1, 3)), put(torch.zeros(1, 69)), put(shape[None]),
                                      vertices="all").vertices[0], g)
    background = _background(h, w, np.random.default_rng(int(seed)))
    faces = model.faces.to(dev)
    images = _render(out.vertices, faces, put(K), (h, w), colors, background)
    gt_flow = true_flow(out.vertices, faces, put(K), (h, w)).float().cpu().numpy()

    observed = _noisy_keypoints(clean, noise_px, dropout, g)
    init = _jittered(gt, jitter, model.num_betas, g)
    dense = None
    if flow == "dis":
        dense = {"flow": compute_flow(images, "dis")}
    elif flow == "gt":
        dense = {"flow": gt_flow}
    short = _short_name(full_name)
    observations = Observations.from_arrays(
        observed, fmt.name, torch.tensor([[width, height]], dtype=f64).expand(t, 2), intrinsics=K,
        frame_ids=[f"{short}_{i:06d}" for i in numbers], source="<synthetic video>", dtype=dt, dense=dense)
    extra = _tracking_fields(numbers)
    if extra:
        observations = dataclasses.replace(observations, **extra)

    gt = {k: put(v) for k, v in gt.items()}
    gt.update(joints=out.joints.detach(), keypoints_2d_clean=put(clean))
    settings = {"clip": full_name, "frame_numbers": list(numbers), "frames": t, "start": int(start),
                "image_size": (width, height), "focal": float(focal), "noise_px": noise_px, "dropout": dropout,
                "jitter": jitter, "seed": int(seed), "keypoint_format": fmt.name, "flow": flow}
    return SyntheticVideo(observations=observations, gt=gt, init={k: put(v) for k, v in init.items()},
                          images=images, gt_flow=gt_flow, fps=fps, settings=settings)


@torch.no_grad()
def _placement(model, orient: Tensor, pose: Tensor, betas: Tensor, offset: Tensor, K: Tensor, width: float,
               height: float, keypoint_format: str) -> Tensor:
    """(3,) camera translation putting the whole clip in view, as close as the image allows."""
    dev, dt = model.device, model.dtype
    plan = model.plan(vertices=torch.arange(0, model.num_vertices, _PLACEMENT_STRIDE), keypoints=keypoint_format)
    body = model(*(x.to(device=dev, dtype=dt) for x in (orient, pose, betas, offset)), plan=plan)
    cloud = torch.cat([body.joints, body.keypoints, body.vertices], 1).to("cpu", torch.float64)
    cloud = cloud.reshape(1, -1, 3)  # every frame at once: one placement for the clip
    margin = 0.05 * min(width, height)
    extent = cloud[0, :, :2].amax(0) - cloud[0, :, :2].amin(0)
    room = torch.tensor([width - 2 * margin, height - 2 * margin], dtype=torch.float64)
    fits_at = float(K[0, 0, 0]) * float((extent / room).max())  # depth at which a flat cloud would fit
    depth = max(0.85 * fits_at, 1.0) - float(cloud[0, :, 2].min())  # the loop below only moves it back
    start = torch.tensor([depth], dtype=torch.float64)
    return _place_in_image(cloud, start, torch.zeros(1, 2, dtype=torch.float64), K[:1], width, height, margin)[0]


# ---------------------------------------------------------------- overlays

@torch.no_grad()
def overlay_video(model, params: Mapping[str, Any], K, images, *, alpha: float = 0.6) -> np.ndarray:
    """A fitted body drawn semi-transparently over video frames (normal-shaded grey).

    Args:
        model: the :class:`fitkit.body.BodyModel` that was fitted.
        params: smplx-named (T, ...) parameters in the camera frame
            (``global_orient``, ``body_pose``, ``betas`` (T or 1 rows, optional),
            ``transl`` (optional)).
        K: (3, 3) or (T, 3, 3) intrinsics, pixels.
        images: (T, H, W, 3) uint8 RGB frames.
        alpha: opacity of the body, in [0, 1].
    Returns:
        (T, H, W, 3) uint8 RGB.
    """
    frames = np.asarray(images.detach().cpu() if isinstance(images, Tensor) else images)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ParameterError(f"images must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    n, h, w = frames.shape[:3]
    dev, dt = model.device, model.dtype
    get = lambda k: None if params.get(k) is None else torch.as_tensor(params[k]).to(dev, dt)  # noqa: E731
    orient, pose, betas, transl = (get(k) for k in ("global_orient", "body_pose", "betas", "transl"))
    if orient is None or pose is None or orient.shape[0] != n:
        raise ParameterError(f"params need 'global_orient' and 'body_pose' with {n} rows (one per frame)")
    betas = torch.zeros(1, model.num_betas, device=dev, dtype=dt) if betas is None else betas
    K = torch.as_tensor(K).to(dev, dt)
    K = K.expand(n, 3, 3) if K.dim() == 2 else K
    faces = model.faces.to(dev)
    out = frames.copy()
    for rows in _chunks(n):
        b = betas if betas.shape[0] == 1 else betas[rows]
        v = model(orient[rows], pose[rows], b, None if transl is None else transl[rows], vertices="all").vertices
        frags = rasterize(v, faces, K[rows], (h, w))
        grey = shade(render_normals(frags, v, faces), frags.mask, ambient=0.35, albedo=(0.85, 0.85, 0.85))
        for i, f in enumerate(range(rows.start, rows.stop)):
            out[f] = overlay(frames[f], grey[i].float().cpu().numpy(), frags.mask[i].cpu().numpy(), alpha=alpha)
    return out
