"""The 3D-keypoint term: gradients against finite differences, the LM Jacobian against
autograd, recovery of held-out synthetic bodies, scale-free invariance, unused points."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.metrics import mpjpe
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit, prepare_init
from fitkit.fitting.objective import Objective, WeightedTerm
from fitkit.fitting.params import ParamLayout
from fitkit.fitting.recipe import RecipeError, recipe_from_dict
from fitkit.terms.base import Batch, SetupContext
from fitkit.terms.keypoints3d import Keypoints3D

F64 = torch.float64


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=F64)


def _example(model, n=4, seed=3, conf=None):
    ex = make_keypoint_example(model, n, keypoint_format="blazepose33", noise_px=0.0, dropout=0.0, seed=seed)
    pts = ex.gt["keypoints_3d"]
    # MediaPipe's convention: hip-centred meters in camera axes
    hips = 0.5 * (pts[:, 23] + pts[:, 24])
    c = torch.ones(pts.shape[:2], dtype=F64) if conf is None else conf
    k3 = torch.cat([pts - hips[:, None], c[..., None]], -1)
    return ex, dataclasses.replace(ex.observations, keypoints3d=k3.to(ex.observations.keypoints.dtype))


def _setup(term, model, obs, init):
    cam = build_fit_camera({"mode": "full"}, obs, dtype=F64)
    params, _ = prepare_init(init, model, len(obs), device="cpu", dtype=F64)
    term.setup(SetupContext(obs.to("cpu", F64), model, cam, params, torch.device("cpu"), F64))
    return cam, params


def _batch(model, params, cam, index=None):
    n = params["transl"].shape[0]
    index = torch.arange(n) if index is None else index
    out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                keypoints="blazepose33", validate=False)
    return Batch(index=index, params=params, init=params, K=cam.K[index], pixel_scale=torch.ones(n, dtype=F64),
                 keypoints=out.keypoints)


@pytest.mark.parametrize("scale,sigma", [("fixed", 0.1), ("free", 0.1), ("free", None), ("model", 0.1)])
def test_gradient_matches_finite_differences(model, scale, sigma):
    ex, obs = _example(model, n=2)
    term = Keypoints3D(sigma=sigma, scale=scale)
    cam, params = _setup(term, model, obs, ex.init)
    base = {k: v.clone() for k, v in params.items()}

    def energy(go, bp, betas):
        p = dict(base, global_orient=go, body_pose=bp, betas=betas)
        return term.energy(_batch(model, p, cam)).sum()

    args = tuple(base[k].clone().requires_grad_(True) for k in ("global_orient", "body_pose", "betas"))
    assert torch.autograd.gradcheck(energy, args, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_lm_jacobian_matches_autograd(model):
    ex, obs = _example(model, n=4)
    term = Keypoints3D(sigma=0.1, scale="free")
    cam, params = _setup(term, model, obs, ex.init)
    assert term.pointwise is None  # rows read three keypoints each: the generic forward-mode path
    layout = ParamLayout(["global_orient", "body_pose", "betas", "transl"],
                         {"global_orient": 3, "body_pose": 69, "betas": 10, "transl": 3})
    obj = Objective(model, [WeightedTerm("k3", term, 2.0)], layout, params, params, cam)
    x = layout.encode(params) + 0.05 * torch.randn(4, layout.dim, generator=torch.Generator().manual_seed(0),
                                                   dtype=F64)
    idx = torch.tensor([3, 1])
    r, J = obj.residuals_and_jacobian(x[idx], idx)
    torch.testing.assert_close(r, obj.residuals(x[idx], idx), rtol=1e-12, atol=1e-12)
    full = torch.autograd.functional.jacobian(lambda xx: obj.residuals(xx, idx), x[idx])
    ref = torch.stack([full[b, :, b] for b in range(2)])
    torch.testing.assert_close(J, ref, rtol=1e-9, atol=1e-9)
    # translation moves both sides' roots alike: no derivative along it
    assert float(J[..., layout.slices["transl"]].abs().max()) < 1e-6 * float(J.abs().max())


def test_recovers_pose_from_noise_free_3d_keypoints(model):
    ex, obs = _example(model, n=6, seed=11)
    recipe = recipe_from_dict({
        "name": "k3", "camera": {"mode": "full"}, "init": {"transl": "keep"},
        "terms": {"k3": {"type": "keypoints3d", "sigma": None}, "shape": {"type": "shape_l2", "weight": 1e-4}},
        "stages": [{"name": "pose", "free": ["global_orient", "body_pose", "betas"], "terms": ["k3", "shape"],
                    "solver": {"type": "lm", "iterations": 40}}]})
    res = fit(model, obs, recipe, init=ex.init)
    out = model(res.params["global_orient"], res.params["body_pose"], res.params["betas"],
                res.params["transl"], keypoints="blazepose33", validate=False)
    gt = ex.gt["keypoints_3d"]
    start = model(ex.init["global_orient"], ex.init["body_pose"], ex.init["betas"], ex.init["transl"],
                  keypoints="blazepose33", validate=False).keypoints
    err = mpjpe(out.keypoints, gt, root=23)  # (N,) meters, aligned at one hip
    err0 = mpjpe(start, gt, root=23)
    assert float(err0.mean()) > 0.05
    assert float(err.max()) < 0.01, err


def test_scale_free_ignores_the_observed_size(model):
    ex, obs = _example(model, n=3)
    big = dataclasses.replace(obs, keypoints3d=torch.cat([obs.keypoints3d[..., :3] * 1.7,
                                                          obs.keypoints3d[..., 3:]], -1))
    res = {}
    for scale in ("free", "fixed"):
        for name, o in (("small", obs), ("big", big)):
            term = Keypoints3D(sigma=0.1, scale=scale)
            cam, params = _setup(term, model, o, ex.init)
            res[scale, name] = term.residuals(_batch(model, params, cam))
    torch.testing.assert_close(res["free", "small"], res["free", "big"], rtol=1e-10, atol=1e-12)
    assert float((res["fixed", "small"] - res["fixed", "big"]).abs().max()) > 1e-3
    # at the truth the free scale is 1 and the residuals vanish
    term = Keypoints3D(sigma=0.1, scale="free")
    cam, params = _setup(term, model, big, ex.gt)
    b = _batch(model, {k: ex.gt[k] for k in params}, cam)
    torch.testing.assert_close(term.sample_scale(b), torch.full((3,), 1 / 1.7, dtype=F64))
    assert float(term.residuals(b).abs().max()) < 1e-9


def test_confidence_zero_points_and_frames_are_ignored(model):
    conf = torch.ones(4, 33, dtype=F64)
    conf[0, [13, 15]] = 0.0  # left elbow and wrist unobserved
    conf[1] = 0.0  # a frame without keypoints3d
    conf[2, 24] = 0.0  # no right hip: no root, nothing usable
    ex, obs = _example(model, n=4, conf=conf)
    moved = obs.keypoints3d.clone()
    moved[0, [13, 15], :3] += 5.0
    moved[1, :, :3] = torch.randn(33, 3, dtype=F64)
    moved[2, :, :3] += 1.0
    r = []
    for o in (obs, dataclasses.replace(obs, keypoints3d=moved)):
        term = Keypoints3D(sigma=0.1, scale="free")
        cam, params = _setup(term, model, o, ex.init)
        r.append(term.residuals(_batch(model, params, cam)))
        assert term.evidence().tolist() == [True, False, False, True]
    torch.testing.assert_close(r[0], r[1], rtol=0, atol=0)
    assert float(r[0][1:3].abs().max()) == 0.0
    assert float(r[0][0].reshape(33, 3)[[13, 15]].abs().max()) == 0.0
    assert float(r[0][0].abs().max()) > 0  # the other points do count
    # observations without keypoints3d at all: no evidence, zero residuals
    term = Keypoints3D()
    cam, params = _setup(term, model, dataclasses.replace(obs, keypoints3d=None), ex.init)
    assert not bool(term.evidence().any())
    assert float(term.residuals(_batch(model, params, cam)).abs().max()) == 0.0


def test_recipe_options_are_checked():
    base = {"stages": [{"free": ["body_pose"], "terms": ["k3"], "solver": {"type": "lm"}}]}
    recipe_from_dict(dict(base, terms={"k3": {"type": "keypoints3d", "scale": "free", "sigma": 0.05}}))
    with pytest.raises(RecipeError, match="sigma"):
        recipe_from_dict(dict(base, terms={"k3": {"type": "keypoints3d", "sigma": -1}}))
    with pytest.raises(RecipeError, match="unknown option"):
        recipe_from_dict(dict(base, terms={"k3": {"type": "keypoints3d", "only": ["nose"]}}))
    with pytest.raises(ValueError, match="scale"):
        Keypoints3D(scale="auto")


def _rot_y(deg):
    a = torch.tensor(deg * 3.141592653589793 / 180, dtype=F64)
    c, s = torch.cos(a), torch.sin(a)
    return torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=F64)


def _turned(obs, R):
    return dataclasses.replace(obs, keypoints3d=torch.cat([obs.keypoints3d[..., :3] @ R.T,
                                                           obs.keypoints3d[..., 3:]], -1))


def test_rotation_modes_ignore_the_observed_facing(model):
    ex, obs = _example(model, n=3)
    ry = _rot_y(70.0)
    tilt = torch.linalg.matrix_exp(torch.tensor([[0, -0.3, 0.2], [0.3, 0, -0.5], [-0.2, 0.5, 0]], dtype=F64))
    res = {}
    for mode in ("camera", "yaw", "kabsch"):
        for name, o in (("plain", obs), ("yaw", _turned(obs, ry)), ("tilt", _turned(obs, tilt))):
            term = Keypoints3D(sigma=0.1, scale="free", rotation=mode)
            cam, params = _setup(term, model, o, ex.init)
            res[mode, name] = term.residuals(_batch(model, params, cam))
    # yaw: a turn about the vertical axis is aligned away, a tilt is not; kabsch: any rotation
    torch.testing.assert_close(res["yaw", "plain"], res["yaw", "yaw"], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(res["kabsch", "plain"], res["kabsch", "tilt"], rtol=1e-7, atol=1e-9)
    assert float((res["yaw", "plain"] - res["yaw", "tilt"]).abs().max()) > 1e-3
    assert float((res["camera", "plain"] - res["camera", "yaw"]).abs().max()) > 1e-3
    # at the truth, observations turned about y leave no residual in yaw mode
    term = Keypoints3D(sigma=None, scale="free", rotation="yaw")
    o = _turned(obs, ry)
    cam, params = _setup(term, model, o, ex.gt)
    assert float(term.residuals(_batch(model, {k: ex.gt[k] for k in params}, cam)).abs().max()) < 1e-9


def test_yaw_angle_is_the_least_squares_optimum():
    from fitkit.terms.keypoints3d import optimal_yaw
    g = torch.Generator().manual_seed(1)
    m = torch.randn(2, 12, 3, generator=g, dtype=F64)
    o = torch.randn(2, 12, 3, generator=g, dtype=F64)
    w = torch.rand(2, 12, generator=g, dtype=F64)
    best = optimal_yaw(m, o, w)
    cost = lambda x: (w * ((m - x) ** 2).sum(-1)).sum(-1)
    # against a brute-force search over angles (an independent oracle)
    grid = torch.stack([cost(o @ _rot_y(a).T) for a in torch.arange(0, 360, 0.05).tolist()])
    assert bool((cost(best) <= grid.min(0).values + 1e-9).all())
    assert bool((cost(best) >= grid.min(0).values - 1e-3).all())


def test_yaw_mode_gradient_matches_finite_differences(model):
    ex, obs = _example(model, n=2)
    term = Keypoints3D(sigma=0.1, scale="free", rotation="yaw")
    cam, params = _setup(term, model, _turned(obs, _rot_y(40.0)), ex.init)
    base = {k: v.clone() for k, v in params.items()}

    def energy(go, bp):
        return term.energy(_batch(model, dict(base, global_orient=go, body_pose=bp), cam)).sum()

    args = tuple(base[k].clone().requires_grad_(True) for k in ("global_orient", "body_pose"))
    assert torch.autograd.gradcheck(energy, args, eps=1e-6, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="rotation"):
        Keypoints3D(rotation="roll")


def test_model_scale_measures_in_the_observed_units(model):
    """scale: model fits the model's skeleton onto the observed one: residuals scale with the
    observations (squared loss), and a uniformly scaled observation of the truth leaves none."""
    ex, obs = _example(model, n=3)
    big = dataclasses.replace(obs, keypoints3d=torch.cat([obs.keypoints3d[..., :3] * 1.7,
                                                          obs.keypoints3d[..., 3:]], -1))
    r = []
    for o in (obs, big):
        term = Keypoints3D(sigma=None, scale="model")
        cam, params = _setup(term, model, o, ex.init)
        r.append(term.residuals(_batch(model, params, cam)))
    torch.testing.assert_close(r[1], 1.7 * r[0], rtol=1e-9, atol=1e-12)
    term = Keypoints3D(sigma=None, scale="model")
    cam, params = _setup(term, model, big, ex.gt)
    b = _batch(model, {k: ex.gt[k] for k in params}, cam)
    assert float(term.residuals(b).abs().max()) < 1e-9
    torch.testing.assert_close(term.sample_scale(b), torch.full((3,), 1 / 1.7, dtype=F64))
