"""Tests of fitkit.eval.metrics against hand-computed values and per-sample NumPy/SciPy oracles."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from fitkit.errors import ParameterError
from fitkit.eval.metrics import (accel_error, err2d, evaluate_bodies, mpjpe, n_mpjpe, n_pve, pa_mpjpe, pa_pve,
                                 procrustes_align, pve, pve_pose, pve_shape, silhouette_iou)

F64 = torch.float64


def _joints(batch, n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, 3, generator=g, dtype=F64) * 0.3


def _random_similarity(points, seed=1):
    """s R p + t with a random proper rotation, scale in [0.5, 2] and translation."""
    rng = np.random.default_rng(seed)
    B = points.shape[0]
    R = torch.as_tensor(Rotation.random(B, random_state=seed).as_matrix(), dtype=F64)
    s = torch.as_tensor(rng.uniform(0.5, 2.0, size=B), dtype=F64)
    t = torch.as_tensor(rng.normal(size=(B, 1, 3)), dtype=F64)
    return s[:, None, None] * points @ R.transpose(1, 2) + t


def _umeyama_scipy(pred, gt):
    """Per-sample oracle: scipy's orthogonal Procrustes for R, then the closed-form scale.

    orthogonal_procrustes may return a reflection, so only use it where none is needed.
    """
    errs = []
    for x, y in zip(np.asarray(pred), np.asarray(gt)):
        xc, yc = x - x.mean(0), y - y.mean(0)
        R, _ = orthogonal_procrustes(xc, yc)  # xc @ R ~ yc
        assert np.linalg.det(R) > 0
        rotated = xc @ R
        s = np.sum(rotated * yc) / np.sum(xc * xc)
        errs.append(np.linalg.norm(s * rotated - yc, axis=1).mean())
    return np.array(errs)


def _umeyama_align_vectors(pred, gt):
    """Per-sample oracle with a proper rotation always: scipy's Kabsch (align_vectors)."""
    errs = []
    for x, y in zip(np.asarray(pred), np.asarray(gt)):
        xc, yc = x - x.mean(0), y - y.mean(0)
        rot, _ = Rotation.align_vectors(yc, xc)  # rot.apply(xc) ~ yc, det +1
        rotated = rot.apply(xc)
        s = np.sum(rotated * yc) / np.sum(xc * xc)
        errs.append(np.linalg.norm(s * rotated - yc, axis=1).mean())
    return np.array(errs)


# ---------------------------------------------------------------- MPJPE

def test_mpjpe_hand_computed():
    gt = torch.zeros(2, 3, 3, dtype=F64)
    pred = gt.clone()
    pred[0, 1] = torch.tensor([3.0, 4.0, 0.0])  # one joint off by 5
    pred[1] += torch.tensor([1.0, 2.0, 2.0])    # everything off by 3
    torch.testing.assert_close(mpjpe(pred, gt, root=None), torch.tensor([5.0 / 3, 3.0], dtype=F64))
    # root alignment removes the global offset of sample 1; sample 0's root did not move
    torch.testing.assert_close(mpjpe(pred, gt), torch.tensor([5.0 / 3, 0.0], dtype=F64))
    # aligning at joint 1 moves sample 0's error onto the other two joints
    torch.testing.assert_close(mpjpe(pred, gt, root=1), torch.tensor([10.0 / 3, 0.0], dtype=F64))


def test_mpjpe_shape_and_dtype():
    pred, gt = _joints(4).float(), _joints(4, seed=3).float()
    out = mpjpe(pred, gt)
    assert out.shape == (4,) and out.dtype == torch.float32
    assert mpjpe(pred.numpy(), gt.numpy()).shape == (4,)
    with pytest.raises(ParameterError):
        mpjpe(pred, gt[:, :5])
    with pytest.raises(ParameterError):
        mpjpe(pred[..., :2], gt[..., :2])


# ---------------------------------------------------------------- PA-MPJPE

