"""fitkit.io.regressors and ``fitkit import``: regressor outputs become init files.

The oracles are independent of the code under test: the ground truth is a
posed open body in a full image with known intrinsics; the crop camera an
HMR-style regressor would output is fitted to it by least squares (written out
here, not with fitkit.camera); rotations are checked with numpy's Rodrigues
formula and SVD, not with roma.
"""
import json
import pickle

import numpy as np
import pytest
import torch

from fitkit.cli import build_parser
from fitkit.body import load_body_model
from fitkit.commands import import_regressor
from fitkit.io.observations import Observations, save_observations
from fitkit.io.params import ParamFileError, load_params
from fitkit.io.regressors import (RegressorImportError, import_regressor_output, read_regressor_output,
                                  save_init)

W, H = 1920, 1080
CROP = 224


def rodrigues(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3), numpy only."""
    theta = np.linalg.norm(rotvec, axis=-1, keepdims=True)[..., None]
    k = rotvec / np.maximum(np.linalg.norm(rotvec, axis=-1, keepdims=True), 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    Kx = np.stack([np.stack([zero, -kz, ky], -1), np.stack([kz, zero, -kx], -1),
                   np.stack([-ky, kx, zero], -1)], -2)
    return np.eye(3) + np.sin(theta) * Kx + (1 - np.cos(theta)) * Kx @ Kx


def intrinsics(f, cx=(W - 1) / 2, cy=(H - 1) / 2):
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


def project(points, K):
    return np.stack([K[0, 0] * points[..., 0] / points[..., 2] + K[0, 2],
                     K[1, 1] * points[..., 1] / points[..., 2] + K[1, 2]], -1)


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10).to(dtype=torch.float64)


@pytest.fixture(scope="module")
def scene(model):
    """Three bodies with known parameters, their joints (no translation) and true translations."""
    rng = np.random.default_rng(3)
    N = 3
    go = np.array([[np.pi, 0, 0], [2.9, 0.25, 0.15], [3.0, -0.3, 0.1]])
    bp = 0.25 * rng.standard_normal((N, 69))
    betas = rng.standard_normal((N, 10))
    transl = np.array([[0.1, 0.15, 5.0], [-0.5, 0.3, 7.0], [0.4, -0.1, 4.5]])
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    joints = model(t(go), t(bp), t(betas)).joints.numpy()
    return dict(go=go, bp=bp, betas=betas, transl=transl, joints=joints, N=N)


def hmr_camera(joints, transl, K, enlarge=1.2):
    """The crop a regressor sees and its weak-perspective camera, fitted independently.

    Box: the square around the projected joints, ``enlarge`` times their extent.
    Camera: s by least squares on the root-relative joints (normalized crop
    coordinates ``s * (X - X_root)``), then tx, ty so that the root lands exactly.
    Returns (cam (N, 3), box centre (N, 2), box side (N,), root pixel (N, 2)).
    """
    uv = project(joints + transl[:, None], K)
    lo, hi = uv.min(axis=1), uv.max(axis=1)
    center = (lo + hi) / 2
    side = enlarge * (hi - lo).max(axis=1)
    crop_px = (uv - center[:, None]) * CROP / side[:, None, None] + (CROP - 1) / 2
    norm = (crop_px + 0.5) * 2 / CROP - 1
    cams = []
    for i in range(len(joints)):
        X = (joints[i, :, :2] - joints[i, :1, :2]).reshape(-1)
        d = (norm[i] - norm[i, :1]).reshape(-1)
        s = X @ d / (X @ X)
        tx, ty = norm[i, 0] / s - joints[i, 0, :2]
        cams.append([s, tx, ty])
    return np.array(cams), center, side, uv[:, 0]


def pose72(scene):
    return np.concatenate([scene["go"], scene["bp"]], axis=1)


def check_root_and_size(params, scene, K_true, root_px, K_used=None, size_rtol=0.04):
    joints, transl = scene["joints"], scene["transl"]
    K_used = K_true if K_used is None else K_used
    got = np.stack([project(joints[i] + params["transl"][i], K_used[i] if K_used.ndim == 3 else K_used)
                    for i in range(len(joints))])
    true = project(joints + transl[:, None], K_true)
    # the root (pelvis) lands on its true pixel: weak perspective is exact at the body origin's depth,
    # the pelvis sits ~1.5 cm off it, so a fraction of a pixel remains
    np.testing.assert_allclose(got[:, 0], root_px, atol=1.0)
    # the body's image size matches (the least-squares weak camera averages the depth spread)
    height = lambda p: p[..., 1].max(-1) - p[..., 1].min(-1)  # noqa: E731
    np.testing.assert_allclose(height(got), height(true), rtol=size_rtol)


# ------------------------------------------------------------------ crop cameras (HMR / SPIN / PARE / HMR2)

@pytest.mark.parametrize("box_format", ["bbox", "bbox_xywh", "bbox_cxcywh", "center_scale", "hmr2"])
def test_crop_camera_recovers_root_pixel_image_size_and_depth(tmp_path, scene, box_format):
    K = intrinsics(np.hypot(W, H))  # fitkit's default camera
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    x0y0 = center - side[:, None] / 2
    boxes = {"bbox": {"bbox": np.concatenate([x0y0, x0y0 + side[:, None]], 1)},
             "bbox_xywh": {"bbox_xywh": np.concatenate([x0y0, np.stack([side, side], 1)], 1)},
             "bbox_cxcywh": {"bbox_cxcywh": np.concatenate([center, np.stack([side, 0.7 * side], 1)], 1)},
             "center_scale": {"center": center, "scale": side / 200.0},
             "hmr2": {"box_center": center, "box_size": side}}[box_format]
    path = tmp_path / "spin.npz"
    np.savez(path, pred_cam=cam, pred_pose=pose72(scene), pred_shape=scene["betas"], **boxes)
    params = import_regressor_output(path, image_size=(W, H))
    check_root_and_size(params, scene, K, root_px)
    np.testing.assert_allclose(params["transl"][:, 2], scene["transl"][:, 2], rtol=0.04)
    np.testing.assert_allclose(params["intrinsics"], np.broadcast_to(K, (3, 3, 3)), atol=1e-9)
    np.testing.assert_array_equal(params["body_pose"], scene["bp"])
    np.testing.assert_array_equal(params["betas"], scene["betas"])


def test_crop_camera_with_calibrated_intrinsics_and_explicit_focal(tmp_path, scene):
    K = intrinsics(1500.0, cx=1010.0, cy=500.0)  # principal point off the image centre
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    x0y0 = center - side[:, None] / 2
    path = tmp_path / "pare.npz"
    np.savez(path, pred_cam=cam, bbox_xyxy=np.concatenate([x0y0, x0y0 + side[:, None]], 1),
             pose=pose72(scene), betas=scene["betas"])
    params = import_regressor_output(path, intrinsics=K)
    check_root_and_size(params, scene, K, root_px)
    np.testing.assert_allclose(params["transl"][:, 2], scene["transl"][:, 2], rtol=0.04)
    # a focal alone (principal point at the image centre) moves the root by the offset of the principal point
    centred = import_regressor_output(path, image_size=(W, H), focal=1500.0)
    K_c = intrinsics(1500.0)
    moved = np.stack([project(scene["joints"][i, 0] + centred["transl"][i], K_c) for i in range(3)])
    np.testing.assert_allclose(moved, root_px, atol=1.0)
    np.testing.assert_allclose(centred["transl"][:, 2], params["transl"][:, 2], rtol=1e-12)


def test_crop_focal_reproduces_the_regressors_depth(tmp_path, scene):
    """HMR/SPIN: 5000 px in the 224 crop. The depth is SPIN's 2 * 5000 / (224 s); the per-frame
    full-image focal 5000 * b / 224 puts the root on its pixel."""
    K = intrinsics(np.hypot(W, H))
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    path = tmp_path / "hmr.json"
    path.write_text(json.dumps({"cam": cam.tolist(), "center": center.tolist(), "scale": (side / 200).tolist(),
                                "pose": pose72(scene).reshape(3, 24, 3).tolist(), "betas": scene["betas"].tolist()}))
    res = read_regressor_output(path, image_size=(W, H), crop_focal=5000.0, crop_res=CROP)
    p = res.params
    np.testing.assert_allclose(p["transl"][:, 2], 2 * 5000 / (CROP * cam[:, 0]), rtol=1e-9)
    np.testing.assert_allclose(p["intrinsics"][:, 0, 0], 5000 * side / CROP, rtol=1e-9)
    np.testing.assert_allclose(p["intrinsics"][:, 1, 1], 5000 * side / CROP, rtol=1e-9)
    # a 7x longer focal than the true one: nearly orthographic, so the image size is the weak
    # camera's, which differs more from the true perspective one
    check_root_and_size(p, scene, K, root_px, K_used=p["intrinsics"], size_rtol=0.06)
    assert res.layout == "hmr" and res.fields["crop_cam"] == "cam"


def test_crop_camera_needs_the_image_size(tmp_path, scene):
    path = tmp_path / "spin.npz"
    np.savez(path, pred_cam=np.ones((3, 3)), center=np.zeros((3, 2)), scale=np.ones(3),
             pred_pose=pose72(scene), pred_shape=scene["betas"])
    with pytest.raises(RegressorImportError, match=r"spin\.npz.*needs the full image's size.*--image-size"):
        import_regressor_output(path)


# ------------------------------------------------------------------ full-frame translations (CLIFF / HMR2)

def test_cliff_full_translation_passes_through(tmp_path, scene):
    transl = scene["transl"] + np.array([0.0123, -0.0456, 0.789])
    path = tmp_path / "cliff.npz"
    np.savez(path, pose=pose72(scene), shape=scene["betas"], global_t=transl, focal_l=np.full(3, 1234.5))
    res = read_regressor_output(path, image_size=(W, H))
    np.testing.assert_array_equal(res.params["transl"], transl)
    np.testing.assert_array_equal(res.params["global_orient"], scene["go"])
    assert res.layout == "cliff"
    np.testing.assert_allclose(res.params["intrinsics"][0], intrinsics(1234.5))
    # a different focal for the fit: the translation is still passed through, with a warning
    with pytest.warns(UserWarning, match="focal_l"):
        again = import_regressor_output(path, image_size=(W, H), focal=2000.0)
    np.testing.assert_array_equal(again["transl"], transl)
    # without image size or intrinsics there is no camera to report
    assert "intrinsics" not in import_regressor_output(path)


def test_hmr2_nested_rotation_matrices_match_axis_angle(tmp_path, scene):
    R = rodrigues(pose72(scene).reshape(3, 24, 3))
    path = tmp_path / "hmr2.pkl"
    out = {"pred_smpl_params": {"global_orient": R[:, :1], "body_pose": R[:, 1:], "betas": scene["betas"]},
           "pred_cam_t_full": scene["transl"], "focal_length": np.full((3, 2), 5000 / 256 * W)}
    with open(path, "wb") as f:
        pickle.dump(out, f)
    res = read_regressor_output(path)
    np.testing.assert_allclose(res.params["body_pose"], scene["bp"], atol=1e-5)
    np.testing.assert_allclose(rodrigues(res.params["global_orient"]), R[:, 0], atol=1e-9)
    np.testing.assert_array_equal(res.params["transl"], scene["transl"])
    assert res.fields["body_pose"] == "pred_smpl_params.body_pose"
    assert not any("projected" in n for n in res.notes)  # exact rotations are not reported as projected


@pytest.mark.parametrize("shape", [(3, 24, 3, 3), (3, 216)])
def test_rotation_matrices_and_axis_angle_give_the_same_pose(tmp_path, scene, shape):
    aa_path, rm_path = tmp_path / "aa.npz", tmp_path / "rm.npz"
    common = dict(betas=scene["betas"], pred_cam_t=scene["transl"])
    np.savez(aa_path, poses=pose72(scene).reshape(3, 24, 3), **common)
    np.savez(rm_path, pred_rotmat=rodrigues(pose72(scene).reshape(3, 24, 3)).reshape(shape), **common)
    aa, rm = import_regressor_output(aa_path), import_regressor_output(rm_path)
    np.testing.assert_allclose(rm["body_pose"], aa["body_pose"], atol=1e-5)
    np.testing.assert_allclose(rodrigues(rm["global_orient"]), rodrigues(aa["global_orient"]), atol=1e-9)


def test_noisy_rotation_matrices_are_projected_onto_so3(tmp_path, scene):
    R = rodrigues(pose72(scene).reshape(3, 24, 3))
    noisy = R + 0.03 * np.random.default_rng(0).standard_normal(R.shape)
    path = tmp_path / "noisy.npz"
    np.savez(path, pred_rotmat=noisy, pred_betas=scene["betas"], transl=scene["transl"])
    res = read_regressor_output(path)
    got = rodrigues(np.concatenate([res.params["global_orient"], res.params["body_pose"]], 1).reshape(3, 24, 3))
    U, _, Vt = np.linalg.svd(noisy)  # the nearest rotation (Frobenius), independently
    D = np.ones((3, 24, 3))
    D[..., 2] = np.sign(np.linalg.det(U @ Vt))
    nearest = (U * D[..., None, :]) @ Vt
    np.testing.assert_allclose(got, nearest, atol=1e-9)
    np.testing.assert_allclose(np.swapaxes(got, -1, -2) @ got, np.broadcast_to(np.eye(3), got.shape), atol=1e-9)
    assert any("projected onto SO(3)" in n and "pred_rotmat" in n for n in res.notes)


def test_mirrored_rotation_matrices_are_refused(tmp_path, scene):
    R = rodrigues(pose72(scene).reshape(3, 24, 3))
    R[2, 5] = -R[2, 5]  # det = -1: frame 2, joint 5
    path = tmp_path / "mirror.npz"
    np.savez(path, pred_rotmat=R, betas=scene["betas"], transl=scene["transl"])
    with pytest.raises(RegressorImportError, match=r"'pred_rotmat'.*rows \[2\]"):
        import_regressor_output(path)


# ------------------------------------------------------------------ errors

def test_missing_fields_are_all_named_with_the_layouts_tried(tmp_path):
    path = tmp_path / "out.npz"
    np.savez(path, joints3d=np.zeros((2, 24, 3)))
    with pytest.raises(ParamFileError) as info:
        import_regressor_output(path, image_size=(W, H))
    msg = str(info.value)
    assert msg.startswith(str(path))
    for name in ("pred_pose", "poses", "global_orient+body_pose", "betas", "pred_shape", "pred_cam_t",
                 "pred_cam_full", "pred_cam", "bbox", "bbox_xywh", "center+scale", "box_center+box_size",
                 "layouts tried", "joints3d"):
        assert name in msg, name


def test_missing_box_and_forced_layout_are_explained(tmp_path, scene):
    path = tmp_path / "out.npz"
    np.savez(path, pred_cam=np.ones((3, 3)), pose=pose72(scene), betas=scene["betas"], scale=np.ones(3),
             bboxes=np.ones((3, 4)))
    with pytest.raises(RegressorImportError) as info:
        import_regressor_output(path, image_size=(W, H))
    msg = str(info.value)
    assert "found 'pred_cam' but no box" in msg and "'scale' without 'center'" in msg and "bbox_cxcywh" in msg
    with pytest.raises(RegressorImportError, match=r"pred_cam_t.*found the crop camera 'pred_cam'.*cliff \(forced\)"):
        import_regressor_output(path, image_size=(W, H), layout="cliff")
    with pytest.raises(RegressorImportError, match="unknown layout 'vibe'"):
        import_regressor_output(path, layout="vibe")


def test_hmr2_raw_pred_cam_t_is_ambiguous(tmp_path, scene):
    K = intrinsics(np.hypot(W, H))
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    path = tmp_path / "hmr2_raw.npz"
    np.savez(path, pred_cam=cam, pred_cam_t=np.ones((3, 3)), box_center=center, box_size=side,
             pose=pose72(scene), betas=scene["betas"])
    with pytest.raises(RegressorImportError, match="ambiguous camera.*'hmr'.*'cliff'"):
        import_regressor_output(path, image_size=(W, H))
    params = import_regressor_output(path, image_size=(W, H), layout="hmr")
    check_root_and_size(params, scene, K, root_px)


def test_nan_names_the_field_and_rows(tmp_path, scene):
    cam = np.ones((3, 3))
    cam[1, 2] = np.nan
    path = tmp_path / "nan.npz"
    np.savez(path, pred_cam=cam, bbox=np.tile([0, 0, 10, 20.0], (3, 1)), pose=pose72(scene), betas=scene["betas"])
    with pytest.raises(RegressorImportError, match=r"nan\.npz: field 'pred_cam' has NaN/inf values in rows \[1\]"):
        import_regressor_output(path, image_size=(W, H))
    pose = pose72(scene)
    pose[[0, 2], 7] = np.nan
    np.savez(path, pred_pose=pose, betas=scene["betas"], transl=scene["transl"])
    with pytest.raises(RegressorImportError, match=r"'pred_pose' has NaN/inf values in rows \[0, 2\]"):
        import_regressor_output(path)


@pytest.mark.parametrize("fields, match", [
    ({"body_pose": np.zeros((3, 22, 3)), "global_orient": np.zeros((3, 3))},
     r"field 'body_pose' has shape \(3, 22, 3\), expected \(N, 69\) \| \(N, 23, 3\) \| \(N, 23, 3, 3\)"),
    ({"pose": np.zeros((3, 156))}, r"field 'pose' has shape \(3, 156\), expected \(N, 72\)"),
    ({"pose": np.zeros((3, 72)), "transl": np.zeros((2, 3))},
     r"field 'transl' has shape \(2, 3\), expected \(N, 3\) with N = 3"),
])
def test_wrong_shapes_name_the_field_and_the_expected_shape(tmp_path, fields, match):
    fields = {"betas": np.zeros((3, 10)), "transl": np.ones((3, 3)), **fields}
    path = tmp_path / "bad.npz"
    np.savez(path, **fields)
    with pytest.raises(RegressorImportError, match=match):
        import_regressor_output(path)


def _touch(path):
    open(path, "w").close()


class Payload:
    """An object a plain pickle.load would rebuild by calling _touch (i.e. running code)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def test_pickle_with_objects_is_refused_and_nothing_runs(tmp_path, scene):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"pred_pose": pose72(scene), "betas": scene["betas"], "transl": scene["transl"],
                     "extra": Payload(str(marker))}, f)
    with pytest.raises(RegressorImportError, match=r"evil\.pkl: refused.*_touch.*plain dicts"):
        import_regressor_output(path)
    assert not marker.exists()
    # the same data without the object loads; per-frame records are stacked
    records = [{"pred_pose": pose72(scene)[i], "betas": scene["betas"][i:i + 1], "transl": scene["transl"][i]}
               for i in range(3)]
    with open(path, "wb") as f:
        pickle.dump(records, f)
    params = import_regressor_output(path)
    np.testing.assert_array_equal(params["body_pose"], scene["bp"])
    np.testing.assert_array_equal(params["betas"], scene["betas"])


