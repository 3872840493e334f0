"""Open pose data: DeepMimic retargeting, mirroring, the shipped file, the AMASS reader."""
import json

import numpy as np
import pytest
import roma
import torch

from fitkit.body import load_body_model
from fitkit.build.deepmimic import FRAME_WIDTH, SMPL_BODY_JOINTS, parse_clip, retarget_clip
from fitkit.errors import ModelFileError
from fitkit.priors.pose_data import (OPEN_POSE_DATA, load_pose_data, mirror_body_pose, mirror_global_orient,
                                     read_amass_npz)

J = {name: i + 1 for i, name in enumerate(SMPL_BODY_JOINTS)}  # SMPL joint ids
SWAP = [(1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)]


@pytest.fixture(scope="module")
def body():
    return load_body_model("open", num_betas=10, dtype=torch.float64)


def joints_of(body, global_orient, body_pose):
    n = len(body_pose)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    return body(t(global_orient), t(body_pose), torch.zeros(n, 10, dtype=torch.float64),
                torch.zeros(n, 3, dtype=torch.float64)).joints


def rest_frame(**angles):
    """A DeepMimic keyframe at rest (identity quaternions, zero angles) with some angles set."""
    f = np.zeros(FRAME_WIDTH)
    f[0] = 1 / 30
    f[2] = 0.9
    for off in (4, 8, 12, 16, 21, 25, 30, 35, 39):
        f[off] = 1.0  # w
    idx = {"right_knee": 20, "right_elbow": 29, "left_knee": 34, "left_elbow": 43}
    for k, v in angles.items():
        f[idx[k]] = v
    return f


def clip_of(frames):
    return parse_clip("test", json.dumps({"Loop": "none", "Frames": np.asarray(frames).tolist()}))


def test_mirror_is_the_reflected_body(body):
    """Oracle: posing the mirrored parameters gives the x-reflected skeleton with sides swapped
    (the open body is left-right symmetric at rest to 0.05 mm)."""
    data = load_pose_data("test")
    pick = np.arange(0, len(data), 37)
    go, bp = data.global_orient[pick], data.body_pose[pick]
    joints = joints_of(body, go, bp)
    mirrored = joints_of(body, mirror_global_orient(go), mirror_body_pose(bp))
    perm = list(range(24))
    for a, b in SWAP:
        perm[a], perm[b] = b, a
    expected = joints[:, perm].clone()
    expected[..., 0] *= -1
    assert (expected - mirrored).norm(dim=-1).max() < 2e-4
    np.testing.assert_allclose(mirror_body_pose(mirror_body_pose(bp)), bp)


def test_retarget_rest_frame_hangs_the_arms_and_splits_the_chest(body):
    chest = roma.rotvec_to_rotmat(torch.tensor([0.3, -0.2, 0.45], dtype=torch.float64))
    f = rest_frame()
    q = roma.rotmat_to_unitquat(chest)  # (x, y, z, w)
    f[8:12] = [q[3], q[0], q[1], q[2]]
    out = retarget_clip(clip_of([f, rest_frame()]), np.random.default_rng(0))
    pose = out["body_pose"].reshape(2, 23, 3)
    # spine1..3 compose to the chest, converted to SMPL axes (x -> z, y -> y, z -> -x)
    C = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]], dtype=torch.float64)
    spine = [roma.rotvec_to_rotmat(torch.from_numpy(pose[0, J[n] - 1])) for n in ("spine1", "spine2", "spine3")]
    torch.testing.assert_close(spine[0] @ spine[1] @ spine[2], C @ chest @ C.T)
    # rest: the hips/knees/ankles are zero, the arms hang down by the sides
    for n in ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "neck"):
        np.testing.assert_allclose(pose[1, J[n] - 1], 0, atol=1e-12)
    joints = joints_of(body, np.zeros((1, 3)), out["body_pose"][1:])[0]
    for side in ("left", "right"):
        sh, el, wr = joints[J[f"{side}_shoulder"]], joints[J[f"{side}_elbow"]], joints[J[f"{side}_wrist"]]
        assert el[1] < sh[1] - 0.2 and wr[1] < el[1] - 0.15  # pointing down
        assert abs(float(el[0] - sh[0])) < 0.08  # not sideways
    # the root position goes through the same axis change
    np.testing.assert_allclose(out["transl"][1], [0.0, 0.9, 0.0])


