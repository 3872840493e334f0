"""VPoser: official layouts (v1 against human_body_prior, v2 against an independent forward),
safe loading, the ``vposer`` term in the engine (latent and encoder modes), training."""
from __future__ import annotations

import copy
import math
import os
import pickle
import sys
import textwrap
import types

import pytest
import roma
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.errors import ModelFileError, ParameterError
from fitkit.eval.metrics import err2d
from fitkit.eval.synthetic import make_keypoint_example, sample_body_poses
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit, prepare_init
from fitkit.fitting.objective import Objective, WeightedTerm
from fitkit.fitting.params import ParamLayout
from fitkit.fitting.recipe import RecipeError, recipe_from_dict
from fitkit.priors.files import PriorFileNotFoundError
from fitkit.priors.vposer import (V2_PREFIX, VPoserPrior, VPoserV1, VPoserV2, load_vposer, read_checkpoint,
                                  save_vposer)
from fitkit.priors.vposer_train import evaluate_vposer, train_vposer
from fitkit.terms.base import LATENT_KEY, SetupContext, get_term_class


@pytest.fixture(scope="module")
def one_thread():
    # tiny networks: intra-op threads only add overhead (and spin-waits on a busy 2-core runner)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _randomize_bn(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial batch-norm statistics, so that eval-mode normalisation is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1.0 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


def _f64(net):
    """A float64 copy (``Module.double()`` would convert the shared fixture in place)."""
    return copy.deepcopy(net).double()


def _poses(n: int, seed: int) -> torch.Tensor:
    return sample_body_poses(n, generator=torch.Generator().manual_seed(seed))[1]


# ---------------------------------------------------------------- official layouts


def test_v1_matches_human_body_prior(tmp_path):
    hbp = pytest.importorskip("human_body_prior.train.vposer_smpl")
    torch.manual_seed(0)
    theirs = hbp.VPoser(48, 8, [1, 21, 3])
    _randomize_bn(theirs)
    theirs.eval()
    path = tmp_path / "TR00_E096.pt"
    torch.save(theirs.state_dict(), path)  # the official v1 file is a plain state dict
    ours = load_vposer(path)
    assert isinstance(ours, VPoserV1) and not ours.training
    assert (ours.version, ours.num_neurons, ours.latent_dim) == (1, 48, 8)

    z = torch.randn(6, 8)
    with torch.no_grad():
        R_theirs = theirs.decode(z)                       # (B, 1, 21, 9)
        x = _poses(6, 3)[:, :63]
        q = theirs.encode(x.reshape(6, 1, 21, 3))
    assert R_theirs.shape == (6, 1, 21, 9)
    R_ours = ours.decode(z)
    torch.testing.assert_close(R_ours, R_theirs.reshape(6, 21, 3, 3), rtol=1e-5, atol=1e-6)
    mu, scale = ours.encode(x)
    torch.testing.assert_close(mu, q.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scale, q.scale, rtol=1e-5, atol=1e-6)
    # axis-angle: against roma's conversion of their matrices (their matrot2aa breaks on recent torch)
    aa = roma.rotmat_to_rotvec(R_theirs.reshape(6, 21, 3, 3)).reshape(6, 63)
    torch.testing.assert_close(ours.decode_axis_angle(z), aa, rtol=1e-4, atol=1e-5)


def _v2_forward_reference(sd: dict, x: torch.Tensor, z: torch.Tensor):
    """VPoser v2 from the raw tensors of an official-layout state dict, with plain torch ops."""
    p = {k[len(V2_PREFIX):]: v for k, v in sd.items() if k.startswith(V2_PREFIX)}

    def bn(h, i):
        return ((h - p[f"encoder_net.{i}.running_mean"]) / torch.sqrt(p[f"encoder_net.{i}.running_var"] + 1e-5)
                * p[f"encoder_net.{i}.weight"] + p[f"encoder_net.{i}.bias"])

    def lin(h, name):
        return h @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def lrelu(h):
        return torch.where(h > 0, h, 0.01 * h)

    h = lrelu(lin(bn(x, 1), "encoder_net.2"))
    h = lin(lin(bn(h, 4), "encoder_net.6"), "encoder_net.7")
    mu = lin(h, "encoder_net.8.mu")
    scale = torch.log1p(torch.exp(lin(h, "encoder_net.8.logvar")))
    g = lrelu(lin(lrelu(lin(z, "decoder_net.0")), "decoder_net.3"))
    six = lin(g, "decoder_net.5").reshape(-1, 21, 3, 2)
    a, b = six[..., 0], six[..., 1]
    b1 = a / a.norm(dim=-1, keepdim=True)
    b2 = b - (b1 * b).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True)
    b3 = torch.cross(b1, b2, dim=-1)
    return mu, scale, torch.stack([b1, b2, b3], dim=-1)


