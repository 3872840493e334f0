"""Recipe validation rules (fitkit.fitting.recipe_schema) and evaluate-only stages (iterations: 0)."""
from __future__ import annotations

import copy

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.errors import ModelFileError
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import RecipeError, load_recipe, recipe_from_dict
from fitkit.priors.presets import PRIOR_NAMES
from fitkit.shipped import recipe_names
from fitkit.solvers import SOLVERS, Solver, register_solver
from fitkit.terms.base import Term, register_term

BASE = {
    "name": "t", "camera": {"mode": "full"}, "init": {"transl": "keep"},
    "terms": {
        # squared pixel error weighted by the confidence: easy to evaluate by hand below
        "kp": {"type": "keypoints2d", "weight": 0.5, "sigma": None, "confidence_power": 1, "scale_by_size": False},
        "shape": {"type": "shape_l2", "weight": 3.0},
    },
    "stages": [{"name": "camera", "free": ["global_orient", "transl"], "terms": {"kp": 1.0},
                "solver": {"type": "lm", "iterations": 3}},
               {"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
                "terms": ["kp", "shape"], "solver": {"type": "lbfgs", "iterations": 0}}],
}


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=torch.float64)


@pytest.fixture(scope="module")
def example(model):
    return make_keypoint_example(model, 3, noise_px=1.0, pose_noise=0.2, seed=21)


def with_stages(*stages):
    data = copy.deepcopy(BASE)
    data["stages"] = [copy.deepcopy(BASE["stages"][i]) for i in stages]
    return data


def test_iterations_zero_keeps_the_init_and_reports_its_energies(model, example):
    data = with_stages(1)  # one evaluate-only stage
    res = fit(model, example.observations, recipe_from_dict(data), example.init)
    for name, value in example.init.items():
        assert torch.equal(res.params[name], value.to(res.params[name])), name
    assert (res.iterations == 0).all() and not res.converged.any() and not res.nan.any()
    # a direct evaluation: projected keypoints against the observations, and sum of squared betas
    p = example.init
    kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], keypoints="body25").keypoints
    obs = example.observations.keypoints.double()
    conf = obs[..., 2].clamp(min=0)
    sq = ((project(kp, res.K) - obs[..., :2]) ** 2).sum(-1)
    expected_kp = 0.5 * (torch.where(conf > 0, conf * sq, torch.zeros_like(sq))).sum(-1)
    expected_shape = 3.0 * (p["betas"].double() ** 2).sum(-1)
    torch.testing.assert_close(res.energies["kp"], expected_kp, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.energies["shape"], expected_shape, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(res.energies["total"], expected_kp + expected_shape, rtol=1e-9, atol=1e-9)


def test_an_evaluate_only_stage_after_a_fit_keeps_that_fit(model, example):
    fitted = fit(model, example.observations, recipe_from_dict(with_stages(0)), example.init)
    both = fit(model, example.observations, recipe_from_dict(with_stages(0, 1)), example.init)
    for name in fitted.params:
        assert torch.equal(both.params[name], fitted.params[name]), name
    assert (both.iterations[:, 1] == 0).all() and (both.iterations[:, 0] == fitted.iterations[:, 0]).all()
    assert torch.equal(both.converged, fitted.converged)
    assert set(both.energies) == {"kp", "shape", "total"}  # under the last stage's weights


def test_without_iterations_zero_the_solver_does_move(model, example):
    data = with_stages(1)
    data["stages"][0]["solver"]["iterations"] = 2
    res = fit(model, example.observations, recipe_from_dict(data), example.init)
    assert not torch.equal(res.params["body_pose"], example.init["body_pose"].double())


def test_every_shipped_recipe_and_prior_preset_passes():
    for name in recipe_names():
        for prior in (None, *PRIOR_NAMES):
            load_recipe(name, prior=prior)


def test_exponent_notation_is_a_number_and_set_values_are_normalised():
    r = load_recipe("demo", ["stages.1.solver.lr=1e-1", "stages.0.solver.damping=1e-2", "terms.keypoints.sigma=5e1"])
    assert r.stages[1].solver["lr"] == pytest.approx(0.1)
    assert r.stages[0].solver["damping"] == pytest.approx(0.01)
    assert r.terms["keypoints"]["sigma"] == pytest.approx(50.0)


@pytest.mark.parametrize("override, key", [
    ("stages.1.solver.iterations=-1", "stages.1.solver.iterations"),
    ("stages.1.solver.iterations=abc", "stages.1.solver.iterations"),
    ("terms.keypoints.sigma=nan", "terms.keypoints.sigma"),
    ("terms.keypoints.weight=.nan", "terms.keypoints.weight"),
    ("stages.0.solver.damping=1e30", "stages.0.solver.damping"),
    ("stages.0.solver.xtol=-1.0", "stages.0.solver.xtol"),
    ("stages.1.solver.c1=1.5", "stages.1.solver.c1"),
    ("stages.1.solver.history=0", "stages.1.solver.history"),
    ("stages.1.solver={type: adam, betas: [0.9, 1.0]}", "stages.1.solver.betas.1"),
    ("stages.1.solver={type: adam, eps: 0}", "stages.1.solver.eps"),
    ("terms.keypoints.weights={nose: -1}", "terms.keypoints.weights.nose"),
    ("terms.keypoints.only=[nose, .nan]", "terms.keypoints.only.1"),
    ("terms.shape.strength=2", "terms.shape"),
])
def test_set_values_get_the_file_rules(override, key, tmp_path):
    with pytest.raises(RecipeError, match=rf"demo.yaml: {key.replace('.', '[.]')}\b"):
        load_recipe("demo", [override])
    # the same value written in the file gives the same error
    import yaml

    from fitkit.fitting.recipe import apply_overrides
    from fitkit.shipped import recipe_path

    data = apply_overrides(yaml.safe_load(recipe_path("demo").read_text()), [override])
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=rf"demo.yaml: {key.replace('.', '[.]')}\b"):
        load_recipe(path)