def test_similarity_transform_gives_zero_pa_mpjpe():
    gt = _joints(8)
    pred = _random_similarity(gt)
    assert torch.all(mpjpe(pred, gt) > 0.05)
    torch.testing.assert_close(pa_mpjpe(pred, gt), torch.zeros(8, dtype=F64), atol=1e-10, rtol=0)
    torch.testing.assert_close(procrustes_align(pred, gt), gt, atol=1e-10, rtol=0)


def test_pa_mpjpe_float32_input():
    gt = _joints(5)
    pred = _random_similarity(gt)
    out = pa_mpjpe(pred.float(), gt.float())
    assert out.dtype == torch.float32
    assert float(out.max()) < 1e-5


def test_pa_mpjpe_matches_scipy_orthogonal_procrustes():
    gt = _joints(16, seed=5)
    pred = _random_similarity(gt, seed=6) + 0.05 * _joints(16, seed=7)  # not an exact similarity
    ours = pa_mpjpe(pred, gt).numpy()
    np.testing.assert_allclose(ours, _umeyama_scipy(pred, gt), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours, _umeyama_align_vectors(pred, gt), rtol=1e-7, atol=1e-10)
    assert np.all(ours > 0)
    # PA alignment can only lower the error of the (root-aligned) comparison
    assert np.all(ours <= mpjpe(pred, gt).numpy() + 1e-12)


def test_reflection_is_not_used():
    gt = _joints(6, seed=11)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    pred = _random_similarity(mirrored, seed=12)
    ours = pa_mpjpe(pred, gt)
    # a reflection would align perfectly; a proper rotation cannot
    assert torch.all(ours > 1e-3)
    np.testing.assert_allclose(ours.numpy(), _umeyama_align_vectors(pred, gt), rtol=1e-7, atol=1e-10)
    # the map applied is a rotation: recover it from the aligned points by least squares
    aligned = procrustes_align(pred, gt)
    for b in range(pred.shape[0]):
        x = (pred[b] - pred[b].mean(0)).numpy()
        y = (aligned[b] - aligned[b].mean(0)).numpy()
        M, *_ = np.linalg.lstsq(x, y, rcond=None)  # y = x @ M, M = s R^T
        assert np.linalg.det(M) > 0


def test_procrustes_planar_and_degenerate_inputs():
    # planar points (rank-2 covariance) still align exactly
    gt = _joints(3, seed=2)
    gt[..., 2] = 0.0
    pred = _random_similarity(gt, seed=4)
    torch.testing.assert_close(pa_mpjpe(pred, gt), torch.zeros(3, dtype=F64), atol=1e-9, rtol=0)
    # all pred points at one place: scale 0, everything lands on gt's centroid, finite error
    pred = torch.ones(1, 5, 3, dtype=F64)
    gt = _joints(1, n=5)
    aligned = procrustes_align(pred, gt)
    torch.testing.assert_close(aligned, gt.mean(1, keepdim=True).expand(1, 5, 3))
    assert torch.isfinite(pa_mpjpe(pred, gt)).all()


def test_pa_mpjpe_hand_computed():
    # gt: a unit right triangle; pred: same shape but one point pushed out of it.
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]], dtype=F64)
    pred = gt * 2.0 + 5.0  # a pure similarity
    assert float(pa_mpjpe(pred, gt)) == pytest.approx(0.0, abs=1e-12)
    # symmetric deformation: a square's two diagonals stretched differently -> known optimum
    # pred = rectangle 2 x 1 centred; gt = unit square centred. Best similarity: no rotation,
    # scale s = sum(x.y)/sum(x.x) = (4*(1*0.5+0.5*0.5))/(4*(1+0.25)) = 0.6;
    # residual per corner = |(0.6, 0.3) - (0.5, 0.5)| = sqrt(0.01 + 0.04).
    gt = torch.tensor([[[0.5, 0.5, 0], [-0.5, 0.5, 0], [-0.5, -0.5, 0], [0.5, -0.5, 0]]], dtype=F64)
    pred = torch.tensor([[[1.0, 0.5, 0], [-1.0, 0.5, 0], [-1.0, -0.5, 0], [1.0, -0.5, 0]]], dtype=F64)
    assert float(pa_mpjpe(pred, gt)) == pytest.approx(math.sqrt(0.05), rel=1e-12)