def _official_v2_ckpt(path, num_neurons=40, latent_dim=6, seed=0, **extra):
    torch.manual_seed(seed)
    net = VPoserV2(num_neurons, latent_dim)
    _randomize_bn(net, seed)
    sd = {V2_PREFIX + k: v for k, v in net.state_dict().items()}
    sd["bm_train.v_template"] = torch.zeros(10, 3)  # another submodule of the Lightning module
    ckpt = {"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "1.2.3", "state_dict": sd,
            "hyper_parameters": {"model_params": {"num_neurons": num_neurons, "latentD": latent_dim}},
            **extra}
    torch.save(ckpt, path)
    return sd


def test_v2_official_layout_loads_and_matches_an_independent_forward(tmp_path):
    sd = _official_v2_ckpt(tmp_path / "V02_05_epoch=07.ckpt")
    net = load_vposer(tmp_path / "V02_05_epoch=07.ckpt")
    assert isinstance(net, VPoserV2) and not net.training
    assert (net.version, net.num_neurons, net.latent_dim) == (2, 40, 6)
    assert net.metadata == {}
    x, z = _poses(5, 1)[:, :63], torch.randn(5, 6)
    mu_ref, scale_ref, R_ref = _v2_forward_reference(sd, x, z)
    mu, scale = net.encode(x)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.decode(z), R_ref, rtol=1e-5, atol=1e-5)


def test_our_files_use_the_official_v2_layout_and_round_trip(tmp_path):
    torch.manual_seed(2)
    net = VPoserV2(24, 5)
    _randomize_bn(net, 2)
    out = save_vposer(tmp_path / "sub" / "open_vposer.pt", net,
                      {"data": {"file": "poses.npz"}, "seed": 3, "metrics": {"angle_deg": 9.5}, "cmd": ("a", "b")})
    raw = torch.load(out, map_location="cpu", weights_only=True)  # nothing but plain types
    assert set(raw) == {"state_dict", "fitkit"}
    assert all(k.startswith(V2_PREFIX) for k in raw["state_dict"])
    assert "vp_model.encoder_net.8.mu.weight" in raw["state_dict"]
    back = load_vposer(out)
    assert back.metadata["seed"] == 3 and back.metadata["cmd"] == ["a", "b"]
    assert back.metadata["num_neurons"] == 24 and back.metadata["version"] == 2
    z = torch.randn(3, 5)
    torch.testing.assert_close(back.decode(z), net.eval().decode(z), rtol=0, atol=0)
    with pytest.raises(ParameterError, match="extra.bad"):
        save_vposer(tmp_path / "x.pt", net, {"bad": object()})


def test_decoded_matrices_are_rotations_and_axis_angle_round_trips():
    torch.manual_seed(5)
    net = VPoserV2(32, 8).eval().double()
    z = 2.0 * torch.randn(64, 8, dtype=torch.float64)
    R = net.decode(z)
    assert R.shape == (64, 21, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(64, 21, dtype=torch.float64), rtol=0, atol=1e-12)
    aa = net.decode_axis_angle(z)
    assert aa.shape == (64, 63)
    torch.testing.assert_close(roma.rotvec_to_rotmat(aa.reshape(64, 21, 3)), R, rtol=0, atol=1e-10)
    s = net.sample(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, net.sample(4, torch.Generator().manual_seed(0)))
    assert s.shape == (4, 63)


# ---------------------------------------------------------------- safe loading and bad files


