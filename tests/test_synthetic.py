"""Tests of fitkit.eval.synthetic: pose sampling ranges and synthetic keypoint examples."""

import math

import pytest
import roma
import torch

from fitkit.body import load_body_model
from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.camera import default_focal, project
from fitkit.errors import ParameterError
from fitkit.eval.synthetic import (GLOBAL_ROTATION_RANGES, POSE_RANGES, SyntheticExample, make_keypoint_example,
                                   pose_range_tensors, sample_body_poses)
from fitkit.io.observations import Observations

F64 = torch.float64
JOINT = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope="module")
def model():
    return load_body_model("open")


@pytest.fixture(scope="module")
def example(model):
    return make_keypoint_example(model, 400, noise_px=2.0, dropout=0.1, seed=7)


def _joint(body_pose, name):
    j = JOINT[name]
    return body_pose.reshape(body_pose.shape[0], 23, 3)[:, j - 1]


# ---------------------------------------------------------------- pose sampling

def test_sample_body_poses_shapes_dtype_determinism():
    go, bp = sample_body_poses(5, generator=torch.Generator().manual_seed(3))
    assert go.shape == (5, 3) and bp.shape == (5, 69) and go.dtype == torch.float32
    go2, bp2 = sample_body_poses(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(go, go2) and torch.equal(bp, bp2)
    go3, _ = sample_body_poses(5, generator=torch.Generator().manual_seed(4), dtype=F64)
    assert go3.dtype == F64 and not torch.allclose(go3.float(), go)
    with pytest.raises(ParameterError):
        sample_body_poses(0, generator=torch.Generator())
    with pytest.raises(ParameterError):
        sample_body_poses(2, generator=torch.Generator(), spread=-1.0)


def test_pose_ranges_cover_every_body_joint():
    assert set(POSE_RANGES) == set(SMPL_JOINT_NAMES[1:])
    low, high = pose_range_tensors()
    assert low.shape == high.shape == (23, 3)
    assert torch.all(low <= high)


@pytest.mark.parametrize("spread", [1.0, 0.5])
def test_poses_stay_within_documented_ranges(spread):
    n = 4000
    _, bp = sample_body_poses(n, generator=torch.Generator().manual_seed(0), spread=spread, dtype=F64)
    low, high = pose_range_tensors()
    pose = bp.reshape(n, 23, 3)
    assert torch.all(pose >= spread * low - 1e-12) and torch.all(pose <= spread * high + 1e-12)
    # and the samples fill the ranges (uniform draws: extremes within 2% of the width)
    width = (high - low) * spread
    assert torch.all(pose.amin(0) - spread * low <= 0.02 * width + 1e-12)
    assert torch.all(spread * high - pose.amax(0) <= 0.02 * width + 1e-12)


def test_knees_never_hyperextend_and_elbows_bend_one_way():
    n = 4000
    _, bp = sample_body_poses(n, generator=torch.Generator().manual_seed(1), dtype=F64)
    for knee in ("left_knee", "right_knee"):
        aa = _joint(bp, knee)
        assert float(aa[:, 0].min()) >= 0.0 and float(aa[:, 0].max()) <= 1.8
        assert float(aa[:, 0].max()) > 1.7  # the range is used
        assert torch.all(aa[:, 1:] == 0)  # a hinge: flexion only
    left, right = _joint(bp, "left_elbow"), _joint(bp, "right_elbow")
    assert float(left[:, 1].max()) <= 0.0 and float(left[:, 1].min()) < -2.0
    assert float(right[:, 1].min()) >= 0.0 and float(right[:, 1].max()) > 2.0
    assert torch.all(left[:, [0, 2]] == 0) and torch.all(right[:, [0, 2]] == 0)
    # shoulders: left arm from down by the side (-z) to raised (+z), right arm mirrored
    ls, rs = _joint(bp, "left_shoulder"), _joint(bp, "right_shoulder")
    assert float(ls[:, 2].min()) < -1.3 and float(ls[:, 2].max()) > 0.85
    assert float(rs[:, 2].max()) > 1.3 and float(rs[:, 2].min()) < -0.85


def test_knee_flexion_moves_the_foot_backwards(model):
    # the sign convention the ranges rely on, checked on the open body itself
    zero = torch.zeros(1, 69)
    bent = zero.clone()
    bent[0, 3 * (JOINT["left_knee"] - 1)] = 1.0
    betas = torch.zeros(1, 10)
    rest = model(torch.zeros(1, 3), zero, betas).joints[0, JOINT["left_ankle"]]
    flexed = model(torch.zeros(1, 3), bent, betas).joints[0, JOINT["left_ankle"]]
    assert float(flexed[2] - rest[2]) < -0.2  # behind the body (SMPL faces +z)


def test_global_orient_faces_the_camera():
    n = 4000
    go, _ = sample_body_poses(n, generator=torch.Generator().manual_seed(2), dtype=F64)
    R = roma.rotvec_to_rotmat(go)
    forward = R[:, :, 2]  # body's +z in the camera frame
    up = R[:, :, 1]       # body's +y
    # facing the camera: forward close to -z_cam; turned by at most ~45 degrees
    angle = torch.arccos((-forward[:, 2]).clamp(-1, 1))
    yaw_max = GLOBAL_ROTATION_RANGES["yaw"][1]
    assert float(angle.max()) < yaw_max + 0.25
    assert float(angle.max()) > yaw_max - 0.1
    # upright: body up is image up (-y) within pitch and roll
    assert float((-up[:, 1]).min()) > math.cos(0.25)
    # yaw covers both sides
    yaw = torch.atan2(forward[:, 0], -forward[:, 2])
    assert float(yaw.min()) < -0.7 and float(yaw.max()) > 0.7


def test_spread_zero_is_the_facing_t_pose():
    go, bp = sample_body_poses(3, generator=torch.Generator().manual_seed(0), spread=0.0, dtype=F64)
    assert torch.all(bp == 0)
    R = roma.rotvec_to_rotmat(go)
    torch.testing.assert_close(R, torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64)).expand(3, 3, 3))


