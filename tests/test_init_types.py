"""``init: {type: danet}`` through the engine, and the init benchmark's data."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.init_bench import make_init_benchmark_data
from fitkit.eval.metrics import evaluate_bodies
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe
from fitkit.init import initial_params
from fitkit.init.mean import mean_body_pose


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10)


@pytest.fixture(scope="module")
def data(model):
    return make_init_benchmark_data(model, 6, seed=4, image_size=(256, 256))


def _recipe(init):
    r = load_recipe("demo")
    r.init.update(init)
    r.stages = r.stages[:1]
    r.stages[0].solver = dict(r.stages[0].solver, iterations=1)
    return r


def test_danet_start_beats_the_mean_start_and_places_the_body(model, data):
    ex, obs = data
    cam = build_fit_camera({}, obs)
    danet, info = initial_params({"type": "danet"}, model, obs, cam)
    mean, _ = initial_params({"type": "mean"}, model, obs, cam)
    assert info["fallback_rows"] == []
    gt = {k: ex.gt[k].float() for k in ("global_orient", "body_pose", "betas", "transl")}
    mean = dict(mean, transl=gt["transl"])
    pve = lambda p: float(evaluate_bodies(model, p, gt)["pve_mm"].mean())  # noqa: E731
    assert pve(danet) < pve(mean)
    # the full-image translation puts the pelvis near its true place (depth within 25%)
    root = lambda p: model(p["global_orient"], p["body_pose"], p["betas"], p["transl"]).joints[:, 0]  # noqa: E731
    r_pred, r_gt = root(danet), root(gt)
    assert torch.all((r_pred[:, 2] / r_gt[:, 2] - 1).abs() < 0.25)


def test_danet_falls_back_for_frames_without_foreground(model, data):
    _, obs = data
    iuv = obs.dense["iuv"].clone()
    iuv[2] = 0
    obs = dataclasses.replace(obs, dense={"iuv": iuv})
    with pytest.warns(UserWarning, match="1 of 6 frame"):
        res = fit(model, obs, _recipe({"type": "danet"}))
    assert res.info["init"]["fallback_rows"] == [2]
    assert torch.allclose(res.params["body_pose"][2], mean_body_pose(1)[0], atol=1e-5)
    assert bool(torch.isfinite(res.params["transl"]).all())
