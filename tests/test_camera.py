"""Tests of fitkit.camera: hand-computed numbers, OpenCV / NumPy oracles, round trips."""

import math

import numpy as np
import pytest
import roma
import torch

from fitkit import camera
from fitkit.errors import ParameterError

cv2 = pytest.importorskip("cv2")

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _points(batch, n, depth=(2.0, 6.0), seed=0):
    g = _gen(seed)
    xy = torch.rand(batch, n, 2, generator=g, dtype=F64) * 2 - 1
    z = depth[0] + (depth[1] - depth[0]) * torch.rand(batch, n, 1, generator=g, dtype=F64)
    return torch.cat([xy, z], dim=-1)


# ---------------------------------------------------------------- projection

def test_project_hand_computed():
    K = camera.make_intrinsics(1000.0, 900.0, 320.0, 240.0, dtype=F64)
    pts = torch.tensor([[[0.2, -0.1, 2.0], [0.0, 0.0, 5.0], [-1.0, 0.5, 4.0]]], dtype=F64)
    uv = camera.project(pts, K)
    expected = torch.tensor([[[420.0, 195.0], [320.0, 240.0], [70.0, 352.5]]], dtype=F64)
    torch.testing.assert_close(uv, expected)


def test_project_uses_skew():
    K = torch.tensor([[[500.0, 10.0, 100.0], [0.0, 400.0, 50.0], [0.0, 0.0, 1.0]]], dtype=F64)
    uv = camera.project(torch.tensor([[[1.0, 2.0, 4.0]]], dtype=F64), K)
    torch.testing.assert_close(uv, torch.tensor([[[500 * 0.25 + 10 * 0.5 + 100, 400 * 0.5 + 50]]], dtype=F64))


def test_project_and_extrinsics_match_opencv():
    batch, n = 3, 20
    g = _gen(1)
    world = torch.randn(batch, n, 3, generator=g, dtype=F64) * 0.5
    rvecs = torch.randn(batch, 3, generator=g, dtype=F64) * 0.4
    tvecs = torch.tensor([[0.1, -0.2, 4.0], [0.0, 0.3, 6.0], [-0.5, 0.0, 3.0]], dtype=F64)
    K = camera.make_intrinsics(torch.tensor([800.0, 1000.0, 1200.0], dtype=F64),
                               torch.tensor([810.0, 990.0, 1200.0], dtype=F64),
                               torch.tensor([319.5, 400.0, 250.0], dtype=F64),
                               torch.tensor([239.5, 300.0, 260.0], dtype=F64))
    R = torch.stack([torch.from_numpy(cv2.Rodrigues(r.numpy())[0]) for r in rvecs])
    uv = camera.project(camera.world_to_camera(world, R, tvecs), K)
    for b in range(batch):
        ref, _ = cv2.projectPoints(world[b].numpy(), rvecs[b].numpy(), tvecs[b].numpy(), K[b].numpy(), np.zeros(5))
        np.testing.assert_allclose(uv[b].numpy(), ref[:, 0, :], rtol=0, atol=1e-8)


def test_world_camera_round_trip():
    world = _points(2, 7, seed=2)
    R = roma.rotvec_to_rotmat(torch.randn(2, 3, generator=_gen(3), dtype=F64))
    t = torch.randn(2, 3, generator=_gen(4), dtype=F64)
    back = camera.camera_to_world(camera.world_to_camera(world, R, t), R, t)
    torch.testing.assert_close(back, world)


def test_project_clamps_depth_instead_of_inf_nan():
    K = camera.default_intrinsics(640, 480, dtype=F64)
    pts = torch.tensor([[[0.3, 0.2, 0.0], [0.3, 0.2, -2.0], [0.0, 0.0, 0.0]]], dtype=F64, requires_grad=True)
    uv = camera.project(pts, K)
    assert torch.isfinite(uv).all()
    uv.sum().backward()
    assert torch.isfinite(pts.grad).all()
    expected_u = 800.0 * 0.3 / camera.MIN_DEPTH + 319.5
    torch.testing.assert_close(uv[0, 0, 0], torch.tensor(expected_u, dtype=F64))


def test_project_gradcheck():
    pts = _points(2, 4, seed=5).requires_grad_(True)
    K = camera.make_intrinsics(torch.tensor([700.0, 900.0], dtype=F64), torch.tensor([710.0, 880.0], dtype=F64),
                               torch.tensor([320.0, 300.0], dtype=F64), torch.tensor([240.0, 200.0], dtype=F64))
    K.requires_grad_(True)
    assert torch.autograd.gradcheck(camera.project, (pts, K))


def test_dtype_follows_inputs():
    pts32 = _points(1, 3).float()
    K64 = camera.default_intrinsics(100, 100, dtype=F64)
    assert camera.project(pts32, K64).dtype == torch.float32
    assert camera.project(pts32.double(), K64).dtype == F64