def test_retarget_knee_and_elbow_bend_the_right_way(body):
    f = rest_frame(left_knee=-1.0, right_knee=-1.0, left_elbow=1.2, right_elbow=1.2)
    out = retarget_clip(clip_of([f]), np.random.default_rng(0))
    joints = joints_of(body, np.zeros((1, 3)), out["body_pose"])[0]
    for side in ("left", "right"):  # SMPL faces +z
        assert joints[J[f"{side}_ankle"], 2] < joints[J[f"{side}_knee"], 2] - 0.2  # shin swings back
        assert joints[J[f"{side}_wrist"], 2] > joints[J[f"{side}_elbow"], 2] + 0.15  # forearm comes forward


def test_missing_joints_get_small_smooth_noise():
    frames = [rest_frame() for _ in range(200)]
    out = retarget_clip(clip_of(frames), np.random.default_rng(1))
    pose = out["body_pose"].reshape(200, 23, 3)
    wrist = pose[:, J["left_wrist"] - 1]
    assert 0.05 < wrist.std() < 0.2
    step = np.abs(np.diff(wrist, axis=0)).mean()
    assert step < 0.3 * np.abs(wrist).mean()  # correlated in time, not white


def test_parse_clip_errors():
    with pytest.raises(ValueError, match="bad: not a DeepMimic"):
        parse_clip("bad", "{not json")
    with pytest.raises(ValueError, match="bad: expected keyframes of 44"):
        parse_clip("bad", json.dumps({"Frames": [[0.0] * 43]}))


def test_shipped_pose_data_splits_by_clip():
    assert OPEN_POSE_DATA.is_file() and OPEN_POSE_DATA.stat().st_size < 5e6
    assert (OPEN_POSE_DATA.parent / "NOTICE").is_file()
    train, val, test = (load_pose_data(s) for s in ("train", "val", "test"))
    full = load_pose_data("all")
    assert len(train) + len(val) + len(test) == len(full) == 3620
    clips = [set(d.clip.tolist()) for d in (train, val, test)]
    assert not (clips[0] & clips[1]) and not (clips[0] & clips[2]) and not (clips[1] & clips[2])
    assert len(test) > 0.15 * len(full) and len(val) > 0.05 * len(full)
    for d in (train, val, test):  # every clip in both orientations
        assert d.mirrored.sum() * 2 == len(d)
    assert "sha256" in full.provenance["source"]
    assert np.isfinite(full.body_pose).all() and np.abs(full.body_pose).max() <= np.pi + 1e-4
    walk = full.clip_frames("humanoid3d_walk")
    assert (np.diff(walk.frame) == 1).all()


def test_read_amass_npz(tmp_path):
    T = 12
    poses = np.random.default_rng(0).normal(size=(T, 156)).astype(np.float32)
    path = tmp_path / "seq_poses.npz"
    np.savez(path, poses=poses, trans=np.zeros((T, 3)), betas=np.zeros(16), mocap_framerate=120.0)
    data = read_amass_npz(path, target_fps=30)
    assert len(data) == 3 and data.clip_fps[0] == 30
    np.testing.assert_array_equal(data.body_pose[:, :63], poses[::4, 3:66])
    assert (data.body_pose[:, 63:] == 0).all()
    np.savez(tmp_path / "bad.npz", trans=np.zeros((T, 3)))
    with pytest.raises(ModelFileError, match="bad.npz: field 'poses' is missing"):
        read_amass_npz(tmp_path / "bad.npz")
    with pytest.raises(ModelFileError, match="not found"):
        read_amass_npz(tmp_path / "none.npz")