# ---------------------------------------------------------------- keypoint examples

def test_example_structure(model, example):
    n = 400
    assert isinstance(example, SyntheticExample) and len(example) == n
    obs = example.observations
    assert isinstance(obs, Observations)
    assert obs.keypoint_format == "body25" and obs.keypoints.shape == (n, 25, 3)
    assert obs.source == "<synthetic>" and len(set(obs.frame_ids)) == n
    torch.testing.assert_close(obs.image_size, torch.tensor([[1000.0, 1000.0]]).expand(n, 2))
    f = default_focal(1000, 1000)
    K = obs.intrinsics
    assert torch.allclose(K[:, 0, 0], torch.tensor(f)) and torch.allclose(K[:, 1, 1], torch.tensor(f))
    assert torch.allclose(K[:, :2, 2], torch.tensor(499.5))
    gt, init = example.gt, example.init
    shapes = {"global_orient": (n, 3), "body_pose": (n, 69), "betas": (n, 10), "transl": (n, 3)}
    for key, shape in shapes.items():
        assert gt[key].shape == shape and init[key].shape == shape
    assert gt["joints"].shape == (n, 24, 3) and gt["keypoints_2d_clean"].shape == (n, 25, 2)
    # gt is self-consistent with the model and the camera
    out = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], keypoints="body25")
    torch.testing.assert_close(out.joints, gt["joints"])
    torch.testing.assert_close(project(out.keypoints, K), gt["keypoints_2d_clean"], atol=1e-3, rtol=0)
    # 3 to 6 m in front of the camera
    assert float(gt["transl"][:, 2].min()) >= 3.0 and float(gt["transl"][:, 2].max()) <= 6.0
    # betas ~ N(0, 0.8^2)
    assert abs(float(gt["betas"].std()) - 0.8) < 0.05


def test_example_is_deterministic(model):
    a = make_keypoint_example(model, 6, seed=11)
    b = make_keypoint_example(model, 6, seed=11)
    c = make_keypoint_example(model, 6, seed=12)
    assert torch.equal(a.observations.keypoints, b.observations.keypoints)
    for key in a.gt:
        assert torch.equal(a.gt[key], b.gt[key])
    for key in a.init:
        assert torch.equal(a.init[key], b.init[key])
    assert not torch.equal(a.observations.keypoints, c.observations.keypoints)
    assert not torch.equal(a.gt["body_pose"], c.gt["body_pose"])


@pytest.mark.parametrize("fmt, size, focal", [("body25", (1000, 1000), None), ("coco25", (640, 480), None),
                                              ("blazepose33", (480, 854), None), ("body25", (1000, 1000), 5000.0),
                                              ("openpose", (1920, 1080), 800.0)])
