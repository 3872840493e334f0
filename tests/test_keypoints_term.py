"""The 2D keypoint term against a direct numpy computation of SMPLify's energy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.io.observations import Observations
from fitkit.terms.base import Batch, SetupContext
from fitkit.terms.keypoints2d import Keypoints2D


def _obs(N=3, K=25, seed=0):
    rng = np.random.default_rng(seed)
    kps = np.concatenate([rng.uniform(100, 900, (N, K, 2)), rng.uniform(0.2, 1.0, (N, K, 1))], axis=2)
    kps[0, 4, 2] = 0.0
    return Observations.from_arrays(kps, "body25", np.tile([1000.0, 800.0], (N, 1)), dtype=torch.float64)


def _setup(term, obs):
    term.setup(SetupContext(observations=obs, model=None, camera=None, init={}, device=torch.device("cpu"),
                            dtype=torch.float64))
    return term


def _batch(points, index, K, scale=None):
    B = points.shape[0]
    return Batch(index=index, params={}, init={}, K=K,
                 pixel_scale=torch.ones(B, dtype=torch.float64) if scale is None else scale, keypoints=points)


def _numpy_energy(points, K, obs_kp, sigma, power, weights, scale):
    z = points[..., 2:]
    uv = np.einsum("bij,bkj->bki", K[:, :2, :], np.concatenate([points[..., :2] / z, np.ones_like(z)], -1))
    e = (uv - obs_kp[..., :2]) * scale[:, None, None]
    rho = sigma ** 2 * e ** 2 / (sigma ** 2 + e ** 2) if sigma else e ** 2
    w = obs_kp[..., 2] ** power * weights
    return (w[..., None] * rho).sum(axis=(1, 2))


def test_energy_matches_smplify_formula_on_selected_rows():
    obs = _obs()
    names = get_format("body25").names
    term = _setup(Keypoints2D(sigma=50.0, confidence_power=2, ignore=["left_hip"], weights={"nose": 3.0}), obs)
    rng = np.random.default_rng(1)
    index = torch.tensor([2, 0])
    pts = torch.tensor(rng.normal(0, 0.5, (2, 25, 3)) + [0, 0, 4])
    K = torch.tensor([[[1200.0, 0, 499.5], [0, 1100.0, 399.5], [0, 0, 1]]] * 2)
    r = term.residuals(_batch(pts, index, K))
    assert r.shape == (2, 50)
    w = np.ones(25)
    w[names.index("left_hip")] = 0
    w[names.index("nose")] = 3
    want = _numpy_energy(pts.numpy(), K.numpy(), obs.keypoints[index].numpy(), 50.0, 2, w, np.ones(2))
    np.testing.assert_allclose((r ** 2).sum(1).numpy(), want, rtol=1e-12)
    # the zero-confidence keypoint of sample 0 contributes nothing whatever the model does
    assert torch.all(r[1, 8:10] == 0)


def test_only_plain_squares_and_pixel_scale():
    obs = _obs()
    term = _setup(Keypoints2D(sigma=None, confidence_power=0, only=["neck", "mid_hip"]), obs)
    pts = torch.tensor(np.random.default_rng(2).normal(0, 0.5, (3, 25, 3)) + [0, 0, 4])
    K = torch.tensor([[[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]]] * 3)
    scale = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    r = term.residuals(_batch(pts, torch.arange(3), K, scale))
    names = get_format("body25").names
    w = np.zeros(25)
    w[[names.index("neck"), names.index("mid_hip")]] = 1
    want = _numpy_energy(pts.numpy(), K.numpy(), obs.keypoints.numpy(), None, 0, w, scale.numpy())
    np.testing.assert_allclose((r ** 2).sum(1).numpy(), want, rtol=1e-12)


def test_size_scaling_makes_the_energy_independent_of_image_scale():
    obs = _obs()
    big = Observations.from_arrays(torch.cat([obs.keypoints[..., :2] * 3, obs.keypoints[..., 2:]], -1),
                                   "body25", obs.image_size * 3, dtype=torch.float64)
    t1 = _setup(Keypoints2D(sigma=100.0, scale_by_size=True), obs)
    t3 = _setup(Keypoints2D(sigma=100.0, scale_by_size=True), big)
    pts = torch.tensor(np.random.default_rng(3).normal(0, 0.5, (3, 25, 3)) + [0, 0, 4])
    K = torch.tensor([[[1000.0, 0, 500], [0, 1000.0, 400], [0, 0, 1]]] * 3)
    K3 = K.clone()
    K3[:, :2] *= 3
    r1 = t1.residuals(_batch(pts, torch.arange(3), K))
    r3 = t3.residuals(_batch(pts, torch.arange(3), K3))
    torch.testing.assert_close(r1, r3)


def test_evidence_and_name_errors():
    obs = _obs()
    kps = obs.keypoints.clone()
    kps[1, :, 2] = 0
    obs2 = Observations.from_arrays(kps, "body25", obs.image_size, dtype=torch.float64)
    term = _setup(Keypoints2D(), obs2)
    assert term.evidence().tolist() == [True, False, True]
    # a sample whose only confident keypoints are ignored has no evidence either
    kps = torch.zeros_like(obs.keypoints)
    kps[:, 9] = torch.tensor([10.0, 10.0, 1.0], dtype=torch.float64)
    only_hip = Observations.from_arrays(kps, "body25", obs.image_size, dtype=torch.float64)
    assert not _setup(Keypoints2D(ignore=["right_hip"]), only_hip).evidence().any()
    with pytest.raises(ValueError, match=r"unknown keypoint name\(s\) \['LHip'\]"):
        _setup(Keypoints2D(ignore=["LHip"]), obs)
    with pytest.raises(ValueError, match="sigma"):
        Keypoints2D(sigma=-1)
