"""Sequence stages: segments, chunks, stitching, shared shape, temporal terms."""
import numpy as np
import pytest
import torch
import yaml

from fitkit.body import load_body_model
from fitkit.camera import default_focal, facing_camera_orient, make_intrinsics, project
from fitkit.errors import ObservationError
from fitkit.eval.metrics import accel_error, mpjpe
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import RecipeError, load_recipe, recipe_from_dict
from fitkit.fitting.sequence import plan_chunks, split_segments, stitch
from fitkit.io.observations import Observations, load_observations, save_observations
from fitkit.priors.pose_data import load_pose_data
from fitkit.terms.base import Batch, SequenceGrid, get_term_class


def _obs(n, **kw):
    return Observations.from_arrays(np.zeros((n, 25, 3)), "body25", (64, 64), **kw)


# ---------------------------------------------------------------- observations

def test_track_fields_round_trip_and_subset(tmp_path):
    obs = _obs(5, track_ids=["a", "a", "b", "b", 7], frame_numbers=[3, 4, 0, 2, 9])
    assert obs.track_ids == ["a", "a", "b", "b", "7"]
    back = load_observations(save_observations(tmp_path / "o.npz", obs))
    assert back.track_ids == obs.track_ids and back.frame_numbers == [3, 4, 0, 2, 9]
    # a subset keeps the time meaning of implicit frame numbers
    sub = _obs(4, track_ids=["a", "b", "a", "b"]).subset([2, 3])
    assert sub.frame_numbers == [1, 1]


def test_track_fields_are_checked():
    with pytest.raises(ObservationError, match="frame_numbers.*both frame 3 of track 'a'"):
        _obs(3, track_ids=["a", "a", "b"], frame_numbers=[3, 3, 3])
    with pytest.raises(ObservationError, match="frame_numbers.*whole numbers"):
        _obs(2, frame_numbers=[0.5, 1])
    with pytest.raises(ObservationError, match="track_ids.*3 entries"):
        _obs(2, track_ids=["a", "b", "c"])


# ---------------------------------------------------------------- planning

def test_segments_sort_by_time_and_split_at_gaps():
    obs = _obs(7, track_ids=["a"] * 4 + ["b"] * 3, frame_numbers=[2, 0, 1, 5, 10, 11, 12])
    segs = split_segments(obs)
    assert [(s.track, s.rows) for s in segs] == [("a", (1, 2, 0)), ("a", (3,)), ("b", (4, 5, 6))]


@pytest.mark.parametrize("length,chunk,overlap", [(8, 8, 3), (9, 8, 3), (20, 8, 3), (100, 16, 4), (37, 10, 0)])
def test_chunks_cover_every_frame_with_weights_summing_to_one(length, chunk, overlap):
    plan = plan_chunks(_obs(length), chunk, overlap)
    assert plan.frames.shape[1] <= chunk
    total = torch.zeros(length, dtype=torch.float64).index_add_(0, plan.frames[plan.valid], plan.weight[plan.valid])
    assert torch.allclose(total, torch.ones(length, dtype=torch.float64))
    starts = plan.frames[:, 0].tolist()
    ends = [int(plan.frames[c][plan.valid[c]][-1]) for c in range(plan.num_chunks)]
    for c in range(plan.num_chunks - 1):  # neighbours share at least `overlap` frames
        assert ends[c] - starts[c + 1] + 1 >= overlap
    # slots are consecutive frames
    d = plan.frames[:, 1:] - plan.frames[:, :-1]
    assert bool((d[plan.valid[:, 1:]] == 1).all())


def test_stitch_blends_overlaps_without_jumps():
    n = 20
    plan = plan_chunks(_obs(n), 8, 4)
    C, T = plan.frames.shape
    # every chunk holds the truth plus its own constant offset: stitched values move smoothly
    truth = torch.linspace(0, 1, n, dtype=torch.float64)[:, None].expand(n, 3)
    offset = torch.arange(C, dtype=torch.float64)[:, None, None] * 0.1
    slots = (truth[plan.frames] + offset).reshape(C * T, 3)
    out = stitch({"transl": slots}, plan)["transl"]
    steps = (out[1:] - out[:-1])[:, 0]
    # the chunks disagree by 0.1 per chunk; without blending a border would jump by 0.1
    assert float((steps - 1 / 19).max()) < 0.05
    assert bool((steps > 0).all())
    # rotations: the blend of two rotations lies on the arc between them
    a, b = torch.tensor([[0.0, 0.0, 0.2]]), torch.tensor([[0.0, 0.0, 0.6]])
    plan2 = plan_chunks(_obs(3), 2, 1)  # chunks (0, 1) and (1, 2): frame 1 is blended 50/50
    rot = torch.stack([a, a, b, b]).reshape(4, 3).double()
    blended = stitch({"global_orient": rot}, plan2)["global_orient"]
    assert torch.allclose(blended[1], torch.tensor([0.0, 0.0, 0.4], dtype=torch.float64), atol=1e-6)