# ---------------------------------------------------------------- 2D error

def test_err2d_hand_computed_and_ignores_zero_confidence():
    pred = torch.tensor([[[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]],
                         [[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]], dtype=F64)
    obs = torch.tensor([[[3.0, 4.0, 0.9], [10.0, 10.0, 0.5], [500.0, 500.0, 0.0]],
                        [[1.0, 1.0, 1.0], [2.0, 8.0, 0.2], [float("nan"), 0.0, 0.0]]], dtype=F64)
    # sample 0: (5 + 0) / 2, the far point has confidence 0; sample 1: (0 + 6) / 2, NaN ignored
    torch.testing.assert_close(err2d(pred, obs), torch.tensor([2.5, 3.0], dtype=F64))


def test_err2d_no_confident_keypoint_is_nan():
    pred = torch.zeros(2, 4, 2)
    obs = torch.ones(2, 4, 3)
    obs[1, :, 2] = 0.0
    out = err2d(pred, obs)
    assert out.shape == (2,)
    assert out[0] == pytest.approx(math.sqrt(2))
    assert torch.isnan(out[1])
    with pytest.raises(ParameterError):
        err2d(pred, obs[:, :3])


# ---------------------------------------------------------------- N-MPJPE

def test_n_mpjpe_two_joint_closed_form():
    gt = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=F64)
    pred = torch.tensor([[[5.0, 5.0, 5.0], [6.0, 6.0, 5.0]]], dtype=F64)
    # root-aligned: p = (1, 1, 0), g = (1, 0, 0); s = <p, g> / <p, p> = 1/2;
    # s p - g = (-1/2, 1/2, 0), |.| = sqrt(1/2); the root joint contributes 0.
    assert float(n_mpjpe(pred, gt)) == pytest.approx(math.sqrt(0.5) / 2, rel=1e-12)
    assert float(mpjpe(pred, gt)) == pytest.approx(0.5, rel=1e-12)
    # without root alignment the scale acts about the origin
    assert float(n_mpjpe(gt * 3.0, gt, root=None)) == pytest.approx(0.0, abs=1e-12)


def test_n_mpjpe_scale_invariant_and_bounded():
    gt = _joints(6, seed=21)
    pred = gt * torch.linspace(0.5, 2.0, 6, dtype=F64)[:, None, None] + 1.0
    torch.testing.assert_close(n_mpjpe(pred, gt), torch.zeros(6, dtype=F64), atol=1e-12, rtol=0)
    noisy = gt + 0.05 * _joints(6, seed=22) + 0.5
    # per-sample NumPy oracle (VideoPose3D's n_mpjpe on root-relative joints)
    oracle = []
    for x, y in zip(noisy.numpy(), gt.numpy()):
        x, y = x - x[0], y - y[0]
        s = np.sum(x * y) / np.sum(x * x)
        oracle.append(np.linalg.norm(s * x - y, axis=1).mean())
    np.testing.assert_allclose(n_mpjpe(noisy, gt).numpy(), oracle, rtol=1e-12)
    assert n_mpjpe(noisy.float(), gt.float()).dtype == torch.float32
    # all-zero (root-aligned) prediction: s = 0, finite
    out = n_mpjpe(torch.zeros(1, 4, 3), gt[:1, :4].float())
    torch.testing.assert_close(out, mpjpe(torch.zeros(1, 4, 3), gt[:1, :4].float()))
    with pytest.raises(ParameterError):
        n_mpjpe(gt, gt, root=24)


