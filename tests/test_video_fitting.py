"""Video fitting end to end: flow terms through the engine's sequence stages, missing flow,
gaps in a track, ``fitkit demo --video`` and ``fitkit fit --flow``.

The term-level recoveries are in tests/test_flow_terms.py; here the same kind of
motion goes through :func:`fitkit.fitting.engine.fit` (recipe, chunk plan,
:class:`~fitkit.fitting.sequence.SequenceObjective`, solver, stitching).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import yaml

from fitkit.body import load_body_model
from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.camera import default_focal, facing_camera_orient, make_intrinsics, project
from fitkit.cli import main
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe, recipe_from_dict
from fitkit.io.observations import Observations, save_observations
from fitkit.io.optical_flow import add_flow
from fitkit.io.params import load_result
from fitkit.terms.flow import gt_flow

H = W = 128
HIP = 0  # body_pose joint 0: the left hip
HIP_Z = 3 * HIP + 2  # its rotation about the camera-facing z axis: swings the leg in the image plane
STEP = (0.04, -0.03, 0.0)  # translation per frame, meters
SWING = 0.15  # hip rotation per frame, radians


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10)


def _K(n: int) -> torch.Tensor:
    f = default_focal(W, H)
    return make_intrinsics(f, f, (W - 1) / 2, (H - 1) / 2, batch_size=n)


def _motion(n: int) -> dict:
    """n frames: arms lowered, facing the camera 3 m away; every frame moves by STEP and
    swings the left hip by SWING."""
    t = torch.arange(n, dtype=torch.float32)[:, None]
    body_pose = torch.zeros(n, 69)
    body_pose[:, 3 * 15 + 2], body_pose[:, 3 * 16 + 2] = -0.9, 0.9  # shoulders
    body_pose[:, HIP_Z] = SWING * t[:, 0]
    transl = torch.tensor([[0.0, -0.25, 3.0]]) + t * torch.tensor([STEP])
    return {"global_orient": facing_camera_orient(n), "body_pose": body_pose, "betas": torch.zeros(n, 10),
            "transl": transl}


def _body(model, p, **kw):
    with torch.no_grad():
        return model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], **kw)


def _observations(model, gt, observed, flow_frames=None, **kw):
    """Exact BODY_25 keypoints on the frames ``observed`` (confidence 1; 0 elsewhere) and the
    true flow of ``gt`` on the frames ``flow_frames`` (default all; NaN elsewhere)."""
    n = gt["transl"].shape[0]
    K = _K(n)
    out = _body(model, gt, vertices="all", keypoints="body25")
    conf = torch.zeros(n, 25, 1)
    conf[list(observed)] = 1.0
    obs = Observations.from_arrays(torch.cat([project(out.keypoints, K), conf], -1), "body25", (W, H),
                                   intrinsics=K, **kw)
    flow = gt_flow(out.vertices, model.faces, K, (H, W))
    if flow_frames is not None:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[list(flow_frames)] = True
        flow[~keep] = float("nan")
    return add_flow(obs, flow)


def _recipe(terms: dict, solver: dict, chunk: int = 2):
    names = list(terms)
    return recipe_from_dict({
        "name": "video test", "camera": {"mode": "full"}, "init": {"transl": "keep"},
        "sequence": {"chunk": chunk, "overlap": 0}, "terms": terms,
        "stages": [{"name": "sequence", "sequence": True, "free": ["global_orient", "body_pose", "transl"],
                    "terms": names, "solver": solver}]}, "test recipe")


KEYPOINTS = {"type": "keypoints2d", "sigma": None, "confidence_power": 1}
#: Weak pull of body_pose towards the init: keeps the joints the flow barely sees (out-of-plane
#: bends, hands, feet) from drifting, which Adam's normalized steps do otherwise.
WEAK_INIT_PULL = {"type": "init_l2", "weight": 0.1, "params": {"body_pose": 1.0}}


# ---------------------------------------------------------------- two-frame recovery

# Per flow term: the term, its solver, and the bounds on frame 1 (measured values on CPU, float32,
# in the comments). Vertex flow sees every visible vertex's motion, so L-BFGS recovers the 3D body;
# the photometric term pins the motion in the image plane but only weakly its depth and
# out-of-plane turns (its docstring), hence a 3D bound of cm, not mm, and Adam (L-BFGS stops early
# on its piecewise-smooth energy).
CASES = {
    "vertex_flow": dict(
        term={"type": "vertex_flow", "weight": 0.01},
        solver={"type": "lbfgs", "iterations": 100},
        max_vertex_m=0.008,  # measured 3.3 mm (init 95 mm)
        max_ratio=0.1,
        max_px=0.2,  # measured 0.06 px (init 5.8 px)
        max_hip_deg=6.0),  # measured 2.5 deg (init 17 deg)
    "photometric_flow": dict(
        term={"type": "photometric_flow", "weight": 1000.0},
        solver={"type": "adam", "lr": 0.005, "iterations": 150, "patience": 150},
        max_vertex_m=0.03,  # measured 18 mm (init 95 mm): depth ~4 mm and a 1.5 deg turn
        max_ratio=0.35,
        max_px=0.6,  # measured 0.23 px (init 5.8 px)
        max_hip_deg=6.0),  # measured 2.8 deg
}


def _rotations(axis_angles: torch.Tensor) -> torch.Tensor:
    """(3J,) axis-angle -> (J, 3, 3) rotation matrices."""
    return axis_angle_to_matrix(axis_angles.reshape(-1, 3).double())


def _joint_angle_deg(pose_a: torch.Tensor, pose_b: torch.Tensor, joint: int) -> float:
    """Angle of the rotation between joint ``joint``'s rotations in two (3J,) poses."""
    Ra, Rb = _rotations(pose_a)[joint], _rotations(pose_b)[joint]
    cos = ((Ra.T @ Rb).trace() - 1) / 2
    return float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))