@register_term("test_schema_open_kwargs")
class _OpenKwargs(Term):
    kind = "prior"

    def __init__(self, gain: float = 1.0, **extra):
        self.gain = gain

    def residuals(self, batch):
        return batch.params["betas"] * self.gain


@register_solver("test_schema_plugin_solver")
class _PluginSolver(Solver):
    defaults = {"step": 0.5}


def test_plugin_terms_and_solvers_get_the_generic_rules():
    data = copy.deepcopy(BASE)
    data["terms"]["extra"] = {"type": "test_schema_open_kwargs", "gain": 2.0, "anything": [1, 2]}
    data["stages"][1]["solver"] = {"type": "test_schema_plugin_solver", "step": 0.1, "iterations": 4}
    r = recipe_from_dict(data)
    assert r.terms["extra"]["anything"] == [1, 2] and r.stages[1].solver["step"] == 0.1
    data["terms"]["extra"]["gain"] = "big"
    with pytest.raises(RecipeError, match=r"terms\.extra\.gain: expected float"):
        recipe_from_dict(data)
    data["terms"]["extra"]["gain"] = 2.0
    data["stages"][1]["solver"]["step"] = float("nan")
    with pytest.raises(RecipeError, match=r"stages\.1\.solver\.step: expected a finite number"):
        recipe_from_dict(data)
    data["stages"][1]["solver"] = {"type": "test_schema_plugin_solver", "patience": 0}
    with pytest.raises(RecipeError, match=r"stages\.1\.solver\.patience"):
        recipe_from_dict(data)
    assert "test_schema_plugin_solver" in SOLVERS


def test_a_missing_prior_file_keeps_its_type_and_names_the_key(model, example, tmp_path):
    r = load_recipe("demo", [f"terms.pose.path={tmp_path / 'absent.pkl'}"])
    with pytest.raises(ModelFileError, match=r"demo.yaml: terms\.pose: .*absent\.pkl"):
        fit(model, example.observations, r, example.init)


@pytest.mark.parametrize("kwargs, name", [
    ({"sigma": "nan"}, "sigma"), ({"sigma": float("nan")}, "sigma"), ({"confidence_power": float("inf")},
                                                                      "confidence_power"),
    ({"min_confidence": -0.5}, "min_confidence"), ({"reference_size": 0}, "reference_size"),
    ({"weights": {"nose": -1.0}}, "weights"),
])
def test_keypoints2d_constructor_checks_its_arguments(kwargs, name):
    """Through the API (no recipe) the term's own checks name the argument."""
    from fitkit.terms.keypoints2d import Keypoints2D

    with pytest.raises(ValueError, match=rf"keypoints2d\.{name}:"):
        Keypoints2D(**kwargs)
