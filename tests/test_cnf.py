"""fitkit.priors.cnf: the conditional normalizing-flow pose prior (maps, density, context,
training, files, the ``cnf`` term and the engine)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.body.keypoint_formats import KeypointFormat, get_format
from fitkit.errors import ModelFileError, ParameterError
from fitkit.eval.synthetic import make_keypoint_example, sample_body_poses
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import RecipeError, recipe_from_dict
from fitkit.priors.cnf import (CONTEXT_KEYPOINTS, KEYPOINT_CONTEXT_DIM, CNFPosePrior, ConditionalPoseFlow,
                               PriorFileNotFoundError, keypoint_context, load_flow, make_keypoint_contexts,
                               save_flow, train_cnf)
from fitkit.terms.base import LATENT_KEY, Batch, get_term_class


def small_flow(dim=6, context="features", context_dim=3, dtype=torch.float64, seed=0, noise=0.3, **kw):
    """A small flow with randomized weights (zuko starts near the identity) and a
    non-trivial standardization, so every part of the maps is exercised. (With
    ``noise=0.3`` some spline slopes are extreme: inverting them in float32 loses
    digits, so float32 tests use a milder flow.)"""
    torch.manual_seed(seed)
    kw.setdefault("transforms", 4)
    kw.setdefault("hidden", (16,))
    kw.setdefault("embed_dim", 8)
    flow = ConditionalPoseFlow(dim, context, context_dim, **kw)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(noise * torch.randn_like(p))
    flow.set_standardization(torch.linspace(-0.5, 0.5, dim), torch.linspace(0.3, 1.5, dim))
    return flow.to(dtype).eval()


def make_batch(params, index):
    b = index.shape[0]
    dtype = next(iter(params.values())).dtype
    return Batch(index=index, params=params, init={k: v.clone() for k, v in params.items()},
                 K=torch.eye(3, dtype=dtype).expand(b, 3, 3), pixel_scale=torch.ones(b, dtype=dtype))


# ---------------------------------------------------------------- the maps and the density

@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_latent_maps_invert_each_other(dtype, atol):
    flow = small_flow(dtype=dtype, noise=0.1 if dtype == torch.float32 else 0.3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 6, generator=g).to(dtype)
    c = torch.randn(64, 3, generator=g).to(dtype)
    z = flow.to_latent(x, c)
    assert z.shape == x.shape and z.dtype == dtype
    assert torch.allclose(flow.from_latent(z, c), x, atol=atol)
    assert torch.allclose(flow.to_latent(flow.from_latent(z, c), c), z, atol=atol)
    # the context matters, and a (C,) context is shared by the batch
    assert not torch.allclose(flow.to_latent(x, c.flip(0)), z, atol=1e-3)
    assert torch.allclose(flow.to_latent(x[:3], c[0]), flow.to_latent(x[:3], c[0].expand(3, 3)))


def test_open_body_sized_flow_round_trip_and_size():
    torch.manual_seed(0)
    flow = ConditionalPoseFlow()  # D = 69, keypoint context, default layout
    assert flow.dim == 69 and flow.context_dim == KEYPOINT_CONTEXT_DIM
    assert flow.num_parameters() * 4 < 1.5e6  # float32 bytes
    x, c = 0.5 * torch.randn(8, 69), torch.randn(8, 39)
    assert torch.allclose(flow.from_latent(flow.to_latent(x, c), c), x, atol=1e-4)


def test_log_prob_is_the_change_of_variables_formula():
    """Independent oracle: log N(z; 0, I) + log|det dz/dx| with an autograd Jacobian."""
    flow = small_flow()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    c = torch.randn(5, 3, generator=g, dtype=torch.float64)
    lp = flow.log_prob(x, c).detach()
    for i in range(5):
        J = torch.autograd.functional.jacobian(lambda v: flow.to_latent(v[None], c[i:i + 1])[0], x[i])
        z = flow.to_latent(x[i:i + 1], c[i:i + 1])[0].detach()
        expected = -0.5 * float(z @ z) - 3 * math.log(2 * math.pi) + float(torch.linalg.slogdet(J)[1])
        assert float(lp[i]) == pytest.approx(expected, abs=1e-8)


def test_untrained_flow_is_the_standardization_gaussian():
    flow = ConditionalPoseFlow(5, "keypoints", transforms=2, hidden=(8,)).double()
    loc, scale = torch.linspace(-1, 1, 5), torch.linspace(0.2, 0.6, 5)
    flow.set_standardization(loc, scale)
    x = torch.randn(4, 5, dtype=torch.float64)
    c = torch.randn(4, 39, dtype=torch.float64)
    gauss = torch.distributions.Normal(loc.double(), scale.double()).log_prob(x).sum(1)
    assert torch.allclose(flow.log_prob(x, c), gauss, atol=1e-10)
    assert torch.allclose(flow.to_latent(x, c), (x - loc.double()) / scale.double(), atol=1e-12)


def test_unconditional_flow_and_sampling():
    flow = small_flow(context="none", context_dim=None)
    x = torch.randn(4, 6, dtype=torch.float64)
    assert flow.log_prob(x).shape == (4,)
    with pytest.raises(ParameterError, match="unconditional"):
        flow.log_prob(x, torch.ones(4, 3, dtype=torch.float64))
    s1 = flow.sample(7, generator=torch.Generator().manual_seed(3))
    s2 = flow.sample(7, generator=torch.Generator().manual_seed(3))
    assert s1.shape == (7, 6) and torch.equal(s1, s2)
    # decoding is differentiable in z
    z = torch.zeros(2, 6, dtype=torch.float64, requires_grad=True)
    flow.from_latent(z).square().sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with pytest.raises(ParameterError, match=r"\(B, 6\)"):
        flow.log_prob(torch.zeros(2, 5, dtype=torch.float64))


def test_conditional_flow_checks_the_context_width():
    flow = small_flow()
    with pytest.raises(ParameterError, match=r"\(2, 3\)"):
        flow.log_prob(torch.zeros(2, 6, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))
    # no context at all = the all-zero context
    x = torch.randn(2, 6, dtype=torch.float64)
    assert torch.equal(flow.log_prob(x), flow.log_prob(x, torch.zeros(2, 3, dtype=torch.float64)))


# ---------------------------------------------------------------- training

def test_trained_flow_prefers_the_data_and_the_right_context():
    g = torch.Generator().manual_seed(0)
    d = 4
    A = torch.tensor([[1.0, 0, 0, 0], [0.8, 0.6, 0, 0], [0.0, -0.5, 0.5, 0], [0.3, 0.3, 0.3, 0.4]])
    data = torch.randn(3000, d, generator=g) @ A.T * 0.5
    flow, hist = train_cnf(data[:2500], None, transforms=2, hidden=(32,), bins=6, epochs=12,
                           batch_size=128, lr=3e-3, pose_noise=0.0, seed=0, val=(data[2500:], None), log=None)
    with torch.no_grad():
        held_out = -flow.log_prob(data[2500:]).mean()
        uniform = -flow.log_prob(3.0 * (2 * torch.rand(500, d, generator=g) - 1)).mean()
    assert float(held_out) < float(uniform) - 2.0
    # close to the true Gaussian's entropy (in nats)
    cov = 0.25 * A @ A.T
    entropy = 0.5 * d * (1 + math.log(2 * math.pi)) + 0.5 * float(torch.logdet(cov))
    assert float(held_out) == pytest.approx(entropy, abs=0.35)
    best = [h for h in hist if h["best"]]  # the weights returned are those of the best validation epoch
    assert len(hist) == 12 and len(best) == 1
    assert best[0]["val_nll"] == pytest.approx(float(held_out), rel=1e-5)
    assert best[0]["val_nll"] == min(h["val_nll"] for h in hist)

    # conditional: context (1, 0) -> mode at +1.5, context (0, 1) -> mode at -1.5
    n = 2000
    which = torch.rand(n, generator=g) < 0.5
    ctx = torch.stack([which, ~which], dim=1).float()
    x = torch.where(which[:, None], 1.5, -1.5) + 0.3 * torch.randn(n, 3, generator=g)
    cflow, _ = train_cnf(x, ctx, transforms=2, hidden=(32,), embed_dim=8, epochs=8, batch_size=128,
                         lr=3e-3, pose_noise=0.0, seed=1, log=None)
    assert cflow.context_kind == "features" and cflow.context_dim == 2
    test_x = torch.cat([1.5 + 0.3 * torch.randn(50, 3, generator=g), -1.5 + 0.3 * torch.randn(50, 3, generator=g)])
    right = torch.cat([torch.tensor([[1.0, 0.0]]).expand(50, 2), torch.tensor([[0.0, 1.0]]).expand(50, 2)])
    with torch.no_grad():
        gain = cflow.log_prob(test_x, right) - cflow.log_prob(test_x, right.flip(1))
    assert bool((gain > 1.0).all()) and float(gain.mean()) > 5.0, gain


def test_training_is_deterministic_given_the_seed():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    kw = dict(transforms=2, hidden=(8,), bins=4, epochs=2, batch_size=64, seed=7, log=None)
    state = torch.get_rng_state()
    f1, h1 = train_cnf(x, None, **kw)
    f2, h2 = train_cnf(x, None, **kw)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    assert h1 == [dict(h, seconds=a["seconds"]) for a, h in zip(h1, h2)]
    assert all(torch.equal(a, b) for a, b in zip(f1.state_dict().values(), f2.state_dict().values()))


# ---------------------------------------------------------------- keypoint context

def _body25(points: dict, n=1, fill=(500.0, 500.0, 0.9)):
    fmt = get_format("body25")
    kp = torch.tensor(fill, dtype=torch.float64).repeat(n, fmt.num_keypoints, 1)
    for name, value in points.items():
        kp[:, fmt.names.index(name)] = torch.tensor(value, dtype=torch.float64)
    return kp


def test_keypoint_context_hand_computed():
    visible = {"left_hip": (100.0, 200.0, 0.8), "right_hip": (140.0, 200.0, 0.9),  # center (120, 200)
               "nose": (120.0, 50.0, 1.0),                                       # distance 150 = scale
               "left_wrist": (180.0, 280.0, 0.5),                                # (60, 80) -> (0.4, 0.533)
               "left_knee": (999.0, 999.0, 0.05)}                                # invisible (conf <= 0.1)
    others = {n: (120.0, 200.0, 0.0) for n in CONTEXT_KEYPOINTS if n not in visible}
    kp = _body25({**others, **visible})  # non-context points (neck, eyes...) at (500, 500) play no part
    ctx = keypoint_context(kp, "body25").reshape(13, 3)
    row = {n: ctx[i] for i, n in enumerate(CONTEXT_KEYPOINTS)}
    assert ctx.shape == (13, 3) and ctx.dtype == torch.float64
    assert torch.allclose(row["nose"], torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(row["left_hip"], torch.tensor([-20 / 150, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(row["left_wrist"], torch.tensor([0.4, 80 / 150, 1.0], dtype=torch.float64))
    assert torch.equal(row["left_knee"], torch.zeros(3, dtype=torch.float64))
    assert torch.equal(row["right_ankle"], torch.zeros(3, dtype=torch.float64))
    assert int(ctx[:, 2].sum()) == 4


def test_keypoint_context_without_hips_uses_all_visible_points():
    pts = {"nose": (0.0, 0.0, 1.0), "left_shoulder": (10.0, 0.0, 1.0), "right_shoulder": (0.0, 10.0, 1.0),
           "left_elbow": (10.0, 10.0, 1.0)}
    others = {n: (0.0, 0.0, 0.0) for n in CONTEXT_KEYPOINTS if n not in pts}
    ctx = keypoint_context(_body25({**others, **pts}), "body25").reshape(13, 3)
    s = math.sqrt(50.0)  # center (5, 5), every point at distance sqrt(50)
    assert torch.allclose(ctx[0], torch.tensor([-5 / s, -5 / s, 1.0], dtype=torch.float64))
    assert torch.allclose(ctx[3], torch.tensor([5 / s, 5 / s, 1.0], dtype=torch.float64))


def test_keypoint_context_too_few_visible_points_is_all_zero():
    pts = {"nose": (0.0, 0.0, 1.0), "left_hip": (10.0, 0.0, 1.0), "right_hip": (0.0, 10.0, 1.0),
           "left_ankle": (10.0, 10.0, 1.0)}
    others = {n: (3.0, 4.0, 0.0) for n in CONTEXT_KEYPOINTS if n not in pts}
    kp = _body25({**others, **pts}, n=2)
    kp[1, get_format("body25").names.index("left_ankle"), 2] = 0.0  # frame 1: only 3 visible
    ctx = keypoint_context(kp, "body25")
    assert ctx[0].abs().sum() > 0
    assert torch.equal(ctx[1], torch.zeros(39, dtype=torch.float64))
    assert torch.equal(keypoint_context(torch.zeros(3, 25, 3), "body25"), torch.zeros(3, 39))


@pytest.mark.parametrize("fmt", ["body25", "coco25", "blazepose33"])
def test_keypoint_context_is_invariant_to_translation_and_scale(fmt):
    k = get_format(fmt).num_keypoints
    g = torch.Generator().manual_seed(4)
    kp = torch.rand(5, k, 3, generator=g, dtype=torch.float64) * torch.tensor([800.0, 600.0, 1.0], dtype=torch.float64)
    kp[:, :, 2] = (kp[:, :, 2] > 0.25).double() * kp[:, :, 2]
    moved = kp.clone()
    moved[..., :2] = 3.7 * kp[..., :2] + torch.tensor([123.0, -45.0], dtype=torch.float64)
    a, b = keypoint_context(kp, fmt), keypoint_context(moved, fmt)
    assert a.abs().sum() > 0
    assert torch.allclose(a, b, atol=1e-12)
    # the same people written in another format give the same context
    assert a.shape == (5, 39)


def test_keypoint_context_errors():
    tiny = KeypointFormat("tiny", ("nose", "left_shoulder", "right_shoulder"))
    with pytest.raises(ParameterError, match=r"'tiny'.*left_elbow"):
        keypoint_context(torch.zeros(1, 3, 3), tiny)
    with pytest.raises(ParameterError, match="unknown keypoint format"):
        keypoint_context(torch.zeros(1, 25, 3), "no_such_format")
    with pytest.raises(ParameterError, match=r"\(N, 25, 3\)"):
        keypoint_context(torch.zeros(1, 17, 3), "body25")


# ---------------------------------------------------------------- files

def test_save_load_round_trip(tmp_path):
    flow = small_flow(dtype=torch.float32, noise=0.1)
    path = save_flow(tmp_path / "sub" / "flow.pt", flow, extra={"seed": 3, "metrics": {"test_nll": -1.5},
                                                                 "data": tmp_path, "shape": (1, 2)})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "fitkit.cnf/1" and set(raw) >= {"config", "state_dict", "fitkit"}
    loaded, info = load_flow(path, with_info=True)
    assert info["seed"] == 3 and info["metrics"]["test_nll"] == -1.5 and info["shape"] == [1, 2]
    assert info["data"] == str(tmp_path) and "version" in info
    assert loaded.config == flow.config and not loaded.training
    x, c = torch.randn(6, 6), torch.randn(6, 3)
    assert torch.equal(loaded.log_prob(x, c), flow.log_prob(x, c))
    assert not list(tmp_path.glob("sub/.*.tmp"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_weight_files(tmp_path):
    flow = small_flow(dtype=torch.float32)
    good = save_flow(tmp_path / "good.pt", flow)

    torch.save({"config": flow.config, "weights": flow.state_dict()}, tmp_path / "layout.pt")
    with pytest.raises(ModelFileError, match=r"layout\.pt.*missing key\(s\) \['format', 'state_dict'\]"):
        load_flow(tmp_path / "layout.pt")

    payload = torch.load(good, weights_only=True)
    del payload["config"]["bins"]
    torch.save(payload, tmp_path / "config.pt")
    with pytest.raises(ModelFileError, match=r"config\.pt.*\['bins'\]"):
        load_flow(tmp_path / "config.pt")

    payload = torch.load(good, weights_only=True)
    payload["config"]["hidden"] = [17]
    torch.save(payload, tmp_path / "mismatch.pt")
    with pytest.raises(ModelFileError, match=r"mismatch\.pt: the weights do not match"):
        load_flow(tmp_path / "mismatch.pt")

    payload = torch.load(good, weights_only=True)
    payload["format"] = "something/2"
    torch.save(payload, tmp_path / "format.pt")
    with pytest.raises(ModelFileError, match="format.pt: format 'something/2'"):
        load_flow(tmp_path / "format.pt")

    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04not a torch file at all" * 10)
    with pytest.raises(ModelFileError, match=r"garbage\.pt: not a readable"):
        load_flow(tmp_path / "garbage.pt")

    with pytest.raises(PriorFileNotFoundError, match=r"nope\.pt: conditional flow weights not found") as err:
        CNFPosePrior(path=tmp_path / "nope.pt")
    assert isinstance(err.value, FileNotFoundError) and "train_cnf.py" in str(err.value)


def test_weight_file_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "fitkit.cnf/1", "config": Evil(), "state_dict": {}}, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="evil.pt: not a readable"):
        load_flow(tmp_path / "evil.pt")


# ---------------------------------------------------------------- the term

class _Obs:
    def __init__(self, keypoints, fmt):
        self.keypoints, self.keypoint_format = keypoints, fmt

    def __len__(self):
        return self.keypoints.shape[0]


def _ctx(n, dim=69, keypoints=None, fmt="body25", dtype=torch.float64):
    obs = _Obs(keypoints if keypoints is not None else torch.zeros(n, 25, 3), fmt)
    return SimpleNamespace(observations=obs, model=SimpleNamespace(body_pose_dim=dim), camera=None,
                           init={}, device=torch.device("cpu"), dtype=dtype)


def test_term_registration_modes_and_latent(tmp_path):
    assert get_term_class("cnf") is CNFPosePrior and CNFPosePrior.kind == "prior"
    flow = small_flow()
    n = 5
    feats = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    np.save(tmp_path / "f.npy", feats)
    term = CNFPosePrior(flow=flow, features=tmp_path / "f.npy")
    assert term.least_squares and term.mode == "latent"
    term.setup(_ctx(n, dim=6))
    lat = term.latent()
    assert lat is term.latent() and lat.dim == 6

    x = torch.randn(3, 6, dtype=torch.float64)
    index = torch.tensor([4, 0, 2])
    c = torch.from_numpy(feats[[4, 0, 2]]).double()
    z = lat.encode(x, index)
    assert torch.allclose(z, flow.to_latent(x, c), atol=1e-12)
    assert torch.allclose(lat.decode(z, index), x, atol=1e-10)
    # residuals: the optimized code when present, else the code of the pose
    r_pose = term.residuals(make_batch({"body_pose": x}, index))
    assert torch.allclose(r_pose, z, atol=1e-12)
    w = torch.randn(3, 6, dtype=torch.float64)
    assert torch.equal(term.residuals(make_batch({"body_pose": x, LATENT_KEY: w}, index)), w)
    assert torch.allclose(term.energy(make_batch({"body_pose": x}, index)), z.square().sum(1))

    nll = CNFPosePrior(flow=flow, mode="nll", features=tmp_path / "f.npy")
    assert nll.least_squares is False and CNFPosePrior.least_squares is True and nll.latent() is None
    nll.setup(_ctx(n, dim=6, dtype=torch.float32))  # float32 fit: the flow is cast per dtype
    e = nll.energy(make_batch({"body_pose": x.float()}, index))
    assert e.dtype == torch.float32
    assert torch.allclose(e.double(), -flow.log_prob(x, c), atol=1e-4)
    with pytest.raises(RuntimeError, match="energy"):
        nll.residuals(make_batch({"body_pose": x}, index))


def test_term_keypoint_context_and_override():
    torch.manual_seed(0)
    flow = ConditionalPoseFlow(6, "keypoints", transforms=2, hidden=(8,), embed_dim=4).double()
    kp = _body25({n: (10.0 * i, 5.0 * i * i, 1.0) for i, n in enumerate(CONTEXT_KEYPOINTS)}, n=3)
    term = CNFPosePrior(flow=flow, mode="nll")
    term.setup(_ctx(3, dim=6, keypoints=kp))
    assert torch.allclose(term._context, keypoint_context(kp, "body25"))
    blind = CNFPosePrior(flow=flow, mode="nll", context="none")
    blind.setup(_ctx(3, dim=6, keypoints=kp))
    assert torch.equal(blind._context, torch.zeros(3, 39, dtype=torch.float64))
    x = torch.randn(3, 6, dtype=torch.float64)
    assert torch.allclose(blind.nll(x), -flow.log_prob(x), atol=1e-12)
    with pytest.raises(ParameterError, match="trained with context 'keypoints'"):
        CNFPosePrior(flow=flow, context="features", features="x.npy")
    with pytest.raises(ParameterError, match="mode must be"):
        CNFPosePrior(flow=flow, mode="map")


def test_term_errors(tmp_path):
    flow = small_flow()
    with pytest.raises(ParameterError, match="different joint count than the body model"):
        CNFPosePrior(flow=flow, features=tmp_path / "f.npy").setup(_ctx(2, dim=69))
    with pytest.raises(ParameterError, match="needs 'features"):
        CNFPosePrior(flow=flow)
    np.save(tmp_path / "f.npy", np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ParameterError, match=r"f\.npy: features have shape \(4, 5\).*\(2, 3\)"):
        CNFPosePrior(flow=flow, features=tmp_path / "f.npy").setup(_ctx(2, dim=6))
    with pytest.raises(ParameterError, match="features file not found"):
        CNFPosePrior(flow=flow, features=tmp_path / "missing.npy").setup(_ctx(2, dim=6))
    unc = small_flow(context="none", context_dim=None)
    with pytest.raises(ParameterError, match="only used with context 'features'"):
        CNFPosePrior(flow=unc, features=tmp_path / "f.npy")


# ---------------------------------------------------------------- training data and the engine

@pytest.fixture(scope="module")
def body():
    return load_body_model("open", num_betas=10)


def test_make_keypoint_contexts_views_are_upright_and_reproducible(body):
    g = torch.Generator().manual_seed(0)
    _, pose = sample_body_poses(6, generator=g, spread=0.3)
    orient = torch.zeros(6, 3)  # upright in a y-up world
    kw = dict(views_per_pose=3, noise_px=0.0, dropout=0.0, blank=0.0)
    x, c = make_keypoint_contexts(body, pose, orient, generator=torch.Generator().manual_seed(1), **kw)
    x2, c2 = make_keypoint_contexts(body, pose, orient, generator=torch.Generator().manual_seed(1), **kw)
    assert x.shape == (18, 69) and c.shape == (18, 39) and x.dtype == c.dtype == torch.float32
    assert torch.equal(x, pose.repeat_interleave(3, 0)) and torch.equal(c, c2)
    pts = c.reshape(18, 13, 3)
    nose_y, ankle_y = pts[:, 0, 1], pts[:, 11:13, 1].mean(1)
    assert bool((nose_y < -0.3).all() and (ankle_y > 0.3).all())  # image y points down: head on top
    assert bool((pts[:, :, 2] == 1).all())
    _, blank = make_keypoint_contexts(body, pose, orient, generator=g, views_per_pose=2, blank=1.0)
    assert torch.equal(blank, torch.zeros(12, 39))


@pytest.fixture(scope="module")
def keypoint_flow(body):
    g = torch.Generator().manual_seed(0)
    orient, pose = sample_body_poses(400, generator=g)
    x, c = make_keypoint_contexts(body, pose, torch.zeros_like(orient), views_per_pose=2, generator=g)
    flow, _ = train_cnf(x, c, transforms=2, hidden=(32,), embed_dim=16, epochs=3, batch_size=200,
                        lr=3e-3, seed=0, log=None)
    return flow


def _recipe(prior: dict, solver: dict) -> dict:
    return {"name": "cnf_test", "camera": {"mode": "full"},
            "terms": {"keypoints": {"type": "keypoints2d", "sigma": 100, "confidence_power": 1,
                                    "scale_by_size": True},
                      "pose": {"type": "cnf", "weight": 0.1, **prior}},
            "stages": [{"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
                        "terms": ["keypoints", "pose"], "solver": solver}]}


@pytest.mark.parametrize("mode,solver", [("latent", {"type": "adam", "lr": 0.02, "iterations": 40}),
                                         ("nll", {"type": "lbfgs", "iterations": 15})])
def test_engine_fits_with_the_flow_prior(body, keypoint_flow, mode, solver):
    ex = make_keypoint_example(body, 4, seed=0)
    prior = {"mode": mode, "flow": keypoint_flow}
    start = fit(body, ex.observations, recipe_from_dict(_recipe(prior, {"type": "adam", "iterations": 0})),
                ex.init)
    res = fit(body, ex.observations, recipe_from_dict(_recipe(prior, solver)), ex.init)
    assert not res.nan.any()
    assert bool((res.energies["total"] < start.energies["total"] - 1e-3).all()), (start.energies, res.energies)
    assert float(res.energies["keypoints"].mean()) < 0.5 * float(start.energies["keypoints"].mean())
    if mode == "latent":  # the returned pose is the decoded latent code
        z = res.info[LATENT_KEY]
        c = keypoint_context(ex.observations.keypoints, "body25")
        assert torch.allclose(keypoint_flow.from_latent(z, c), res.params["body_pose"], atol=1e-4)
        assert torch.allclose(res.energies["pose"], 0.1 * z.square().sum(1), rtol=1e-4)
    else:
        c = keypoint_context(ex.observations.keypoints, "body25")
        nll = -keypoint_flow.log_prob(res.params["body_pose"], c)
        assert torch.allclose(res.energies["pose"], 0.1 * nll, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("mode,message", [("latent", "cannot optimize a latent pose"),
                                          ("nll", r"needs least-squares terms; \['pose'\] define an energy")])
def test_levenberg_marquardt_is_refused(body, keypoint_flow, mode, message):
    ex = make_keypoint_example(body, 2, seed=0)
    recipe = recipe_from_dict(_recipe({"mode": mode, "flow": keypoint_flow}, {"type": "lm", "iterations": 5}))
    with pytest.raises(RecipeError, match=r"stages\.0: solver 'lm' " + message):
        fit(body, ex.observations, recipe, ex.init)