def test_clean_keypoints_and_mesh_lie_inside_the_image(model, fmt, size, focal):
    ex = make_keypoint_example(model, 60, keypoint_format=fmt, image_size=size, focal=focal, seed=3)
    w, h = size
    uv = ex.gt["keypoints_2d_clean"]
    assert float(uv[..., 0].min()) >= -0.5 and float(uv[..., 0].max()) <= w - 0.5
    assert float(uv[..., 1].min()) >= -0.5 and float(uv[..., 1].max()) <= h - 0.5
    gt = ex.gt
    verts = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all").vertices
    uv = project(verts, ex.observations.intrinsics)
    assert float(uv[..., 0].min()) >= -0.5 and float(uv[..., 0].max()) <= w - 0.5
    assert float(uv[..., 1].min()) >= -0.5 and float(uv[..., 1].max()) <= h - 0.5
    if focal is not None:
        assert torch.all(ex.observations.intrinsics[:, 0, 0] == focal)
    # the body is not tiny: it spans a good part of the image for the default focal
    if focal is None:
        spans = uv[..., 1].amax(1) - uv[..., 1].amin(1)
        assert float(spans.median()) > 0.2 * h


def test_dropout_fraction_and_confidences(example):
    conf = example.observations.keypoints[..., 2]
    dropped = conf == 0
    frac = float(dropped.float().mean())
    assert abs(frac - 0.1) < 0.015  # 10000 keypoints: std of the fraction is 0.003
    assert torch.all(example.observations.keypoints[dropped] == 0)
    kept = conf[~dropped]
    assert float(kept.min()) >= 0.6 and float(kept.max()) <= 1.0
    assert abs(float(kept.mean()) - 0.8) < 0.01


def test_pixel_noise_std(model, example):
    obs = example.observations.keypoints
    kept = obs[..., 2] > 0
    residual = (obs[..., :2] - example.gt["keypoints_2d_clean"])[kept]
    assert abs(float(residual.std()) - 2.0) < 0.06
    assert float(residual.mean().abs()) < 0.05
    clean = make_keypoint_example(model, 3, noise_px=0.0, dropout=0.0, seed=1)
    torch.testing.assert_close(clean.observations.keypoints[..., :2], clean.gt["keypoints_2d_clean"])
    assert torch.all(clean.observations.keypoints[..., 2] > 0)


def test_init_differs_from_gt_by_the_requested_amounts(model):
    ex = make_keypoint_example(model, 1000, pose_noise=0.2, shape_noise=0.4, transl_noise=(0.05, 0.1, 0.3),
                               seed=5)
    gt, init = ex.gt, ex.init
    assert abs(float((init["body_pose"] - gt["body_pose"]).std()) - 0.2) < 0.005
    assert abs(float((init["betas"] - gt["betas"]).std()) - 0.4) < 0.01
    dt = (init["transl"] - gt["transl"]).std(0)
    torch.testing.assert_close(dt, torch.tensor([0.05, 0.1, 0.3]), rtol=0.08, atol=0)
    # orientation: the relative rotation has axis-angle components ~ N(0, 0.2^2) -> RMS angle sqrt(3) * 0.2
    R_rel = roma.rotvec_to_rotmat(init["global_orient"].double()) @ \
        roma.rotvec_to_rotmat(gt["global_orient"].double()).transpose(1, 2)
    angle = roma.rotmat_to_rotvec(R_rel).norm(dim=-1)
    assert abs(float(angle.pow(2).mean().sqrt()) - math.sqrt(3) * 0.2) < 0.015
    # zero noise: init equals gt
    exact = make_keypoint_example(model, 4, pose_noise=0.0, shape_noise=0.0, transl_noise=(0, 0, 0), seed=5)
    for key in exact.init:
        torch.testing.assert_close(exact.init[key], exact.gt[key], atol=1e-6, rtol=0)


def test_example_dtype_and_argument_checks(model):
    model64 = load_body_model("open", dtype=F64)
    ex = make_keypoint_example(model64, 3, seed=0)
    assert ex.gt["joints"].dtype == F64 and ex.init["body_pose"].dtype == F64
    assert ex.observations.keypoints.dtype == F64
    with pytest.raises(ParameterError):
        make_keypoint_example(model, 2, dropout=1.0)
    with pytest.raises(ParameterError):
        make_keypoint_example(model, 2, image_size=(0, 100))
    with pytest.raises(ParameterError):
        make_keypoint_example(model, 2, transl_noise=(0.1, 0.1))
    with pytest.raises(ValueError):
        make_keypoint_example(model, 2, keypoint_format="nope")
