"""SMPL's keypoint sets, and load_body_model('smpl') on a (synthetic) licensed file."""
import pickle

import numpy as np
import torch
from smplx.vertex_ids import vertex_ids

from fitkit.body import load_body_model
from fitkit.body.keypoint_formats import BODY25, COCO25
from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.body.synthetic import synthetic_smpl_arrays


def _write_smpl(folder, gender="NEUTRAL"):
    arrays = synthetic_smpl_arrays(6890, seed=5)
    (folder / "smpl").mkdir(parents=True, exist_ok=True)
    with open(folder / "smpl" / f"SMPL_{gender}.pkl", "wb") as f:
        pickle.dump(arrays, f, protocol=2)


def test_smpl_keypoints_read_the_right_joints_and_vertices(tmp_path, monkeypatch):
    _write_smpl(tmp_path, "FEMALE")
    monkeypatch.setenv("FITKIT_MODELS", str(tmp_path))
    model = load_body_model("smpl", "female", dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    args = [0.3 * torch.randn(2, n, generator=g, dtype=torch.float64) for n in (3, 69, 10, 3)]
    full = model(*args, vertices="all")
    ids = vertex_ids["smplh"]
    joint = {n: full.joints[:, SMPL_JOINT_NAMES.index(n)] for n in SMPL_JOINT_NAMES}

    coco = dict(zip(COCO25.names, model(*args, keypoints="coco25").keypoints.unbind(1)))
    assert torch.allclose(coco["left_eye"], full.vertices[:, ids["leye"]])
    assert torch.allclose(coco["right_heel"], full.vertices[:, ids["RHeel"]])
    assert torch.allclose(coco["left_elbow"], joint["left_elbow"])
    assert torch.allclose(coco["right_ankle"], joint["right_ankle"])

    body = dict(zip(BODY25.names, model(*args, keypoints="openpose").keypoints.unbind(1)))
    assert torch.allclose(body["neck"], 0.5 * (joint["left_shoulder"] + joint["right_shoulder"]))
    assert torch.allclose(body["mid_hip"], 0.5 * (joint["left_hip"] + joint["right_hip"]))
    assert torch.allclose(body["left_big_toe"], full.vertices[:, ids["LBigToe"]])
    assert "left_knee" in model.keypoint_sets["body25"].approximate
    assert "nose" not in model.keypoint_sets["body25"].approximate


def test_remeshed_smpl_format_file_has_no_keypoint_sets(tmp_path):
    (tmp_path / "smpl").mkdir()
    with open(tmp_path / "smpl" / "SMPL_NEUTRAL.pkl", "wb") as f:
        pickle.dump(synthetic_smpl_arrays(500), f, protocol=2)
    model = load_body_model("smpl", model_dir=tmp_path)
    assert model.keypoint_sets == {} and model.num_vertices == 500
    assert np.isfinite(model(torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 10)).joints.numpy()).all()
