"""Tests of fitkit.eval.metrics against hand-computed values and per-sample NumPy/SciPy oracles."""

import math

import numpy as np
import pytest
import torch
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from fitkit.errors import ParameterError
from fitkit.eval.metrics import err2d, mpjpe, pa_mpjpe, procrustes_align

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
