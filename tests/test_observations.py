"""Observations: construction, validation messages, NaN repair, subsets and the .npz file."""
import os
import re
import warnings
import zipfile

import numpy as np
import pytest
import torch

from fitkit.errors import FitkitError, ObservationError, ObservationWarning
from fitkit.body.keypoint_formats import get_format
from fitkit.io.observations import SCHEMA, Observations, load_observations, save_observations


def _kps(n=3, k=25, seed=0):
    rng = np.random.default_rng(seed)
    kp = np.empty((n, k, 3))
    kp[..., 0] = rng.uniform(0, 640, (n, k))
    kp[..., 1] = rng.uniform(0, 480, (n, k))
    kp[..., 2] = rng.uniform(0.1, 1.0, (n, k))
    return kp


def _full(n=3):
    K = np.tile(np.array([[800.0, 0, 319.5], [0, 810.0, 239.5], [0, 0, 1]]), (n, 1, 1))
    K[:, 0, 0] += np.arange(n)
    return Observations.from_arrays(
        _kps(n), "openpose", np.tile([640.0, 480.0], (n, 1)), intrinsics=K,
        bbox=np.tile([10.0, 20.0, 300.0, 400.0], (n, 1)) + np.arange(n)[:, None],
        frame_ids=[f"clip_{i}" for i in range(n)], image_paths=[f"/data/img_{i}.jpg" for i in range(n)][:-1] + [""],
        source="test")


