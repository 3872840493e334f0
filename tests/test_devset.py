"""fitkit.devset.pose2sim_demo on a synthetic 4-view scene, and the committed datasets/pose2sim_multiperson files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fitkit.devset.pose2sim_demo import (
    KEYPOINT_NAMES,
    LIMBS,
    MIRROR,
    Settings,
    build_reference,
    flip_spans,
    main_tracks,
    mirror_permutation,
    reference_arrays,
)
from fitkit.io.cameras import make_calib, project_points, read_cameras
from fitkit.io.observations import Observations, load_observations

from .synthetic_cameras import look_at

DATA = Path(__file__).resolve().parents[1] / "datasets" / "pose2sim_multiperson"


def _cameras():
    K = np.array([[1500.0, 0, 544], [0, 1500.0, 960], [0, 0, 1]])
    cams = {}
    for i, a in enumerate(np.linspace(0, 2 * np.pi, 4, endpoint=False) + 0.4):
        R, t = look_at((4.5 * np.cos(a), 4.5 * np.sin(a), 1.6))
        cams[f"cam0{i + 1}"] = make_calib(f"cam0{i + 1}", K, [-0.01, 0.005, 0.0, 0.0], R, t, (1088, 1920))
    return cams


def _person(T, offset, seed):
    """(T, 33, 3) a stick person: each keypoint at a fixed place in a body frame, walking along x."""
    rng = np.random.default_rng(seed)
    body = rng.uniform([-0.15, -0.1, 0.0], [0.15, 0.1, 1.7], (33, 3))
    for i, name in enumerate(KEYPOINT_NAMES):  # left on +y, right on -y: the sides differ
        if name.startswith("left"):
            body[i, 1] = abs(body[i, 1]) + 0.1
        elif name.startswith("right"):
            body[i, 1] = -abs(body[i, 1]) - 0.1
    walk = np.stack([np.linspace(0, 0.6, T), np.zeros(T), np.zeros(T)], axis=1)
    return body[None] + walk[:, None] + np.asarray(offset)


def _view_obs(view, cam, people, T, rng, noise=0.7):
    """One view's Observations: the rows of each (track name, person index, frames, flipped frames)."""
    rows_kp, ids, tracks, numbers = [], [], [], []
    for track, X, frames, flipped in people:
        uv = project_points(X, cam)  # (T, 33, 2) distorted pixels
        for f in frames:
            kp = np.concatenate([uv[f] + rng.normal(0, noise, (33, 2)), np.full((33, 1), 0.9)], axis=1)
            if f in flipped:
                kp = kp[MIRROR]
            rows_kp.append(kp)
            ids.append(f"frame_{f:06d}_{track}")
            tracks.append(f"{view}_{track}")
            numbers.append(f)
    return Observations.from_arrays(np.stack(rows_kp), "blazepose33", np.tile([1088.0, 1920.0], (len(ids), 1)),
                                    frame_ids=ids, track_ids=tracks, frame_numbers=numbers, source=f"{view}.npz")


def test_mirror_permutation():
    names = list(KEYPOINT_NAMES)
    assert names[MIRROR[names.index("left_wrist")]] == "right_wrist"
    assert MIRROR[0] == 0 and (MIRROR[MIRROR] == np.arange(33)).all()
    assert list(mirror_permutation(["nose", "right_eye", "left_eye"])) == [0, 2, 1]


def test_synthetic_scene_association_swaps_and_reference():
    T = 30
    cams = _cameras()
    A = _person(T, (-0.6, 0.0, 0.0), seed=1)
    B = _person(T, (0.6, 0.5, 0.0), seed=2)
    C = _person(T, (2.5, -2.0, 0.0), seed=3)   # a bystander, seen by cam01 only
    rng = np.random.default_rng(0)
    allf = range(T)
    spec = {
        # track ids differ per view; in cam02 B is split into two tracks; cam03 swaps A's labels for frames 10-19
        "cam01": [("p0", A, allf, ()), ("p1", B, allf, ()), ("p2", C, allf, ())],
        "cam02": [("p0", B, range(0, 12), ()), ("p1", A, allf, ()), ("p3", B, range(12, T), ())],
        "cam03": [("p0", A, allf, set(range(10, 20))), ("p1", B, range(0, 25), ())],
        "cam04": [("p1", A, allf, ()), ("p0", B, allf, ())],
    }
    obs = {v: _view_obs(v, cams[v], spec[v], T, rng) for v in spec}
    ref = build_reference(obs, cams, T, Settings())
    arrays = reference_arrays(ref)
    assert list(arrays["participants"]) == ["P0", "P1"] and arrays["points3d"].shape == (2, T, 33, 3)
    # which participant is A: the one whose main cam01 track is p0
    a = [i for i in range(2) if arrays["tracks"][i][0] == "cam01_p0"]
    assert len(a) == 1
    a, b = a[0], 1 - a[0]
    assert list(arrays["tracks"][a]) == ["cam01_p0", "cam02_p1", "cam03_p0", "cam04_p1"]
    assert list(arrays["tracks"][b][[0, 2, 3]]) == ["cam01_p1", "cam03_p1", "cam04_p0"]
    assert set(arrays["track_of"][b][:, 1]) == {"cam02_p0", "cam02_p3"}   # both fragments
    assert (arrays["track_of"][b][25:, 2] == "").all()                     # B leaves cam03 at frame 25
    assert "cam01_p2" not in arrays["track_of"]                            # the bystander is left out
    # the swapped labels are found, and only there
    assert flip_spans(arrays["flipped"][a][:, 2]) == [(10, 19)]
    assert not arrays["flipped"][a][:, [0, 1, 3]].any() and not arrays["flipped"][b].any()
    # the reference is the truth within the detection noise
    err = np.linalg.norm(arrays["points3d"][a] - A, axis=-1)
    assert np.nanmax(err) < 0.01
    assert np.nanmax(np.linalg.norm(arrays["points3d"][b] - B, axis=-1)) < 0.01
    assert (arrays["view_mean_error"] < 1.5).all()
    assert arrays["clean"].all()
    assert (arrays["num_views"][b][25:, LIMBS] == 3).all()
    assert main_tracks(np.array([["x", ""], ["y", ""], ["x", ""]])) == ["x", ""]