# ------------------------------------------------------------------ output files and the CLI

@pytest.mark.parametrize("suffix", [".npz", ".json"])
def test_init_file_round_trips_through_load_params(tmp_path, scene, suffix):
    path = tmp_path / "in.npz"
    np.savez(path, pred_pose=pose72(scene), betas=scene["betas"], cam_t=scene["transl"])
    params = import_regressor_output(path, image_size=(W, H))
    out = save_init(tmp_path / f"init{suffix}", params)
    loaded = load_params(out)
    assert set(loaded) == {"global_orient", "body_pose", "betas", "transl"}
    for k, v in loaded.items():
        np.testing.assert_array_equal(v, params[k])
    if suffix == ".npz":
        with np.load(out, allow_pickle=False) as data:
            np.testing.assert_array_equal(data["intrinsics"], params["intrinsics"])


def _cli(argv):
    return build_parser().parse_args(argv)


def test_cli_import_with_observations_uses_their_camera(tmp_path, scene, capsys):
    K = intrinsics(1500.0, cx=1010.0, cy=500.0)
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    src = tmp_path / "spin.npz"
    np.savez(src, pred_cam=cam, center=center, scale=side / 200, pred_pose=pose72(scene),
             pred_shape=scene["betas"])
    obs_path = tmp_path / "obs.npz"
    save_observations(obs_path, Observations.from_arrays(np.zeros((3, 25, 3)), "body25", (W, H),
                                                         intrinsics=np.broadcast_to(K, (3, 3, 3))))
    out = tmp_path / "init.npz"
    args = _cli(["import", str(src), "-o", str(out), "--observations", str(obs_path)])
    summary = import_regressor.run(args)
    import_regressor.print_summary(summary)
    assert summary["layout"] == "hmr" and summary["frames"] == 3
    assert "wrote" in capsys.readouterr().out
    check_root_and_size(load_params(out), scene, K, root_px)
    # a focal that contradicts the observations' camera is refused
    args = _cli(["import", str(src), "-o", str(out), "--observations", str(obs_path), "--focal", "900"])
    with pytest.raises(RegressorImportError, match="intrinsics"):
        import_regressor.run(args)
    # observations of another number of frames
    save_observations(obs_path, Observations.from_arrays(np.zeros((2, 25, 3)), "body25", (W, H)))
    args = _cli(["import", str(src), "-o", str(out), "--observations", str(obs_path)])
    with pytest.raises(RegressorImportError, match=r"image_size \(from the observations .*obs\.npz\).*3 frames"):
        import_regressor.run(args)


def test_cli_import_with_image_size(tmp_path, scene):
    K = intrinsics(np.hypot(W, H))
    cam, center, side, root_px = hmr_camera(scene["joints"], scene["transl"], K)
    src = tmp_path / "spin.npz"
    np.savez(src, pred_cam=cam, box_center=center, box_size=side, pose=pose72(scene), betas=scene["betas"])
    out = tmp_path / "init.npz"
    summary = import_regressor.run(_cli(["import", str(src), "-o", str(out), "--image-size", str(W), str(H),
                                         "--layout", "hmr"]))
    assert summary["fields"]["crop_cam"] == "pred_cam" and summary["files"] == [str(out)]
    check_root_and_size(load_params(out), scene, K, root_px)