# ---------------------------------------------------------------- intrinsics

def test_default_focal_and_intrinsics():
    assert camera.default_focal(640, 480) == pytest.approx(800.0)
    K = camera.default_intrinsics(640, 480, batch_size=3)
    assert K.shape == (3, 3, 3) and K.dtype == torch.float32
    expected = torch.tensor([[800.0, 0, 319.5], [0, 800.0, 239.5], [0, 0, 1]])
    torch.testing.assert_close(K, expected.expand(3, 3, 3))
    sizes_w = torch.tensor([640.0, 300.0])
    K2 = camera.default_intrinsics(sizes_w, torch.tensor([480.0, 400.0]))
    torch.testing.assert_close(K2[:, 0, 0], torch.tensor([800.0, 500.0]))
    torch.testing.assert_close(K2[:, :2, 2], torch.tensor([[319.5, 239.5], [149.5, 199.5]]))
    torch.testing.assert_close(camera.default_focal(sizes_w, torch.tensor([480.0, 400.0])), torch.tensor([800.0, 500.0]))


def test_image_center_convention():
    torch.testing.assert_close(camera.image_center(torch.tensor([[640.0, 480.0], [3.0, 1.0]])),
                               torch.tensor([[319.5, 239.5], [1.0, 0.0]]))


def test_intrinsics_dataclass_round_trip():
    K = camera.make_intrinsics(torch.tensor([500.0, 600.0]), torch.tensor([510.0, 590.0]),
                               torch.tensor([100.0, 110.0]), torch.tensor([80.0, 90.0]))
    intr = camera.Intrinsics.from_matrix(K)
    assert intr.batch_size == 2
    torch.testing.assert_close(intr.matrix(), K)
    torch.testing.assert_close(intr.fy, torch.tensor([510.0, 590.0]))


# ---------------------------------------------------------------- weak perspective

def _body_points_at_root_depth(batch, n, seed):
    """Camera-frame body points (no translation) lying in the plane Z = 0 through the root."""
    pts = torch.randn(batch, n, 3, generator=_gen(seed), dtype=F64) * 0.5
    pts[..., 2] = 0.0
    return pts


def test_weak_perspective_round_trip_and_formula():
    cam = torch.tensor([[0.9, 0.1, -0.2], [1.3, -0.05, 0.3]], dtype=F64)
    transl = camera.weak_perspective_to_translation(cam, 5000.0, 224)
    expected_tz = 2 * 5000.0 / (224 * cam[:, 0])
    torch.testing.assert_close(transl, torch.stack([cam[:, 1], cam[:, 2], expected_tz], -1))
    torch.testing.assert_close(camera.translation_to_weak_perspective(transl, 5000.0, 224), cam)
    focal = torch.tensor([5000.0, 1000.0], dtype=F64)
    transl2 = camera.weak_perspective_to_translation(cam, focal, torch.tensor([224.0, 256.0], dtype=F64))
    torch.testing.assert_close(camera.translation_to_weak_perspective(transl2, focal, torch.tensor([224.0, 256.0], dtype=F64)), cam)


def test_weak_perspective_equals_perspective_at_root_depth():
    res, focal = 224, 5000.0
    cam = torch.tensor([[0.9, 0.1, -0.2], [1.3, -0.05, 0.3]], dtype=F64)
    body = _body_points_at_root_depth(2, 15, seed=6)
    transl = camera.weak_perspective_to_translation(cam, focal, res)
    K_crop = camera.make_intrinsics(focal, focal, (res - 1) / 2, (res - 1) / 2, batch_size=2, dtype=F64)
    persp = camera.project(body + transl[:, None, :], K_crop)
    weak = camera.normalized_to_crop_pixels(camera.weak_perspective_project(body, cam), res)
    torch.testing.assert_close(persp, weak)


def test_normalized_edges_are_crop_edges():
    xy = torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]])
    torch.testing.assert_close(camera.normalized_to_crop_pixels(xy, 224),
                               torch.tensor([[[-0.5, -0.5], [223.5, 223.5], [111.5, 111.5]]]))


# ---------------------------------------------------------------- crop <-> full (CLIFF)

CAM = torch.tensor([[0.8, 0.05, 0.1], [1.1, -0.2, 0.0], [0.6, 0.0, -0.15]], dtype=F64)
CENTER = torch.tensor([[900.0, 500.0], [200.0, 650.0], [640.0, 360.0]], dtype=F64)
SIZE = torch.tensor([400.0, 250.0, 700.0], dtype=F64)
IMAGE = torch.tensor([[1280.0, 720.0], [1280.0, 720.0], [1920.0, 1080.0]], dtype=F64)


