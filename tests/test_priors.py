"""fitkit.priors: GMM pose prior, bending, shape, camera depth and init L2 terms."""
import math
import os
import pickle

import numpy as np
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import multivariate_normal

from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.errors import ModelFileError, ParameterError
from fitkit.priors.bending import BendingPrior
from fitkit.priors.camera_depth import CameraDepthPrior
from fitkit.priors.gmm import (GaussianMixture, GMMPosePrior, PriorFileNotFoundError, fit_gmm, fit_gmm_sklearn,
                               mixture_log_likelihood, save_gmm_pickle)
from fitkit.priors.init_l2 import InitL2Prior
from fitkit.priors.shape import ShapeL2Prior
from fitkit.terms.base import Batch, Needs, get_term_class
from tests.test_safe_pickle import CallsOnLoad, FakeCh, fake_chumpy

D = 69


def random_gmm(m=3, d=D, seed=0):
    """Well-conditioned random mixture: eigenvalues of every covariance in [0.02, 0.2]."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 0.3, size=(m, d))
    covars = []
    for _ in range(m):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        covars.append((q * rng.uniform(0.02, 0.2, size=d)) @ q.T)
    covars = np.stack(covars)
    covars = 0.5 * (covars + covars.transpose(0, 2, 1))
    weights = rng.dirichlet(np.full(m, 3.0))
    return {"means": means, "covars": covars, "weights": weights}


def oracle_component_energies(x, gmm):
    """(N, M) -log(w_m) - log N(x; mu_m, Sigma_m) with scipy."""
    return np.stack([-math.log(w) - multivariate_normal(mu, cov).logpdf(x)
                     for mu, cov, w in zip(gmm["means"], gmm["covars"], gmm["weights"])],
                    axis=-1).reshape(len(x), -1)


def poses_near_components(gmm, n_per=4, seed=1):
    """Samples drawn from each component, so every component wins for some of them."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.multivariate_normal(mu, 0.3 * cov, size=n_per)
                           for mu, cov in zip(gmm["means"], gmm["covars"])])


def make_batch(params, init=None, index=None):
    b = next(iter(params.values())).shape[0]
    dtype = next(iter(params.values())).dtype
    return Batch(index=torch.arange(b) if index is None else index, params=params,
                 init=init if init is not None else {k: v.clone() for k, v in params.items()},
                 K=torch.eye(3, dtype=dtype).expand(b, 3, 3), pixel_scale=torch.ones(b, dtype=dtype))


def params_from(body_pose, betas=None, transl=None, global_orient=None):
    b, dtype = body_pose.shape[0], body_pose.dtype
    return {"global_orient": torch.zeros(b, 3, dtype=dtype) if global_orient is None else global_orient,
            "body_pose": body_pose,
            "betas": torch.zeros(b, 10, dtype=dtype) if betas is None else betas,
            "transl": torch.zeros(b, 3, dtype=dtype) if transl is None else transl}


# ----------------------------------------------------------------------------- GMM energy

