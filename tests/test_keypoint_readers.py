"""Keypoint readers: OpenPose folders, COCO annotations and results, .npy arrays, dispatch."""
import json
import re

import numpy as np
import pytest
import torch

from fitkit.errors import ObservationError, ObservationWarning
from fitkit.io.keypoint_readers import (read_coco_json, read_keypoint_array, read_keypoints,
                                        read_openpose_folder)
from fitkit.io.observations import Observations, save_observations


def _person(x0, y0, scale, k=25, conf=0.9):
    """A fake BODY_25 / COCO person: points on a grid starting at (x0, y0) spanning ``scale`` pixels."""
    t = np.linspace(0, 1, k)
    pts = np.stack([x0 + scale * t, y0 + scale * t[::-1] ** 2, np.full(k, conf)], axis=1)
    return pts


def _openpose_file(path, people, **extra):
    data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": p.reshape(-1).tolist(),
                                        "face_keypoints_2d": []} for p in people], **extra}
    path.write_text(json.dumps(data))


@pytest.fixture
def openpose_dir(tmp_path):
    folder = tmp_path / "op"
    folder.mkdir()
    small, large = _person(10, 10, 20), _person(100, 50, 200)
    # Written out of order: the reader sorts by name.
    _openpose_file(folder / "clip_000002_keypoints.json", [])
    _openpose_file(folder / "clip_000000_keypoints.json", [small, large])
    _openpose_file(folder / "clip_000001_keypoints.json", [large])
    (folder / "notes.txt").write_text("ignored")
    return folder, small, large


# ---------------------------------------------------------------- OpenPose

def test_openpose_folder_largest_person(openpose_dir):
    folder, small, large = openpose_dir
    obs = read_openpose_folder(folder, image_size=(640, 480))
    assert isinstance(obs, Observations) and obs.keypoint_format == "body25"
    assert obs.frame_ids == ["clip_000000", "clip_000001", "clip_000002"]
    assert obs.source == str(folder)
    np.testing.assert_allclose(obs.keypoints[0].numpy(), large, rtol=1e-6)
    np.testing.assert_allclose(obs.keypoints[1].numpy(), large, rtol=1e-6)
    assert obs.keypoints[2].abs().sum() == 0  # no people: no evidence
    assert obs.has_evidence.tolist() == [True, True, False]
    assert obs.image_size.tolist() == [[640.0, 480.0]] * 3 and obs.image_paths is None


def test_openpose_person_first_and_index(openpose_dir):
    folder, small, large = openpose_dir
    first = read_openpose_folder(folder, image_size=(640, 480), person="first")
    np.testing.assert_allclose(first.keypoints[0].numpy(), small, rtol=1e-6)
    second = read_openpose_folder(folder, image_size=(640, 480), person=1)
    np.testing.assert_allclose(second.keypoints[0].numpy(), large, rtol=1e-6)
    assert second.has_evidence.tolist() == [True, False, False]  # frame 1 has one person only
    with pytest.raises(ObservationError, match="person"):
        read_openpose_folder(folder, image_size=(640, 480), person="tallest")
    with pytest.raises(ObservationError, match="person"):
        read_openpose_folder(folder, image_size=(640, 480), person=-1)


def test_openpose_largest_ignores_unconfident_points(tmp_path):
    spread_but_unconfident = _person(0, 0, 500, conf=0.0)
    spread_but_unconfident[0, 2] = 0.5  # a single confident point: zero area
    compact = _person(100, 100, 30)
    _openpose_file(tmp_path / "a_keypoints.json", [spread_but_unconfident, compact])
    obs = read_openpose_folder(tmp_path, image_size=(640, 480))
    np.testing.assert_allclose(obs.keypoints[0].numpy(), compact, rtol=1e-6)


def test_openpose_per_frame_image_sizes(openpose_dir):
    folder, _, _ = openpose_dir
    sizes = {"clip_000000": (640, 480), "clip_000001": (1280, 720), "clip_000002": (100, 50)}
    obs = read_openpose_folder(folder, image_size=sizes)
    assert obs.image_size.tolist() == [[640, 480], [1280, 720], [100, 50]]
    obs = read_openpose_folder(folder, image_size=np.array([[1, 2], [3, 4], [5, 6]]))
    assert obs.image_size[2].tolist() == [5, 6]
    with pytest.raises(ObservationError, match="clip_000002"):
        read_openpose_folder(folder, image_size={"clip_000000": (1, 1), "clip_000001": (1, 1)})
    with pytest.raises(ObservationError, match="image_size is required"):
        read_openpose_folder(folder)
    with pytest.raises(ObservationError, match="'image_size'.*N=3"):
        read_openpose_folder(folder, image_size=np.ones((2, 2)))