# ---------------------------------------------------------------- temporal terms

def _grid_batch(joints=None, params=None, valid=None):
    C, T = valid.shape
    frames = torch.arange(C * T).reshape(C, T)
    return Batch(index=frames.reshape(-1), params=params or {}, init={}, K=torch.eye(3).expand(C * T, 3, 3),
                 pixel_scale=torch.ones(C * T), joints=joints, sequence=SequenceGrid(frames, valid))


def test_joint_acceleration_is_eq12_and_ignores_padding():
    torch.manual_seed(0)
    X = torch.randn(2, 5, 24, 3, dtype=torch.float64)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    r = get_term_class("joint_acceleration")().residuals(_grid_batch(X.reshape(10, 24, 3), valid=valid))
    r = r.reshape(2, 3, 24, 3)
    expect = X[:, :-2] + X[:, 2:] - 2 * X[:, 1:-1]  # Eq. 12 with the ground truth at zero
    assert torch.allclose(r[0], expect[0])
    assert torch.allclose(r[1, 0], expect[1, 0]) and bool((r[1, 1:] == 0).all())
    # against ground truth the same difference gives the accel metric
    gt = torch.randn_like(X[0])
    err = (get_term_class("joint_acceleration")().residuals(
        _grid_batch((X[0] - gt).reshape(5, 24, 3), valid=valid[:1])).reshape(3, 24, 3)).norm(dim=-1).mean()
    assert torch.allclose(err, accel_error(X[0], gt))


def test_pose_rate_matches_rotation_angle():
    angle = 0.3
    pose = torch.zeros(2, 69, dtype=torch.float64)
    pose[1, 3 * 4] = angle  # one joint rotates by `angle` between the frames
    r = get_term_class("pose_rate")().residuals(
        _grid_batch(params={"body_pose": pose}, valid=torch.ones(1, 2, dtype=torch.bool)))
    assert torch.allclose((r * r).sum(), torch.tensor(8 * np.sin(angle / 2) ** 2, dtype=torch.float64))


def test_temporal_term_outside_a_sequence_stage_is_refused():
    data = yaml.safe_load(load_recipe("demo").to_yaml())
    data["terms"]["accel"] = {"type": "joint_acceleration"}
    data["stages"][1]["terms"].append("accel")
    with pytest.raises(RecipeError, match="stages.1.terms.*accel.*sequence: true"):
        recipe_from_dict(data, "r")
    data["stages"][1]["sequence"] = True
    data["stages"][1]["solver"] = {"type": "lm"}
    rec = recipe_from_dict(data, "r")
    model = load_body_model("open", num_betas=10)
    with pytest.raises(RecipeError, match="cannot run a sequence stage"):
        fit(model, _obs(4), rec)
    for bad in ({"chunk": 1}, {"chunk": 8, "overlap": 8}, {"size": 3}):
        data["sequence"] = bad
        with pytest.raises(RecipeError, match="sequence"):
            recipe_from_dict(data, "r")


# ---------------------------------------------------------------- fitting

def _keypoint_video(model, T=30, tracks=1, noise_px=2.0, seed=0):
    """Consecutive held-out mocap poses seen from the front, with noisy BODY_25 keypoints."""
    data = load_pose_data("test")
    clip = data.clip_names.index("humanoid3d_punch")
    pose = torch.tensor(data.body_pose[(data.clip == clip) & ~data.mirrored][:T], dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    gts = []
    W = H = 256
    f = default_focal(W, H)
    K = make_intrinsics(f, f, W / 2 - 0.5, H / 2 - 0.5).expand(T * tracks, 3, 3)
    for k in range(tracks):
        betas = torch.zeros(T, 10)
        betas[:, 0] = 1.0 - k
        transl = torch.stack([torch.linspace(-0.3, 0.3, T) + 0.2 * k, torch.full((T,), 0.2), torch.full((T,), 4.0)], 1)
        gts.append({"global_orient": facing_camera_orient(T), "body_pose": pose, "betas": betas, "transl": transl})
    gt = {k: torch.cat([g_[k] for g_ in gts]) for k in gts[0]}
    with torch.no_grad():
        out = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], keypoints="body25")
    kp = project(out.keypoints, K) + noise_px * torch.randn(T * tracks, 25, 2, generator=g)
    obs = Observations.from_arrays(torch.cat([kp, torch.ones(T * tracks, 25, 1)], -1), "body25", (W, H),
                                   intrinsics=K, track_ids=[str(k) for k in range(tracks) for _ in range(T)])
    n = T * tracks
    init = {"global_orient": gt["global_orient"] + 0.1 * torch.randn(n, 3, generator=g),
            "body_pose": gt["body_pose"] + 0.15 * torch.randn(n, 69, generator=g),
            "transl": gt["transl"] + 0.05 * torch.randn(n, 3, generator=g)}
    return obs, gt, out.joints, init


