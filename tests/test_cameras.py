"""Calibration readers (fitkit.io.cameras): hand-written files with known answers, the real
pose2sim dev-set .qca, lens distortion against OpenCV, apply_camera and bad input."""
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fitkit.io.cameras import (CameraError, apply_camera, make_calib, project_points,
                               read_camera, read_cameras, undistort_points)
from fitkit.io.observations import Observations, load_observations, save_observations

DATASET = Path(__file__).resolve().parents[1] / "datasets" / "pose2sim_multiperson"
DEV_QCA = DATASET / "Calib.qca.txt"
DEV_JSON = DATASET / "calibration.json"
TMP_QCA = Path("/tmp/pose2sim/x/Pose2Sim/Demo_MultiPerson/calibration/Calib.qca.txt")

ROT_Y90 = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # 90 degrees about y


def _rot(axis, angle):
    return cv2.Rodrigues(np.asarray(axis, float).reshape(3, 1) * angle)[0]


# ---------------------------------------------------------------- hand-written files

TOML = """\
[cam_front]
name = "front"
size = [ 1088.0, 1920.0]
matrix = [ [ 1000.0, 0.0, 543.5], [ 0.0, 1100.0, 959.5], [ 0.0, 0.0, 1.0]]
distortions = [ 0.01, -0.002, 0.001, 0.0005]
rotation = [ 0.0, {half_pi}, 0.0]
translation = [ 0.1, 0.2, 3.0]
fisheye = false

[cam_side]
name = "side"
size = [ 640.0, 480.0]
matrix = [ [ 500.0, 0.0, 319.5], [ 0.0, 500.0, 239.5], [ 0.0, 0.0, 1.0]]
distortions = [ 0.0, 0.0, 0.0, 0.0]
rotation = [ 0.0, 0.0, 0.0]
translation = [ 0.0, 0.0, 2.5]
fisheye = false

[metadata]
adjusted = false
error = 0.0
""".replace("{half_pi}", repr(math.pi / 2))


def test_toml_reader(tmp_path):
    path = tmp_path / "Calib_scene.toml"
    path.write_text(TOML)
    cams = read_cameras(path)
    assert list(cams) == ["front", "side"]
    front = cams["front"]
    assert front.image_size == (1088, 1920)
    np.testing.assert_array_equal(front.K, [[1000, 0, 543.5], [0, 1100, 959.5], [0, 0, 1]])
    np.testing.assert_array_equal(front.dist, [0.01, -0.002, 0.001, 0.0005])
    np.testing.assert_allclose(front.R, ROT_Y90, atol=1e-12)  # Rodrigues (0, pi/2, 0)
    np.testing.assert_array_equal(front.t, [0.1, 0.2, 3.0])
    assert front.source == str(path)
    # x_cam = R x_world + t: the world point (-3, 0, 0) sits 3 m + 3 m in front of the camera.
    np.testing.assert_allclose(front.R @ [-3.0, 0, 0] + front.t, [0.1, 0.2, 6.0], atol=1e-12)
    assert read_camera(path, "side").image_size == (640, 480)


def _qca(cameras: str) -> str:
    return f"<?xml version='1.0' encoding='ASCII'?>\n<calibration><cameras>{cameras}</cameras></calibration>\n"


def _qca_camera(serial="c1", viewrotation="0", fx="64000", extra="", transform=None):
    # Window 640x480 at (10, 20) on the sensor; principal point (330, 260) on the sensor
    # = (320, 240) in the window; camera at (1, 2, 3) m with its rows = the world axes.
    transform = transform or ('r11="1" r12="0" r13="0" r21="0" r22="1" r23="0" r31="0" r32="0" r33="1" '
                              'x="1000" y="2000" z="3000"')
    return (f'<camera active="1" serial="{serial}" viewrotation="{viewrotation}" model="none">'
            f'<fov_video left="10" top="20" right="649" bottom="499"/>'
            f'<transform {transform}/>'
            f'<intrinsic focalLengthU="{fx}" focalLengthV="57600" centerPointU="{330 * 64}" '
            f'centerPointV="{260 * 64}" skew="0" radialDistortion1="0.64" radialDistortion2="-0.128" '
            f'radialDistortion3="0" tangentalDistortion1="0.0064" tangentalDistortion2="0.032" {extra}/>'
            f'</camera>')