def test_a_corrupted_view_point_is_rejected_in_the_reference():
    T = 6
    cams = _cameras()
    A = _person(T, (0.0, 0.0, 0.0), seed=4)
    rng = np.random.default_rng(1)
    obs = {v: _view_obs(v, cams[v], [("p0", A, range(T), ())], T, rng) for v in cams}
    wrist = KEYPOINT_NAMES.index("left_wrist")
    kp = obs["cam02"].keypoints.clone()
    kp[:, wrist, :2] += 120.0  # cam02's left wrist is wrong in every frame
    obs["cam02"].keypoints = kp
    settings = Settings(num_people=1)
    arrays = reference_arrays(build_reference(obs, cams, T, settings))
    used = arrays["view_used"][0]
    assert not used[:, wrist, 1].any() and used[:, wrist, [0, 2, 3]].all()
    assert (arrays["view_errors"][0][:, wrist, 1] > 100).all()
    assert np.nanmax(np.linalg.norm(arrays["points3d"][0] - A, axis=-1)) < 0.01


# ---------------------------------------------------------------- the committed dev set

needs_data = pytest.mark.skipif(not (DATA / "reference.npz").is_file(), reason="datasets/pose2sim_multiperson not built")


@needs_data
def test_committed_dev_set_shapes_people_and_reprojection():
    cams = read_cameras(DATA / "calibration.json")
    ref = np.load(DATA / "reference.npz")
    summary = json.loads((DATA / "summary.json").read_text())
    views = list(ref["views"])
    assert views == ["cam01", "cam02", "cam03", "cam04"]
    P, F = ref["points3d"].shape[:2]
    assert P == 2 and F == 100 and ref["points3d"].shape == (2, 100, 33, 3)
    assert ref["flipped"].shape == (2, 100, 4) and ref["clean"].shape == (2, 100)
    assert ref["view_errors"].shape == (2, 100, 33, 4) and ref["track_of"].shape == (2, 100, 4)
    total = 0
    for vi, view in enumerate(views):
        obs = load_observations(DATA / f"{view}.npz")
        assert obs.keypoint_format == "blazepose33" and obs.keypoints3d is not None
        assert (obs.image_size.numpy() == [1088, 1920]).all()
        masks = np.load(DATA / "masks" / f"{view}.npz")
        assert masks["masks"].shape == (len(obs), 480, 272) and list(masks["track_ids"]) == obs.track_ids
        for p in range(P):
            # both participants are in every view, on tracks of that view's file
            assert (ref["track_of"][p, :, vi] != "").sum() >= 20, (p, view)
            assert set(ref["track_of"][p, :, vi]) - {""} <= set(obs.track_ids)
        # the reference reprojects into the view as reported
        rows = {(t, f): i for i, (t, f) in enumerate(zip(obs.track_ids, obs.frame_numbers))}
        kp = obs.keypoints.numpy()
        errs = []
        for p in range(P):
            uv = project_points(ref["points3d"][p].astype(np.float64), cams[view])
            for f in range(F):
                t = ref["track_of"][p, f, vi]
                if not t:
                    continue
                obs_kp = kp[rows[(t, f)]]
                if ref["flipped"][p, f, vi]:
                    obs_kp = obs_kp[MIRROR]
                used = ref["view_used"][p, f, :, vi]
                errs.extend(np.linalg.norm(uv[f, used] - obs_kp[used, :2], axis=-1))
        errs = np.array(errs)
        total += len(errs)
        assert abs(errs.mean() - ref["view_mean_error"][vi]) < 0.05, view
        assert abs(summary["view_mean_error_px"][view] - errs.mean()) < 0.05
        assert errs.mean() < 20.0 and np.median(errs) < 12.0, view
    assert total > 10000
    assert ref["clean"].sum() >= 30