def test_gmm_energy_matches_scipy_oracle():
    gmm = random_gmm()
    x = poses_near_components(gmm)
    mixture = GaussianMixture.from_dict(gmm)
    energy = mixture.energy(torch.from_numpy(x)).numpy()

    per_component = oracle_component_energies(x, gmm)
    # Exact normalisation: E = min_m [-log w_m - log N_m(x)] (no constant).
    np.testing.assert_allclose(energy, per_component.min(1), rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(mixture.component_energies(torch.from_numpy(x)).numpy(),
                               per_component, rtol=1e-10, atol=1e-8)
    # Every component is the winner somewhere, so the min really is exercised.
    assert set(per_component.argmin(1)) == {0, 1, 2}

    # SPIN's normalisation (sqrt-dets divided by their minimum), written out
    # independently: it differs from E by the constant -0.5 min_m log det Sigma_m.
    sqrdets = np.sqrt(np.linalg.det(gmm["covars"]))
    nll_weights = gmm["weights"] / ((2 * np.pi) ** (D / 2) * (sqrdets / sqrdets.min()))
    diffs = x[:, None, :] - gmm["means"][None]
    quad = np.einsum("nmi,mij,nmj->nm", diffs, np.linalg.inv(gmm["covars"]), diffs)
    spin = (0.5 * quad - np.log(nll_weights)).min(1)
    np.testing.assert_allclose(energy - spin, np.log(sqrdets.min()), rtol=1e-9)


def test_gmm_residual_form_and_chosen_component():
    gmm = random_gmm()
    x = torch.from_numpy(poses_near_components(gmm))
    mixture = GaussianMixture.from_dict(gmm)
    r = mixture.residuals(x)
    assert r.shape == (x.shape[0], D + 1)

    per_component = oracle_component_energies(x.numpy(), gmm)
    # Independent offset: c_m = -log w_m - log N_m(mu_m).
    offset = min(-math.log(w) - multivariate_normal(mu, cov).logpdf(mu)
                 for mu, cov, w in zip(gmm["means"], gmm["covars"], gmm["weights"]))
    assert float(mixture.residual_offset) == pytest.approx(offset, rel=1e-12)
    np.testing.assert_allclose(r.square().sum(-1).numpy(), per_component.min(1) - offset,
                               rtol=1e-10, atol=1e-8)

    best = per_component.argmin(1)
    np.testing.assert_array_equal(mixture.best_component(x).numpy(), best)
    # The quadratic part is the chosen component's half Mahalanobis distance.
    prec = np.linalg.inv(gmm["covars"][best])
    diff = x.numpy() - gmm["means"][best]
    np.testing.assert_allclose(r[:, :D].square().sum(-1).numpy(),
                               0.5 * np.einsum("ni,nij,nj->n", diff, prec, diff), rtol=1e-9)
    # The last entry is sqrt(c_m* - min c), zero for the component with the largest w~.
    c = -np.log(gmm["weights"]) - np.array(
        [multivariate_normal(mu, cov).logpdf(mu) for mu, cov in zip(gmm["means"], gmm["covars"])])
    np.testing.assert_allclose(r[:, D].numpy(), np.sqrt(c[best] - c.min()), rtol=1e-9, atol=1e-9)


def test_gmm_residual_energy_gradient_matches_finite_differences():
    gmm = random_gmm()
    mixture = GaussianMixture.from_dict(gmm)
    x = poses_near_components(gmm, n_per=1, seed=3)
    per_component = oracle_component_energies(x, gmm)
    ordered = np.sort(per_component, axis=1)
    assert np.all(ordered[:, 1] - ordered[:, 0] > 1e-3)  # no tie within the FD step

    xt = torch.from_numpy(x).requires_grad_(True)
    mixture.residuals(xt).square().sum().backward()
    grad = xt.grad.numpy()

    eps = 1e-6
    for n in range(len(x)):
        fd = np.empty(D)
        for i in range(D):
            step = np.zeros(D)
            step[i] = eps
            plus = oracle_component_energies(x[n:n + 1] + step, gmm).min()
            minus = oracle_component_energies(x[n:n + 1] - step, gmm).min()
            fd[i] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(grad[n], fd, rtol=1e-5, atol=1e-6)
        m = per_component[n].argmin()
        analytic = np.linalg.solve(gmm["covars"][m], x[n] - gmm["means"][m])
        np.testing.assert_allclose(grad[n], analytic, rtol=1e-8, atol=1e-10)


def test_gmm_term_float32_and_to():
    gmm = random_gmm()
    x = torch.from_numpy(poses_near_components(gmm))
    term = GMMPosePrior(gmm=gmm)
    r64 = term.residuals(make_batch(params_from(x)))
    r32 = term.residuals(make_batch(params_from(x.float())))
    assert r32.dtype == torch.float32 and r64.dtype == torch.float64
    torch.testing.assert_close(r32.double(), r64, rtol=1e-4, atol=1e-4)
    moved = GaussianMixture.from_dict(gmm).to(dtype=torch.float32)
    assert moved.means.dtype == moved.prec_chol.dtype == torch.float32
    torch.testing.assert_close(moved.energy(x.float()).double(), term.exact_energy(x),
                               rtol=1e-5, atol=1e-4)


def test_gmm_rejects_bad_mixtures():
    gmm = random_gmm(d=5)
    term = GMMPosePrior(gmm=gmm)  # a 5-D mixture is a valid mixture, but not for a 69-D body_pose
    ctx = SimpleNamespace(model=SimpleNamespace(body_pose_dim=69), device="cpu", dtype=torch.float64)
    with pytest.raises(ParameterError, match=r"D = 5 numbers but the body model's body_pose has 69"):
        term.setup(ctx)
    bad = dict(gmm, covars=-gmm["covars"])
    with pytest.raises(ParameterError, match=r"'covars'\[0\] is not positive definite"):
        GaussianMixture.from_dict(bad)
    with pytest.raises(ParameterError, match="'weights'"):
        GaussianMixture.from_dict(dict(gmm, weights=gmm["weights"][:2]))
    with pytest.raises(ParameterError, match="missing key 'means'"):
        GaussianMixture.from_dict({"covars": gmm["covars"], "weights": gmm["weights"]})


# ----------------------------------------------------------------------------- fit_gmm

@pytest.mark.parametrize("seed", [0, 1])
def test_fit_gmm_recovers_separated_mixture(seed):
    rng = np.random.default_rng(10 + seed)
    true_means = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 2.0]])
    true_weights = np.array([0.5, 0.3, 0.2])
    true_covs = np.stack([np.diag([0.2, 0.1, 0.3]), 0.15 * np.eye(3),
                          np.array([[0.3, 0.1, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 0.1]])])
    counts = rng.multinomial(6000, true_weights)
    samples = np.concatenate([rng.multivariate_normal(mu, cov, size=k)
                              for mu, cov, k in zip(true_means, true_covs, counts)])
    rng.shuffle(samples)

    fitted = fit_gmm(samples, num_components=3, iterations=200, seed=seed)
    assert set(fitted) == {"means", "covars", "weights"}
    assert fitted["means"].shape == (3, 3) and fitted["covars"].shape == (3, 3, 3)
    assert fitted["weights"].sum() == pytest.approx(1.0)
    # Match each true component to the nearest fitted mean (must be one-to-one).
    match = np.linalg.norm(true_means[:, None] - fitted["means"][None], axis=-1).argmin(1)
    assert sorted(match) == [0, 1, 2]
    np.testing.assert_allclose(fitted["means"][match], true_means, atol=0.05)
    np.testing.assert_allclose(fitted["weights"][match], true_weights, atol=0.02)
    np.testing.assert_allclose(fitted["covars"][match], true_covs, atol=0.04)
    # Deterministic given the seed.
    again = fit_gmm(samples, num_components=3, iterations=200, seed=seed)
    np.testing.assert_array_equal(again["means"], fitted["means"])