def test_qca_reader_hand_written(tmp_path):
    path = tmp_path / "cal.qca.txt"
    path.write_text(_qca(_qca_camera()))
    cam = read_camera(path)
    assert cam.name == "c1" and cam.image_size == (640, 480)
    np.testing.assert_allclose(cam.K, [[1000, 0, 320], [0, 900, 240], [0, 0, 1]])
    np.testing.assert_allclose(cam.dist, [0.01, -0.002, 0.0001, 0.0005, 0.0])
    np.testing.assert_allclose(cam.R, np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(cam.center, [1.0, 2.0, 3.0])
    # That camera looks down the world's -z: a point 2 m below it is on the optical axis.
    np.testing.assert_allclose(project_points(np.array([1.0, 2.0, 1.0]), cam), [320, 240])
    # World +x stays image right, world +y is image up (v smaller).
    u, v = project_points(np.array([[1.5, 2.0, 1.0], [1.0, 2.5, 1.0]]), cam, distort=False).T
    assert u[0] > 320 and v[1] < 240


def _write_opencv(path, **nodes):
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for key, value in nodes.items():
        fs.write(key, value)
    fs.release()


K_OCV = np.array([[800.0, 0.5, 320.25], [0.0, 810.0, 240.75], [0.0, 0.0, 1.0]])
K_NOSKEW = K_OCV * [[1, 0, 1], [1, 1, 1], [1, 1, 1]]
DIST_OCV = np.array([[-0.2, 0.05, 0.001, -0.002, 0.01]])
RVEC_OCV = np.array([[0.1], [-0.2], [0.3]])
TVEC_OCV = np.array([[0.05], [-0.1], [2.0]])


@pytest.mark.parametrize("suffix", [".yml", ".json", ".xml"])
def test_opencv_filestorage_reader(tmp_path, suffix):
    path = tmp_path / f"calib{suffix}"
    _write_opencv(path, camera_matrix=K_OCV, distortion_coefficients=DIST_OCV, rvec=RVEC_OCV, tvec=TVEC_OCV,
                  image_width=640, image_height=480)
    cam = read_camera(path)
    assert cam.name == "calib" and cam.image_size == (640, 480)
    np.testing.assert_array_equal(cam.K, K_OCV)
    np.testing.assert_array_equal(cam.dist, DIST_OCV.ravel())
    np.testing.assert_allclose(cam.R, _rot([0.1, -0.2, 0.3], 1.0), atol=1e-12)
    np.testing.assert_array_equal(cam.t, TVEC_OCV.ravel())


def test_opencv_alternative_keys(tmp_path):
    path = tmp_path / "cam.yaml"
    R = _rot([0, 0, 1], 0.7)
    _write_opencv(path, name="left", K=K_OCV, D=DIST_OCV[:, :4], R=R, T=TVEC_OCV)
    cam = read_camera(path)
    assert cam.name == "left" and cam.image_size is None  # no size in the file
    np.testing.assert_array_equal(cam.R, R)
    path2 = tmp_path / "intrinsics_only.yml"
    _write_opencv(path2, camera_matrix=K_OCV, image_width=640, image_height=480)
    cam2 = read_camera(path2)
    np.testing.assert_array_equal(cam2.R, np.eye(3))
    np.testing.assert_array_equal(cam2.t, np.zeros(3))
    assert not cam2.has_distortion


def _write_easymocap(folder, names=("01", "cam b"), rot_key="R", drop=None):
    folder.mkdir(exist_ok=True)
    for kind in ("intri", "extri"):
        fs = cv2.FileStorage(str(folder / f"{kind}.yml"), cv2.FILE_STORAGE_WRITE)
        fs.startWriteStruct("names", cv2.FileNode_SEQ)
        for n in names:
            fs.write("", n)
        fs.endWriteStruct()
        for i, n in enumerate(names):
            values = {"intri": {f"K_{n}": K_OCV * [[1 + i], [1 + i], [1]], f"dist_{n}": DIST_OCV, f"H_{n}": 480, f"W_{n}": 640},
                      "extri": {f"R_{n}": RVEC_OCV * (i + 1), f"Rot_{n}": _rot(RVEC_OCV.ravel(), i + 1),
                                f"T_{n}": TVEC_OCV + i}}[kind]
            if rot_key == "R":
                values.pop(f"Rot_{n}", None)
            for key, value in values.items():
                if key != drop:
                    fs.write(key, value)
        fs.release()
    return folder


@pytest.mark.parametrize("rot_key", ["R", "Rot"])
def test_easymocap_reader(tmp_path, rot_key):
    folder = _write_easymocap(tmp_path / "calib", rot_key=rot_key)
    for target in (folder, folder / "intri.yml", folder / "extri.yml"):
        cams = read_cameras(target)
        assert list(cams) == ["01", "cam b"]
    b = cams["cam b"]
    np.testing.assert_allclose(b.K, K_OCV * [[2], [2], [1]])
    np.testing.assert_allclose(b.R, _rot(RVEC_OCV.ravel(), 2.0), atol=1e-12)
    np.testing.assert_allclose(b.t, TVEC_OCV.ravel() + 1)
    assert b.image_size == (640, 480)


def test_plain_json_reader(tmp_path):
    R = _rot([1, 2, 3], 0.4)
    path = tmp_path / "cams.json"
    path.write_text(json.dumps({"cameras": {"a": {"K": K_OCV.tolist(), "dist": [0.1, 0, 0, 0], "R": R.tolist(),
                                                  "t": [1, 2, 3], "size": [640, 480]},
                                            "b": {"K": K_OCV.tolist(), "R": np.eye(3).tolist(), "t": [0, 0, 0],
                                                  "size": [64, 48]}}}))
    cams = read_cameras(path)
    np.testing.assert_array_equal(cams["a"].R, R)
    np.testing.assert_array_equal(cams["a"].t, [1, 2, 3])
    assert cams["b"].image_size == (64, 48) and cams["b"].dist.size == 0
    one = tmp_path / "single.json"
    one.write_text(json.dumps({"K": K_OCV.tolist(), "R": R.tolist(), "t": [1, 2, 3], "size": [640, 480]}))
    assert read_camera(one).name == "single"


# ---------------------------------------------------------------- the real dev-set file

def _dev_qca():
    for path in (DEV_QCA, TMP_QCA):
        if path.is_file():
            return path
    pytest.skip("the pose2sim dev-set Calib.qca.txt is not present")


def test_dev_set_qca_cameras_see_the_volume():
    cams = read_cameras(_dev_qca())
    assert list(cams) == ["cam01", "cam02", "cam03", "cam04"]
    # Where the four optical axes come closest together: the middle of the capture volume.
    A, b = np.zeros((3, 3)), np.zeros(3)
    for c in cams.values():
        proj = np.eye(3) - np.outer(c.R[2], c.R[2])
        A, b = A + proj, b + proj @ c.center
    middle = np.linalg.solve(A, b)
    for c in cams.values():
        assert c.image_size == (1088, 1920)
        axis_miss = np.linalg.norm((np.eye(3) - np.outer(c.R[2], c.R[2])) @ (middle - c.center))
        assert axis_miss < 0.25, (c.name, axis_miss)  # the axes really meet: the cameras face one volume
        assert 2.0 < np.linalg.norm(c.center - middle) < 5.0
        for offset in ([0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.6], [0, 0, -0.5]):
            p = middle + np.array(offset, float)
            assert (c.R @ p + c.t)[2] > 0  # in front of the camera
            u, v = project_points(p, c)
            assert 0 <= u < 1088 and 0 <= v < 1920, (c.name, offset, u, v)
        # World z is up (the cameras stand on the floor at 1.7-2.1 m): higher points are higher in the image.
        assert project_points(middle + [0, 0, 0.5], c)[1] < project_points(middle, c)[1]
        # Cross-check with OpenCV's projection.
        rvec = cv2.Rodrigues(c.R)[0]
        pts = middle + np.random.default_rng(0).uniform(-0.8, 0.8, (20, 3))
        ocv = cv2.projectPoints(pts, rvec, c.t, c.K, c.dist)[0].reshape(-1, 2)
        np.testing.assert_allclose(project_points(pts, c), ocv, atol=1e-6)


def test_dev_set_json_matches_qca():
    assert DEV_JSON.is_file(), "datasets/pose2sim_multiperson/calibration.json is missing"
    from_json = read_cameras(DEV_JSON)
    assert list(from_json) == ["cam01", "cam02", "cam03", "cam04"]
    if not (DEV_QCA.is_file() or TMP_QCA.is_file()):
        pytest.skip("no .qca to compare with")
    from_qca = read_cameras(_dev_qca())
    assert list(from_json) == list(from_qca)
    for name, q in from_qca.items():
        j = from_json[name]
        for attr in ("K", "dist", "R", "t"):
            np.testing.assert_allclose(getattr(j, attr), getattr(q, attr), rtol=0, atol=1e-12, err_msg=attr)
        assert j.image_size == q.image_size


# ---------------------------------------------------------------- lens distortion

STRONG = make_calib("strong", [[1200, 0, 543.5], [0, 1210, 959.5], [0, 0, 1]],
                    [-0.12, 0.08, 0.001, -0.0015, -0.01], _rot([0.2, -0.4, 0.1], 1.0), [0.1, -0.2, 3.0],
                    (1088, 1920))
RATIONAL = make_calib("rational", K_NOSKEW, [0.3, -0.05, 0.002, 0.001, 0.01, 0.05, -0.01, 0.003],
                      np.eye(3), [0, 0, 0], (640, 480))
SKEWED = make_calib("skewed", K_OCV, [-0.2, 0.05, 0.001, -0.002, 0.01], _rot([0, 1, 0], 0.3), [0, 0, 0.5],
                    (640, 480))


@pytest.mark.parametrize("calib", [STRONG, RATIONAL], ids=["k5", "k8"])
def test_project_points_matches_opencv(calib):
    pts = np.random.default_rng(1).uniform([-0.6, -0.9, 1.0], [0.6, 0.9, 2.0], (50, 3))
    pts = (pts - calib.t) @ calib.R  # world points in front of the camera
    ocv = cv2.projectPoints(pts, cv2.Rodrigues(calib.R)[0], calib.t, calib.K, calib.dist)[0].reshape(-1, 2)
    np.testing.assert_allclose(project_points(pts, calib), ocv, atol=1e-6)
    pin = cv2.projectPoints(pts, cv2.Rodrigues(calib.R)[0], calib.t, calib.K, None)[0].reshape(-1, 2)
    np.testing.assert_allclose(project_points(pts, calib, distort=False), pin, atol=1e-6)
    behind = project_points(calib.center - calib.R[2], calib)  # 1 m behind the camera
    assert np.isnan(behind).all()


@pytest.mark.parametrize("calib", [STRONG, RATIONAL, SKEWED], ids=["k5", "k8", "skew"])
def test_distortion_round_trip(calib):
    w, h = calib.image_size
    # Pinhole pixels spread over the image (margins kept inside, where the lens model is valid).
    uv = np.stack(np.meshgrid(np.linspace(0.05 * w, 0.95 * w, 9), np.linspace(0.05 * h, 0.95 * h, 11)), -1)
    uv = uv.reshape(-1, 2)
    rays = np.linalg.solve(calib.K, np.c_[uv, np.ones(len(uv))].T).T * 2.5
    world = (rays - calib.t) @ calib.R
    pinhole = project_points(world, calib, distort=False)
    np.testing.assert_allclose(pinhole, uv, atol=1e-9)
    distorted = project_points(world, calib)
    assert np.abs(distorted - pinhole).max() > 5  # the lens really moves them (5-60 px here)
    kp = np.concatenate([distorted.reshape(9, 11, 2), np.full((9, 11, 1), 0.8)], -1)
    back = undistort_points(kp, calib)
    assert back.shape == kp.shape
    np.testing.assert_allclose(back[..., :2].reshape(-1, 2), pinhole, atol=1e-3)
    np.testing.assert_array_equal(back[..., 2], kp[..., 2])


def test_undistort_keeps_unobserved_and_types():
    kp = torch.tensor([[[100.0, 200.0, 0.9], [100.0, 200.0, 0.0], [float("nan"), 5.0, 0.5], [7.0, 8.0, 1.0]]])
    out = undistort_points(kp, STRONG)
    assert isinstance(out, torch.Tensor) and out.dtype == kp.dtype and out.shape == kp.shape
    assert not torch.equal(out[0, 0], kp[0, 0])
    assert torch.equal(out[0, 1], kp[0, 1])  # confidence 0: untouched
    assert torch.isnan(out[0, 2, 0]) and out[0, 2, 1] == 5.0
    xy = undistort_points(np.array([[100.0, 200.0]]), STRONG)  # (N, 2) numpy, no confidences
    np.testing.assert_allclose(xy[0], out[0, 0, :2].double().numpy(), atol=1e-3)
    no_lens = make_calib("pin", K_OCV, None, np.eye(3), [0, 0, 0], (640, 480))
    assert undistort_points(kp, no_lens) is kp


# ---------------------------------------------------------------- apply_camera

def _obs(size=(1088, 1920), n=3):
    kp = np.zeros((n, 33, 3))
    kp[:, :, 0] = np.linspace(50, 1000, 33)
    kp[:, :, 1] = np.linspace(100, 1800, 33)
    kp[:, :, 2] = 0.9
    kp[:, 5, 2] = 0.0
    return Observations.from_arrays(kp, "blazepose33", size, source="kp.npz")


def test_apply_camera(tmp_path):
    obs = _obs()
    out = apply_camera(obs, STRONG)
    assert obs.intrinsics is None and obs.extrinsics is None  # input untouched
    np.testing.assert_allclose(out.intrinsics.numpy(), np.broadcast_to(STRONG.K, (3, 3, 3)), rtol=1e-6)
    np.testing.assert_allclose(out.extrinsics[1].numpy(), STRONG.world_to_camera, atol=1e-6)
    expected = undistort_points(obs.keypoints.double().numpy(), STRONG)
    np.testing.assert_allclose(out.keypoints.double().numpy(), expected, atol=1e-3)
    assert torch.equal(out.keypoints[:, 5], obs.keypoints[:, 5])
    # The extrinsics survive subset, to() and the file.
    assert out.subset([2, 0]).extrinsics.shape == (2, 4, 4)
    path = save_observations(tmp_path / "obs.npz", out.to(dtype=torch.float64))
    back = load_observations(path, dtype=torch.float64)
    np.testing.assert_allclose(back.extrinsics.numpy(), out.extrinsics.double().numpy())


def test_apply_camera_image_size_mismatch(tmp_path):
    path = tmp_path / "cams.json"
    path.write_text(json.dumps({"cameras": {"cam01": STRONG.to_json()}}))
    cam = read_camera(path)
    with pytest.raises(CameraError) as err:
        apply_camera(_obs(size=(1920, 1088)), cam)
    msg = str(err.value)
    assert str(path) in msg and "cam01" in msg and "1088x1920" in msg and "1920x1088" in msg and "kp.npz" in msg


def test_observation_extrinsics_validation():
    bad = np.eye(4)
    bad[:3, :3] = np.diag([1.0, 1.0, -1.0])  # a reflection
    with pytest.raises(CameraError.__mro__[1], match="extrinsics.*rotation"):
        Observations.from_arrays(_obs().keypoints, "blazepose33", (1088, 1920), extrinsics=bad, source="x")
    bad = np.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(CameraError.__mro__[1], match="extrinsics.*last row"):
        Observations.from_arrays(_obs().keypoints, "blazepose33", (1088, 1920), extrinsics=bad, source="x")
    with pytest.raises(CameraError.__mro__[1], match="extrinsics.*shape"):
        Observations.from_arrays(_obs().keypoints, "blazepose33", (1088, 1920), extrinsics=np.eye(3), source="x")


# ---------------------------------------------------------------- bad input

def _json_cam(**overrides):
    cam = {"K": K_OCV.tolist(), "dist": [0.1, 0, 0, 0], "R": np.eye(3).tolist(), "t": [0, 0, 2], "size": [640, 480]}
    cam.update(overrides)
    return {k: v for k, v in cam.items() if v is not None}


def _raises(path, *parts, fmt="auto", view=None):
    with pytest.raises(CameraError) as err:
        if view is None:
            read_cameras(path, fmt=fmt)
        else:
            read_camera(path, view, fmt=fmt)
    for part in parts:
        assert part in str(err.value), (part, str(err.value))
    return str(err.value)


@pytest.mark.parametrize("field", ["K", "R", "t", "size"])
def test_json_missing_field(tmp_path, field):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"cameras": {"v1": _json_cam(**{field: None})}}))
    _raises(path, str(path), "'v1'", f"'{field}'", "missing")