def test_openpose_image_folder_gives_paths_and_sizes(openpose_dir, tmp_path):
    cv2 = pytest.importorskip("cv2")
    folder, _, _ = openpose_dir
    images = tmp_path / "images"
    images.mkdir()
    for i, (w, h) in enumerate([(64, 48), (32, 16), (20, 10)]):
        cv2.imwrite(str(images / f"clip_00000{i}.png"), np.zeros((h, w, 3), np.uint8))
    obs = read_openpose_folder(folder, image_folder=images)
    assert obs.image_size.tolist() == [[64, 48], [32, 16], [20, 10]]
    assert obs.image_paths == [str(images / f"clip_00000{i}.png") for i in range(3)]
    (images / "clip_000001.png").unlink()
    obs = read_openpose_folder(folder, image_folder=images, image_size=(64, 48))
    assert obs.image_paths[1] == "" and obs.image_paths[0].endswith("clip_000000.png")
    with pytest.raises(ObservationError, match="no image found"):
        read_openpose_folder(folder, image_folder=images)


def test_openpose_malformed_json_names_the_file(openpose_dir):
    folder, _, _ = openpose_dir
    bad = folder / "clip_000001_keypoints.json"
    bad.write_text('{"people": [ {"pose_keypoints_2d": [1, 2, ')
    with pytest.raises(ObservationError, match=re.escape(str(bad)) + ": malformed JSON"):
        read_openpose_folder(folder, image_size=(640, 480))


@pytest.mark.parametrize("content, field, words", [
    ({"people": [{"pose_keypoints_2d": [0.0] * 54}]}, "people[0].pose_keypoints_2d", ["54 numbers", "75", "COCO-18"]),
    ({"people": [{"pose_keypoints_2d": [0.0] * 75}, {"pose_keypoints_2d": [0.0] * 74}]},
     "people[1].pose_keypoints_2d", ["74 numbers"]),
    ({"people": [{"pose_keypoints_2d": [0.0] * 74 + ["x"]}]}, "people[0].pose_keypoints_2d", ["numbers", "'x'"]),
    ({"people": [{"pose_keypoints_2d": [0.0] * 74 + [None]}]}, "people[0].pose_keypoints_2d", ["None"]),
    ({"people": [{"face_keypoints_2d": []}]}, "people[0].pose_keypoints_2d", ["missing"]),
    ({"people": {"0": []}}, "people", ["list"]),
    ({"persons": []}, "people", ["missing"]),
    ([1, 2, 3], "people", ["missing"]),
])
def test_openpose_wrong_content_names_file_and_field(tmp_path, content, field, words):
    path = tmp_path / "f_keypoints.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ObservationError) as info:
        read_openpose_folder(tmp_path, image_size=(640, 480))
    message = str(info.value)
    assert message.startswith(f"{path}: field '{field}'"), message
    for word in words:
        assert word in message, (word, message)


def test_openpose_confidence_above_one_is_rejected(tmp_path):
    p = _person(1, 1, 10)
    p[3, 2] = 1.2
    _openpose_file(tmp_path / "a_keypoints.json", [p])
    with pytest.raises(ObservationError, match=re.escape(f"{tmp_path}: field 'keypoints' confidence")):
        read_openpose_folder(tmp_path, image_size=(640, 480))


def test_openpose_nan_is_repaired_and_counted(tmp_path):
    p = _person(1, 1, 10)
    p[3, 0] = np.nan
    _openpose_file(tmp_path / "a_keypoints.json", [p])  # json.dumps writes NaN, json.load reads it
    with pytest.warns(ObservationWarning, match="1 keypoint"):
        obs = read_openpose_folder(tmp_path, image_size=(640, 480))
    assert obs.invalid_keypoints == 1 and obs.keypoints[0, 3, 2] == 0


