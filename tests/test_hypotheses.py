"""Facing and left/right hypotheses above the engine (fitkit.fitting.hypotheses)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.body.keypoint_formats import get_format
from fitkit.camera import project
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.hypotheses import (LABELLINGS, fit_with_hypotheses, hypotheses_arrays, swap_labels,
                                       swap_permutations, viterbi, yaw_orient)
from fitkit.fitting.recipe import RecipeError, load_recipe, recipe_from_dict
from fitkit.fitting.rotations import axis_angle_to_matrix
from fitkit.io.observations import Observations

F64 = torch.float64


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=F64)


def _recipe(hypotheses=None, iterations=None):
    data = copy.deepcopy(load_recipe("demo").data)
    if iterations is not None:
        data["stages"][1]["solver"]["iterations"] = iterations
    if hypotheses is not None:
        data["hypotheses"] = hypotheses
    return recipe_from_dict(data, "demo.yaml")


def _observe(model, ex, params, noise_px=1.0, seed=0):
    """Observations of ``params`` seen by the example's camera: 2D keypoints, confidence 0.9."""
    out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                keypoints=ex.observations.keypoint_format, validate=False)
    K = ex.observations.intrinsics.to(F64)
    uv = project(out.keypoints, K)
    uv = uv + noise_px * torch.randn(uv.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    kps = torch.cat([uv, torch.full(uv.shape[:2] + (1,), 0.9, dtype=F64)], -1)
    return Observations.from_arrays(kps.numpy(), ex.observations.keypoint_format,
                                    ex.observations.image_size.numpy(), intrinsics=K.numpy(),
                                    track_ids=["p"] * len(kps))


def _facing(model, params):
    """(N, 3) unit forward direction of the torso (camera frame), from the hips and the spine."""
    j = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
              validate=False).joints
    across = j[:, 1] - j[:, 2]  # left hip - right hip
    up = j[:, 9] - j[:, 0]  # spine3 - pelvis
    fwd = torch.linalg.cross(across, up)
    return fwd / fwd.norm(dim=-1, keepdim=True)


def _angle_deg(a, b):
    return torch.rad2deg(torch.arccos((a * b).sum(-1).clamp(-1, 1)))


def test_yaw_turns_about_the_body_axis(model):
    go = torch.tensor([[math.pi, 0.0, 0.0], [2.9, 0.3, -0.2]], dtype=F64)
    turned = yaw_orient(go, 180.0)
    R, R2 = axis_angle_to_matrix(go), axis_angle_to_matrix(turned)
    torch.testing.assert_close(R2[:, :, 1], R[:, :, 1])  # the body's own up axis is kept
    torch.testing.assert_close(R2[:, :, 2], -R[:, :, 2])  # and its forward axis reversed
    torch.testing.assert_close(yaw_orient(go, 0.0), go)


def test_swap_permutations_pair_left_and_right():
    fmt = get_format("blazepose33")
    up, low = swap_permutations("blazepose33")
    names = fmt.names
    assert names[int(up[names.index("left_wrist")])] == "right_wrist"
    assert names[int(up[names.index("mouth_left")])] == "mouth_right"
    assert int(up[names.index("left_knee")]) == names.index("left_knee")  # lower body untouched by 'upper'
    assert names[int(low[names.index("left_hip")])] == "right_hip"
    assert int(low[names.index("left_shoulder")]) == names.index("left_shoulder")
    assert int(up[0]) == 0 and int(low[0]) == 0  # the nose
    for p in (up, low):
        assert torch.equal(p[p], torch.arange(len(names)))  # an involution
    body25 = get_format("body25").names
    up25, _ = swap_permutations("body25")
    assert int(up25[body25.index("neck")]) == body25.index("neck")