@pytest.mark.parametrize("name", sorted(CASES))
def test_flow_moves_an_unobserved_frame_to_the_truth(name, model):
    """Frame 0 has exact keypoints, frame 1 none: only the flow of pair (0, 1) says where
    frame 1 went (4 cm right, 3 cm up, the left leg swung by 0.15 rad). Frame 1 starts at
    the truth moved by 5 cm in x and y with the hip off by 0.3 rad."""
    case = CASES[name]
    gt = _motion(2)
    obs = _observations(model, gt, observed=[0])
    init = {k: v.clone() for k, v in gt.items()}
    init["transl"][1] += torch.tensor([0.05, -0.05, 0.0])
    init["body_pose"][1, HIP_Z] += 0.3
    recipe = _recipe({"keypoints": KEYPOINTS, "flow": case["term"], "pull": WEAK_INIT_PULL}, case["solver"])
    res = fit(model, obs, recipe, init)

    assert res.no_evidence.tolist() == [False, True]  # frame 1 is filled in by the flow alone
    assert (res.iterations > 0).all() and not res.nan.any()
    seq = res.info["sequence"]
    assert (seq["segments"], seq["chunks"], seq["chunk_frames"]) == (1, 1, 2)
    assert seq["pairs_without_cue"] == {"flow": 0}

    truth = _body(model, gt, vertices="all").vertices
    start, got = _body(model, init, vertices="all").vertices, _body(model, res.params, vertices="all").vertices
    err0 = (start - truth).norm(dim=-1).mean(dim=1)
    err = (got - truth).norm(dim=-1).mean(dim=1)
    assert float(err0[1]) > 0.08
    assert float(err[1]) < case["max_vertex_m"] and float(err[1]) < case["max_ratio"] * float(err0[1])
    assert float(err[0]) < 0.005  # frame 0 stays where its keypoints hold it
    K = _K(2)
    px0 = (project(start, K) - project(truth, K))[1].norm(dim=-1).mean()
    px = (project(got, K) - project(truth, K))[1].norm(dim=-1).mean()
    assert float(px0) > 5.0 and float(px) < case["max_px"]
    dt = (res.params["transl"][1] - gt["transl"][1]).abs()
    assert float(dt[:2].max()) < 0.006  # in the image plane: init 5 cm off; measured 3 / 2 mm
    assert _joint_angle_deg(res.params["body_pose"][1], gt["body_pose"][1], HIP) < case["max_hip_deg"]