@pytest.mark.parametrize("field", ["matrix", "distortions", "rotation", "translation", "size"])
def test_toml_missing_field(tmp_path, field):
    lines = TOML.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(field + " ="))  # the 'front' camera's
    text = "\n".join(lines[:first] + lines[first + 1:])
    path = tmp_path / "Calib.toml"
    path.write_text(text)
    _raises(path, str(path), "'front'", f"'{field}'", "missing")


@pytest.mark.parametrize("attr", ["focalLengthU", "centerPointV", "radialDistortion1", "r23", "z", "right"])
def test_qca_missing_field(tmp_path, attr):
    path = tmp_path / "bad.qca.txt"
    text = _qca(_qca_camera())
    text, count = re.subn(rf' {attr}="[^"]*"', "", text)
    assert count == 1
    path.write_text(text)
    _raises(path, str(path), "'c1'", attr, "missing")


def test_qca_bad_values(tmp_path):
    path = tmp_path / "bad.qca.txt"
    path.write_text(_qca(_qca_camera(fx="nan")))
    _raises(path, "'c1'", "focalLengthU", "finite")
    path.write_text(_qca(_qca_camera(viewrotation="90")))
    _raises(path, "'c1'", "viewrotation", "90")
    tilted = ('r11="1" r12="0" r13="0" r21="0" r22="1" r23="0.001" r31="0" r32="0" r33="1" '
              'x="0" y="0" z="0"')
    path.write_text(_qca(_qca_camera(transform=tilted)))
    _raises(path, "'c1'", "'transform'", "not a rotation")
    path.write_text(_qca(_qca_camera() + _qca_camera()))
    _raises(path, "'c1'", "twice")
    path.write_text("<calibration><cameras>")
    _raises(path, str(path), "XML")