def _same(a: Observations, b: Observations):
    assert a.keypoint_format == b.keypoint_format
    assert a.frame_ids == b.frame_ids and a.image_paths == b.image_paths
    for name in ("keypoints", "image_size", "intrinsics", "bbox"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


# ---------------------------------------------------------------- construction

def test_from_arrays_canonicalises_and_fills_defaults():
    obs = Observations.from_arrays(_kps(4), "OpenPose", (640, 480))
    assert obs.keypoint_format == "body25" and len(obs) == 4
    assert obs.frame_ids == ["000000", "000001", "000002", "000003"]
    assert obs.image_paths is None and obs.intrinsics is None and obs.bbox is None
    assert obs.image_size.shape == (4, 2) and torch.equal(obs.image_size[3], torch.tensor([640.0, 480.0]))
    assert obs.keypoints.dtype == torch.float32 and obs.invalid_keypoints == 0
    assert obs.source == "<arrays>" and obs.format.num_keypoints == 25
    assert obs.confidence.shape == (4, 25)


def test_from_arrays_takes_tensors_and_dtype():
    kp = torch.as_tensor(_kps(2))
    obs = Observations.from_arrays(kp, "body25", torch.tensor([[640, 480], [320, 240]]),
                                   intrinsics=torch.diag(torch.tensor([500.0, 500.0, 1.0], dtype=torch.float64)),
                                   dtype=torch.float64)
    assert obs.keypoints.dtype == torch.float64 and torch.equal(obs.keypoints, kp)
    assert obs.intrinsics.shape == (2, 3, 3) and float(obs.intrinsics[1, 2, 2]) == 1.0
    assert obs.image_size[1].tolist() == [320.0, 240.0]


def test_all_zero_confidence_frames_are_allowed_and_flagged():
    kp = _kps(3)
    kp[1, :, 2] = 0.0
    obs = Observations.from_arrays(kp, "body25", (640, 480))
    assert obs.has_evidence.tolist() == [True, False, True]


def test_keypoints_outside_the_image_are_allowed():
    kp = _kps(1)
    kp[0, 0, :2] = (-50.0, 900.0)
    obs = Observations.from_arrays(kp, "body25", (640, 480))
    assert obs.keypoints[0, 0, 0] == -50.0


def test_error_class_is_fitkit_and_value_error():
    assert issubclass(ObservationError, FitkitError) and issubclass(ObservationError, ValueError)


# ---------------------------------------------------------------- NaN repair

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_keypoints_become_confidence_zero_with_a_warning(bad):
    kp = _kps(3)
    kp[0, 4, 0] = bad
    kp[2, 7, 2] = bad
    kp[2, 8, 1] = bad
    with pytest.warns(ObservationWarning) as record:
        obs = Observations.from_arrays(kp, "body25", (640, 480), source="cam1.json")
    assert obs.invalid_keypoints == 3
    message = str(record[0].message)
    assert "cam1.json" in message and "'keypoints'" in message and "3 keypoint" in message
    assert "[0, 2]" in message
    for f, j in ((0, 4), (2, 7), (2, 8)):
        assert obs.keypoints[f, j].tolist() == [0.0, 0.0, 0.0]
    assert torch.isfinite(obs.keypoints).all()
    # untouched points keep their values
    assert obs.keypoints[1].tolist() == torch.tensor(kp[1], dtype=torch.float32).tolist()


def test_finite_input_gives_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Observations.from_arrays(_kps(2), "body25", (640, 480))


# ---------------------------------------------------------------- validation messages

def _kwargs(**over):
    base = dict(keypoints=_kps(3), keypoint_format="body25", image_size=(640, 480))
    base.update(over)
    return base


def _bad_conf(value):
    kp = _kps(3)
    kp[1, 5, 2] = value
    return kp


BAD = {
    "wrong_K": (_kwargs(keypoints=_kps(10, 17)),
                ["field 'keypoints' has shape (10, 17, 3), expected (N, 25, 3) for format 'body25'"]),
    "wrong_ndim": (_kwargs(keypoints=_kps(1)[0]), ["'keypoints'", "(25, 3)", "expected (N, 25, 3)"]),
    "no_conf_column": (_kwargs(keypoints=_kps(2)[..., :2]), ["'keypoints'", "(2, 25, 2)"]),
    "no_frames": (_kwargs(keypoints=np.zeros((0, 25, 3))), ["'keypoints'", "no frames"]),
    "non_numeric": (_kwargs(keypoints=np.full((1, 25, 3), "a")), ["'keypoints'", "numeric"]),
    "conf_above_1": (_kwargs(keypoints=_bad_conf(1.5)), ["'keypoints'", "[0, 1]", "frame 1", "keypoint 5",
                                                         "'left_shoulder'", "1.5"]),
    "conf_below_0": (_kwargs(keypoints=_bad_conf(-0.2)), ["'keypoints'", "[0, 1]", "-0.2"]),
    "unknown_format": (_kwargs(keypoint_format="h36m"), ["field 'keypoint_format'", "h36m", "body25"]),
    "format_not_str": (_kwargs(keypoint_format=25), ["field 'keypoint_format'", "string"]),
    "missing_keypoints": (_kwargs(keypoints=None), ["field 'keypoints'", "required"]),
    "missing_image_size": (_kwargs(image_size=None), ["field 'image_size'", "required"]),
    "size_rows": (_kwargs(image_size=np.ones((2, 2)) * 100), ["field 'image_size'", "(2, 2)", "N=3"]),
    "size_zero": (_kwargs(image_size=np.array([[640, 480], [640, 0], [640, 480]])),
                  ["field 'image_size'", "> 0", "frames [1]"]),
    "size_nan": (_kwargs(image_size=(np.nan, 480)), ["field 'image_size'", "finite"]),
    "K_rows": (_kwargs(intrinsics=np.tile(np.eye(3), (2, 1, 1))), ["field 'intrinsics'", "(2, 3, 3)", "N=3"]),
    "K_focal": (_kwargs(intrinsics=np.diag([-1.0, 1.0, 1.0])), ["field 'intrinsics'", "focal", "> 0"]),
    "K_last_row": (_kwargs(intrinsics=np.array([[500.0, 0, 1], [0, 500, 1], [0, 1, 1]])),
                   ["field 'intrinsics'", "last row"]),
    "K_nan": (_kwargs(intrinsics=np.diag([np.nan, 1.0, 1.0])), ["field 'intrinsics'", "finite"]),
    "bbox_rows": (_kwargs(bbox=np.zeros((4, 4))), ["field 'bbox'", "(4, 4)", "N=3"]),
    "bbox_inverted": (_kwargs(bbox=[10, 10, 5, 20]), ["field 'bbox'", "x1 >= x0"]),
    "bbox_inf": (_kwargs(bbox=[0, 0, np.inf, 20]), ["field 'bbox'", "finite"]),
    "ids_count": (_kwargs(frame_ids=["a", "b"]), ["field 'frame_ids'", "2 entries, expected 3"]),
    "ids_duplicate": (_kwargs(frame_ids=["a", "b", "a"]), ["field 'frame_ids'", "unique", "'a'"]),
    "ids_path": (_kwargs(frame_ids=["a", "x/b", "c"]), ["field 'frame_ids'", "'x/b'"]),
    "ids_empty": (_kwargs(frame_ids=["a", "", "c"]), ["field 'frame_ids'", "entry 1"]),
    "paths_count": (_kwargs(image_paths=["a.jpg"]), ["field 'image_paths'", "1 entries, expected 3"]),
    "paths_type": (_kwargs(image_paths=["a.jpg", None, "c.jpg"]), ["field 'image_paths'", "entry 1"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_input_names_source_and_field(case):
    kwargs, expected = BAD[case]
    kwargs = dict(kwargs)
    with pytest.raises(ObservationError) as info:
        Observations.from_arrays(kwargs.pop("keypoints"), kwargs.pop("keypoint_format"),
                                 kwargs.pop("image_size"), source="obs.npz", **kwargs)
    message = str(info.value)
    assert message.startswith("obs.npz: "), message
    for part in expected:
        assert part in message, (part, message)


def test_direct_construction_checks_shapes():
    obs = _full()
    with pytest.raises(ObservationError, match="'image_size' has shape \\(2, 2\\), expected \\(3, 2\\)"):
        Observations(obs.keypoints, "body25", obs.image_size[:2], source="direct")
    with pytest.raises(ObservationError, match="^direct: field 'keypoints'"):
        Observations(obs.keypoints[:, :17], "body25", obs.image_size, source="direct")
    with pytest.raises(ObservationError, match="'frame_ids' has 1 entries"):
        Observations(obs.keypoints, "body25", obs.image_size, frame_ids=["x"])
    alias = Observations(obs.keypoints, "openpose25", obs.image_size)
    assert alias.keypoint_format == "body25" and alias.frame_ids[0] == "000000"


# ---------------------------------------------------------------- subset / to

def test_subset_selects_rows_and_keeps_source():
    kp = _kps(4)
    kp[0, 0, 0] = np.nan
    with pytest.warns(ObservationWarning):
        obs = Observations.from_arrays(kp, "body25", np.array([[1.0, 2], [3, 4], [5, 6], [7, 8]]) * 100,
                                       bbox=np.arange(16.0).reshape(4, 4), frame_ids=list("abcd"),
                                       image_paths=["pa", "pb", "pc", "pd"], source="src.npz")
    for index, rows in ((2, [2]), (-1, [3]), (slice(1, 3), [1, 2]), ([3, 0], [3, 0]),
                        (torch.tensor([1, 3]), [1, 3]), (np.array([False, True, False, True]), [1, 3]),
                        (torch.tensor([True, False, False, False]), [0])):
        sub = obs.subset(index)
        assert sub.frame_ids == ["abcd"[r] for r in rows]
        assert sub.image_paths == [["pa", "pb", "pc", "pd"][r] for r in rows]
        assert torch.equal(sub.keypoints, obs.keypoints[rows])
        assert torch.equal(sub.image_size, obs.image_size[rows]) and torch.equal(sub.bbox, obs.bbox[rows])
        assert sub.source == "src.npz" and sub.invalid_keypoints == 1
    with pytest.raises(IndexError, match="out of range"):
        obs.subset([4])
    with pytest.raises(IndexError, match="mask"):
        obs.subset(np.array([True, False]))


def test_to_changes_dtype_of_every_tensor():
    obs = _full()
    obs64 = obs.to(dtype=torch.float64)
    for name in ("keypoints", "image_size", "intrinsics", "bbox"):
        assert getattr(obs64, name).dtype == torch.float64
        assert torch.equal(getattr(obs64, name).float(), getattr(obs, name))
    assert obs64.frame_ids == obs.frame_ids and obs64.frame_ids is not obs.frame_ids
    with pytest.raises(ObservationError, match="floating"):
        obs.to(dtype=torch.int64)


# ---------------------------------------------------------------- file round trip

def test_round_trip_with_every_field(tmp_path):
    obs = _full()
    path = save_observations(tmp_path / "obs.npz", obs)
    assert path == tmp_path / "obs.npz"
    back = load_observations(path)
    _same(obs, back)
    assert back.source == str(path) and back.invalid_keypoints == 0
    assert os.listdir(tmp_path) == ["obs.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as data:
        assert str(data["schema"]) == SCHEMA
        assert data["frame_ids"].dtype.kind == "U" and data["keypoint_format"].dtype.kind == "U"
        assert set(data.files) == {"schema", "keypoints", "keypoint_format", "image_size", "intrinsics",
                                   "bbox", "frame_ids", "image_paths"}


def test_round_trip_minimal_and_float64(tmp_path):
    obs = Observations.from_arrays(_kps(2, 23), "coco25", (1920, 1080), dtype=torch.float64)
    save_observations(tmp_path / "o.npz", obs)
    with np.load(tmp_path / "o.npz") as data:
        assert "intrinsics" not in data.files and "bbox" not in data.files and "image_paths" not in data.files
    back = load_observations(tmp_path / "o.npz", dtype=torch.float64)
    _same(obs, back)
    assert back.intrinsics is None and back.bbox is None and back.image_paths is None


def test_save_refuses_invalid_observations(tmp_path):
    obs = _full()
    obs.keypoints[0, 0, 0] = float("nan")  # bypassing from_arrays
    with pytest.raises(ObservationError, match="bad.npz: field 'keypoints'.*NaN"):
        save_observations(tmp_path / "bad.npz", obs)
    assert not any(tmp_path.iterdir())


def _write(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _good_arrays():
    return dict(schema=np.array(SCHEMA), keypoints=_kps(2).astype(np.float32), keypoint_format=np.array("body25"),
                image_size=np.array([[640.0, 480.0]] * 2))


def _without(name):
    arrays = _good_arrays()
    del arrays[name]
    return arrays


FILE_CASES = {
    "no_schema": (_without("schema"), ["field 'schema'", "not a fitkit observations file"]),
    "wrong_schema": (dict(_good_arrays(), schema=np.array("fitkit.observations/9")),
                     ["field 'schema'", "fitkit.observations/9", SCHEMA]),
    "no_keypoints": (_without("keypoints"), ["field 'keypoints'", "missing"]),
    "no_format": (_without("keypoint_format"), ["field 'keypoint_format'", "missing"]),
    "no_image_size": (_without("image_size"), ["field 'image_size'", "missing"]),
    "unknown_entry": (dict(_good_arrays(), intrinsic=np.eye(3)), ["field 'intrinsic'", "not part of schema"]),
    "format_bytes": (dict(_good_arrays(), keypoint_format=np.array(b"body25")), ["field 'keypoint_format'", "string"]),
    "ids_numeric": (dict(_good_arrays(), frame_ids=np.arange(2)), ["field 'frame_ids'", "strings"]),
    "bad_shape": (dict(_good_arrays(), keypoints=np.zeros((10, 17, 3))),
                  ["field 'keypoints' has shape (10, 17, 3), expected (N, 25, 3) for format 'body25'"]),
    "K_count": (dict(_good_arrays(), intrinsics=np.tile(np.eye(3), (3, 1, 1))), ["field 'intrinsics'", "(3, 3, 3)"]),
}


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_files_name_file_and_field(tmp_path, case):
    arrays, expected = FILE_CASES[case]
    path = _write(tmp_path / f"{case}.npz", **arrays)
    with pytest.raises(ObservationError) as info:
        load_observations(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for part in expected:
        assert part in message, (part, message)


def test_loading_nan_keypoints_from_a_file_warns_with_the_file_name(tmp_path):
    arrays = _good_arrays()
    arrays["keypoints"][1, 3, 2] = np.nan
    path = _write(tmp_path / "nan.npz", **arrays)
    with pytest.warns(ObservationWarning, match=re.escape(f"{path}: field 'keypoints' has 1 keypoint")):
        obs = load_observations(path)
    assert obs.invalid_keypoints == 1 and obs.keypoints[1, 3].tolist() == [0.0, 0.0, 0.0]


def test_unreadable_files(tmp_path):
    with pytest.raises(ObservationError, match="not found"):
        load_observations(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(ObservationError, match=re.escape(str(garbage))):
        load_observations(garbage)
    good = save_observations(tmp_path / "good.npz", _full())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ObservationError, match=re.escape(str(truncated))):
        load_observations(truncated)
    pickled = _write(tmp_path / "pickled.npz", **dict(_good_arrays(), frame_ids=np.array(["a", 1], dtype=object)))
    with pytest.raises(ObservationError, match=re.escape(str(pickled)) + ".*pickle"):
        load_observations(pickled)
    bare = tmp_path / "bare.npy"
    np.save(bare, _kps(1))
    with pytest.raises(ObservationError, match="single .npy array"):
        load_observations(bare)
    with pytest.raises(ObservationError, match="not a file"):
        load_observations(tmp_path)


def test_truncated_member_is_reported(tmp_path):
    # A zip whose member is not a valid .npy payload.
    path = tmp_path / "member.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("keypoints.npy", b"\x93NUMPY broken")
    with pytest.raises(ObservationError, match=re.escape(str(path))):
        load_observations(path)


def test_dense_cues_round_trip_subset_and_move(tmp_path):
    n, h, w = 3, 6, 8
    field = np.random.default_rng(0).normal(size=(n, h, w, 2))
    field[1, 2, 3] = np.nan  # no value at that pixel
    obs = Observations.from_arrays(np.zeros((n, 25, 3)), "body25", (w, h), dense={"displacements": field})
    back = load_observations(save_observations(tmp_path / "o.npz", obs))
    np.testing.assert_allclose(back.dense["displacements"].numpy(), field.astype(np.float32), equal_nan=True)
    sub = back.subset([2, 0])
    assert torch.equal(sub.dense["displacements"][0], back.dense["displacements"][2])
    assert back.to(dtype=torch.float64).dense["displacements"].dtype == torch.float64
    assert load_observations(save_observations(tmp_path / "k.npz", obs.subset([0]))).dense["displacements"].shape == (1, h, w, 2)


def test_dense_cues_must_sit_on_the_image_grid():
    kp = np.zeros((2, 25, 3))
    with pytest.raises(ObservationError, match=r"field 'dense_iuv' is 8x6 pixels but frame 0's image is 10x6"):
        Observations.from_arrays(kp, "body25", (10, 6), dense={"iuv": np.zeros((2, 6, 8, 3))})
    with pytest.raises(ObservationError, match=r"field 'dense_iuv' has 1 frames, expected 2"):
        Observations.from_arrays(kp, "body25", (8, 6), dense={"iuv": np.zeros((1, 6, 8, 3))})
    with pytest.raises(ObservationError, match=r"field 'dense_iuv' must be a floating-point \(N, H, W, C\)"):
        Observations.from_arrays(kp, "body25", (8, 6), dense={"iuv": np.zeros((2, 6, 8))})


# ---------------------------------------------------------------- 3D keypoints

def test_keypoints3d_round_trip_subset_and_errors(tmp_path):
    n, k = 3, get_format("body25").num_keypoints
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 100, (n, k, 2)), np.ones((n, k, 1))], -1)
    k3 = np.concatenate([rng.normal(size=(n, k, 3)), rng.uniform(0, 1, (n, k, 1))], -1)
    k3[1, 4, 2] = np.nan
    with pytest.warns(ObservationWarning, match="keypoints3d"):
        obs = Observations.from_arrays(kp, "body25", (100, 100), keypoints3d=k3)
    assert obs.keypoints3d.shape == (n, k, 4)
    assert torch.equal(obs.keypoints3d[1, 4], torch.zeros(4))          # NaN row -> not observed
    assert torch.allclose(obs.subset([2]).keypoints3d[0], torch.as_tensor(k3[2], dtype=torch.float32))
    path = save_observations(tmp_path / "obs.npz", obs)
    back = load_observations(path)
    assert torch.equal(back.keypoints3d, obs.keypoints3d)
    with pytest.raises(ObservationError, match=r"keypoints3d.*\(3, 25, 4\)"):
        Observations.from_arrays(kp, "body25", (100, 100), keypoints3d=k3[:, :, :3])
    bad = np.nan_to_num(k3)
    bad[0, 0, 3] = 2.0
    with pytest.raises(ObservationError, match="keypoints3d.*confidence"):
        Observations.from_arrays(kp, "body25", (100, 100), keypoints3d=bad)