def test_fit_gmm_69d_smoke_likelihood_increases():
    gmm = random_gmm(seed=4)
    gmm["means"] = 0.2 * gmm["means"]  # overlapping components: EM has work to do
    rng = np.random.default_rng(5)
    counts = rng.multinomial(3000, gmm["weights"])
    samples = np.concatenate([rng.multivariate_normal(mu, cov, size=k)
                              for mu, cov, k in zip(gmm["means"], gmm["covars"], counts)])
    lls = [mixture_log_likelihood(samples, fit_gmm(samples, num_components=3, iterations=it,
                                                   seed=0, chunk=700))
           for it in (0, 1, 2, 5, 30)]
    assert np.all(np.isfinite(lls))
    assert np.all(np.diff(lls) > 0), lls          # EM never decreases the likelihood
    assert lls[-1] > lls[0] + 1.0
    # The fit explains its training data at least about as well as the generator.
    assert lls[-1] > mixture_log_likelihood(samples, gmm) - 0.2
    fitted = fit_gmm(samples, num_components=3, iterations=30, seed=0)
    assert np.all(np.linalg.eigvalsh(fitted["covars"]) > 0)
    GMMPosePrior(gmm=fitted)  # usable as a prior


def test_fit_gmm_argument_errors():
    with pytest.raises(ParameterError, match="num_components"):
        fit_gmm(np.zeros((3, 2)), num_components=4)
    with pytest.raises(ParameterError, match=r"\(N, D\)"):
        fit_gmm(np.zeros(5))


# ----------------------------------------------------------------------------- GMM files

