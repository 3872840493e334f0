"""blazepose33_real: the open body's BlazePose points calibrated on the dev set (tools/calibrate_keypoints.py)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from fitkit.body import lbs, load_body_model
from fitkit.body.keypoint_sets import rigid_offset_weights, with_local_offsets
from fitkit.body.open_body import (open_body_arrays, open_body_keypoint_sets, real_blazepose_offsets,
                                   real_blazepose_set)

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "calibrate_keypoints.py"
REFERENCE = ROOT / "datasets" / "pose2sim_multiperson" / "reference.npz"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("calibrate_keypoints", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def arrays():
    return open_body_arrays()


def _pose(model, kps_name, go, bp, betas):
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    out = model(t(go), t(bp), t(betas), keypoints=kps_name)
    rotmats = lbs.axis_angle_to_matrix(torch.cat([t(go), t(bp)], 1).reshape(-1, 24, 3))
    rest = model.J_template + (t(betas) @ model.J_shapedirs_flat).reshape(-1, 24, 3)
    _, transforms = lbs.forward_kinematics(rotmats, rest, model._tree)
    return out.keypoints.numpy(), transforms[..., :3].numpy()


def test_selection_and_rest_offsets():
    real = load_body_model("open_real", dtype=torch.float64)
    plain = load_body_model("open", dtype=torch.float64)
    assert real.blazepose_definition == "blazepose33_real" and real.name == "open"
    assert "blazepose33_real" in plain.keypoint_sets
    np.testing.assert_array_equal(real.keypoint_sets["blazepose33"].vertex_weights,
                                  plain.keypoint_sets["blazepose33_real"].vertex_weights)
    z = np.zeros((1, 3)), np.zeros((1, 69)), np.zeros((1, 10))
    old, _ = _pose(plain, "blazepose33", *z)
    new, _ = _pose(real, "blazepose33", *z)
    cal = real_blazepose_offsets()
    assert cal["corrected"].sum() >= 4 and "pose2sim" in str(cal["provenance"])
    # zero pose, zero betas: new point = old point + offset (float32 weights)
    np.testing.assert_allclose(new[0] - old[0], cal["offsets"], atol=2e-6)
    # uncorrected points are untouched
    assert np.all(cal["offsets"][~cal["corrected"]] == 0)
    with pytest.raises(ValueError, match="blazepose"):
        open_body_keypoint_sets(blazepose="nope")


def test_offsets_turn_with_their_joint():
    """Posed: new - old = (world rotation of the point's joint) @ offset, to LBS blending tolerance."""
    plain = load_body_model("open", dtype=torch.float64)
    cal = real_blazepose_offsets()
    rng = np.random.default_rng(0)
    B = 6
    go = rng.normal(0, 1.0, (B, 3))
    bp = rng.normal(0, 0.35, (B, 69))
    betas = np.zeros((B, 10))
    old, rot = _pose(plain, "blazepose33", go, bp, betas)
    new, _ = _pose(plain, "blazepose33_real", go, bp, betas)
    expected = np.einsum("bkij,kj->bki", rot[:, cal["joints"]], cal["offsets"])
    err = np.linalg.norm(new - old - expected, axis=-1)
    length = np.linalg.norm(cal["offsets"], axis=1)
    assert np.all(err <= 0.1 * length + 1e-5), (err.max(0), length)
    # and it is not a fixed world vector: the rotation matters
    assert np.abs(new - old - cal["offsets"]).max() > 5e-3


def test_rigid_offset_weights_exact_for_a_rigid_part(arrays):
    ids, a = rigid_offset_weights(arrays["v_template"], arrays["weights"], 15, np.array([0.01, -0.02, 0.03]),
                                  min_weight=0.999)
    assert abs(a.sum()) < 1e-12
    np.testing.assert_allclose(a @ arrays["v_template"][ids], [0.01, -0.02, 0.03], atol=1e-12)
    with pytest.raises(ValueError, match="joint 3"):
        rigid_offset_weights(arrays["v_template"], arrays["weights"], 3, np.ones(3) * 0.01, min_weight=0.9)


def test_calibration_recovers_injected_offsets(tool, arrays):
    """Synthetic targets from a body whose points carry known offsets: the calibration finds them."""
    base = open_body_keypoint_sets()["blazepose33"]
    names = list(base.names)
    joints = tool.carrier_joints(base, arrays["weights"])
    truth = np.zeros((33, 3))
    for side, sx in (("left", 1.0), ("right", -1.0)):
        truth[names.index(f"{side}_ear")] = [-0.025 * sx, 0.0, 0.03]
        truth[names.index(f"{side}_shoulder")] = [0.02 * sx, 0.01, 0.0]
        truth[names.index(f"{side}_hip")] = [-0.02 * sx, -0.02, 0.0]
    shifted = with_local_offsets(base, truth, joints, arrays["v_template"], arrays["weights"], name="shifted")
    model = tool.make_model(shifted, arrays)
    rng = np.random.default_rng(1)
    F = 12
    go = np.tile([[np.pi / 2, 0.0, 0.0]], (F, 1)) + rng.normal(0, 0.2, (F, 3))   # standing, z up
    bp = rng.normal(0, 0.15, (F, 69))
    bp[:, 3 * 15 + 2] -= 1.2
    bp[:, 3 * 16 + 2] += 1.2
    betas = np.tile(rng.normal(0, 0.7, (1, 10)), (F, 1))
    targets, _ = _pose(model, "shifted", go, bp, betas)
    targets = targets + rng.normal(0, 0.003, targets.shape)
    new, offsets, _, selected, _, _ = tool.calibrate(base, targets, arrays, rounds=3, log=lambda *_: None)
    injected = np.linalg.norm(truth, axis=1) > 0
    assert np.all(selected[injected])
    # the fit absorbs part of an offset into shape and pose (the hips' height most: ~8 of 20 mm here)
    miss = np.linalg.norm(offsets - truth, axis=1)
    assert np.all(miss[injected] < 0.4 * np.linalg.norm(truth[injected], axis=1)), np.round(1000 * miss, 1)
    assert np.linalg.norm(offsets[~injected], axis=1).max() < 0.004


def test_shipped_asset_is_what_the_tool_computes_and_helps_p1(tool, arrays):
    ref = tool.load_reference(REFERENCE)
    base = open_body_keypoint_sets()["blazepose33"]
    cal = real_blazepose_offsets()
    new, offsets, joints, selected, _, _ = tool.calibrate(base, ref["participants"]["P0"], arrays, rounds=3,
                                                          log=lambda *_: None)
    np.testing.assert_array_equal(joints, cal["joints"])
    np.testing.assert_array_equal(selected, cal["corrected"])
    np.testing.assert_allclose(offsets, cal["offsets"], atol=5e-4)
    np.testing.assert_allclose(new.vertex_weights, real_blazepose_set().vertex_weights, atol=5e-3)
    # validation on the other participant: the direct 3D fit is closer with the new definitions
    p1 = ref["participants"]["P1"]
    names = list(base.names)
    fit_old = tool.fit_direct(tool.make_model(base, arrays), base.name, p1, names=names)
    real = real_blazepose_set()
    fit_new = tool.fit_direct(tool.make_model(real, arrays), real.name, p1, names=names)
    e_old, _ = tool.keypoint_error(fit_old, p1)
    e_new, _ = tool.keypoint_error(fit_new, p1)
    assert e_new < e_old - 0.002, (e_old, e_new)
    # and its shoulders are nearer the reference's width
    widths = [tool.shoulder_width(x, names) for x in (p1, fit_old["keypoints"], fit_new["keypoints"])]
    assert abs(widths[2] - widths[0]) < abs(widths[1] - widths[0])
