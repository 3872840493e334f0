"""SMPLR (seed 003): landmarks, Eq. 1-3 features, the shipped weights, and ``init: {type: smplr|mean}``."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import roma
import torch

from fitkit import shipped
from fitkit.body import load_body_model
from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe
from fitkit.init import InitError
from fitkit.init.landmarks import (JL_NAMES, JL_PARENTS, LANDMARKS, NUM_JL, joints_and_landmarks,
                                   landmark_vertex_ids)
from fitkit.init.mean import mean_body_pose
from fitkit.init.smplr import (DEFAULT_SMPLR_PATH, SMPLR, input_centre, load_smplr, pose_features,
                               rot6d_to_matrix, shape_features, relative_vectors)
from fitkit.init.smplr_train import TrainSettings, evaluate_smplr, train_smplr
from fitkit.priors.files import file_sha256
from fitkit.priors.pose_data import mirror_body_pose


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10)


@pytest.fixture(scope="module")
def net():
    return load_smplr()


def _rest(model, B=1):
    z = lambda k: torch.zeros(B, k)  # noqa: E731
    return z(3), z(69), z(10)


# ---------------------------------------------------------------- landmarks and features

def test_landmarks_lie_where_their_rays_leave_the_body(model):
    assert len(LANDMARKS) == 18 and NUM_JL == 42 and len(JL_PARENTS) == 42
    assert all(0 <= p < i for i, p in enumerate(JL_PARENTS) if i > 0)
    jl = joints_and_landmarks(model, *_rest(model))[0]
    verts = model(*_rest(model), vertices="all").vertices[0]
    J = {n: jl[i] for i, n in enumerate(SMPL_JOINT_NAMES)}
    for k, (name, start, direction, parent) in enumerate(LANDMARKS):
        p = torch.stack([J[s] for s in start]).mean(0)
        d = torch.tensor(direction, dtype=torch.float32)
        rel = jl[24 + k] - p
        assert float(rel @ d) > 0.01, name                                  # ahead of the start
        assert float((rel - (rel @ d) * d).norm()) < 0.02, name              # on the ray
        # nothing of the mesh lies farther along the ray (it is where the ray leaves the body)
        vr = verts - p
        along = vr @ d
        near = (vr - along[:, None] * d).norm(dim=1) < 0.02
        assert float(along[near].max()) <= float(rel @ d) + 1e-6, name
        assert JL_PARENTS[24 + k] == SMPL_JOINT_NAMES.index(parent)


def test_left_and_right_landmarks_mirror_each_other(model):
    jl = joints_and_landmarks(model, *_rest(model))[0]
    for i, name in enumerate(JL_NAMES):
        if name.startswith("left_") and i >= 24:
            j = JL_NAMES.index("right_" + name[5:])
            mirrored = jl[j] * torch.tensor([-1.0, 1.0, 1.0])
            assert float((jl[i] - mirrored).norm()) < 0.01, name


def test_pose_and_shape_features_follow_eq_1_to_3(model):
    g = torch.Generator().manual_seed(0)
    orient, pose, betas = 0.5 * torch.randn(4, 3, generator=g), 0.3 * torch.randn(4, 69, generator=g), \
        torch.randn(4, 10, generator=g)
    jl = joints_and_landmarks(model, orient, pose, betas)
    rest = joints_and_landmarks(model, *_rest(model))
    template = relative_vectors(rest)[0].norm(dim=-1)
    N = pose_features(jl).reshape(4, 41, 3)
    assert torch.allclose(N.norm(dim=-1), torch.ones(4, 41), atol=1e-5)          # Eq. 1: unit vectors
    assert torch.allclose(shape_features(rest, template), torch.zeros(1, 41), atol=1e-6)  # Eq. 3 at the template
    R = roma.random_rotmat(1, generator=g)[0]
    moved = jl @ R.T + torch.tensor([1.0, -2.0, 3.0])
    assert torch.allclose(shape_features(moved, template), shape_features(jl, template), atol=1e-5)
    assert torch.allclose(pose_features(2.0 * jl), pose_features(jl), atol=1e-5)   # scale-free


def test_rot6d_gives_rotations_and_input_centre_handles_missing_hips():
    R = rot6d_to_matrix(torch.randn(10, 6))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert torch.allclose(torch.det(R), torch.ones(10), atol=1e-5)
    pts = torch.randn(2, 25, 3)
    conf = torch.ones(2, 25)
    conf[1, 12] = 0                                                           # body25 left hip missing
    c = input_centre(pts, conf, "body25")
    assert torch.allclose(c[0, 0], 0.5 * (pts[0, 12] + pts[0, 9]))
    assert torch.allclose(c[1, 0], pts[1][conf[1] > 0].mean(0), atol=1e-6)


def test_mean_pose_is_left_right_symmetric():
    m = mean_body_pose(1)[0].numpy()
    assert np.allclose(mirror_body_pose(m[None])[0], m, atol=1e-4)
    assert float(np.abs(m).max()) > 0.1                                      # not the zero pose


# ---------------------------------------------------------------- the shipped weights

def test_shipped_weights_match_their_model_card(net):
    card = shipped.card_path(DEFAULT_SMPLR_PATH).read_text()
    sha = file_sha256(shipped.weight_path(DEFAULT_SMPLR_PATH))
    assert sha in card
    assert set(net.input_formats) == {"jl42", "body25", "blazepose33"}
    for name, row in net.metadata["metrics"].items():            # every reported row is in the card
        assert re.search(re.escape(name), card), name


@pytest.mark.parametrize("fmt,flat", [("jl42", False), ("body25", False), ("blazepose33", False), ("body25", True)])
def test_smplr_beats_the_mean_pose_on_held_out_bodies(net, model, fmt, flat):
    m = evaluate_smplr(net, model, fmt, n=200, seed=5, flat=flat)
    assert m["smplr_mpjpe"] < 0.75 * m["mean_init_mpjpe"], m


def test_more_input_noise_costs_accuracy(net, model):
    clean = evaluate_smplr(net, model, "jl42", n=200, seed=5, noise=0.0)
    noisy = evaluate_smplr(net, model, "jl42", n=200, seed=5, noise=2.0)
    assert clean["smplr_mpjpe"] < noisy["smplr_mpjpe"]
    assert clean["dae_jl_error"] < 25.0, clean          # clean, complete points pass nearly unchanged


def test_training_is_deterministic_for_a_seed(model):
    s = TrainSettings(steps_regress=3, steps_finetune=2, steps_dae=2, batch=16, seed=3)
    a = train_smplr(model, ("body25",), s, log=None).state_dict()
    b = train_smplr(model, ("body25",), s, log=None).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_smplr_names_bad_files(tmp_path):
    missing = tmp_path / "none.pt"
    with pytest.raises(FileNotFoundError, match="none.pt"):
        load_smplr(missing)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="bad.pt"):
        load_smplr(bad)
    other = tmp_path / "other.pt"
    torch.save({"kind": "something/1"}, other)
    with pytest.raises(Exception, match="not a fitkit SMPLR"):
        load_smplr(other)
    assert isinstance(SMPLR(), SMPLR)


# ---------------------------------------------------------------- init: {type: ...} through the engine

def _example(model, n=6, seed=2):
    ex = make_keypoint_example(model, n, seed=seed, noise_px=1.0, dropout=0.0)
    k3 = ex.gt["keypoints_3d"].float()
    obs3 = dataclasses.replace(ex.observations, keypoints3d=torch.cat([k3, torch.ones_like(k3[..., :1])], -1))
    return ex, obs3


def _recipe(init):
    r = load_recipe("demo")
    r.init.update(init)
    r.stages = r.stages[:1]
    for st in r.stages:
        st.solver = dict(st.solver, iterations=2)
    return r


def test_init_types_through_the_engine(model):
    ex, obs3 = _example(model)
    res = fit(model, obs3, _recipe({"type": "mean"}))
    assert res.info["init"] == {"type": "mean", "fallback_rows": []}
    # the camera stage frees only global_orient and transl, so the pose stays the mean pose
    assert torch.allclose(res.params["body_pose"], mean_body_pose(len(obs3)), atol=1e-5)

    res = fit(model, obs3, _recipe({"type": "smplr"}))
    gt = model(ex.gt["global_orient"].float(), ex.gt["body_pose"].float(), ex.gt["betas"].float()).joints
    start = model(res.params["global_orient"], res.params["body_pose"], res.params["betas"]).joints
    mean = model(res.params["global_orient"], mean_body_pose(len(obs3)), torch.zeros(len(obs3), 10)).joints
    err = lambda a: float((a - a[:, :1] - gt + gt[:, :1]).norm(dim=-1).mean())  # noqa: E731
    assert err(start) < err(mean)                                              # SMPLR's pose beats the mean pose


def test_smplr_init_falls_back_for_unreadable_frames(model):
    _, obs3 = _example(model, n=3)
    k3 = obs3.keypoints3d.clone()
    k3[1, :, 3] = 0
    k3[1, :3, 3] = 1                                                            # only 3 points seen
    with pytest.warns(UserWarning, match="1 of 3 frame"):
        res = fit(model, dataclasses.replace(obs3, keypoints3d=k3), _recipe({"type": "smplr"}))
    assert res.info["init"]["fallback_rows"] == [1]
    assert torch.allclose(res.params["body_pose"][1], mean_body_pose(1)[0], atol=1e-5)


def test_init_errors_name_the_problem(model):
    ex, obs3 = _example(model, n=2)
    coco = make_keypoint_example(model, 2, keypoint_format="coco25").observations
    with pytest.raises(InitError, match="coco25.*no SMPLR denoiser"):
        fit(model, coco, _recipe({"type": "smplr"}))
    with pytest.raises(InitError, match="init.type must be one of"):
        fit(model, obs3, _recipe({"type": "hmr"}))
    with pytest.raises(InitError, match=r"unknown key\(s\) \['procrustes'\]"):
        fit(model, obs3, _recipe({"type": "mean", "procrustes": True}))
    with pytest.raises(InitError, match="init file"):
        fit(model, obs3, _recipe({"type": "smplr"}), init={"betas": np.zeros((2, 10))})
    with pytest.raises(InitError, match="dense_iuv"):
        fit(model, obs3, _recipe({"type": "danet"}))
    with pytest.raises(InitError, match="gender"):
        fit(model, obs3, _recipe({"type": "smplr", "gender": "other"}))