def _numpy_cliff(cam, center, size, pp, focal):
    """Literal transcription of the CLIFF formulas, element by element."""
    out = np.zeros((len(cam), 3))
    for i, ((s, tx, ty), (cx, cy), b, (px, py), f) in enumerate(zip(cam, center, size, pp, focal)):
        out[i] = [tx + 2 * (cx - px) / (b * s), ty + 2 * (cy - py) / (b * s), 2 * f / (b * s)]
    return out


def test_cliff_formula_matches_numpy_and_round_trips():
    focal = camera.default_focal(IMAGE[:, 0], IMAGE[:, 1])
    transl = camera.crop_cam_to_full_translation(CAM, CENTER, SIZE, IMAGE, focal)
    pp = (IMAGE.numpy() - 1) / 2
    np.testing.assert_allclose(transl.numpy(), _numpy_cliff(CAM.numpy(), CENTER.numpy(), SIZE.numpy(), pp, focal.numpy()),
                               rtol=1e-12)
    back = camera.full_translation_to_crop_cam(transl, CENTER, SIZE, IMAGE, focal)
    torch.testing.assert_close(back, CAM)


@pytest.mark.parametrize("custom_pp", [False, True])
def test_cliff_translation_renders_where_crop_says(custom_pp):
    focal = camera.default_focal(IMAGE[:, 0], IMAGE[:, 1])
    if custom_pp:
        pp = torch.tensor([[600.0, 380.0], [650.0, 340.0], [1000.0, 500.0]], dtype=F64)
        K_full = camera.make_intrinsics(focal, focal, pp[:, 0], pp[:, 1])
        transl = camera.crop_cam_to_full_translation(CAM, CENTER, SIZE, None, focal, principal_point=pp)
    else:
        K_full = camera.default_intrinsics(IMAGE[:, 0], IMAGE[:, 1], dtype=F64)
        transl = camera.crop_cam_to_full_translation(CAM, CENTER, SIZE, IMAGE, focal)
    body = _body_points_at_root_depth(3, 12, seed=7)
    full = camera.project(body + transl[:, None, :], K_full)
    res = 224
    crop_pixels = camera.normalized_to_crop_pixels(camera.weak_perspective_project(body, CAM), res)
    via_crop = camera.points_crop_to_full(crop_pixels, CENTER, SIZE, res)
    torch.testing.assert_close(full, via_crop)


def test_cliff_gradcheck():
    cam = CAM.clone().requires_grad_(True)
    center = CENTER.clone().requires_grad_(True)
    fn = lambda c, ctr: camera.crop_cam_to_full_translation(c, ctr, SIZE, IMAGE, 1500.0)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (cam, center))


def test_crop_points_round_trip_and_box_edges():
    res = 256
    pts = torch.rand(3, 9, 2, generator=_gen(8), dtype=F64) * 1000
    crop = camera.points_full_to_crop(pts, CENTER, SIZE, res)
    torch.testing.assert_close(camera.points_crop_to_full(crop, CENTER, SIZE, res), pts)
    corners = torch.stack([CENTER - SIZE[:, None] / 2, CENTER + SIZE[:, None] / 2, CENTER], dim=1)
    expected = torch.tensor([[-0.5, -0.5], [res - 0.5, res - 0.5], [(res - 1) / 2, (res - 1) / 2]], dtype=F64)
    torch.testing.assert_close(camera.points_full_to_crop(corners, CENTER, SIZE, res), expected.expand(3, 3, 2))


def test_crop_intrinsics_match_projection_then_crop():
    res = 224
    K_full = camera.default_intrinsics(IMAGE[:, 0], IMAGE[:, 1], dtype=F64)
    K_crop = camera.crop_intrinsics(K_full, CENTER, SIZE, res)
    pts = _points(3, 10, seed=9)
    direct = camera.project(pts, K_crop)
    via_full = camera.points_full_to_crop(camera.project(pts, K_full), CENTER, SIZE, res)
    torch.testing.assert_close(direct, via_full)
    torch.testing.assert_close(K_crop[:, 0, 0], K_full[:, 0, 0] * res / SIZE)


def test_crop_intrinsics_with_scalar_box():
    K_full = camera.default_intrinsics(640, 480, batch_size=2, dtype=F64)
    K_crop = camera.crop_intrinsics(K_full, (320.0, 240.0), 480.0, 240)
    # principal point (319.5 - 320) * 240 / 480 + 239 / 2 = 119.25; focal 800 * 240 / 480
    torch.testing.assert_close(K_crop[:, :2, 2], torch.tensor([[119.25, 119.25]] * 2, dtype=F64))
    torch.testing.assert_close(K_crop[:, 0, 0], torch.tensor([400.0, 400.0], dtype=F64))


# ---------------------------------------------------------------- SMPL orientation

