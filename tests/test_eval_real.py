"""The real dev-set evaluation (fitkit.eval.real) on a small slice of the committed data, its scores
against hand-made oracles, and the cue checks of the hypotheses layer it relies on."""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.eval.real import acceptance, evaluate, load_tracks, markdown_table, score
from fitkit.fitting.hypotheses import cue_disagreement, cue_facings, swap_labels

LIMBS = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
         "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def _rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


@pytest.fixture(scope="module")
def model():
    return load_body_model("open_real", num_betas=10)  # the video recipe's body


@pytest.fixture(scope="module")
def track():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_tracks(participants=["P1"], views=["cam04"], max_frames=30)[0]


def test_scores_against_hand_made_oracles():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(5, 12, 3)) * 0.3
    # an upright torso (y down): hips and shoulders across x, so its normal is horizontal
    ref[:, 6:8] = [[0.15, 0.0, 0.0], [-0.15, 0.0, 0.0]]
    ref[:, 0:2] = [[0.2, -0.5, 0.0], [-0.2, -0.5, 0.0]]
    frames = np.arange(5)
    moved = 1.3 * ref @ _rot_y(30.0).T + np.array([0.5, -0.2, 3.0])  # a similarity of the reference
    s = score(moved, ref, frames, LIMBS)
    assert s["pa_mpjpe"] < 1e-6
    assert s["facing_deg"] == pytest.approx(30.0, abs=1e-6)
    shifted = score(ref + np.array([0.1, 0.2, 0.3]), ref, frames, LIMBS)  # a translation: hip-aligned 0
    assert shifted["mpjpe_hip"] < 1e-9 and shifted["accel"] < 1e-9
    bumped = ref.copy()
    bumped[2, :, 0] += 0.01  # one frame moved by 1 cm along x: accelerations 10, 20, 10 mm
    acc = score(bumped, ref, frames, LIMBS)["accel"]
    assert acc == pytest.approx(np.mean([10.0, 20.0, 10.0]), rel=1e-9)


def test_track_slice_is_in_the_cameras_frame(track):
    assert track.person == "P1" and track.view == "cam04"
    assert len(track.frames) == 30 and track.ok.sum() >= 20
    # the reference's hips lie in front of the camera, a few meters away
    z = track.ref_cam[track.ok][:, 6:8, 2]
    assert bool((z > 1.0).all() and (z < 15.0).all())
    assert np.allclose(track.obs.intrinsics[0].numpy()[2], [0, 0, 1])


def test_fit_beats_mediapipe_and_its_start_on_a_slice(model, track):
    sets = ["stages.1.solver.iterations=20", "stages.2.solver.iterations=30", "hypotheses.yaw=[0]",
            "hypotheses.swap=false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = evaluate(model, [track], ["mediapipe", "start", "video"], sets)
    by = {r["method"]: r["all"] for r in rows}
    assert by["video"]["pa_mpjpe"] < by["mediapipe"]["pa_mpjpe"]
    assert by["video"]["pa_mpjpe"] <= by["start"]["pa_mpjpe"]
    assert by["video"]["mpjpe_hip"] <= by["start"]["mpjpe_hip"]
    assert by["video"]["accel"] < by["mediapipe"]["accel"]
    assert np.isfinite(by["video"]["err2d_px"]) and by["video"]["err2d_px"] < 30
    acc = acceptance(rows, "video", "all", factor=1.0)[("P1", "cam04")]
    assert acc["start_pa"] and acc["accel"]
    table = markdown_table(rows, "all")
    assert table.count("\n") == 3 and "P1 cam04" in table


def test_cue_facings_reverse_under_a_full_swap(track):
    obs = track.obs
    n = len(obs)
    f = cue_facings(obs)
    both = cue_facings(swap_labels(obs, np.ones(n, bool), np.ones(n, bool)))
    lower = cue_facings(swap_labels(obs, np.zeros(n, bool), np.ones(n, bool)))
    seen = np.abs(f).sum(1) > 0
    assert seen.sum() >= 20
    np.testing.assert_allclose((f * f).sum(1)[seen], 1.0, atol=1e-9)
    np.testing.assert_allclose((f * both).sum(1)[seen], -1.0, atol=1e-9)  # both normals reversed
    np.testing.assert_allclose((f * lower).sum(1)[seen], 0.0, atol=1e-9)  # only the hips' normal
    # consecutive frames of a real detection agree (no turn-round at 60 fps)
    assert float(np.median((f[1:] * f[:-1]).sum(1)[seen[1:] & seen[:-1]])) > 0.9


def test_cue_disagreement_is_zero_for_the_body_itself(model):
    torch.manual_seed(0)
    n = 3
    params = {"global_orient": 0.3 * torch.randn(n, 3), "body_pose": 0.2 * torch.randn(n, model.body_pose_dim),
              "betas": torch.zeros(n, 10)}
    with torch.no_grad():
        pts = model(params["global_orient"], params["body_pose"], params["betas"], None,
                    keypoints="blazepose33", validate=False).keypoints
    k3 = torch.cat([0.8 * pts @ torch.as_tensor(_rot_y(50.0), dtype=pts.dtype).T + 0.1,
                    torch.ones(n, 33, 1)], -1)  # a similarity of the body's own points

    class Obs:
        keypoints3d = k3
        keypoint_format = "blazepose33"

        def __len__(self):
            return n

    err = cue_disagreement(model, params, Obs())
    assert float(np.abs(err).max()) < 1e-5
    other = dict(params, body_pose=params["body_pose"] + 0.3)
    assert float(cue_disagreement(model, other, Obs()).min()) > 0.01