# ---------------------------------------------------------------- PVE, PA-PVE, N-PVE

def test_pve_with_and_without_roots():
    gt = torch.zeros(1, 2, 3, dtype=F64)
    pred = torch.tensor([[[3.0, 4.0, 0.0], [3.0, 4.0, 12.0]]], dtype=F64)
    # as given: |(3,4,0)| = 5, |(3,4,12)| = 13
    assert float(pve(pred, gt)) == pytest.approx(9.0)
    # translated to roots (3,4,0) and (0,0,0): 0 and 12
    root_p = torch.tensor([[3.0, 4.0, 0.0]], dtype=F64)
    assert float(pve(pred, gt, root_p, torch.zeros(1, 3, dtype=F64))) == pytest.approx(6.0)
    # roots are subtracted per mesh: pred - (3,4,0) vs gt - (1.5,2,0) -> (1.5,2,0) and (1.5,2,12)
    assert float(pve(pred, gt, root_p, root_p / 2)) == pytest.approx((2.5 + math.sqrt(150.25)) / 2)
    with pytest.raises(ParameterError):
        pve(pred, gt, root_p, None)
    with pytest.raises(ParameterError):
        pve(pred, gt, root_p[:, :2], root_p[:, :2])


def test_pa_pve_and_n_pve_of_transformed_copies():
    gt = _joints(4, n=500, seed=31)
    pred = _random_similarity(gt, seed=32)
    assert torch.all(pve(pred, gt) > 0.05)
    torch.testing.assert_close(pa_pve(pred, gt), torch.zeros(4, dtype=F64), atol=1e-10, rtol=0)
    # scale + translation (no rotation): N-PVE with the roots moved along is 0
    t = torch.tensor([[0.3, -1.0, 2.0]], dtype=F64).expand(4, 3)
    scaled = 1.7 * gt + t[:, None]
    roots_gt = gt[:, 0]
    torch.testing.assert_close(n_pve(scaled, gt, 1.7 * roots_gt + t, roots_gt),
                               torch.zeros(4, dtype=F64), atol=1e-12, rtol=0)
    # hand value: pred = (2, 0, 0), gt = (1, 1, 0) single vertex -> s = 1/2, |(1,0)-(1,1)| = 1
    one_p = torch.tensor([[[2.0, 0.0, 0.0]]], dtype=F64)
    one_g = torch.tensor([[[1.0, 1.0, 0.0]]], dtype=F64)
    assert float(n_pve(one_p, one_g)) == pytest.approx(1.0)


# ---------------------------------------------------------------- acceleration error

def test_accel_error_constant_velocity_is_zero():
    t = torch.arange(7, dtype=F64)[:, None, None]
    x0, v = _joints(1, n=5, seed=41)[0], _joints(1, n=5, seed=42)[0]
    pred = x0 + t * v  # (T, J, 3)
    gt = torch.zeros_like(pred)
    out = accel_error(pred, gt)
    assert out.shape == ()
    assert float(out) == pytest.approx(0.0, abs=1e-12)


def test_accel_error_quadratic_and_spike():
    # X_t = c t^2 has second difference 2c at every frame
    c = torch.tensor([[0.5, 0.0, 0.0], [0.0, 1.5, 2.0]], dtype=F64)  # |2c| = 1 and 5
    t = torch.arange(6, dtype=F64)[:, None, None]
    pred = c * t ** 2 + 4.0
    batch = torch.stack([pred, torch.zeros_like(pred)])  # (B=2, T, J, 3)
    gt = torch.zeros_like(batch)
    torch.testing.assert_close(accel_error(batch, gt), torch.tensor([3.0, 0.0], dtype=F64))
    # gt's acceleration is subtracted: identical quadratic trajectories -> 0
    assert float(accel_error(pred, pred.clone())) == pytest.approx(0.0, abs=1e-12)
    # a spike of 1 at frame 1 of T = 4: a_1 = -2, a_2 = 1 -> mean 1.5
    spike = torch.zeros(4, 1, 3, dtype=F64)
    spike[1, 0, 0] = 1.0
    assert float(accel_error(spike, torch.zeros_like(spike))) == pytest.approx(1.5)