def test_load_saved_pickle_through_path_env_and_default(tmp_path, monkeypatch):
    gmm = random_gmm()
    written = save_gmm_pickle(tmp_path / "gmm_08.pkl", gmm)
    with open(written, "rb") as f:  # official layout: a plain dict of numpy arrays
        raw = pickle.load(f)
    assert set(raw) == {"means", "covars", "weights"}
    assert all(isinstance(v, np.ndarray) for v in raw.values())

    x = torch.from_numpy(poses_near_components(gmm))
    expected = oracle_component_energies(x.numpy(), gmm).min(1)
    monkeypatch.setenv("FITKIT_PRIORS", str(tmp_path))
    for term in (GMMPosePrior(path=str(written)), GMMPosePrior(path="${FITKIT_PRIORS}/gmm_08.pkl"),
                 GMMPosePrior(), get_term_class("gmm")()):
        np.testing.assert_allclose(term.exact_energy(x).numpy(), expected, rtol=1e-10)
        assert term.path == written

    monkeypatch.setenv("HOME", str(tmp_path))
    np.testing.assert_allclose(GMMPosePrior(path="~/gmm_08.pkl").exact_energy(x).numpy(), expected,
                               rtol=1e-10)


def test_load_official_style_chumpy_pickle(tmp_path):
    """Python-2 style file: chumpy values, protocol 2, read without chumpy."""
    gmm = random_gmm()
    path = tmp_path / "gmm_08.pkl"
    with fake_chumpy():
        path.write_bytes(pickle.dumps({"means": FakeCh(gmm["means"]),
                                       "covars": FakeCh(gmm["covars"]),
                                       "weights": FakeCh(gmm["weights"])}, protocol=2))
    term = GMMPosePrior(path=path)
    x = torch.from_numpy(poses_near_components(gmm))
    np.testing.assert_allclose(term.exact_energy(x).numpy(),
                               oracle_component_energies(x.numpy(), gmm).min(1), rtol=1e-10)


def test_missing_gmm_file_message(tmp_path, monkeypatch):
    path = tmp_path / "nowhere" / "gmm_08.pkl"
    with pytest.raises(PriorFileNotFoundError) as err:
        GMMPosePrior(path=str(path))
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, ModelFileError)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    for words in ("SMPLify", "licensed", "gmm_08.pkl", "download", "'path:'", "FITKIT_PRIORS"):
        assert words in message

    monkeypatch.delenv("FITKIT_PRIORS", raising=False)
    with pytest.raises(FileNotFoundError, match="unset") as err:
        GMMPosePrior()
    assert "${FITKIT_PRIORS}/gmm_08.pkl" in str(err.value)


@pytest.mark.parametrize("mutate, key", [
    (lambda g: {k: v for k, v in g.items() if k != "covars"}, "covars"),
    (lambda g: dict(g, weights=g["weights"][:2]), "weights"),
    (lambda g: dict(g, means=g["means"][0]), "means"),
    (lambda g: dict(g, covars=g["covars"][:, :5]), "covars"),
    (lambda g: dict(g, means=np.array(["a", "b"])), "means"),
])
def test_bad_gmm_layout_names_file_and_key(tmp_path, mutate, key):
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps(mutate(random_gmm()), protocol=2))
    with pytest.raises(ModelFileError) as err:
        GMMPosePrior(path=path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)
    assert "\n" not in str(err.value)


def test_gmm_file_with_indefinite_covariance(tmp_path):
    gmm = random_gmm()
    gmm["covars"][1] = -gmm["covars"][1]
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps(gmm, protocol=2))
    with pytest.raises(ModelFileError, match=r"'covars'\[1\] is not positive definite") as err:
        GMMPosePrior(path=path)
    assert str(path) in str(err.value)