def test_openpose_folder_errors(tmp_path):
    with pytest.raises(ObservationError, match="no \\*_keypoints.json"):
        read_openpose_folder(tmp_path, image_size=(640, 480))
    with pytest.raises(ObservationError, match="not a folder"):
        read_openpose_folder(tmp_path / "nope", image_size=(640, 480))
    _openpose_file(tmp_path / "a_keypoints.json", [])
    with pytest.raises(ObservationError, match="only BODY_25"):
        read_openpose_folder(tmp_path, image_size=(640, 480), format="coco25")
    with pytest.raises(ObservationError, match="unknown keypoint format"):
        read_openpose_folder(tmp_path, image_size=(640, 480), format="h36m")


# ---------------------------------------------------------------- COCO

def _coco_kps(person23, v):
    """COCO [x, y, v] * 17 list from a (23, 3) array, visibility ``v`` (scalar or (17,))."""
    pts = person23[:17].copy()
    pts[:, 2] = v
    return pts.reshape(-1).tolist()


@pytest.fixture
def coco_annotations(tmp_path):
    a = _person(10, 10, 30, k=23)
    b = _person(50, 60, 300, k=23)
    c = _person(5, 5, 100, k=23)
    vis = np.array([2, 1, 0] + [2] * 14)
    foot = _person(200, 300, 40, k=6)
    foot[:, 2] = [2, 2, 0, 1, 2, 2]
    data = {
        "images": [
            {"id": 7, "file_name": "val2017/000000000007.jpg", "width": 640, "height": 480},
            {"id": 3, "file_name": "val2017/000000000003.jpg", "width": 800, "height": 600},
            {"id": 9, "file_name": "val2017/000000000009.jpg", "width": 320, "height": 240},
        ],
        "annotations": [
            {"image_id": 7, "keypoints": _coco_kps(a, 2), "bbox": [5, 5, 40, 40], "iscrowd": 0},
            {"image_id": 7, "keypoints": _coco_kps(b, vis), "foot_kpts": foot.reshape(-1).tolist(),
             "bbox": [40.0, 50.0, 320.0, 310.0], "iscrowd": 0},
            {"image_id": 7, "keypoints": _coco_kps(_person(0, 0, 600, k=23), 2), "iscrowd": 1},
            {"image_id": 9, "keypoints": _coco_kps(c, 2), "bbox": [0, 0, 110, 110]},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "person_keypoints_val.json"
    path.write_text(json.dumps(data))
    return path, a, b, c, vis, foot


def test_coco_annotation_file(coco_annotations):
    path, a, b, c, vis, foot = coco_annotations
    obs = read_coco_json(path)
    assert obs.keypoint_format == "coco25" and obs.source == str(path)
    assert obs.frame_ids == ["000000000007", "000000000003", "000000000009"]  # image list order
    assert obs.image_paths == ["val2017/000000000007.jpg", "val2017/000000000003.jpg", "val2017/000000000009.jpg"]
    assert obs.image_size.tolist() == [[640, 480], [800, 600], [320, 240]]
    kp = obs.keypoints.numpy()
    # image 7: the largest non-crowd person is b; v 2 and 1 -> confidence 1, v 0 -> 0
    np.testing.assert_allclose(kp[0, :17, :2], b[:17, :2], rtol=1e-6)
    assert kp[0, :17, 2].tolist() == [1, 1, 0] + [1] * 14
    np.testing.assert_allclose(kp[0, 17:, :2], foot[:, :2], rtol=1e-6)
    assert kp[0, 17:, 2].tolist() == [1, 1, 0, 1, 1, 1]
    # image 3 has no annotation: no evidence
    assert not obs.has_evidence[1] and kp[1].sum() == 0
    # image 9: 17 points only, feet with confidence 0
    np.testing.assert_allclose(kp[2, :17, :2], c[:17, :2], rtol=1e-6)
    assert kp[2, 17:, 2].tolist() == [0] * 6
    assert obs.bbox is None  # image 3 has no box


def test_coco_bbox_is_converted_to_pixel_centres(coco_annotations, tmp_path):
    path, *_ = coco_annotations
    data = json.loads(path.read_text())
    data["images"] = [im for im in data["images"] if im["id"] != 3]
    trimmed = tmp_path / "trimmed.json"
    trimmed.write_text(json.dumps(data))
    obs = read_coco_json(trimmed, image_root="/coco/images")
    assert obs.bbox.tolist() == [[39.5, 49.5, 359.5, 359.5], [-0.5, -0.5, 109.5, 109.5]]
    assert obs.image_paths[0] == "/coco/images/val2017/000000000007.jpg"


def test_coco17_ignores_feet_and_first_person(coco_annotations):
    path, a, b, *_ = coco_annotations
    obs = read_coco_json(path, keypoint_format="coco17", person="first")
    assert obs.keypoint_format == "coco25"
    np.testing.assert_allclose(obs.keypoints[0, :17, :2].numpy(), a[:17, :2], rtol=1e-6)
    assert obs.keypoints[:, 17:].abs().sum() == 0
    with pytest.raises(ObservationError, match="'coco25' or 'coco17'"):
        read_coco_json(path, keypoint_format="body25")


def test_coco_results_layout(tmp_path):
    p1 = _person(10, 20, 50, k=133)
    p1[:, 2] = np.linspace(0.1, 0.9, 133)
    p2 = _person(0, 0, 400, k=17, conf=0.3)
    p3 = _person(5, 5, 100, k=17, conf=0.7)
    results = [
        {"image_id": 42, "category_id": 1, "keypoints": p1.reshape(-1).tolist(), "score": 0.9},
        {"image_id": 5, "category_id": 1, "keypoints": p2.reshape(-1).tolist(), "score": 0.2},
        {"image_id": 5, "category_id": 1, "keypoints": p3.reshape(-1).tolist(), "score": 0.8},
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    obs = read_coco_json(path, image_size=(640, 480))
    assert obs.frame_ids == ["5", "42"] and obs.image_paths is None  # sorted image ids
    np.testing.assert_allclose(obs.keypoints[0, :17].numpy(), p2, rtol=1e-6)  # largest
    np.testing.assert_allclose(obs.keypoints[1, :23].numpy(), p1[:23], rtol=1e-6)  # confidences kept, feet 17-22
    by_score = read_coco_json(path, image_size={5: (100, 100), 42: (200, 100)}, person="score")
    np.testing.assert_allclose(by_score.keypoints[0, :17].numpy(), p3, rtol=1e-6)
    assert by_score.image_size.tolist() == [[100, 100], [200, 100]]
    with pytest.raises(ObservationError, match="no width/height for image id 5"):
        read_coco_json(path)
    with pytest.raises(ObservationError, match="image id 42"):
        read_coco_json(path, image_size={5: (100, 100)})


def test_coco_results_with_separate_image_list(tmp_path, coco_annotations):
    ann_path, *_ = coco_annotations
    p = _person(10, 20, 50, k=17, conf=0.5)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": 9, "keypoints": p.reshape(-1).tolist(), "score": 0.5}]))
    obs = read_coco_json(path, images=ann_path)
    assert obs.frame_ids == ["000000000007", "000000000003", "000000000009"]
    assert obs.has_evidence.tolist() == [False, False, True]
    np.testing.assert_allclose(obs.keypoints[2, :17].numpy(), p, rtol=1e-6)
    path.write_text(json.dumps([{"image_id": 1234, "keypoints": p.reshape(-1).tolist()}]))
    with pytest.raises(ObservationError, match="1234 is not in the image list"):
        read_coco_json(path, images=ann_path)


def test_coco_result_confidence_out_of_range(tmp_path):
    p = _person(10, 20, 50, k=17, conf=1.02)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([{"image_id": 1, "keypoints": p.reshape(-1).tolist()}]))
    with pytest.raises(ObservationError, match=re.escape(f"{path}: field 'keypoints' confidence must lie in [0, 1]")):
        read_coco_json(path, image_size=(640, 480))


@pytest.mark.parametrize("mutate, field, words", [
    (lambda d: d["annotations"][1].update(keypoints=[0.0] * 50), "annotations[1].keypoints", ["50 numbers"]),
    (lambda d: d["annotations"][1].update(foot_kpts=[0.0] * 17), "annotations[1].foot_kpts", ["17 numbers"]),
    (lambda d: d["annotations"][0].update(keypoints=[-1.0] * 51), "annotations[0].keypoints", ["negative visibility"]),
    (lambda d: d["annotations"][3].pop("keypoints"), "annotations[3].keypoints", ["missing"]),
    (lambda d: d["annotations"][2].pop("image_id"), "annotations[2].image_id", ["missing"]),
    (lambda d: d["annotations"][0].update(image_id=99), "annotations.image_id", ["99", "not in the image list"]),
    (lambda d: d["images"][0].pop("id"), "images[0].id", ["missing"]),
    (lambda d: d["images"][1].update(width="wide"), "images[1].width", ["number"]),
    (lambda d: d.pop("images"), "images", ["missing"]),
    (lambda d: d.update(annotations={}), "annotations", ["list"]),
])
def test_coco_malformed_names_file_and_field(coco_annotations, tmp_path, mutate, field, words):
    path, *_ = coco_annotations
    data = json.loads(path.read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ObservationError) as info:
        read_coco_json(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: field '{field}'"), message
    for word in words:
        assert word in message, (word, message)


def test_coco_unreadable(tmp_path):
    with pytest.raises(ObservationError, match="not found"):
        read_coco_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ObservationError, match=re.escape(f"{bad}: malformed JSON")):
        read_coco_json(bad)
    bad.write_text('"a string"')
    with pytest.raises(ObservationError, match="expected a COCO annotation object"):
        read_coco_json(bad)


# ---------------------------------------------------------------- arrays and dispatch

def test_keypoint_array_with_and_without_confidence(tmp_path):
    xy = np.random.default_rng(0).uniform(0, 100, (4, 33, 2))
    np.save(tmp_path / "xy.npy", xy)
    obs = read_keypoint_array(tmp_path / "xy.npy", "mediapipe", (640, 480), dtype=torch.float64)
    assert obs.keypoint_format == "blazepose33" and obs.keypoints.dtype == torch.float64
    np.testing.assert_array_equal(obs.keypoints[..., :2].numpy(), xy)
    assert (obs.keypoints[..., 2] == 1).all()
    xyc = np.concatenate([xy, np.full((4, 33, 1), 0.5)], axis=2)
    np.save(tmp_path / "xyc.npy", xyc.astype(np.float32))
    obs = read_keypoint_array(tmp_path / "xyc.npy", "blazepose33", (640, 480), frame_ids=list("abcd"))
    assert (obs.keypoints[..., 2] == 0.5).all() and obs.frame_ids == list("abcd")
    with pytest.raises(ObservationError, match=re.escape(f"{tmp_path / 'xyc.npy'}: field 'keypoints' has shape "
                                                         "(4, 33, 3), expected (N, 25, 3)")):
        read_keypoint_array(tmp_path / "xyc.npy", "body25", (640, 480))
    np.save(tmp_path / "flat.npy", np.zeros((33, 3)))
    with pytest.raises(ObservationError, match="field 'keypoints' has shape \\(33, 3\\)"):
        read_keypoint_array(tmp_path / "flat.npy", "blazepose33", (640, 480))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ObservationError, match="pickles"):
        read_keypoint_array(tmp_path / "obj.npy", "blazepose33", (640, 480))


def test_read_keypoints_dispatches_on_the_path(tmp_path, openpose_dir, coco_annotations):
    folder, _, large = openpose_dir
    from_folder = read_keypoints(folder, image_size=(640, 480))
    assert from_folder.keypoint_format == "body25" and len(from_folder) == 3
    assert read_keypoints(folder, image_size=(640, 480), keypoint_format="openpose").frame_ids == from_folder.frame_ids

    single = read_keypoints(folder / "clip_000001_keypoints.json", image_size=(640, 480))
    assert single.frame_ids == ["clip_000001"]
    np.testing.assert_allclose(single.keypoints[0].numpy(), large, rtol=1e-6)

    coco_path = coco_annotations[0]
    assert read_keypoints(coco_path).keypoint_format == "coco25"

    np.save(tmp_path / "kp.npy", np.zeros((2, 25, 2)))
    assert len(read_keypoints(tmp_path / "kp.npy", keypoint_format="body25", image_size=(10, 10))) == 2
    with pytest.raises(ObservationError, match="needs keypoint_format and image_size"):
        read_keypoints(tmp_path / "kp.npy")

    npz = save_observations(tmp_path / "obs.npz", from_folder)
    back = read_keypoints(npz, image_size=(640, 480), keypoint_format="body25", person="largest")
    assert torch.equal(back.keypoints, from_folder.keypoints)
    with pytest.raises(ObservationError, match="'keypoint_format' is 'body25'"):
        read_keypoints(npz, keypoint_format="coco25")
    with pytest.raises(ObservationError, match="'image_size' differs"):
        read_keypoints(npz, image_size=(320, 240))

    other = tmp_path / "kp.txt"
    other.write_text("1 2 3")
    with pytest.raises(ObservationError, match="cannot tell the keypoint file type"):
        read_keypoints(other)
    with pytest.raises(ObservationError, match="no such file"):
        read_keypoints(tmp_path / "missing.json")