def test_accel_error_rejects_short_and_mismatched():
    with pytest.raises(ParameterError, match="T >= 3"):
        accel_error(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3))
    with pytest.raises(ParameterError):
        accel_error(torch.zeros(5, 4, 3), torch.zeros(5, 3, 3))
    with pytest.raises(ParameterError):
        accel_error(torch.zeros(5, 4), torch.zeros(5, 4))


# ---------------------------------------------------------------- silhouette IoU

def test_silhouette_iou_rectangles_and_empty():
    a = torch.zeros(3, 10, 10, dtype=torch.bool)
    b = torch.zeros(3, 10, 10, dtype=torch.bool)
    a[0, 0:4, 0:6] = True   # 24 pixels
    b[0, 2:6, 3:9] = True   # 24 pixels; overlap rows 2-3, cols 3-5 = 6
    b[2, 5:, 5:] = True     # sample 1: both empty; sample 2: one empty
    torch.testing.assert_close(silhouette_iou(a, b), torch.tensor([6 / 42, 1.0, 0.0]))
    assert float(silhouette_iou(a.float()[:1], a[:1])) == 1.0
    with pytest.raises(ParameterError):
        silhouette_iou(a, b[:, :5])


# ---------------------------------------------------------------- body-model metrics

@pytest.fixture(scope="module")
def body():
    from fitkit.body import load_body_model

    return load_body_model("open", num_betas=10)


def _params(seed, batch=2):
    g = torch.Generator().manual_seed(seed)
    return {"global_orient": torch.randn(batch, 3, generator=g) * 0.5,
            "body_pose": torch.randn(batch, 69, generator=g) * 0.2,
            "betas": torch.randn(batch, 10, generator=g),
            "transl": torch.randn(batch, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 3.0])}


def test_pve_shape(body):
    p, q = _params(1), _params(2)
    torch.testing.assert_close(pve_shape(body, p["betas"], p["betas"]), torch.zeros(2))
    out = pve_shape(body, p["betas"], q["betas"])
    assert out.shape == (2,) and torch.all(out > 1e-3)
    # equals PVE of the two rest-pose meshes
    zero_go, zero_bp = torch.zeros(2, 3), torch.zeros(2, 69)
    ref = pve(body(zero_go, zero_bp, p["betas"], vertices="all").vertices,
              body(zero_go, zero_bp, q["betas"], vertices="all").vertices)
    torch.testing.assert_close(out, ref)
    # a (1, k) batch is shared
    torch.testing.assert_close(pve_shape(body, p["betas"][:1], p["betas"][:1].expand(2, 10)), torch.zeros(2))


def test_pve_pose_ignores_shape_and_translation(body):
    p, q = _params(3), _params(4)
    same_pose = dict(q, global_orient=p["global_orient"], body_pose=p["body_pose"])
    torch.testing.assert_close(pve_pose(body, p, same_pose), torch.zeros(2), atol=1e-6, rtol=0)
    out = pve_pose(body, p, q)
    assert torch.all(out > 1e-3)
    # equals the root-aligned PVE of the two mean-shape bodies
    zb = torch.zeros(1, 10)
    a = body(p["global_orient"], p["body_pose"], zb, vertices="all")
    b = body(q["global_orient"], q["body_pose"], zb, vertices="all")
    torch.testing.assert_close(out, pve(a.vertices, b.vertices, a.joints[:, 0], b.joints[:, 0]))
    with pytest.raises(ParameterError, match="body_pose"):
        pve_pose(body, {"global_orient": p["global_orient"]}, q)