def test_gmm_pickle_that_is_not_a_dict(tmp_path):
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps([np.zeros(3)], protocol=2))
    with pytest.raises(ModelFileError, match="expected a pickled dict") as err:
        GMMPosePrior(path=path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_gmm_pickle_is_refused_and_not_run(tmp_path, protocol):
    marker = tmp_path / "marker"
    gmm = random_gmm()
    gmm["weights"] = CallsOnLoad(os.system, f"touch '{marker}'")
    path = tmp_path / "gmm_08.pkl"
    path.write_bytes(pickle.dumps(gmm, protocol=protocol))
    with pytest.raises(ModelFileError, match="refused to load global") as err:
        GMMPosePrior(path=path)
    assert str(path) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------- bending

def test_bending_indices_signs_and_joint_names():
    assert [SMPL_JOINT_NAMES[j] for j in (18, 19, 4, 5)] == [
        "left_elbow", "right_elbow", "left_knee", "right_knee"]
    assert BendingPrior.INDICES == (52, 55, 9, 12)
    torch.manual_seed(0)
    body_pose = torch.randn(5, 69, dtype=torch.float64)
    r = BendingPrior().residuals(make_batch(params_from(body_pose)))
    # Oracle: SPIN's angle prior on the 72-D pose (global orientation first).
    full = torch.cat([torch.zeros(5, 3, dtype=torch.float64), body_pose], dim=1)
    expected = torch.exp(full[:, [55, 58, 12, 15]] * torch.tensor([1.0, -1.0, -1.0, -1.0],
                                                                   dtype=torch.float64))
    torch.testing.assert_close(r, expected, rtol=0, atol=0)


@pytest.mark.parametrize("slot, joint, child, forward", [
    (0, "left_elbow", "left_wrist", True),     # forearm swings forward (+z)
    (1, "right_elbow", "right_wrist", True),
    (2, "left_knee", "left_ankle", False),     # shank swings backward (-z)
    (3, "right_knee", "right_ankle", False),
])
def test_bending_natural_direction_is_cheap(slot, joint, child, forward):
    """Geometry oracle: pose the open body (SMPL axes, y up, facing +z)."""
    from fitkit.body import load_body_model

    model = load_body_model("open")
    j, c = SMPL_JOINT_NAMES.index(joint), SMPL_JOINT_NAMES.index(child)
    axis = BendingPrior.INDICES[slot] - 3 * (j - 1)
    assert axis in (0, 1)
    angle = 0.8
    body_pose = torch.zeros(2, 69)
    for row, sign in enumerate((1.0, -1.0)):
        body_pose[row, 3 * (j - 1) + axis] = sign * angle
    zeros = torch.zeros(2, 3)
    joints = model(zeros, body_pose, torch.zeros(2, model.num_betas), zeros).joints
    rest = model(zeros, torch.zeros(2, 69), torch.zeros(2, model.num_betas), zeros).joints
    moved_z = joints[:, c, 2] - rest[:, c, 2]
    r = BendingPrior().residuals(make_batch(params_from(body_pose)))[:, slot]
    natural = moved_z > 0.02 if forward else moved_z < -0.02
    # Exactly one of the two opposite bends is anatomical, and it has r < 1.
    assert natural.tolist().count(True) == 1
    assert bool((r[natural] < 1).all()) and bool((r[~natural] > 1).all())
    # The other three residuals do not see this joint.
    others = [k for k in range(4) if k != slot]
    r_all = BendingPrior().residuals(make_batch(params_from(body_pose)))
    torch.testing.assert_close(r_all[:, others], torch.ones(2, 3))


# ----------------------------------------------------------------------------- simple priors

def full_and_rows():
    """N = 5 samples of current and initial parameters, batch rows (3, 0, 3)."""
    g = torch.Generator().manual_seed(7)
    n = 5
    current = {"global_orient": torch.randn(n, 3, generator=g),
               "body_pose": torch.randn(n, 69, generator=g),
               "betas": torch.randn(n, 10, generator=g), "transl": torch.randn(n, 3, generator=g)}
    init = {k: torch.randn(v.shape, generator=g) for k, v in current.items()}
    index = torch.tensor([3, 0, 3])
    probe = make_batch({k: v[:3] for k, v in current.items()}, index=index)
    batch = Batch(index=index, params={k: probe.rows(v) for k, v in current.items()},
                  init={k: probe.rows(v) for k, v in init.items()}, K=probe.K,
                  pixel_scale=probe.pixel_scale)
    return current, init, batch


def test_shape_l2_values():
    current, _, batch = full_and_rows()
    r = ShapeL2Prior().residuals(batch)
    assert r.shape == (3, 10)
    torch.testing.assert_close(r, current["betas"][[3, 0, 3]], rtol=0, atol=0)


def test_camera_depth_values():
    current, init, batch = full_and_rows()
    r = CameraDepthPrior().residuals(batch)
    assert r.shape == (3, 1)
    expected = torch.tensor([[current["transl"][3, 2] - init["transl"][3, 2]],
                             [current["transl"][0, 2] - init["transl"][0, 2]],
                             [current["transl"][3, 2] - init["transl"][3, 2]]])
    torch.testing.assert_close(r, expected, rtol=0, atol=0)
    # A hand-made case: depth 5 m against an initial 4.5 m.
    b = make_batch(params_from(torch.zeros(1, 69), transl=torch.tensor([[0.1, 0.2, 5.0]])),
                   init=params_from(torch.zeros(1, 69), transl=torch.tensor([[9.0, 9.0, 4.5]])))
    assert CameraDepthPrior().residuals(b).tolist() == [[0.5]]


def test_init_l2_values_and_weights():
    current, init, batch = full_and_rows()
    term = InitL2Prior(params={"body_pose": 4.0, "transl": 0.25, "betas": 0.0})
    r = term.residuals(batch)
    assert r.shape == (3, 72)
    rows = [3, 0, 3]
    expected = torch.cat([2.0 * (current["body_pose"][rows] - init["body_pose"][rows]),
                          0.5 * (current["transl"][rows] - init["transl"][rows])], dim=1)
    torch.testing.assert_close(r, expected)
    energy = (4.0 * (current["body_pose"][rows] - init["body_pose"][rows]).square().sum(1)
              + 0.25 * (current["transl"][rows] - init["transl"][rows]).square().sum(1))
    torch.testing.assert_close(r.square().sum(1), energy)

    default = InitL2Prior()
    assert default.weights == {"body_pose": 1.0, "betas": 1.0}
    torch.testing.assert_close(default.residuals(batch), torch.cat(
        [current["body_pose"][rows] - init["body_pose"][rows],
         current["betas"][rows] - init["betas"][rows]], dim=1))
    # At the initialization every residual is zero.
    at_init = make_batch(params_from(init["body_pose"], betas=init["betas"]))
    assert float(default.residuals(at_init).abs().max()) == 0.0


@pytest.mark.parametrize("params, match", [
    ({"pose": 1.0}, "unknown parameter"),
    ({"body_pose": -1.0}, ">= 0"),
    ({"body_pose": float("nan")}, ">= 0"),
    ({"body_pose": "heavy"}, "must be a number"),
    ({"body_pose": 0.0, "betas": 0}, "every weight"),
    (["body_pose"], "must map"),
])
def test_init_l2_argument_errors(params, match):
    with pytest.raises(ParameterError, match=match):
        InitL2Prior(params=params)


# ----------------------------------------------------------------------------- interface

PRIOR_FACTORIES = {
    "gmm": lambda: GMMPosePrior(gmm=random_gmm()),
    "bending": BendingPrior,
    "shape_l2": ShapeL2Prior,
    "camera_depth": CameraDepthPrior,
    "init_l2": lambda: InitL2Prior(params={"global_orient": 2.0, "body_pose": 1.0, "betas": 0.5,
                                           "transl": 3.0}),
}


@pytest.mark.parametrize("name", sorted(PRIOR_FACTORIES))
def test_registered_as_priors(name):
    term = PRIOR_FACTORIES[name]()
    assert get_term_class(name) is type(term)
    assert term.kind == "prior" and term.name == name
    # priors read parameters only, and say which (the LM solver differentiates along those)
    expected = {"gmm": ("body_pose",), "bending": ("body_pose",), "shape_l2": ("betas",),
                "camera_depth": ("transl",), "init_l2": ("global_orient", "body_pose", "betas", "transl")}
    assert term.needs() == Needs(params=expected[name]) and term.evidence() is None
    assert "E" in type(term).__doc__ or "energy" in type(term).__doc__.lower()


SIZES = {"global_orient": 3, "body_pose": 69, "betas": 10, "transl": 3}


@pytest.mark.parametrize("name", sorted(PRIOR_FACTORIES))
def test_forward_mode_jacobian_matches_autograd(name):
    term = PRIOR_FACTORIES[name]()
    torch.manual_seed(1)
    b = 3
    init = {k: torch.randn(b, n, dtype=torch.float64) for k, n in SIZES.items()}
    if name == "gmm":
        init["body_pose"] = torch.from_numpy(poses_near_components(random_gmm(), n_per=1))
    flat0 = torch.cat([v + 0.1 * torch.randn_like(v) for v in init.values()], dim=1)

    def residuals(flat):
        params = dict(zip(SIZES, torch.split(flat, list(SIZES.values()), dim=1)))
        return term.residuals(make_batch(params, init=init))

    r0 = residuals(flat0)
    basis = torch.eye(flat0.numel(), dtype=torch.float64).reshape(-1, *flat0.shape)
    jvp_cols = torch.func.vmap(lambda t: torch.func.jvp(residuals, (flat0,), (t,))[1])(basis)
    jac_forward = jvp_cols.reshape(*flat0.shape, *r0.shape).permute(2, 3, 0, 1)
    jac_reverse = torch.autograd.functional.jacobian(residuals, flat0)
    assert jac_reverse.shape == (*r0.shape, *flat0.shape)
    torch.testing.assert_close(jac_forward, jac_reverse, rtol=1e-10, atol=1e-12)
    # Non-trivial for each prior: something depends on the parameters, and body_pose
    # columns are non-zero exactly for the priors that read body_pose.
    assert float(jac_reverse.abs().sum()) > 0
    pose_cols = jac_reverse[..., 3:72]
    assert (float(pose_cols.abs().sum()) > 0) == (name in {"gmm", "bending", "init_l2"})


def test_gmm_samples_have_the_mixture_moments():
    """Oracle: a mixture's mean is sum_m w_m mu_m, its covariance sum_m w_m (Sigma_m + mu_m mu_m^T) - mean mean^T."""
    gmm = random_gmm(m=3, d=4, seed=3)
    x = GaussianMixture.from_dict(gmm).sample(200_000, generator=torch.Generator().manual_seed(0)).numpy()
    w, mu, cov = gmm["weights"], gmm["means"], gmm["covars"]
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    np.testing.assert_allclose(x.mean(0), mean, atol=5e-3)
    np.testing.assert_allclose(np.cov(x.T), second - np.outer(mean, mean), atol=5e-3)


def test_sklearn_and_own_em_agree_on_likelihood():
    """Two implementations of EM (scikit-learn's and fit_gmm) reach the same held-out likelihood."""
    gmm = random_gmm(m=2, d=3, seed=4)
    sampler = GaussianMixture.from_dict(gmm)
    train = sampler.sample(4000, generator=torch.Generator().manual_seed(1)).numpy()
    test = sampler.sample(2000, generator=torch.Generator().manual_seed(2)).numpy()
    ll_sk = mixture_log_likelihood(test, fit_gmm_sklearn(train, 2, reg_covar=1e-6))
    ll_own = mixture_log_likelihood(test, fit_gmm(train, num_components=2, iterations=200, reg=1e-6))
    ll_true = mixture_log_likelihood(test, gmm)
    assert abs(ll_sk - ll_own) < 0.02 and abs(ll_sk - ll_true) < 0.05


def test_plain_metadata_keeps_only_what_weights_only_loading_reads(tmp_path):
    from pathlib import Path

    from fitkit.priors.files import plain_metadata

    meta = plain_metadata({"a": np.float32(1.5), "b": (1, Path("x/y")), "c": np.arange(3), "d": torch.tensor(2)},
                          "extra")
    assert meta["a"] == 1.5 and type(meta["a"]) is float and meta["b"] == [1, "x/y"] and meta["d"] == 2
    torch.save(meta, tmp_path / "m.pt")
    back = torch.load(tmp_path / "m.pt", weights_only=True)
    assert torch.equal(back["c"], torch.arange(3))
    with pytest.raises(ParameterError, match=r"extra.bad: cannot store a object"):
        plain_metadata({"bad": object()}, "extra")
