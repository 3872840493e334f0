"""Tests of fitkit.fitting.camera_init: similar-triangles translation from the torso."""

import math

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.body.keypoint_formats import get_format
from fitkit.camera import make_intrinsics, project
from fitkit.errors import ParameterError
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.camera_init import FALLBACK_IMAGE_FILL, torso_pairs_for, translation_from_torso

F64 = torch.float64


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", dtype=F64)


def _observe(points_cam, K, conf=1.0):
    uv = project(points_cam, K)
    return torch.cat([uv, torch.full_like(uv[..., :1], conf)], dim=-1)


def _posed(model, ex, fmt):
    g = ex.gt
    return model(g["global_orient"], g["body_pose"], g["betas"], keypoints=fmt).keypoints


def _used_centroid_error_px(points, transl, observed, K, pairs):
    """Pixel distance between the projected 3D centroid and the 2D centroid of the pair keypoints."""
    idx = sorted({i for p in pairs for i in p})
    c3 = (points[:, idx] + transl[:, None]).mean(1, keepdim=True)
    c2 = observed[:, idx, :2].mean(1)
    return (project(c3, K)[:, 0] - c2).norm(dim=-1)


# ---------------------------------------------------------------- pairs

def test_torso_pairs_for_formats():
    for name in ("body25", "coco25", "blazepose33", "openpose"):
        fmt = get_format(name)
        pairs = torso_pairs_for(name)
        assert [(fmt.names[i], fmt.names[j]) for i, j in pairs] == [
            ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip")]
        wide = torso_pairs_for(name, include_widths=True)
        assert wide[:2] == pairs and len(wide) == 4
        assert (fmt.names[wide[2][0]], fmt.names[wide[2][1]]) == ("left_shoulder", "right_shoulder")
    assert torso_pairs_for("body25") == [(5, 12), (2, 9)]
    with pytest.raises(ValueError):
        torso_pairs_for("no_such_format")


# ---------------------------------------------------------------- exact cases

def test_flat_torso_exact_recovery_with_anisotropic_focal():
    # a 0.4 x 0.5 m rectangle parallel to the image plane: similar triangles are exact
    pts = torch.tensor([[[-0.2, -0.25, 0.0], [0.2, -0.25, 0.0], [-0.2, 0.25, 0.0], [0.2, 0.25, 0.0],
                         [0.0, 0.0, 0.3]]], dtype=F64)  # extra point, not in any pair
    K = make_intrinsics(1200.0, 1000.0, 330.0, 250.0, dtype=F64)
    transl = torch.tensor([[0.3, -0.2, 4.0]], dtype=F64)
    obs = _observe(pts + transl[:, None], K)
    pairs = [(0, 2), (1, 3)]  # the two vertical sides
    t, ok = translation_from_torso(pts, obs, K, pairs)
    assert ok.tolist() == [True]
    torch.testing.assert_close(t, transl, atol=1e-12, rtol=0)
    # widths too, and the SMPLify 3D-length variant (identical here: no depth extent)
    t2, _ = translation_from_torso(pts, obs, K, pairs + [(0, 1), (2, 3)], projected_lengths=False)
    torch.testing.assert_close(t2, transl, atol=1e-12, rtol=0)


def test_projected_versus_3d_lengths_for_a_tilted_torso():
    # one vertical segment of 0.5 m tilted 0.6 rad towards the camera, seen far away
    a = 0.6
    pts = torch.tensor([[[0.0, -0.25 * math.cos(a), 0.25 * math.sin(a)],
                         [0.0, 0.25 * math.cos(a), -0.25 * math.sin(a)]]], dtype=F64)
    K = make_intrinsics(5000.0, 5000.0, 500.0, 500.0, dtype=F64)
    transl = torch.tensor([[0.0, 0.0, 40.0]], dtype=F64)
    obs = _observe(pts + transl[:, None], K)
    t, ok = translation_from_torso(pts, obs, K, [(0, 1)])
    assert bool(ok[0]) and float(t[0, 2]) == pytest.approx(40.0, rel=1e-3)
    # SMPLify's full 3D length overestimates the depth by 1 / cos(a)
    t3, _ = translation_from_torso(pts, obs, K, [(0, 1)], projected_lengths=False)
    assert float(t3[0, 2]) == pytest.approx(40.0 / math.cos(a), rel=1e-3)


def test_far_body_recovery(model):
    # noise-free keypoints of real poses, nearly orthographic: about 20 m away (long focal)
    fmt = "body25"
    ex = make_keypoint_example(model, 64, keypoint_format=fmt, noise_px=0.0, dropout=0.0, seed=4,
                               focal=12000.0)
    pts = _posed(model, ex, fmt)
    K = ex.observations.intrinsics.to(F64)
    gt = ex.gt["transl"]
    assert float(gt[:, 2].min()) > 15.0
    pairs = torso_pairs_for(fmt)
    t, ok = translation_from_torso(pts, ex.observations.keypoints, K, pairs)
    assert bool(ok.all())
    rel = (t[:, 2] / gt[:, 2] - 1).abs()
    assert float(rel.max()) < 0.02
    # x, y: the used keypoints' centroid lands where it was observed (exactly, by construction)
    assert float(_used_centroid_error_px(pts, t, ex.observations.keypoints.to(F64), K, pairs).max()) < 1e-3
    # and the translation is close to the truth (the depth error barely moves x, y)
    assert float((t[:, :2] - gt[:, :2]).abs().max()) < 0.02


def test_typical_distance_recovery(model):
    fmt = "coco25"
    ex = make_keypoint_example(model, 200, keypoint_format=fmt, noise_px=0.0, dropout=0.0, seed=9)
    pts = _posed(model, ex, fmt)
    K = ex.observations.intrinsics.to(F64)
    obs = ex.observations.keypoints.to(F64)
    gt = ex.gt["transl"]
    t, ok = translation_from_torso(pts, obs, K, torso_pairs_for(fmt))
    assert bool(ok.all())
    rel = (t[:, 2] / gt[:, 2] - 1).abs()
    assert float(rel.mean()) < 0.015 and float(rel.max()) < 0.05
    # pixels: every keypoint of the body placed with the estimate lands near its observation
    px = (project(pts + t[:, None], K) - obs[..., :2]).norm(dim=-1)
    assert float(px.median()) < 5.0


# ---------------------------------------------------------------- missing torso, batches

def test_missing_torso_gives_ok_false_and_finite(model):
    fmt = "body25"
    ex = make_keypoint_example(model, 4, keypoint_format=fmt, noise_px=0.0, dropout=0.0, seed=2)
    pts = _posed(model, ex, fmt)
    K = ex.observations.intrinsics.to(F64)
    obs = ex.observations.keypoints.to(F64).clone()
    pairs = torso_pairs_for(fmt)
    names = get_format(fmt).names
    # sample 1: no hips; sample 2: nothing at all, with NaN coordinates; sample 3: one shoulder only
    obs[1, [names.index("left_hip"), names.index("right_hip")], 2] = 0.0
    obs[2, :, 2] = 0.0
    obs[2, :, :2] = float("nan")
    obs[3, [names.index("left_hip"), names.index("right_hip"), names.index("right_shoulder")], 2] = 0.05
    t, ok = translation_from_torso(pts, obs, K, pairs, min_conf=0.1)
    assert ok.tolist() == [True, False, False, False]
    assert bool(torch.isfinite(t).all()) and bool((t[:, 2] > 0).all())
    # fallback depth: the body's vertical extent fills 80% of the image height
    height = pts[2, :, 1].max() - pts[2, :, 1].min()
    f, cy = K[2, 1, 1], K[2, 1, 2]
    expected = f * height / (FALLBACK_IMAGE_FILL * (2 * cy + 1))
    c3 = pts[2].mean(0)
    assert float(t[2, 2] + c3[2]) == pytest.approx(float(expected), rel=1e-9)
    # with nothing observed the body's centroid sits on the principal point
    uv = project((pts[2] + t[2]).mean(0)[None, None], K[2:3])[0, 0]
    torch.testing.assert_close(uv, K[2, :2, 2])
    # with some confident keypoints, their centroid goes to their observed centroid
    seen = obs[1, :, 2] > 0.1
    c = project((pts[1, seen] + t[1]).mean(0)[None, None], K[1:2])[0, 0]
    torch.testing.assert_close(c, obs[1, seen, :2].mean(0))
    # no pairs at all
    t0, ok0 = translation_from_torso(pts, obs, K, [])
    assert not bool(ok0.any()) and bool(torch.isfinite(t0).all())


def test_degenerate_observed_torso_is_not_trusted():
    pts = torch.tensor([[[0.0, -0.25, 0.0], [0.0, 0.25, 0.0]]], dtype=F64)
    K = make_intrinsics(1000.0, 1000.0, 500.0, 500.0, dtype=F64)
    obs = torch.tensor([[[500.0, 500.0, 1.0], [500.2, 500.0, 1.0]]], dtype=F64)  # 0.2 px torso
    t, ok = translation_from_torso(pts, obs, K, [(0, 1)])
    assert not bool(ok[0]) and bool(torch.isfinite(t).all())


def test_batch_independence(model):
    fmt = "blazepose33"
    ex = make_keypoint_example(model, 6, keypoint_format=fmt, seed=8)
    pts = _posed(model, ex, fmt)
    K = ex.observations.intrinsics.to(F64)
    obs = ex.observations.keypoints.to(F64)
    pairs = torso_pairs_for(fmt)
    t, ok = translation_from_torso(pts, obs, K, pairs)
    for b in range(6):
        tb, okb = translation_from_torso(pts[b:b + 1], obs[b:b + 1], K[b:b + 1], pairs)
        torch.testing.assert_close(tb[0], t[b], atol=1e-12, rtol=0)
        assert bool(okb[0]) == bool(ok[b])
    # wrecking the other samples leaves sample 0 unchanged
    obs2 = obs.clone()
    obs2[1:, :, 2] = 0.0
    obs2[1:, :, :2] = 1e6
    t2, ok2 = translation_from_torso(pts, obs2, K, pairs)
    torch.testing.assert_close(t2[0], t[0], atol=1e-12, rtol=0)
    assert not bool(ok2[1:].any())


def test_dtype_and_shape_checks(model):
    pts = torch.zeros(2, 25, 3)
    obs = torch.zeros(2, 25, 3)
    K = make_intrinsics(1000.0, 1000.0, 500.0, 500.0, batch_size=2)
    t, ok = translation_from_torso(pts, obs, K, torso_pairs_for("body25"))
    assert t.dtype == torch.float32 and t.shape == (2, 3) and ok.dtype == torch.bool
    assert bool(torch.isfinite(t).all())
    with pytest.raises(ParameterError):
        translation_from_torso(pts, obs[:, :24], K, [(0, 1)])
    with pytest.raises(ParameterError):
        translation_from_torso(pts, obs, K[:1], [(0, 1)])
    with pytest.raises(ParameterError):
        translation_from_torso(pts, obs, K, [(0, 25)])