# ---------------------------------------------------------------- missing flow

def test_missing_flow_is_reported_and_its_pair_skipped(model):
    """Three frames, keypoints on frames 0 and 1, none on frame 2; frame 1's flow map is all
    NaN. The pair (1, 2) has no cue (counted once: the last frame, which has no next frame,
    is not counted), so nothing reaches frame 2: it keeps its init exactly. With frame 1's
    flow given, the same fit moves it."""
    gt = _motion(3)
    init = {k: v.clone() for k, v in gt.items()}
    init["transl"][2] += torch.tensor([0.05, -0.05, 0.0])
    recipe = _recipe({"keypoints": KEYPOINTS, "flow": {"type": "vertex_flow", "weight": 0.01}},
                     {"type": "lbfgs", "iterations": 5}, chunk=3)

    holed = fit(model, _observations(model, gt, observed=[0, 1], flow_frames=[0]), recipe, init)
    assert holed.info["sequence"]["pairs_without_cue"] == {"flow": 1}
    assert holed.no_evidence.tolist() == [False, False, True]
    assert (holed.iterations > 0).all() and not holed.nan.any()
    assert all(bool(torch.isfinite(v).all()) for v in holed.params.values())
    # frame 2 keeps its init: the translation bit for bit, the rotations up to the quaternion
    # round trip of stitching (which may also flip the axis-angle of a half turn to its twin)
    assert torch.equal(holed.params["transl"][2], init["transl"][2])
    for key in ("global_orient", "body_pose"):
        torch.testing.assert_close(_rotations(holed.params[key][2]), _rotations(init[key][2]), atol=1e-6, rtol=0)

    full = fit(model, _observations(model, gt, observed=[0, 1]), recipe, init)
    assert full.info["sequence"]["pairs_without_cue"] == {"flow": 0}
    moved = (full.params["transl"][2] - init["transl"][2]).norm()
    assert float(moved) > 0.005


# ---------------------------------------------------------------- gaps

def _two_runs():
    """Six frames in two runs of constant-velocity motion (zero acceleration within each run);
    the second run is 0.6 m to the right, moving the other way with the hip swung."""
    gt = _motion(6)
    gt["body_pose"][:, HIP_Z] = 0.0
    t = torch.tensor([0.0, 1.0, 2.0])
    gt["transl"][:3, 0] = -0.3 + 0.02 * t
    gt["transl"][3:, 0] = 0.3 - 0.03 * t
    gt["body_pose"][3:, HIP_Z] = 0.4
    return gt