def _camera_inputs(body, params, size=(120, 160)):
    from fitkit.camera import project
    from fitkit.render.rasterizer import rasterize

    K = torch.tensor([[200.0, 0.0, 80.0], [0.0, 200.0, 60.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    out = body(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
               vertices="all", keypoints="coco25")
    kp = torch.cat([project(out.keypoints, K), torch.ones(2, out.keypoints.shape[1], 1)], dim=-1)
    masks = rasterize(out.vertices, body.faces, K, size).mask
    return K, kp, masks


KEYS_3D = ["mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "pve_mm", "pa_pve_mm", "n_pve_mm", "pve_s_mm", "pve_p_mm"]


def test_evaluate_bodies_identity_and_keys(body):
    gt = _params(5)
    K, kp, masks = _camera_inputs(body, gt)
    assert masks.any(dim=(1, 2)).all()
    res = evaluate_bodies(body, {k: v.clone() for k, v in gt.items()}, gt, keypoints_2d=kp, K=K, masks=masks,
                          keypoint_format="coco25")
    assert list(res) == KEYS_3D + ["err2d_px", "silhouette_iou"]
    for key in KEYS_3D + ["err2d_px"]:
        assert res[key].shape == (2,)
        torch.testing.assert_close(res[key], torch.zeros(2), atol=1e-6, rtol=0, msg=key)
    torch.testing.assert_close(res["silhouette_iou"], torch.ones(2))
    assert list(evaluate_bodies(body, gt, gt)) == KEYS_3D


def test_evaluate_bodies_translation_and_units(body):
    gt = _params(6)
    K, kp, masks = _camera_inputs(body, gt)
    moved = dict(gt, transl=gt["transl"] + torch.tensor([0.2, -0.1, 0.5]))
    res = evaluate_bodies(body, moved, gt, keypoints_2d=kp, K=K, masks=masks, keypoint_format="coco25")
    for key in KEYS_3D:  # all root-aligned, Procrustes-aligned or translation-free
        torch.testing.assert_close(res[key], torch.zeros(2), atol=1e-3, rtol=0, msg=key)  # < 1 micrometre
    assert torch.all(res["err2d_px"] > 1.0) and torch.all(res["silhouette_iou"] < 0.95)
    # millimetres: 1000 x the meter-valued functions
    other = _params(7)
    res = evaluate_bodies(body, other, gt)
    po = body(other["global_orient"], other["body_pose"], other["betas"], other["transl"], vertices="all")
    go = body(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all")
    torch.testing.assert_close(res["mpjpe_mm"], 1000 * mpjpe(po.joints, go.joints), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(res["pve_mm"], 1000 * pve(po.vertices, go.vertices, po.joints[:, 0],
                                                         go.joints[:, 0]), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(res["pve_s_mm"], 1000 * pve_shape(body, other["betas"], gt["betas"]),
                               rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(res["n_pve_mm"], 1000 * n_pve(po.vertices, go.vertices, po.joints[:, 0],
                                                             go.joints[:, 0]), rtol=1e-5, atol=1e-3)
    assert torch.all(res["pve_mm"] > 10.0)


def test_evaluate_bodies_argument_errors(body):
    gt = _params(8)
    K, kp, _ = _camera_inputs(body, gt)
    with pytest.raises(ParameterError, match="keypoint_format"):
        evaluate_bodies(body, gt, gt, keypoints_2d=kp, K=K)
    with pytest.raises(ParameterError, match="K"):
        evaluate_bodies(body, gt, gt, keypoints_2d=kp, keypoint_format="coco25")
    with pytest.raises(ParameterError, match="betas"):
        evaluate_bodies(body, {k: v for k, v in gt.items() if k != "betas"}, gt)
    # transl is optional
    no_t = {k: v for k, v in gt.items() if k != "transl"}
    torch.testing.assert_close(evaluate_bodies(body, no_t, gt)["pve_mm"], torch.zeros(2), atol=1e-3, rtol=0)