_UNTRUSTED = textwrap.dedent("""
    import collections
    from collections.abc import MutableMapping

    MARK = {mark!r}

    def side_effect(*args):
        open(MARK, "w").write("code from the checkpoint ran")
        return 0

    class DotLike(MutableMapping, collections.OrderedDict):   # pickles like dotmap.DotMap
        def __init__(self, *args, **kwargs):
            self._map = collections.OrderedDict(*args, **kwargs)
        def __getitem__(self, k): return self._map[k]
        def __setitem__(self, k, v): self._map[k] = v
        def __delitem__(self, k): del self._map[k]
        def __iter__(self): return iter(self._map)
        def __len__(self): return len(self._map)
        def items(self): return self._map.items()
        def __getstate__(self): return self.__dict__
        def __setstate__(self, state):
            side_effect()
            self.__dict__.update(state)

    class Plain:
        def __init__(self): self.lr = 1e-3
        def __setstate__(self, state): side_effect()

    class Reducer:
        def __reduce__(self): return (side_effect, ("boom",))
""")


@pytest.mark.parametrize("importable", [True, False])
def test_pickled_objects_of_untrusted_classes_load_inert(tmp_path, importable):
    """Lightning checkpoints may pickle hyper-parameters as e.g. a dotmap.DotMap: the weights
    still load; the objects come back as inert stand-ins; no code from the file ever runs."""
    mark = tmp_path / "EXECUTED"
    name = f"fitkit_untrusted_{importable:d}"
    moddir = tmp_path / "mods"
    moddir.mkdir()
    (moddir / f"{name}.py").write_text(_UNTRUSTED.format(mark=str(mark)))
    sys.path.insert(0, str(moddir))
    try:
        mod = __import__(name)
        hp = mod.DotLike(lr=1e-3, model_params=mod.DotLike(num_neurons=40))
        path = tmp_path / "V02_05.ckpt"
        sd = _official_v2_ckpt(path, hyper_parameters=hp, plain=mod.Plain(), reducer=mod.Reducer(),
                               mixed=[mod.DotLike(a=1), mod.Plain()])
        assert not mark.exists()
        if not importable:
            del sys.modules[name]
            sys.path.remove(str(moddir))
            (moddir / f"{name}.py").unlink()
        with pytest.raises(pickle.UnpicklingError):  # what torch alone does with this file
            torch.load(path, map_location="cpu", weights_only=True)
        net = load_vposer(path)
        loaded = read_checkpoint(path)
    finally:
        sys.modules.pop(name, None)
        if str(moddir) in sys.path:
            sys.path.remove(str(moddir))
    assert not mark.exists(), "code from the checkpoint ran"
    assert name not in sys.modules  # the class was never imported
    assert (net.num_neurons, net.latent_dim) == (40, 6)
    torch.testing.assert_close(net.state_dict()["encoder_net.2.weight"], sd["vp_model.encoder_net.2.weight"])
    assert loaded["epoch"] == 7
    assert dict(loaded["hyper_parameters"])["lr"] == 1e-3        # a plain OrderedDict of its items
    # the other objects are inert stand-ins (an _InertObject, or an empty OrderedDict when a dict
    # subclass in the same file made the loader use mapping stand-ins throughout)
    assert type(loaded["plain"]).__module__ in ("fitkit.priors.vposer", "collections")
    assert type(loaded["reducer"]).__module__ in ("fitkit.priors.vposer", "collections")


def test_a_blocked_global_is_refused_not_called(tmp_path):
    """A global from a module torch blocks (here ``os.system``) stays refused: ModelFileError."""
    path = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "EXECUTED"),))

    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(ModelFileError, match="evil.pt"):
        load_vposer(path)
    assert not (tmp_path / "EXECUTED").exists()


