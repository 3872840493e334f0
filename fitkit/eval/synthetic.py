"""Synthetic fitting examples made from the open body: known answers for tests,
the demo and benchmarks.

:func:`sample_body_poses` draws plausible random poses, and
:func:`make_keypoint_example` poses and shapes a body, places it in front of a
camera, projects its keypoints with noise, dropouts and confidences, and
returns both the ground truth and a perturbed initialisation for a fit.

Conventions: batch first, meters, pixels (integer coordinates at pixel
centres), OpenCV camera axes (x right, y down, z forward), SMPL joint order,
axis-angle in radians. Every random number comes from one seeded
``torch.Generator`` on the CPU, so an example is reproducible from its seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import roma
import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.body.model import BodyModel
from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.camera import default_focal, facing_camera_orient, make_intrinsics, project
from fitkit.errors import ParameterError
from fitkit.io.observations import Observations

__all__ = ["POSE_RANGES", "GLOBAL_ROTATION_RANGES", "pose_range_tensors", "sample_body_poses",
           "SyntheticExample", "make_keypoint_example"]

# Per-joint axis-angle component ranges (radians) at spread = 1, in the joint's
# parent frame (SMPL rest pose: y up, x towards the body's left, z forward).
# Sign conventions used below (checked on the open body):
#   hips:      -x swings the thigh forward (flexion); +z moves the left leg out
#              to the left (abduction), -z the right leg out to the right.
#   knees:     +x bends the shin backwards (flexion).
#   spine:     +x bends the trunk forwards.
#   shoulders: -z lowers the left arm from the T-pose, +z the right arm;
#              -y swings the left arm forwards, +y the right arm.
#   elbows:    -y bends the left forearm forwards, +y the right forearm.
# Joints not listed here stay at zero.
POSE_RANGES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "left_hip": ((-1.2, 0.3), (-0.3, 0.3), (-0.2, 0.5)),
    "right_hip": ((-1.2, 0.3), (-0.3, 0.3), (-0.5, 0.2)),
    "spine1": ((-0.1, 0.25), (-0.15, 0.15), (-0.1, 0.1)),
    "left_knee": ((0.0, 1.8), (0.0, 0.0), (0.0, 0.0)),
    "right_knee": ((0.0, 1.8), (0.0, 0.0), (0.0, 0.0)),
    "spine2": ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),
    "left_ankle": ((-0.3, 0.4), (-0.15, 0.15), (-0.15, 0.15)),
    "right_ankle": ((-0.3, 0.4), (-0.15, 0.15), (-0.15, 0.15)),
    "spine3": ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),
    "left_foot": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
    "right_foot": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
    "neck": ((-0.2, 0.35), (-0.3, 0.3), (-0.15, 0.15)),
    "left_collar": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
    "right_collar": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
    "head": ((-0.2, 0.35), (-0.4, 0.4), (-0.2, 0.2)),
    "left_shoulder": ((-0.4, 0.4), (-0.8, 0.3), (-1.35, 0.9)),
    "right_shoulder": ((-0.4, 0.4), (-0.3, 0.8), (-0.9, 1.35)),
    "left_elbow": ((0.0, 0.0), (-2.2, 0.0), (0.0, 0.0)),
    "right_elbow": ((0.0, 0.0), (0.0, 2.2), (0.0, 0.0)),
    "left_wrist": ((-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)),
    "right_wrist": ((-0.3, 0.3), (-0.3, 0.3), (-0.3, 0.3)),
    "left_hand": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
    "right_hand": ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),
}

#: Ranges (radians, spread = 1) of the rotation applied on top of
#: :func:`~fitkit.camera.facing_camera_orient`, about the camera's axes:
#: yaw about y (turning left/right), pitch about x (leaning towards or away
#: from the camera), roll about z (tilting sideways in the image).
GLOBAL_ROTATION_RANGES = {"yaw": (-math.pi / 4, math.pi / 4), "pitch": (-0.15, 0.15),
                          "roll": (-0.15, 0.15)}


def pose_range_tensors(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """:data:`POSE_RANGES` as two (23, 3) tensors (low, high) in body_pose order
    (joint j of SMPL's order is row j - 1), radians, spread = 1."""
    low = torch.zeros(len(SMPL_JOINT_NAMES) - 1, 3, dtype=dtype)
    high = torch.zeros_like(low)
    for j, name in enumerate(SMPL_JOINT_NAMES[1:]):
        for axis, (lo, hi) in enumerate(POSE_RANGES[name]):
            low[j, axis], high[j, axis] = lo, hi
    return low, high


def _uniform(shape, low, high, generator, dtype) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(dtype)


def _rotvec(R: torch.Tensor) -> torch.Tensor:
    return roma.rotmat_to_rotvec(R)


def sample_body_poses(n: int, *, generator: torch.Generator, spread: float = 1.0,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Random, plausible SMPL poses of bodies facing (roughly) the camera.

    Every axis-angle component of every joint is drawn independently and
    uniformly from its range below, then multiplied by ``spread`` (so
    ``spread=0`` gives the T-pose facing the camera, ``spread=0.5`` halves
    every range, and ``spread > 1`` leaves anatomy behind). Components are in
    the joint's parent frame (SMPL rest pose: y up, x to the body's left, z
    forward). Ranges at ``spread=1`` (radians; ``0`` = fixed at zero):

    ===============  ===============  ===============  ===============  ==========================================
    joint            x                y                z                meaning
    ===============  ===============  ===============  ===============  ==========================================
    left_hip         -1.2 .. 0.3      -0.3 .. 0.3      -0.2 .. 0.5      -x flexes the thigh forward; +z abducts
    right_hip        -1.2 .. 0.3      -0.3 .. 0.3      -0.5 .. 0.2      mirror image: -z abducts
    left/right_knee  0 .. 1.8         0                0                flexion only (+x), no hyperextension
    spine1           -0.1 .. 0.25     -0.15 .. 0.15    -0.1 .. 0.1      +x bends forward
    spine2, spine3   -0.1 .. 0.2      -0.15 .. 0.15    -0.1 .. 0.1
    ankles           -0.3 .. 0.4      -0.15 .. 0.15    -0.15 .. 0.15
    feet (toes)      -0.1 .. 0.1      -0.1 .. 0.1      -0.1 .. 0.1
    neck             -0.2 .. 0.35     -0.3 .. 0.3      -0.15 .. 0.15
    head             -0.2 .. 0.35     -0.4 .. 0.4      -0.2 .. 0.2      y turns the head
    collars          -0.1 .. 0.1      -0.1 .. 0.1      -0.1 .. 0.1
    left_shoulder    -0.4 .. 0.4      -0.8 .. 0.3      -1.35 .. 0.9     z: -1.35 arm by the side, +0.9 raised
    right_shoulder   -0.4 .. 0.4      -0.3 .. 0.8      -0.9 .. 1.35     mirror image (+1.35 by the side)
    left_elbow       0                -2.2 .. 0        0                flexion only (-y)
    right_elbow      0                0 .. 2.2         0                flexion only (+y)
    wrists           -0.3 .. 0.3      -0.3 .. 0.3      -0.3 .. 0.3
    hands            -0.1 .. 0.1      -0.1 .. 0.1      -0.1 .. 0.1
    ===============  ===============  ===============  ===============  ==========================================

    The same numbers are in :data:`POSE_RANGES` (and as tensors from
    :func:`pose_range_tensors`).

    ``global_orient`` is :func:`~fitkit.camera.facing_camera_orient` (upright,
    facing an OpenCV camera) preceded, in the camera frame, by a random yaw
    about the camera's y axis in ±45°, pitch about x and roll about z in
    ±0.15 rad (:data:`GLOBAL_ROTATION_RANGES`), all times ``spread``:
    ``R = R_y(yaw) R_x(pitch) R_z(roll) R_facing``.

    Args:
        n: number of poses (>= 1).
        generator: CPU ``torch.Generator``; the only source of randomness.
        spread: scale of every range (>= 0).
        dtype: floating dtype of the results (sampling is done in float64).
    Returns:
        global_orient (n, 3) and body_pose (n, 69), axis-angle in radians, on the CPU.
    """
    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    if not (spread >= 0 and math.isfinite(spread)):
        raise ParameterError(f"spread must be finite and >= 0, got {spread}")
    f64 = torch.float64
    low, high = pose_range_tensors(f64)
    body_pose = _uniform((n, low.shape[0], 3), low, high, generator, f64) * spread

    angles = [_uniform((n,), lo, hi, generator, f64) * spread
              for lo, hi in (GLOBAL_ROTATION_RANGES[k] for k in ("yaw", "pitch", "roll"))]
    zero = torch.zeros(n, dtype=f64)
    yaw, pitch, roll = angles
    R_yaw = axis_angle_to_matrix(torch.stack([zero, yaw, zero], -1))
    R_pitch = axis_angle_to_matrix(torch.stack([pitch, zero, zero], -1))
    R_roll = axis_angle_to_matrix(torch.stack([zero, zero, roll], -1))
    R_face = axis_angle_to_matrix(facing_camera_orient(n, dtype=f64))
    global_orient = _rotvec(R_yaw @ R_pitch @ R_roll @ R_face)
    return global_orient.to(dtype), body_pose.reshape(n, -1).to(dtype)


@dataclass
class SyntheticExample:
    """A synthetic keypoint-fitting problem with its answer.

    Attributes:
        observations: :class:`fitkit.io.observations.Observations` of n frames:
            noisy keypoints (n, K, 3) in full-image pixels with confidences
            (0 = dropped), image_size (n, 2), intrinsics (n, 3, 3), frame ids
            ``'synthetic_000000'...``, source ``'<synthetic>'``. On the CPU.
        gt: the ground truth, on the model's device and dtype:
            ``global_orient`` (n, 3), ``body_pose`` (n, 69) (radians),
            ``betas`` (n, num_betas), ``transl`` (n, 3) (meters),
            ``joints`` (n, 24, 3) and ``keypoints_3d`` (n, K, 3) in the camera
            frame (meters, translation included), ``keypoints_2d_clean``
            (n, K, 2) their noise-free projections (pixels).
        init: a perturbed starting point with the keys ``global_orient``,
            ``body_pose``, ``betas``, ``transl`` (shapes as in ``gt``).
        settings: the arguments the example was made with (for reports).
    """

    observations: Observations
    gt: dict
    init: dict
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.gt["transl"].shape[0]


#: Samples per body-model call when placing bodies (bounds the memory of the vertex sample).
_PLACEMENT_CHUNK = 512


def _size_pair(image_size) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in image_size)
    except (TypeError, ValueError):
        raise ParameterError(f"image_size must be a pair (width, height) in pixels, got {image_size!r}") from None
    if not (w > 0 and h > 0 and math.isfinite(w) and math.isfinite(h)):
        raise ParameterError(f"image_size must be positive, got {image_size!r}")
    return w, h


def _place_in_image(points: torch.Tensor, depth: torch.Tensor, offset: torch.Tensor, K: torch.Tensor,
                    width: float, height: float, margin: float) -> torch.Tensor:
    """Translation putting every point inside the image with ``margin`` pixels to spare.

    points: (n, M, 3) camera frame without translation. depth: (n,) wanted
    depth of the origin. offset: (n, 2) in [-1, 1], where in the free room
    the point cloud's box should sit (0 = centred). The depth only grows
    (when the body would not fit); the box centre is found by a few
    fixed-point steps, since points at other depths move a little differently.
    Returns (n, 3) transl.
    """
    f = K[:, 0, 0]
    cx, cy = K[:, 0, 2], K[:, 1, 2]
    lo = torch.tensor([margin - 0.5, margin - 0.5], dtype=points.dtype, device=points.device)
    hi = torch.tensor([width - 0.5 - margin, height - 0.5 - margin], dtype=points.dtype, device=points.device)
    room = hi - lo  # (2,)
    centre_xy = 0.5 * (points[..., :2].amin(1) + points[..., :2].amax(1))
    transl = torch.cat([-centre_xy, depth[:, None]], dim=-1)
    for attempt in range(2):
        for _ in range(60):
            uv = project(points + transl[:, None], K)
            box_lo, box_hi = uv.amin(1), uv.amax(1)
            inside = ((box_lo >= lo) & (box_hi <= hi)).all(-1)
            if bool(inside.all()):
                return transl
            extent = box_hi - box_lo
            grow = (extent / room).amax(-1)
            too_big = grow > 1.0
            transl[:, 2] = torch.where(too_big, transl[:, 2] * grow * 1.02, transl[:, 2])
            target = 0.5 * (lo + hi) + offset * (room - extent).clamp_min(0) / 2
            shift = target - 0.5 * (box_lo + box_hi)  # pixels
            transl[:, 0] += shift[:, 0] * transl[:, 2] / f
            transl[:, 1] += shift[:, 1] * transl[:, 2] / K[:, 1, 1]
        offset = torch.zeros_like(offset)  # give up the random placement, centre the body
    raise RuntimeError("make_keypoint_example: could not place the body inside the image "
                       f"(image {width:g}x{height:g}, principal point {cx.tolist()[:3]}, {cy.tolist()[:3]})")


def make_keypoint_example(model: BodyModel, n: int, *, keypoint_format: str = "body25",
                          image_size: Sequence[float] = (1000, 1000), noise_px: float = 1.0,
                          dropout: float = 0.1, pose_noise: float = 0.15, shape_noise: float = 0.5,
                          transl_noise: Sequence[float] = (0.05, 0.05, 0.3), seed: int = 0,
                          focal: Optional[float] = None, spread: float = 1.0,
                          body_pose: Optional[Any] = None) -> SyntheticExample:
    """Random bodies seen by a full-image camera, as noisy 2D keypoints with their answer.

    Recipe (all random numbers from ``torch.Generator().manual_seed(seed)``):

    1. Pose from :func:`sample_body_poses` (``spread``), or ``body_pose`` when
       given (e.g. held-out mocap frames; the global orientation is still
       drawn); betas ~ N(0, 0.8^2) on the first 10 coefficients (the model's
       others stay 0).
    2. Camera: fx = fy = ``focal`` (default sqrt(w^2 + h^2)), principal point
       at the image centre ((w - 1)/2, (h - 1)/2), the same for every frame.
    3. Placement: ``transl`` depth drawn uniformly in [3, 6] m (the pelvis
       is within a few cm of the origin before translation), x, y moved in x, y to a random place where the whole body
       (keypoints, joints and a sample of mesh vertices) stays inside the
       image with a margin of 3% of the smaller image side. When the body
       would not fit at the drawn depth it is moved further back, so depths
       can exceed 6 m for small focal lengths.
    4. Observations: the keypoint set ``keypoint_format`` projected with
       :func:`~fitkit.camera.project` (``gt['keypoints_2d_clean']``), plus
       N(0, noise_px^2) pixel noise per coordinate; each keypoint is dropped
       with probability ``dropout`` (written as (0, 0, 0), the way OpenPose
       writes missing points), the others get confidences uniform in [0.6, 1].
    5. Initialisation: ``body_pose`` + N(0, pose_noise^2) per component;
       ``global_orient`` pre-multiplied (camera frame) by a rotation whose
       axis-angle components are N(0, pose_noise^2); the 10 drawn betas
       + N(0, shape_noise^2); ``transl`` + N(0, transl_noise[i]^2) on axis i
       (meters).

    Args:
        model: body model with the keypoint set ``keypoint_format`` (e.g.
            ``load_body_model('open')``); its dtype and device are used for gt and init.
        n: number of frames (>= 1).
        keypoint_format: keypoint set / observation format ('body25', 'coco25', 'blazepose33', aliases).
        image_size: (width, height) in pixels.
        noise_px: pixel noise std (>= 0).
        dropout: probability in [0, 1) that a keypoint is not observed.
        pose_noise: radians, std of the initial pose error (>= 0).
        shape_noise: std of the initial betas error (>= 0).
        transl_noise: (3,) meters, std of the initial translation error per axis.
        seed: random seed; the same arguments and seed give the same example.
        focal: focal length in pixels, or None for the default.
        spread: pose variety, see :func:`sample_body_poses`.
        body_pose: optional (n, 69) axis-angle poses to use instead of random ones.
    Returns:
        :class:`SyntheticExample`.
    """
    if n < 1:
        raise ParameterError(f"n must be >= 1, got {n}")
    width, height = _size_pair(image_size)
    for name, value in (("noise_px", noise_px), ("pose_noise", pose_noise), ("shape_noise", shape_noise)):
        if not (value >= 0 and math.isfinite(value)):
            raise ParameterError(f"{name} must be finite and >= 0, got {value!r}")
    if not 0 <= dropout < 1:
        raise ParameterError(f"dropout must lie in [0, 1), got {dropout!r}")
    transl_noise = torch.as_tensor([float(v) for v in transl_noise], dtype=torch.float64)
    if transl_noise.shape != (3,) or not bool((transl_noise >= 0).all()):
        raise ParameterError(f"transl_noise must be three stds >= 0 (meters), got {transl_noise.tolist()}")
    if focal is None:
        focal = default_focal(width, height)
    if not (float(focal) > 0 and math.isfinite(float(focal))):
        raise ParameterError(f"focal must be a positive number of pixels, got {focal!r}")
    fmt = get_format(keypoint_format)
    if fmt.name not in model.keypoint_sets:
        raise ParameterError(f"keypoint_format {keypoint_format!r}: the model has no such keypoint set "
                             f"(it has {sorted(model.keypoint_sets)})")

    g = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    dev, dt = model.device, model.dtype

    # 1. pose and shape
    global_orient, drawn_pose = sample_body_poses(n, generator=g, spread=spread, dtype=f64)
    if body_pose is None:
        body_pose = drawn_pose
    else:
        body_pose = torch.as_tensor(np.asarray(body_pose), dtype=f64)
        if body_pose.shape != drawn_pose.shape or not bool(torch.isfinite(body_pose).all()):
            raise ParameterError(f"body_pose must be finite with shape {tuple(drawn_pose.shape)}, "
                                 f"got {tuple(body_pose.shape)}")
    num_drawn = min(10, model.num_betas)
    betas = torch.zeros(n, model.num_betas, dtype=f64)
    betas[:, :num_drawn] = 0.8 * torch.randn(n, num_drawn, generator=g, dtype=f64)

    # 2. camera
    K = make_intrinsics(float(focal), float(focal), (width - 1) / 2, (height - 1) / 2,
                        batch_size=n, dtype=f64)

    # 3. placement, from the body without translation
    model_args = lambda *a: tuple(t.to(device=dev, dtype=dt) for t in a)  # noqa: E731
    depth = 3.0 + 3.0 * torch.rand(n, generator=g, dtype=f64)
    offset = 0.95 * (2.0 * torch.rand(n, 2, generator=g, dtype=f64) - 1.0)
    margin = 0.03 * min(width, height)
    plan = model.plan(vertices=torch.arange(0, model.num_vertices, 7), keypoints=fmt.name)
    transl = torch.empty(n, 3, dtype=f64)
    for start in range(0, n, _PLACEMENT_CHUNK):  # bounded memory for large n
        part = slice(start, start + _PLACEMENT_CHUNK)
        body = model(*model_args(global_orient[part], body_pose[part], betas[part]), plan=plan)
        cloud = torch.cat([body.joints, body.keypoints, body.vertices], dim=1).to(device="cpu", dtype=f64)
        transl[part] = _place_in_image(cloud, depth[part], offset[part], K[part], width, height, margin)

    out = model(*model_args(global_orient, body_pose, betas, transl), keypoints=fmt.name)
    joints, kp3d = out.joints, out.keypoints
    clean = project(kp3d.to(device="cpu", dtype=f64), K)

    # 4. observations
    num_kp = clean.shape[1]
    noisy = clean + noise_px * torch.randn(n, num_kp, 2, generator=g, dtype=f64)
    dropped = torch.rand(n, num_kp, generator=g, dtype=f64) < dropout
    conf = 0.6 + 0.4 * torch.rand(n, num_kp, generator=g, dtype=f64)
    observed = torch.cat([noisy, conf[..., None]], dim=-1)
    observed[dropped] = 0.0
    observations = Observations.from_arrays(
        observed, fmt.name, torch.tensor([[width, height]], dtype=f64).expand(n, 2), intrinsics=K,
        frame_ids=[f"synthetic_{i:06d}" for i in range(n)], source="<synthetic>",
        dtype=dt)

    # 5. perturbed initialisation
    init_pose = body_pose + pose_noise * torch.randn(body_pose.shape, generator=g, dtype=f64)
    tilt = axis_angle_to_matrix(pose_noise * torch.randn(n, 3, generator=g, dtype=f64))
    init_orient = _rotvec(tilt @ axis_angle_to_matrix(global_orient))
    init_betas = betas.clone()
    init_betas[:, :num_drawn] += shape_noise * torch.randn(n, num_drawn, generator=g, dtype=f64)
    init_transl = transl + transl_noise * torch.randn(n, 3, generator=g, dtype=f64)

    put = lambda t: t.to(device=dev, dtype=dt)  # noqa: E731
    gt = {"global_orient": put(global_orient), "body_pose": put(body_pose), "betas": put(betas),
          "transl": put(transl), "joints": joints, "keypoints_3d": kp3d,
          "keypoints_2d_clean": put(clean)}
    init = {"global_orient": put(init_orient), "body_pose": put(init_pose), "betas": put(init_betas),
            "transl": put(init_transl)}
    settings = {"n": n, "keypoint_format": fmt.name, "image_size": (width, height), "focal": float(focal),
                "noise_px": noise_px, "dropout": dropout, "pose_noise": pose_noise,
                "shape_noise": shape_noise, "transl_noise": transl_noise.tolist(), "seed": int(seed),
                "spread": spread}
    return SyntheticExample(observations=observations, gt=gt, init=init, settings=settings)