def test_facing_camera_orient_faces_camera():
    orient = camera.facing_camera_orient(2, dtype=F64)
    assert orient.shape == (2, 3)
    torch.testing.assert_close(orient, torch.tensor([[math.pi, 0.0, 0.0]] * 2, dtype=F64))
    # SMPL frame: y up, facing +z. Nose in front of the head, back of head behind it.
    names = ["nose", "back_of_head", "head_top", "feet"]
    body = torch.tensor([[0.0, 0.5, 0.12], [0.0, 0.5, -0.12], [0.0, 0.65, 0.0], [0.0, -1.1, 0.0]], dtype=F64)
    R = roma.rotvec_to_rotmat(orient)
    cam_pts = body[None] @ R.transpose(1, 2) + torch.tensor([0.0, 0.0, 3.0], dtype=F64)
    depth = dict(zip(names, cam_pts[0, :, 2].tolist()))
    assert depth["nose"] < depth["back_of_head"]
    uv = camera.project(cam_pts, camera.default_intrinsics(640, 480, batch_size=2, dtype=F64))
    v = dict(zip(names, uv[0, :, 1].tolist()))
    assert v["head_top"] < v["feet"]  # head is higher in the image (v grows downwards)


# ---------------------------------------------------------------- errors

GOOD_K = camera.default_intrinsics(640, 480, batch_size=2)
GOOD_PTS = torch.ones(2, 5, 3)
GOOD_CAM = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.1, 0.1]])
NAN_CAM = GOOD_CAM.clone()
NAN_CAM[1, 2] = float("nan")
ZERO_S_CAM = GOOD_CAM.clone()
ZERO_S_CAM[0, 0] = 0.0
BOX_C = torch.tensor([[100.0, 100.0], [200.0, 200.0]])
IMG = torch.tensor([[640.0, 480.0], [640.0, 480.0]])
NAN_K = GOOD_K.clone()
NAN_K[0, 0, 2] = float("nan")


@pytest.mark.parametrize("call, name, shape", [
    (lambda: camera.project(GOOD_PTS, GOOD_K[0]), "K", "(B, 3, 3)"),
    (lambda: camera.project(torch.ones(2, 5, 2), GOOD_K), "points", "(B, N, 3)"),
    (lambda: camera.project(torch.ones(3, 5, 3), GOOD_K), "K", "B=3"),
    (lambda: camera.world_to_camera(GOOD_PTS, torch.eye(3).expand(2, 3, 3), torch.zeros(2)), "t", "(B, 3)"),
    (lambda: camera.make_intrinsics(0.0, 1.0, 0.0, 0.0), "fx", "(B,)"),
    (lambda: camera.make_intrinsics(torch.ones(2), torch.ones(3), 0.0, 0.0), "fy", "(B,)"),
    (lambda: camera.default_focal(0, 480), "width", "positive"),
    (lambda: camera.weak_perspective_to_translation(GOOD_CAM, -1.0, 224), "focal", "(B,)"),
    (lambda: camera.weak_perspective_to_translation(NAN_CAM, 5000.0, 224), "cam", "(B, 3)"),
    (lambda: camera.weak_perspective_to_translation(ZERO_S_CAM, 5000.0, 224), "cam scale", "(B,)"),
    (lambda: camera.weak_perspective_to_translation(GOOD_CAM[0], 5000.0, 224), "cam", "(B, 3)"),
    (lambda: camera.translation_to_weak_perspective(torch.tensor([[0.0, 0.0, -1.0]] * 2), 5000.0, 224), "transl", "(B,)"),
    (lambda: camera.crop_cam_to_full_translation(GOOD_CAM, BOX_C, torch.tensor([100.0, 0.0]), IMG, 1000.0),
     "bbox_size", "(B,)"),
    (lambda: camera.crop_cam_to_full_translation(GOOD_CAM, BOX_C[:, :1], 100.0, IMG, 1000.0), "bbox_center", "(B, 2)"),
    (lambda: camera.crop_cam_to_full_translation(GOOD_CAM, BOX_C, 100.0, IMG * float("nan"), 1000.0),
     "image_size", "(B, 2)"),
    (lambda: camera.crop_cam_to_full_translation(GOOD_CAM, BOX_C, 100.0, None, 1000.0), "image_size", "(B, 2)"),
    (lambda: camera.crop_intrinsics(NAN_K, BOX_C, 100.0, 224), "K_full", "(B, 3, 3)"),
    (lambda: camera.crop_intrinsics(GOOD_K, BOX_C, 100.0, 0), "crop_res", "(B,)"),
    (lambda: camera.points_full_to_crop(torch.ones(2, 4, 3), BOX_C, 100.0, 224), "points", "(B, N, 2)"),
    (lambda: camera.facing_camera_orient(0), "batch_size", ">= 1"),
])
def test_bad_inputs_name_the_argument(call, name, shape):
    with pytest.raises(ParameterError) as info:
        call()
    message = str(info.value)
    assert message.startswith(name), message
    assert shape in message, message