def test_viterbi_against_brute_force():
    rng = np.random.default_rng(0)
    costs = rng.uniform(0, 10, (6, 3))
    switch = rng.uniform(0, 5, (3, 3))
    path = viterbi(costs, switch)
    best = min(itertools_product(3, 6), key=lambda p: sum(costs[t, s] for t, s in enumerate(p))
               + sum(switch[a, b] for a, b in zip(p[:-1], p[1:])))
    assert path.tolist() == list(best)
    steps = rng.uniform(0, 5, (5, 3, 3))  # a transition cost per step
    best = min(itertools_product(3, 6), key=lambda p: sum(costs[t, s] for t, s in enumerate(p))
               + sum(steps[t, a, b] for t, (a, b) in enumerate(zip(p[:-1], p[1:]))))
    assert viterbi(costs, steps).tolist() == list(best)


def itertools_product(states, length):
    import itertools

    return itertools.product(range(states), repeat=length)


def test_back_facing_person_is_recovered(model):
    ex = make_keypoint_example(model, 8, keypoint_format="body25", noise_px=0.0, dropout=0.0, seed=5, spread=0.5,
                               pose_noise=0.1)
    gt = {k: ex.gt[k] for k in ("global_orient", "body_pose", "betas", "transl")}
    gt["global_orient"] = yaw_orient(gt["global_orient"], 180.0)  # the person turns their back
    obs = _observe(model, ex, gt)
    recipe = _recipe({"yaw": [0, 90, 180, 270], "swap": False}, iterations=40)
    res = fit_with_hypotheses(model, obs, recipe)
    h = res.info["hypotheses"]
    assert h["names"] == ["yaw0", "yaw90", "yaw180", "yaw270"]
    assert h["yaw_index"].tolist() == [2] * 8
    err = _angle_deg(_facing(model, res.params), _facing(model, gt))
    assert float(err.max()) < 20.0, err
    # the plain fit from the camera-facing start stays on the wrong side on some frames
    plain = fit(model, obs, _recipe(iterations=40))
    assert float(_angle_deg(_facing(model, plain.params), _facing(model, gt)).max()) > 60.0
    arrays = hypotheses_arrays(res)
    assert arrays["hypothesis_yaw_deg"].tolist() == [180.0] * 8
    assert arrays["hypothesis_index"].dtype == np.int64 and arrays["hypothesis_energies"].shape == (8, 4)
    assert not arrays["swap_upper"].any() and not arrays["hypothesis_smplr"].any()


def test_upper_body_swap_is_detected_on_its_frames_only(model):
    n = 12
    ex = make_keypoint_example(model, n, keypoint_format="body25", noise_px=0.0, dropout=0.0, seed=8,
                               pose_noise=0.1, spread=0.5)
    gt = {k: ex.gt[k] for k in ("global_orient", "body_pose", "betas", "transl")}
    obs = _observe(model, ex, gt)
    swapped = np.zeros(n, dtype=bool)
    swapped[4:9] = True
    bad = swap_labels(obs, swapped, np.zeros(n, dtype=bool))
    recipe = _recipe({"yaw": [0, 180], "swap": {"upper": True, "lower": True}}, iterations=40)
    res = fit_with_hypotheses(model, bad, recipe)
    h = res.info["hypotheses"]
    assert h["swap_upper"].tolist() == swapped.tolist()
    assert not h["swap_lower"].any()
    assert h["yaw_index"].tolist() == [0] * n
    assert h["swap_energies"].shape == (len(LABELLINGS), n)
    # the final fit saw the corrected labels: it matches a fit to the clean observations' 2D error
    out = model(res.params["global_orient"], res.params["body_pose"], res.params["betas"],
                res.params["transl"], keypoints="body25", validate=False)
    err = (project(out.keypoints, res.K) - obs.keypoints[..., :2].to(F64)).norm(dim=-1).mean(1)
    assert float(err.max()) < 10.0, err


def test_without_the_section_it_is_engine_fit(model):
    ex = make_keypoint_example(model, 3, keypoint_format="body25", noise_px=1.0, seed=2)
    recipe = _recipe(iterations=10)
    assert recipe.hypotheses == {}
    a = fit(model, ex.observations, recipe, init=ex.init)
    b = fit_with_hypotheses(model, ex.observations, recipe, init=ex.init)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])
    assert "hypotheses" not in b.info and hypotheses_arrays(b) == {}