def test_bad_files(tmp_path):
    sd = _official_v2_ckpt(tmp_path / "full.ckpt")
    del sd["vp_model.encoder_net.8.mu.weight"], sd["vp_model.decoder_net.5.bias"]
    torch.save({"state_dict": sd}, tmp_path / "partial.ckpt")
    with pytest.raises(ModelFileError, match=r"partial.ckpt.*missing.*'vp_model.encoder_net.8.mu.weight', "
                                             r"'vp_model.decoder_net.5.bias'"):
        load_vposer(tmp_path / "partial.ckpt")

    v1 = VPoserV1(16, 4).state_dict()
    del v1["bodyprior_enc_logvar.bias"]
    torch.save(v1, tmp_path / "v1.pt")
    with pytest.raises(ModelFileError, match=r"v1.pt.*v1 state dict is missing.*'bodyprior_enc_logvar.bias'"):
        load_vposer(tmp_path / "v1.pt")

    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match=r"other.pt: not a VPoser state dict"):
        load_vposer(tmp_path / "other.pt")

    bad_shape = VPoserV2(16, 4).state_dict()
    bad_shape["decoder_net.5.weight"] = torch.zeros(60, 16)
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(ModelFileError, match=r"shape.pt: 'decoder_net.5.weight' has shape \(60, 16\)"):
        load_vposer(tmp_path / "shape.pt")

    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ModelFileError, match=r"garbage.pt: not a readable PyTorch checkpoint"):
        load_vposer(tmp_path / "garbage.pt")
    good = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelFileError, match=r"truncated.ckpt: not a readable PyTorch checkpoint"):
        load_vposer(tmp_path / "truncated.ckpt")

    with pytest.raises(PriorFileNotFoundError, match=r"nope.pt: VPoser weights not found"):
        load_vposer(tmp_path / "nope.pt")
    with pytest.raises(PriorFileNotFoundError):
        VPoserPrior(path=tmp_path / "nope.pt")


# ---------------------------------------------------------------- the term


@pytest.fixture(scope="module")
def trained(one_thread):
    """A small VPoser trained for a few seconds on synthetic poses (plausible enough to fit with)."""
    net, history = train_vposer(_poses(1500, 11), num_neurons=64, latent_dim=16, epochs=25, batch_size=100,
                                lr=3e-3, seed=0, log=None)
    return net


@pytest.fixture(scope="module")
def body():
    return load_body_model("open", num_betas=10, dtype=torch.float64)


def _ctx(model, n=3, seed=0):
    ex = make_keypoint_example(model, n, seed=seed)
    cam = build_fit_camera({"mode": "full"}, ex.observations, dtype=torch.float64)
    init, _ = prepare_init(ex.init, model, n, device="cpu", dtype=torch.float64)
    return SetupContext(ex.observations, model, cam, init, torch.device("cpu"), torch.float64), ex


def test_term_setup_checks_the_joint_count(trained):
    term = get_term_class("vposer")(model=trained, mode="encoder")
    ctx = SetupContext(None, types.SimpleNamespace(body_pose_dim=30), None, {"body_pose": torch.zeros(2, 30)},
                       torch.device("cpu"), torch.float32)
    with pytest.raises(ParameterError, match=r"body_pose has 30 numbers.*at least 63"):
        term.setup(ctx)
    ctx.model = types.SimpleNamespace(body_pose_dim=64)
    with pytest.raises(ParameterError, match="multiple of 3"):
        term.setup(ctx)
    with pytest.raises(ParameterError, match="mode"):
        VPoserPrior(model=trained, mode="flow")


def test_latent_keeps_the_hand_joints_and_encodes_to_the_mean(trained, body):
    ctx, ex = _ctx(body)
    term = VPoserPrior(model=trained, mode="latent")
    term.setup(ctx)
    lat = term.latent()
    assert lat is term.latent() and lat.dim == 16  # the engine relies on the identity
    idx = torch.tensor([2, 0])
    pose = ctx.init["body_pose"][idx]
    z = lat.encode(pose, idx)
    # the term evaluates the network on fixed row blocks (fitkit.priors.row_blocks): same math, other rounding
    torch.testing.assert_close(z, _f64(trained).encode_mean(pose[:, :63]), rtol=0, atol=1e-12)
    out = lat.decode(z, idx)
    assert out.shape == (2, 69) and out.dtype == torch.float64
    assert torch.equal(out[:, 63:], ctx.init["body_pose"][idx, 63:])
    # residuals: the code while one is optimized, else the encoder mean of the pose
    from fitkit.terms.base import Batch
    b = Batch(index=idx, params={"body_pose": out, LATENT_KEY: z}, init={}, K=None, pixel_scale=None)
    assert torch.equal(term.residuals(b), z)
    del b.params[LATENT_KEY]
    torch.testing.assert_close(term.residuals(b), lat.encode(out, idx))
    assert VPoserPrior(model=trained, mode="encoder").latent() is None