def test_a_gap_splits_the_track_and_acceleration_does_not_bridge_it(model):
    """Frame numbers [0, 1, 2, 5, 6, 7]: two segments. Starting at the truth with exact
    keypoints, a huge acceleration weight has nothing to correct inside either segment, so the
    fit stays at the truth. The same frames numbered 0..5 (one segment) make the jump between
    rows 2 and 3 an acceleration, and the same fit moves the bodies."""
    gt = _two_runs()
    recipe = _recipe({"keypoints": KEYPOINTS, "accel": {"type": "joint_acceleration", "weight": 1e4}},
                     {"type": "lbfgs", "iterations": 10}, chunk=8)

    gapped = fit(model, _observations(model, gt, range(6), frame_numbers=[0, 1, 2, 5, 6, 7]), recipe, gt)
    seq = gapped.info["sequence"]
    assert (seq["tracks"], seq["segments"], seq["chunks"], seq["chunk_frames"]) == (1, 2, 2, 3)
    torch.testing.assert_close(gapped.params["transl"], gt["transl"], atol=1e-4, rtol=0)
    torch.testing.assert_close(gapped.params["body_pose"], gt["body_pose"], atol=1e-3, rtol=0)
    assert float(gapped.energies["accel"].max()) < 1e-6

    joined = fit(model, _observations(model, gt, range(6), frame_numbers=[0, 1, 2, 3, 4, 5]), recipe, gt)
    assert (joined.info["sequence"]["segments"], joined.info["sequence"]["chunks"]) == (1, 1)
    assert float((joined.params["transl"] - gt["transl"]).norm(dim=1).max()) > 0.01


# ---------------------------------------------------------------- fitkit demo --video

def test_demo_video_runs_through_the_cli(tmp_path, capsys):
    """8 frames at 256 x 256 with the sequence stages cut short (video_flow.yaml: stage 2 is
    'smooth', stage 3 'flow')."""
    from PIL import Image

    stages = load_recipe("video_flow").stages  # the overrides below assume this layout
    assert [(st.name, st.sequence) for st in stages[1:]] == [("body", False), ("smooth", True), ("flow", True)]
    summary_path = tmp_path / "summary.json"
    assert main(["demo", "--video", "--frames", "8", "--clip", "punch",
                 "--set", "stages.1.solver.iterations=10", "--set", "stages.2.solver.iterations=5",
                 "--set", "stages.3.solver.iterations=2", "--format", "gif",
                 "--output", str(tmp_path / "out"), "--json", str(summary_path)]) == 0
    printed = capsys.readouterr().out
    rows = ("init", "per-frame", "temporal", "temporal + flow")
    for row in rows:
        assert f"\n  {row} " in printed
    assert "8 frames of the held-out clip 'humanoid3d_punch'" in printed

    summary = json.loads(summary_path.read_text())
    assert list(summary["rows"]) == list(rows) and summary["frames"] == 8
    for row in rows:
        metrics = summary["rows"][row]
        assert set(metrics) == {"mpjpe", "pa_mpjpe", "pve", "accel", "err2d_px", "height_spread_mm"}
        assert all(np.isfinite(v) for v in metrics.values())
    for row in ("temporal", "temporal + flow"):  # one shape per track
        assert summary["rows"][row]["height_spread_mm"] == 0.0
    assert summary["rows"]["per-frame"]["height_spread_mm"] > 0.0
    seq = summary["sequence"]
    assert (seq["tracks"], seq["chunks"], seq["chunk_frames"]) == (1, 1, 8)
    assert len(seq["pairs_without_cue"]) == 2 and set(seq["pairs_without_cue"].values()) == {0}  # both flow terms

    gif = tmp_path / "out" / "video_demo.gif"
    assert summary["files"] == [str(gif)]
    with Image.open(gif) as im:
        assert im.n_frames == 8 and im.size == (3 * 256, 256)  # input | per-frame | temporal + flow


# ---------------------------------------------------------------- fitkit fit --flow

TINY_SEQUENCE_RECIPE = {
    "name": "tiny_sequence",
    "body": {"model": "open", "gender": "neutral", "num_betas": 10},
    "camera": {"mode": "full"},
    "init": {"transl": "auto"},
    "sequence": {"chunk": 8, "overlap": 0},
    "terms": {"keypoints": {"type": "keypoints2d", "sigma": 100, "confidence_power": 1},
              "shape": {"type": "shape_l2", "weight": 1.0},
              "flow": {"type": "vertex_flow", "weight": 0.01, "vertex_stride": 8}},
    "stages": [{"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
                "terms": ["keypoints", "shape"], "solver": {"type": "lbfgs", "iterations": 5}},
               {"name": "sequence", "sequence": True, "free": ["global_orient", "body_pose", "transl"],
                "terms": ["keypoints", "shape", "flow"], "solver": {"type": "lbfgs", "iterations": 3}}],
}