def test_unknown_view_and_several_views(tmp_path):
    path = tmp_path / "Calib.toml"
    path.write_text(TOML)
    _raises(path, "'back'", "'front'", "'side'", view="back")
    with pytest.raises(CameraError, match="2 views.*'front', 'side'"):
        read_camera(path)


def test_unknown_format(tmp_path):
    path = tmp_path / "Calib.toml"
    path.write_text(TOML)
    msg = _raises(path, "'colmap'", fmt="colmap")
    for name in ("toml", "qca", "opencv", "easymocap", "json"):
        assert f"'{name}'" in msg
    other = tmp_path / "calib.bin"
    other.write_bytes(b"\x00\x01")
    msg = _raises(other, str(other), "cannot tell")
    assert "'qca'" in msg and "'easymocap'" in msg
    _raises(tmp_path / "nope.json", "not found")


@pytest.mark.parametrize("case, field, words", [
    ({"K": [[1, 0, 2], [0, 1, 3], [0, 0, float("nan")]]}, "'K'", "finite"),
    ({"t": [0, float("inf"), 1]}, "'t'", "finite"),
    ({"K": [[-5, 0, 2], [0, 5, 3], [0, 0, 1]]}, "'K'", "> 0"),
    ({"K": [[5, 0, 2], [0, 5, 3], [0, 1, 1]]}, "'K'", "[0, 0, 1]"),
    ({"R": np.diag([1.0, 1.0, -1.0]).tolist()}, "'R'", "det = -1"),
    ({"R": (np.eye(3) + 1e-5).tolist()}, "'R'", "not a rotation"),
    ({"R": np.eye(3)[:2].tolist()}, "'R'", "shape"),
    ({"dist": [0.1, 0.2, 0.3]}, "'dist'", "3 coefficients"),
    ({"size": [640.5, 480]}, "'size'", "whole pixels"),
    ({"K": "eye"}, "'K'", "numbers"),
])
def test_json_bad_values(tmp_path, case, field, words):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"cameras": {"v1": _json_cam(**case)}}))  # json writes NaN / Infinity
    _raises(path, str(path), "'v1'", field, words)