def test_encoder_mode_jacobian_of_the_lm_path_matches_autograd(trained, body):
    ctx, _ = _ctx(body, n=4, seed=2)
    term = VPoserPrior(model=trained, mode="encoder")
    term.setup(ctx)
    kp = get_term_class("keypoints2d")(sigma=100.0, scale_by_size=True)
    kp.setup(ctx)
    terms = [WeightedTerm("vposer", term, 0.3), WeightedTerm("keypoints", kp, 1.0)]
    widths = {"global_orient": 3, "body_pose": 69, "betas": 10, "transl": 3}
    layout = ParamLayout(["global_orient", "body_pose", "transl"], widths)
    obj = Objective(body, terms, layout, ctx.init, ctx.init, ctx.camera)
    x = layout.encode(ctx.init) + 0.05 * torch.randn(4, layout.dim, generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.float64)
    idx = torch.tensor([3, 1])
    r, J = obj.residuals_and_jacobian(x[idx], idx)
    torch.testing.assert_close(r, obj.residuals(x[idx], idx), rtol=1e-12, atol=1e-12)
    full = torch.autograd.functional.jacobian(lambda xx: obj.residuals(xx, idx), x[idx])
    ref = torch.stack([full[b, :, b] for b in range(2)])
    torch.testing.assert_close(J, ref, rtol=1e-9, atol=1e-9)
    # the prior's block against central finite differences
    f = lambda xx: term.residuals(types.SimpleNamespace(params=obj.params(xx, idx)))  # noqa: E731
    col = layout.slices["body_pose"].start + 7
    e = torch.zeros_like(x[idx])
    e[:, col] = 1e-6
    fd = (f(x[idx] + e) - f(x[idx] - e)) / 2e-6
    torch.testing.assert_close(J[:, :16, col] / math.sqrt(0.3), fd, rtol=1e-6, atol=1e-7)


def _recipe(solver: dict, mode: str, weight: float = 1e-3) -> dict:
    return {
        "name": "vposer-test", "camera": {"mode": "full"},
        "terms": {
            "torso": {"type": "keypoints2d", "sigma": None, "confidence_power": 0, "scale_by_size": True,
                      "only": ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]},
            "keypoints": {"type": "keypoints2d", "sigma": 100, "confidence_power": 1, "scale_by_size": True},
            "pose": {"type": "vposer", "mode": mode, "weight": weight},
        },
        "stages": [
            {"name": "camera", "free": ["global_orient", "transl"], "terms": ["torso"],
             "solver": {"type": "lm", "iterations": 10}},
            {"name": "body", "free": ["global_orient", "body_pose", "transl"], "terms": ["keypoints", "pose"],
             "solver": solver},
        ],
    }


def _kp_error(model, params, ex, K):
    out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                keypoints=ex.observations.keypoint_format)
    return err2d(project(out.keypoints, K), ex.observations.keypoints.to(K))


@pytest.fixture
def registered_model(trained, monkeypatch):
    """Recipes name terms by type and kwargs: pass our in-memory network as the default model."""
    original = VPoserPrior.__init__

    def init(self, path=None, mode="latent", model=None):
        original(self, path=path, mode=mode, model=model if model is not None else trained)

    monkeypatch.setattr(VPoserPrior, "__init__", init)
    return trained