@pytest.fixture()
def two_tracks(model, tmp_path):
    """6 frames, rows interleaving track 'a' (left, x = -0.5 m) and track 'b' (right,
    x = +0.5 m, another shape), 3 frames each; a recipe file; a folder with each track's true
    flow as <frame_id>.npy, but none for 'a_000001' (and, as usual, none for a track's last
    frame)."""
    gt = _motion(6)
    gt["transl"][:, 2] = 5.0
    gt["transl"][0::2, 0] -= 0.5
    gt["transl"][1::2, 0] += 0.5
    gt["betas"][1::2, 0] = 1.5
    ids = [f"{track}_{i:06d}" for i in range(3) for track in "ab"]
    obs = _observations(model, gt, range(6), frame_ids=ids, track_ids=list("ababab"),
                        frame_numbers=[0, 0, 1, 1, 2, 2])
    obs_path = save_observations(tmp_path / "obs.npz", dataclasses.replace(obs, dense=None))
    vertices = _body(model, gt, vertices="all").vertices
    flow_dir = tmp_path / "flow"
    flow_dir.mkdir()
    for rows in ([0, 2, 4], [1, 3, 5]):
        flow = gt_flow(vertices[rows], model.faces, _K(3), (H, W))
        for i, row in enumerate(rows[:-1]):
            if ids[row] != "a_000001":
                np.save(flow_dir / f"{ids[row]}.npy", flow[i].numpy())
    recipe_path = tmp_path / "tiny_sequence.yaml"
    recipe_path.write_text(yaml.safe_dump(TINY_SEQUENCE_RECIPE))
    return obs_path, flow_dir, recipe_path, ids


def test_fit_cli_with_flow_files_keeps_tracks_whole_and_the_frame_order(two_tracks, tmp_path, capsys):
    obs_path, flow_dir, recipe_path, ids = two_tracks
    out = tmp_path / "out"
    assert main(["fit", "--config", str(recipe_path), "--input", str(obs_path), "--flow", str(flow_dir),
                 "--output", str(out), "--batch-size", "4", "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "no flow file for 3 frame(s) (e.g. ['a_000001', 'a_000002', 'b_000002'])" in err

    res = load_result(out / "result.npz")
    assert res["frame_ids"].tolist() == ids
    # one batch per track (3 + 3 > 4 frames), reassembled in the rows' order: each row's body
    # sits on its own track's side of the image
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["frames_00000000_00000004.npz",
                                                                  "frames_00000001_00000005.npz"]
    assert (np.sign(res["transl"][:, 0]) == [-1, 1, -1, 1, -1, 1]).all()
    for rows in (slice(0, None, 2), slice(1, None, 2)):
        betas = res["betas"][rows]
        assert (betas == betas[0]).all()  # one shape per track, exactly
    assert not (res["betas"][0] == res["betas"][1]).all()
    assert res["iterations"].shape == (6, 2) and (res["iterations"] > 0).all()
    assert np.isfinite(res["energy_flow"]).all()


def test_fit_cli_refuses_a_flow_file_of_the_wrong_size(two_tracks, tmp_path, capsys):
    obs_path, flow_dir, recipe_path, ids = two_tracks
    bad = flow_dir / "b_000001.npy"
    assert bad.exists()
    np.save(bad, np.zeros((H + 1, W, 2), np.float32))
    out = tmp_path / "out"
    assert main(["fit", "--config", str(recipe_path), "--input", str(obs_path), "--flow", str(flow_dir),
                 "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fitkit fit: error:" in err and str(bad) in err and f"{W}x{H + 1}" in err
    assert not (out / "result.npz").exists()