def test_section_is_validated():
    r = _recipe({})
    assert r.hypotheses["yaw"] == [0.0, 90.0, 180.0, 270.0] and r.hypotheses["swap"]["upper"] is True
    for bad, match in (({"yaw": []}, "yaw"), ({"stages": 3}, "stages"), ({"smplr": "yes"}, "smplr"),
                       ({"swap": {"upper": 1}}, "swap.upper"), ({"spin": 1}, "unknown"),
                       ({"swap": {"switch_cost": -1}}, "switch_cost"), ({"iterations": 0}, "iterations")):
        with pytest.raises(RecipeError, match=match):
            _recipe(bad)


def test_video_recipe_runs_with_keypoints3d_and_switches_flow_on(model, caplog):
    import dataclasses
    import logging

    from fitkit.fitting.video_recipe import flow_switches, with_flow

    recipe = load_recipe("video", ["stages.1.solver.iterations=5", "stages.2.solver.iterations=5",
                                   "hypotheses.iterations=3"])
    assert recipe.hypotheses["smplr"] == "auto" and recipe.init["type"] == "smplr"
    switches = flow_switches(recipe)
    assert {(k, w) for _, k, w in switches} == {("vertex_flow", 0.1), ("photometric", 10000.0)}
    flowing = with_flow(recipe)
    assert flowing.stages[2].terms["vertex_flow"] == 0.1 and flow_switches(flowing) == []
    assert with_flow(load_recipe("demo")).stages == load_recipe("demo").stages

    ex = make_keypoint_example(model, 6, keypoint_format="blazepose33", noise_px=1.0, dropout=0.0, seed=4,
                               spread=0.5)
    pts = ex.gt["keypoints_3d"]
    k3 = torch.cat([pts - 0.5 * (pts[:, 23:24] + pts[:, 24:25]), torch.ones(6, 33, 1, dtype=F64)], -1)
    obs = dataclasses.replace(ex.observations, keypoints3d=k3.float(), track_ids=["a"] * 6)
    with caplog.at_level(logging.INFO, logger="fitkit.fitting.hypotheses"):
        res = fit_with_hypotheses(model, obs, recipe)
    assert "SMPLR start reads keypoints3d" in caplog.text
    h = res.info["hypotheses"]
    assert h["names"] == ["yaw0", "yaw90", "yaw180", "yaw270"]  # the recipe's start is SMPLR's already
    assert res.params["body_pose"].shape == (6, 69) and bool(torch.isfinite(res.energies["total"]).all())
    # without keypoints3d, SMPLR reads the 2D keypoints and says so
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fitkit.fitting.hypotheses"):
        fit_with_hypotheses(model, dataclasses.replace(obs, keypoints3d=None), recipe)
    assert "lifted" in caplog.text
    # a recipe whose own start is not SMPLR gets SMPLR's start as one more hypothesis
    demo = _recipe({"yaw": [0, 180], "swap": False, "iterations": 3}, iterations=5)
    res = fit_with_hypotheses(model, obs, demo)
    assert res.info["hypotheses"]["names"] == ["yaw0", "yaw180", "smplr"]
    assert hypotheses_arrays(res)["hypothesis_energies"].shape == (6, 3)


def test_near_ties_keep_the_recipes_start():
    from fitkit.fitting.hypotheses import _per_track_choice

    obs = Observations.from_arrays(np.zeros((4, 25, 3)), "body25", (100, 100), track_ids=["a", "a", "b", "b"])
    e = np.array([[100.0, 100.0, 100.0, 100.0],
                  [98.0, 98.0, 80.0, 80.0]])  # 2% lower on track a, 20% on track b
    assert _per_track_choice(obs, e, None, 0.05, 0).tolist() == [0, 0, 1, 1]
    assert _per_track_choice(obs, e, None, 0.0, 0).tolist() == [1, 1, 1, 1]
    assert _per_track_choice(obs, e[::-1].copy(), None, 0.05, 1).tolist() == [1, 1, 0, 0]