def _smooth_recipe(chunk, overlap, free_betas=True, iterations=40):
    data = yaml.safe_load(load_recipe("demo").to_yaml())
    data["terms"]["accel"] = {"type": "joint_acceleration", "weight": 1000.0}
    data["sequence"] = {"chunk": chunk, "overlap": overlap}
    free = ["global_orient", "body_pose", "transl"] + (["betas"] if free_betas else [])
    data["stages"].append({"name": "smooth", "free": free, "terms": ["keypoints", "pose", "shape", "accel"],
                           "solver": {"type": "lbfgs", "iterations": iterations}, "sequence": True})
    return recipe_from_dict(data, "smooth")


def _joints(model, p):
    with torch.no_grad():
        return model(p["global_orient"], p["body_pose"], p["betas"], p["transl"]).joints


def test_sequence_stage_shares_shape_per_track_and_smooths():
    torch.manual_seed(0)
    model = load_body_model("open", num_betas=10)
    obs, gt, gt_joints, init = _keypoint_video(model, T=24, tracks=2)
    per_frame = fit(model, obs, load_recipe("demo"), init)
    seq = fit(model, obs, _smooth_recipe(chunk=10, overlap=3), init)
    info = seq.info["sequence"]
    assert info["tracks"] == 2 and info["chunks"] == 6 and info["consensus_passes"] == 1
    for k in range(2):
        rows = slice(24 * k, 24 * (k + 1))
        b = seq.params["betas"][rows]
        assert float((b - b[0]).abs().max()) == 0.0  # one shape per track, exactly
        assert float(per_frame.params["betas"][rows].std(0).max()) > 1e-3  # per-frame fitting varies it
    J1, J2 = _joints(model, per_frame.params), _joints(model, seq.params)
    for k in range(2):
        rows = slice(24 * k, 24 * (k + 1))
        a1, a2 = accel_error(J1[rows], gt_joints[rows]), accel_error(J2[rows], gt_joints[rows])
        assert float(a2) < 0.5 * float(a1)
        # no jump where chunks meet: the largest acceleration is not at a chunk border
        acc = (J2[rows][:-2] - 2 * J2[rows][1:-1] + J2[rows][2:]).norm(dim=-1).mean(dim=1)
        assert float(acc.max()) < float(accel_error(J1[rows], gt_joints[rows]))
    assert float(mpjpe(J2, gt_joints).mean()) <= 1.02 * float(mpjpe(J1, gt_joints).mean())


def test_a_frame_without_keypoints_is_filled_in_by_the_motion():
    model = load_body_model("open", num_betas=10)
    obs, gt, gt_joints, init = _keypoint_video(model, T=12)
    kp = obs.keypoints.clone()
    kp[6, :, 2] = 0  # frame 6 unobserved
    obs = Observations(kp, obs.keypoint_format, obs.image_size, intrinsics=obs.intrinsics)
    init["body_pose"][6] = 0.0  # and badly initialised
    res = fit(model, obs, _smooth_recipe(chunk=12, overlap=0, iterations=150), init)
    assert bool(res.no_evidence[6]) and int(res.no_evidence.sum()) == 1
    err = mpjpe(_joints(model, res.params), gt_joints)  # (12,) pelvis-aligned
    others = torch.cat([err[:6], err[7:]])
    # nothing observed frame 6, yet its pose is about as good as its observed neighbours'
    assert float(err[6]) < 1.5 * float(others.median()) and float(err[6]) < 0.1


def test_stitch_keeps_single_chunk_frames_exactly():
    # (pi, 0, 0) and (3.2, 0, 0) are valid axis-angle values a canonical round trip would change
    rot = torch.tensor([[np.pi, 0, 0], [3.2, 0, 0], [0.1, 0.2, 0.3], [0, 0, 0]], dtype=torch.float64)
    out = stitch({"global_orient": rot}, plan_chunks(_obs(4), 4, 0))["global_orient"]
    assert torch.equal(out, rot)