def test_engine_latent_mode_with_adam_lowers_prior_and_keypoint_error(registered_model, body):
    ex = make_keypoint_example(body, 4, noise_px=0.0, dropout=0.0, pose_noise=0.3, seed=0)
    recipe = recipe_from_dict(_recipe({"type": "adam", "lr": 0.02, "iterations": 150, "patience": 30}, "latent",
                                      weight=30.0))
    res = fit(body, ex.observations, recipe, ex.init)
    z = res.info[LATENT_KEY]
    assert z.shape == (4, 16)
    net = _f64(registered_model)
    with torch.no_grad():
        z0 = net.encode_mean(ex.init["body_pose"][:, :63].double())  # where the stage started
    assert ((z * z).sum(1) < (z0 * z0).sum(1)).all()  # the noisy init's code was less plausible
    K = ex.observations.intrinsics.double()
    before, after = _kp_error(body, ex.init, ex, K), _kp_error(body, res.params, ex, K)
    assert float(after.mean()) < 0.5 * float(before.mean()), (before, after)
    # the result's pose is the decoded code; SMPL's hand joints kept their initial values
    torch.testing.assert_close(res.params["body_pose"][:, :63], net.decode_axis_angle(z))
    assert torch.equal(res.params["body_pose"][:, 63:], ex.init["body_pose"][:, 63:].double())
    torch.testing.assert_close(res.energies["pose"], 30.0 * (z * z).sum(1))


def test_engine_adam_latent_stage_then_lm_encoder_stage(registered_model, body):
    """One recipe, two pose terms: SMPLify-X's latent stage (Adam), then LM with the encoder penalty."""
    ex = make_keypoint_example(body, 3, noise_px=0.0, dropout=0.0, pose_noise=0.2, seed=1)
    data = _recipe({"type": "adam", "lr": 0.02, "iterations": 60, "patience": 30}, "latent", weight=30.0)
    data["terms"]["pose_enc"] = {"type": "vposer", "mode": "encoder", "weight": 30.0}
    data["stages"].append({"name": "refine", "free": ["global_orient", "body_pose", "transl"],
                           "terms": ["keypoints", "pose_enc"], "solver": {"type": "lm", "iterations": 10}})
    res = fit(body, ex.observations, recipe_from_dict(data), ex.init)
    assert not res.nan.any() and res.iterations[:, 1:].min() > 0
    K = ex.observations.intrinsics.double()
    assert float(_kp_error(body, res.params, ex, K).mean()) < 0.5 * float(_kp_error(body, ex.init, ex, K).mean())
    mu = _f64(registered_model).encode_mean(res.params["body_pose"][:, :63])
    torch.testing.assert_close(res.energies["pose_enc"], 30.0 * (mu * mu).sum(1))
    assert LATENT_KEY in res.info  # the code of the latent stage


def test_lm_refuses_latent_mode(registered_model, body):
    ex = make_keypoint_example(body, 2, seed=1)
    with pytest.raises(RecipeError, match="latent"):
        fit(body, ex.observations, recipe_from_dict(_recipe({"type": "lm", "iterations": 2}, "latent")), ex.init)
    # the same term in a stage that keeps body_pose fixed is an ordinary prior: LM runs it
    data = _recipe({"type": "lm", "iterations": 3}, "latent")
    data["stages"][1]["free"] = ["global_orient", "transl"]
    res = fit(body, ex.observations, recipe_from_dict(data), ex.init)
    mu = _f64(registered_model).encode_mean(ex.init["body_pose"][:, :63].double())
    torch.testing.assert_close(res.energies["pose"], 1e-3 * (mu * mu).sum(1))


# ---------------------------------------------------------------- training


def test_training_lowers_the_reconstruction_error_and_is_deterministic(one_thread):
    poses, held_out = _poses(300, 21).numpy(), _poses(100, 22)
    kw = dict(num_neurons=32, latent_dim=8, epochs=6, batch_size=50, lr=3e-3, seed=4, log=None)
    torch.manual_seed(4)
    untrained = evaluate_vposer(VPoserV2(32, 8), held_out)
    net, history = train_vposer(poses, val_poses=held_out, val_every=3, **kw)
    assert isinstance(net, VPoserV2) and not net.training
    trained_m = evaluate_vposer(net, held_out)
    assert trained_m["angle_deg"] < 0.5 * untrained["angle_deg"], (trained_m, untrained)
    assert trained_m["nelbo_nats"] < untrained["nelbo_nats"]
    assert history["loss"][-1] < history["loss"][0]
    assert [e for e, _ in history["val"]] == [3, 6]
    again, _ = train_vposer(poses, **kw)
    for k, v in net.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    with pytest.raises(ParameterError, match="poses"):
        train_vposer(poses[:, :30])