def test_rotation_tolerance_is_tight_enough():
    # 1e-7 of noise, as from printing a rotation with 7 digits, is accepted; 1e-5 is not (above).
    R = _rot([0.3, 0.1, -0.2], 1.0)
    make_calib("ok", K_OCV, None, np.round(R, 7), [0, 0, 1], (640, 480))


def test_toml_fisheye_refused(tmp_path):
    path = tmp_path / "Calib.toml"
    path.write_text(TOML.replace("fisheye = false", "fisheye = true", 1))
    _raises(path, "'front'", "'fisheye'")


def test_opencv_and_easymocap_bad_input(tmp_path):
    path = tmp_path / "c.yml"
    _write_opencv(path, distortion_coefficients=DIST_OCV, rvec=RVEC_OCV, tvec=TVEC_OCV)
    _raises(path, str(path), "'camera_matrix'", "missing")
    _write_opencv(path, camera_matrix=K_OCV, rvec=RVEC_OCV)
    _raises(path, "'tvec'", "missing")
    _write_opencv(path, camera_matrix=K_OCV, image_width=640)
    _raises(path, "'image_height'", "missing")
    folder = _write_easymocap(tmp_path / "emc", drop="T_cam b")
    _raises(folder, "extri.yml", "'cam b'", "'T_cam b'", "missing")
    folder = _write_easymocap(tmp_path / "emc2", drop="K_01")
    _raises(folder, "intri.yml", "'01'", "'K_01'", "missing")
    (folder / "extri.yml").unlink()
    _raises(folder / "intri.yml", "extri.yml", "not found")


