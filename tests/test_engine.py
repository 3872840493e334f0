"""The fitting engine end to end: recovery, external terms, NaN isolation, flags, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import err2d, pa_mpjpe
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import InitError, fit
from fitkit.fitting.recipe import RecipeError, load_recipe, recipe_from_dict
from fitkit.io.observations import Observations
from fitkit.terms.base import Needs, Term, register_term


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=torch.float64)


def keypoint_recipe(solver: dict, *, body_iters=None, priors=None) -> dict:
    body_solver = dict(solver)
    if body_iters is not None:
        body_solver["iterations"] = body_iters
    terms = {
        "torso": {"type": "keypoints2d", "sigma": None, "confidence_power": 0, "scale_by_size": True,
                  "only": ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]},
        "keypoints": {"type": "keypoints2d", "sigma": 100, "confidence_power": 1, "scale_by_size": True},
        "near_init": {"type": "init_l2", "weight": 1e-4, "params": {"body_pose": 1.0}},
    }
    terms.update(priors or {})
    return {
        "name": "test", "camera": {"mode": "full"},
        "terms": terms,
        "stages": [
            {"name": "camera", "free": ["global_orient", "transl"], "terms": ["torso"], "solver": dict(solver)},
            {"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
             "terms": ["keypoints", "near_init"], "solver": body_solver},
        ],
    }


def _metrics(model, params, ex, K):
    out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                keypoints=ex.observations.keypoint_format)
    e2d = err2d(project(out.keypoints, K), ex.observations.keypoints.to(K))
    return e2d, pa_mpjpe(out.joints, ex.gt["joints"])


def test_recovery_from_noise_free_keypoints(model):
    ex = make_keypoint_example(model, 6, noise_px=0.0, dropout=0.0, pose_noise=0.12, shape_noise=0.3, seed=3)
    recipe = recipe_from_dict(keypoint_recipe({"type": "lm", "iterations": 15}, body_iters=60))
    res = fit(model, ex.observations, recipe, ex.init)
    e_before, pa_before = _metrics(model, ex.init, ex, ex.observations.intrinsics.double())
    e_after, pa_after = _metrics(model, res.params, ex, res.K)
    assert float(e_before.mean()) > 10.0
    assert float(e_after.mean()) < 1.0, e_after
    assert float(pa_after.mean()) < float(pa_before.mean())
    assert not res.nan.any() and not res.no_evidence.any()


@pytest.mark.parametrize("solver", [{"type": "lbfgs", "iterations": 200}, {"type": "adam", "lr": 0.02, "iterations": 400}])
def test_gradient_solvers_also_reduce_the_error(model, solver):
    ex = make_keypoint_example(model, 3, noise_px=0.0, dropout=0.0, pose_noise=0.1, shape_noise=0.3, seed=5)
    recipe = recipe_from_dict(keypoint_recipe(solver))
    res = fit(model, ex.observations, recipe, ex.init)
    e_before, _ = _metrics(model, ex.init, ex, ex.observations.intrinsics.double())
    e_after, _ = _metrics(model, res.params, ex, res.K)
    assert float(e_after.mean()) < 0.25 * float(e_before.mean())


# ---------------------------------------------------------------- external terms

@register_term("test_transl_target")
class TranslTarget(Term):
    """Pulls the translation to a fixed target (defined in this test file only)."""

    kind = "data"

    def __init__(self, target=(0.0, 0.0, 5.0)):
        self.target = torch.tensor(target, dtype=torch.float64)

    def needs(self):
        return Needs()

    def residuals(self, batch):
        return batch.params["transl"] - self.target.to(batch.params["transl"])


def test_term_registered_in_a_test_file_runs_from_a_yaml_recipe(model, tmp_path):
    recipe_file = tmp_path / "external.yaml"
    recipe_file.write_text(
        "name: external\n"
        "terms:\n"
        "  pull: {type: test_transl_target, target: [0.1, -0.2, 4.0]}\n"
        "stages:\n"
        "  - {name: only, free: [transl], terms: [pull], solver: {type: lm, iterations: 5}}\n")
    ex = make_keypoint_example(model, 2, seed=1)
    res = fit(model, ex.observations, load_recipe(recipe_file), ex.init)
    assert torch.allclose(res.params["transl"], torch.tensor([[0.1, -0.2, 4.0]] * 2, dtype=torch.float64), atol=1e-6)
    # the parameters it did not free are untouched
    assert torch.equal(res.params["body_pose"], ex.init["body_pose"].double())


def test_plugin_module_listed_in_recipe_registers_its_term(model, tmp_path):
    plugin = tmp_path / "my_terms.py"
    plugin.write_text(
        "import torch\n"
        "from fitkit.terms.base import Term, Needs, register_term\n"
        "@register_term('test_plugin_betas_target')\n"
        "class BetasTarget(Term):\n"
        "    kind = 'prior'\n"
        "    def residuals(self, batch):\n"
        "        return batch.params['betas'] - 0.5\n")
    recipe_file = tmp_path / "plugin.yaml"
    recipe_file.write_text(
        "plugins: [my_terms.py]\n"
        "terms:\n"
        "  t: {type: test_plugin_betas_target}\n"
        "stages:\n"
        "  - {free: [betas], terms: [t], solver: {type: lbfgs, iterations: 50}}\n")
    ex = make_keypoint_example(model, 2, seed=1)
    res = fit(model, ex.observations, load_recipe(recipe_file), ex.init)
    assert torch.allclose(res.params["betas"], torch.full((2, 10), 0.5, dtype=torch.float64), atol=1e-5)


# ---------------------------------------------------------------- NaN isolation

@register_term("test_nan_bomb")
class NanBomb(Term):
    """Residual 0, except NaN for sample ``row`` once its pose has moved ``after`` radians from the init."""

    kind = "prior"

    def __init__(self, row=-1, after=0.0):
        self.row, self.after = row, after

    def residuals(self, batch):
        moved = (batch.params["body_pose"] - batch.init["body_pose"]).abs().sum(dim=1)
        hit = (batch.index == self.row) & (moved >= self.after)
        zero = torch.zeros_like(moved)
        return torch.where(hit, zero * math.nan, zero)[:, None]


@pytest.mark.parametrize("solver", [{"type": "lm", "iterations": 8}, {"type": "lbfgs", "iterations": 20},
                                    {"type": "adam", "iterations": 30}])
@pytest.mark.parametrize("after", [0.0, 0.02])
def test_nan_in_one_sample_leaves_the_others_identical(model, solver, after):
    ex = make_keypoint_example(model, 4, noise_px=1.0, seed=7)
    data = keypoint_recipe(solver)
    data["terms"]["bomb"] = {"type": "test_nan_bomb", "row": -1, "after": after}
    data["stages"][1]["terms"] = ["keypoints", "near_init", "bomb"]
    clean = fit(model, ex.observations, recipe_from_dict(data), ex.init)
    data["terms"]["bomb"]["row"] = 2
    bombed = fit(model, ex.observations, recipe_from_dict(data), ex.init)
    others = [0, 1, 3]
    for name, value in bombed.params.items():  # every solver: bit for bit (docs/fitting.md)
        assert torch.equal(value[others], clean.params[name][others]), name
        assert torch.isfinite(value).all(), name
    assert bombed.nan.tolist() == [False, False, True, False]
    assert not clean.nan.any()
    assert not bool(bombed.converged[2])
    assert torch.equal(bombed.iterations[others], clean.iterations[others])
    assert torch.equal(bombed.converged[others], clean.converged[others])
    # the NaN sample is rolled back to a state it really had: never further than `after` from the init
    moved = (bombed.params["body_pose"][2] - ex.init["body_pose"][2].double()).abs().sum()
    assert float(moved) < after + 1e-12 or after == 0.0 and float(moved) == 0.0


# ---------------------------------------------------------------- flags and bad input

def test_frame_without_evidence_passes_its_init_through(model):
    ex = make_keypoint_example(model, 3, seed=2)
    kps = ex.observations.keypoints.clone()
    kps[1, :, 2] = 0.0
    obs = Observations.from_arrays(kps, "body25", ex.observations.image_size,
                                   intrinsics=ex.observations.intrinsics)
    recipe = recipe_from_dict(keypoint_recipe({"type": "lm", "iterations": 5}))
    res = fit(model, obs, recipe, ex.init)
    assert res.no_evidence.tolist() == [False, True, False]
    for name in ("global_orient", "body_pose", "betas", "transl"):
        assert torch.equal(res.params[name][1], ex.init[name][1].double()), name
        assert not torch.equal(res.params[name][0], ex.init[name][0].double()) or name == "betas"
    assert res.iterations[1].sum() == 0


def test_init_with_the_wrong_number_of_frames_is_refused(model):
    ex = make_keypoint_example(model, 3, seed=2)
    init = {k: v[:2] for k, v in ex.init.items()}
    recipe = recipe_from_dict(keypoint_recipe({"type": "lm", "iterations": 2}))
    with pytest.raises(InitError, match=r"my_init.npz: field 'global_orient' has shape \(2, 3\).*3 frames"):
        fit(model, ex.observations, recipe, init, init_source="my_init.npz")


def test_init_with_nan_is_refused_naming_the_field(model):
    ex = make_keypoint_example(model, 2, seed=2)
    init = dict(ex.init)
    init["betas"] = init["betas"].clone()
    init["betas"][1, 3] = float("nan")
    recipe = recipe_from_dict(keypoint_recipe({"type": "lm", "iterations": 2}))
    with pytest.raises(InitError, match="field 'betas' has NaN"):
        fit(model, ex.observations, recipe, init)


def test_recipe_errors_name_the_key(tmp_path):
    bad = keypoint_recipe({"type": "lm"})
    bad["terms"]["keypoints"]["type"] = "no_such_term"
    with pytest.raises(RecipeError, match=r"terms.keypoints.type: unknown term type 'no_such_term'"):
        recipe_from_dict(bad, "r.yaml")
    bad = keypoint_recipe({"type": "lm"})
    bad["stages"][0]["terms"] = ["torso", "missing"]
    with pytest.raises(RecipeError, match=r"stages.0.terms: 'missing' is not defined"):
        recipe_from_dict(bad, "r.yaml")
    bad = keypoint_recipe({"type": "newton"})
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        from fitkit.solvers import make_solver
        make_solver(bad["stages"][0]["solver"])
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.parametrize("solver", ["lm", "adam"])
def test_trace_sees_the_best_iterate_of_every_stage(model, solver):
    """``fit(trace=...)`` reports every iteration and then the stage's result, and the
    keypoint error of the best-so-far iterates goes down."""
    ex = make_keypoint_example(model, 3, noise_px=0.0, dropout=0.0, seed=4)
    recipe = load_recipe("demo", ["stages.1.solver={type: %s, iterations: 8}" % solver])
    seen = []
    res = fit(model, ex.observations, recipe, ex.init,
              trace=lambda stage, it, p: seen.append((stage, it, {k: v.clone() for k, v in p.items()})))
    stages = [s for s, _, _ in seen]
    assert stages.count("camera") == int(res.iterations[:, 0].max()) + 1 and stages.count("body") == 8 + 1
    last = [p for s, _, p in seen if s == "body"][-1]
    for name in ("global_orient", "body_pose", "betas", "transl"):
        torch.testing.assert_close(last[name], res.params[name])
    body = [p for s, _, p in seen if s == "body"]
    errs = []
    for p in body:
        kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], keypoints="body25").keypoints
        errs.append(float(err2d(project(kp, res.K), ex.observations.keypoints).mean()))
    assert errs[-1] < errs[0]