def test_project_points_skew_matches_fitkit_pinhole():
    from fitkit.camera import project
    pts = np.random.default_rng(2).uniform([-0.5, -0.5, 1.0], [0.5, 0.5, 2.0], (30, 3))
    world = (pts - SKEWED.t) @ SKEWED.R
    ours = project_points(world, SKEWED, distort=False)
    ref = project(torch.tensor(pts)[None], torch.tensor(SKEWED.K)[None])[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_opencv_image_size_node(tmp_path):
    path = tmp_path / "c.yml"
    _write_opencv(path, camera_matrix=K_OCV, image_size=np.array([[640.0], [480.0]]))
    assert read_camera(path).image_size == (640, 480)
    _write_opencv(path, camera_matrix=K_OCV, image_size="640x480")
    _raises(path, "'image_size'", "numbers")


def test_apply_camera_logs_replaced_intrinsics(caplog):
    obs = _obs()
    obs = Observations.from_arrays(obs.keypoints, "blazepose33", (1088, 1920), intrinsics=np.diag([900.0, 900.0, 1.0]),
                                   source="kp.npz")
    with caplog.at_level("WARNING", logger="fitkit.io.cameras"):
        out = apply_camera(obs, STRONG)
    assert "replaced" in caplog.text and "kp.npz" in caplog.text
    np.testing.assert_allclose(out.intrinsics[0].numpy(), STRONG.K, rtol=1e-6)
