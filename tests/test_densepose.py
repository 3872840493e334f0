"""IUV charts of the open body, DensePose's SMPL charts, IUV readers and the densepose data term."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.errors import ModelFileError, ObservationError
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit, prepare_init
from fitkit.fitting.recipe import recipe_from_dict
from fitkit.io.iuv_readers import paste_box_iuv, read_densepose_results, read_iuv_png
from fitkit.io.observations import Observations
from fitkit.priors.pose_data import load_pose_data
from fitkit.render.iuv import MIRROR_PART, IUVCharts, load_densepose_smpl_charts, open_body_charts
from fitkit.render.rasterizer import rasterize
from fitkit.terms.base import Needs, SetupContext
from fitkit.terms.densepose import DensePose

F64 = torch.float64


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=F64)


@pytest.fixture(scope="module")
def charts(model):
    return open_body_charts(model)


def _held_out_example(model, n, seed, image_size=(256, 256)):
    poses = load_pose_data("test").body_pose
    rows = np.linspace(0, len(poses) - 1, n).round().astype(int)
    return make_keypoint_example(model, n, body_pose=poses[rows], pose_noise=0.3, image_size=image_size,
                                 seed=seed)


def _vertices(model, p):
    return model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], vertices="all").vertices


# ---------------------------------------------------------------- charts

def test_open_body_charts_cover_every_face_and_part(model, charts):
    assert charts.faces.shape == model.faces.shape and torch.equal(charts.faces, model.faces)
    assert charts.face_part.min() >= 1 and charts.face_part.max() <= 24
    assert (charts.face_uv >= 0).all() and (charts.face_uv <= 1).all()
    counts = torch.bincount(charts.face_part, minlength=25)[1:]
    assert (counts > 50).all()


def test_left_and_right_parts_mirror_each_other(model, charts):
    from scipy.spatial import cKDTree

    c = model.v_template[model.faces].mean(1).numpy()
    mirrored = c * np.array([-1.0, 1.0, 1.0])
    dist, idx = cKDTree(c).query(mirrored)
    assert dist.max() < 1e-3  # the open body is symmetric
    part = charts.face_part.numpy()
    expect = np.array([MIRROR_PART[int(p)] for p in part])
    assert (part[idx] != expect).mean() < 0.005
    # back (first of a pair) lies behind the front in the rest pose
    z = torch.as_tensor(c[:, 2])
    for back, front in [(1, 2), (7, 9), (15, 17), (23, 24)]:
        assert z[charts.face_part == back].mean() < z[charts.face_part == front].mean()


def _visible_faces(model, charts):
    """Faces seen from the front or the back of the rest pose (the surface a camera can see)."""
    v = model.v_template
    K = torch.tensor([[400.0, 0, 127.5], [0, 400.0, 127.5], [0, 0, 1]], dtype=F64)[None]
    seen = torch.zeros(charts.num_faces, dtype=torch.bool)
    for sx, sz in [(1, -1), (-1, 1)]:
        cam = torch.stack([sx * v[:, 0], -v[:, 1], sz * v[:, 2] + 4.0], -1)[None]
        f = rasterize(cam, charts.faces, K, (256, 256)).face
        seen[f[f >= 0].unique()] = True
    return seen


def test_uv_lookup_round_trip(model, charts):
    g = torch.Generator().manual_seed(0)
    faces = torch.nonzero(_visible_faces(model, charts)).flatten()
    fi = faces[torch.randint(0, faces.numel(), (5000,), generator=g)]
    b = torch.rand(5000, 3, generator=g, dtype=F64)
    b = b / b.sum(1, keepdim=True)
    uv = (b[..., None] * charts.face_uv[fi]).sum(1)
    face, bary = charts.uv_lookup(charts.face_part[fi], uv)
    assert (face >= 0).all() and torch.allclose(bary.sum(1), torch.ones(5000, dtype=F64))
    assert (charts.face_part[face] == charts.face_part[fi]).all()
    v = model.v_template
    err = (charts.surface_points(v, fi, b) - charts.surface_points(v, face, bary)).norm(dim=-1)
    assert err.median() < 1e-6  # mostly exact (same face found)
    assert (err < 0.02).float().mean() > 0.9 and torch.quantile(err, 0.8) < 0.01
    # empty cells and out-of-range queries fall back to the nearest filled cell
    f2, b2 = charts.uv_lookup(torch.full((3,), 5), torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, -1.0]]))
    assert (f2 >= 0).all() and (charts.face_part[f2] == 5).all() and (b2 >= 0).all()


def test_gt_iuv_render_is_piecewise_per_face_and_self_consistent(model, charts):
    ex = _held_out_example(model, 2, seed=1, image_size=(200, 180))
    K = ex.observations.intrinsics.to(F64)
    v = _vertices(model, ex.gt)
    iuv = charts.render(v, K, (180, 200))
    frags = rasterize(v, model.faces, K, (180, 200))
    assert iuv.shape == (2, 180, 200, 3)
    assert (iuv[~frags.mask] == 0).all()
    hit = frags.mask
    assert torch.equal(iuv[..., 0][hit].long(), charts.face_part[frags.face[hit]])
    # looking the rendered (I, U, V) up gives surface points that project back onto their pixels
    b, y, x = torch.nonzero(hit, as_tuple=True)
    face, bary = charts.uv_lookup(iuv[b, y, x, 0].long(), iuv[b, y, x, 1:])
    pts = (bary[..., None] * v[b[:, None], charts.faces[face]]).sum(1)
    err = (project(pts[:, None], K[b])[:, 0] - torch.stack([x, y], -1).to(F64)).norm(dim=-1)
    assert err.median() < 1e-6 and (err < 2).float().mean() > 0.98


# ---------------------------------------------------------------- UV_Processed.mat

def _write_mat(path, charts, drop=None):
    # DensePose layout: per-corner vertices (1-based SMPL ids), faces indexing them (1-based)
    faces = charts.faces.numpy()
    n = faces.shape[0]
    d = {"All_FaceIndices": charts.face_part.numpy().reshape(-1, 1).astype(np.float64),
         "All_Faces": (np.arange(3 * n).reshape(n, 3) + 1).astype(np.float64),
         "All_vertices": (faces.reshape(-1) + 1).astype(np.float64).reshape(1, -1),
         "All_U_norm": charts.face_uv[..., 0].numpy().reshape(-1, 1),
         "All_V_norm": charts.face_uv[..., 1].numpy().reshape(-1, 1)}
    if drop:
        d.pop(drop)
    scipy.io.savemat(str(path), d)


def test_uv_processed_mat_loader(tmp_path, model):
    sub = IUVCharts(model.faces[:40], torch.arange(40) % 24 + 1,
                    torch.rand(40, 3, 2, generator=torch.Generator().manual_seed(2), dtype=F64))
    _write_mat(tmp_path / "UV_Processed.mat", sub)
    got = load_densepose_smpl_charts(tmp_path / "UV_Processed.mat", model.faces)
    assert torch.equal(got.faces, sub.faces) and torch.equal(got.face_part, sub.face_part)
    torch.testing.assert_close(got.face_uv, sub.face_uv)
    _write_mat(tmp_path / "bad.mat", sub, drop="All_V_norm")
    with pytest.raises(ModelFileError, match=r"bad\.mat.*All_V_norm"):
        load_densepose_smpl_charts(tmp_path / "bad.mat", model.faces)
    with pytest.raises(ModelFileError, match="not found"):
        load_densepose_smpl_charts(tmp_path / "none.mat", model.faces)


# ---------------------------------------------------------------- readers

def test_iuv_png_round_trip(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    arr = np.stack([rng.integers(0, 25, (6, 7)), rng.integers(0, 256, (6, 7)), rng.integers(0, 256, (6, 7))],
                   -1).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a_IUV.png"), arr)  # as DensePose: array (I, U, V) -> B, G, R
    iuv = read_iuv_png(tmp_path / "a_IUV.png")
    assert iuv.shape == (6, 7, 3) and iuv.dtype == np.float32
    np.testing.assert_array_equal(iuv[..., 0], arr[..., 0])
    np.testing.assert_allclose(iuv[..., 1:], arr[..., 1:] / 255.0, atol=1e-6)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.ascontiguousarray(arr[..., ::-1]))  # a file with R = I
    np.testing.assert_array_equal(read_iuv_png(tmp_path / "rgb.png", channels="VUI"), iuv)
    bad = arr.copy()
    bad[0, 0, 0] = 200
    cv2.imwrite(str(tmp_path / "b.png"), bad)
    with pytest.raises(ObservationError, match=r"b\.png.*above 24"):
        read_iuv_png(tmp_path / "b.png")
    with pytest.raises(ObservationError, match="not found"):
        read_iuv_png(tmp_path / "none.png")


def test_results_pickle_and_paste(tmp_path):
    a = np.zeros((3, 4, 5), np.float32)
    a[0, 1:3, 1:4] = 2
    a[1, 1:3, 1:4] = 255
    a[2, 1:3, 1:4] = 51
    b = np.zeros((3, 2, 2), np.float32)
    b[0] = 7
    b[1:] = 0.5
    data = [{"pred_boxes_XYXY": np.array([[10, 20, 15, 24], [12.4, 21, 14.4, 23]], np.float32),
             "pred_densepose": [a, b]}]
    with open(tmp_path / "res.pkl", "wb") as f:
        pickle.dump(data, f)
    res = read_densepose_results(tmp_path / "res.pkl")
    assert len(res) == 1 and res[0][0].shape == (2, 4)
    assert res[0][1][0][1].max() == 1.0 and np.isclose(res[0][1][0][2].max(), 0.2)  # 0..255 detected
    img = paste_box_iuv((30, 28), *res[0])
    assert img.shape == (28, 30, 3)
    assert img[21, 11, 0] == 2 and np.isclose(img[21, 11, 1], 1.0)
    assert img[21, 12, 0] == 7 and img[22, 13, 0] == 7  # the later box wins where it is foreground
    assert img[20, 10, 0] == 0 and img[:20].sum() == 0 and img[:, :10].sum() == 0

    with open(tmp_path / "torch.pkl", "wb") as f:
        pickle.dump([{"pred_boxes_XYXY": torch.zeros(1, 4)}], f)
    with pytest.raises(ObservationError, match=r"torch\.pkl.*torch tensors.*numpy"):
        read_densepose_results(tmp_path / "torch.pkl")
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([[1, 2]], f)
    with pytest.raises(ObservationError, match="expected a dict"):
        read_densepose_results(tmp_path / "list.pkl")


# ---------------------------------------------------------------- the term

def _observations(ex, iuv, dtype=F64):
    o = ex.observations
    return Observations.from_arrays(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                                    dense={"iuv": iuv}, dtype=dtype)


def _ctx(model, ex, obs):
    cam = build_fit_camera({"mode": "full"}, obs, dtype=F64)
    init, _ = prepare_init(ex.init, model, len(obs), device="cpu", dtype=F64)
    return SetupContext(obs.to(dtype=F64), model, cam, init, torch.device("cpu"), F64)


@pytest.fixture(scope="module")
def example(model, charts):
    ex = _held_out_example(model, 3, seed=4, image_size=(160, 144))
    iuv = charts.render(_vertices(model, ex.gt), ex.observations.intrinsics.to(F64), (144, 160))
    return ex, iuv


def test_term_setup_correspondences_and_zero_residual_at_the_truth(model, example):
    from fitkit.terms.base import Batch

    ex, iuv = example
    term = DensePose(sigma=None)
    term.setup(_ctx(model, ex, _observations(ex, iuv)))
    fg = (iuv[..., 0] > 0).flatten(1).sum(1)
    assert torch.equal(term.valid.sum(1), fg) and term.evidence().all() and term.uv_scale == 1.0
    assert term.needs() == Needs(vertices=term.vertex_ids, params=())
    assert len(term.vertex_ids) < model.num_vertices
    v = _vertices(model, ex.gt)[:, list(term.vertex_ids)]
    K = ex.observations.intrinsics.to(F64)
    batch = Batch(index=torch.arange(3), params={}, init={}, K=K, pixel_scale=torch.ones(3, dtype=F64), vertices=v)
    r = term.residuals(batch).abs()
    assert r.shape == (3, 2 * term.valid.shape[1]) and torch.quantile(r[r > 0], 0.9) < 1.0 * 224 / 60
    # 0..255 U, V are detected; stride thins the pixels
    scaled = iuv.clone()
    scaled[..., 1:] *= 255
    t2 = DensePose(stride=3)
    t2.setup(_ctx(model, ex, _observations(ex, scaled)))
    assert t2.uv_scale == 255.0 and torch.equal(t2.valid.sum(1), (fg + 2) // 3)
    torch.testing.assert_close(t2.bary[0, 1], term.bary[0, 3])


def test_bad_input_and_no_evidence(model, example):
    ex, iuv = example
    o = ex.observations
    with pytest.raises(ObservationError, match=r"dense_iuv.*missing"):
        DensePose().setup(_ctx(model, ex, o))
    small = Observations(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                         dense={"iuv": iuv[:, :100, :120].float()})
    with pytest.raises(ObservationError, match=r"dense_iuv.*120x100.*160x144"):
        DensePose().setup(_ctx(model, ex, small))
    two = Observations(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                       dense={"iuv": iuv[..., :2].float()})
    with pytest.raises(ObservationError, match=r"dense_iuv.*\(N, H, W, 3\)"):
        DensePose().setup(_ctx(model, ex, two))
    bad = iuv.clone()
    bad[0, 0, 0, 0] = 30
    with pytest.raises(ObservationError, match=r"dense_iuv.*0\.\.24"):
        DensePose().setup(_ctx(model, ex, _observations(ex, bad)))
    with pytest.raises(ValueError, match="stride"):
        DensePose(stride=0)
    empty = iuv.clone()
    empty[1] = 0  # frame 1: background only
    obs = _observations(ex, empty)
    term = DensePose()
    term.setup(_ctx(model, ex, obs))
    assert term.evidence().tolist() == [True, False, True]
    res = fit(model, obs, _recipe("lbfgs", 3), ex.init)
    assert res.no_evidence.tolist() == [False, True, False]
    for name in ("global_orient", "body_pose", "betas", "transl"):
        assert torch.equal(res.params[name][1], ex.init[name][1].to(res.params[name]))


def _recipe(solver, iterations, stride=1, weight=0.1):
    return recipe_from_dict({
        "name": "densepose_test", "body": {"model": "open", "num_betas": 10},
        "camera": {"mode": "full"}, "init": {"transl": "keep"},
        "terms": {"dp": {"type": "densepose", "weight": weight, "sigma": 100, "stride": stride},
                  "shape": {"type": "shape_l2", "weight": 0.01}},
        "stages": [{"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
                    "terms": ["dp", "shape"], "solver": {"type": solver, "iterations": iterations}}]})


def _pve_mm(model, params, gt):
    """Mean per-vertex error (mm) after aligning the pelvis (root joint) of both meshes."""
    a = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"], vertices="all")
    b = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all")
    return 1000 * ((a.vertices - a.joints[:, :1]) - (b.vertices - b.joints[:, :1])).norm(dim=-1).mean(1)


@pytest.mark.parametrize("solver,iterations,stride", [("lbfgs", 100, 1), ("lm", 25, 2)])
def test_recovery_from_gt_iuv_of_held_out_poses(solver, iterations, stride):
    model = load_body_model("open", num_betas=10, dtype=torch.float32)
    ex = _held_out_example(model, 6, seed=11)
    iuv = open_body_charts(model).render(_vertices(model, ex.gt), ex.observations.intrinsics.float(), (256, 256))
    res = fit(model, _observations(ex, iuv, torch.float32), _recipe(solver, iterations, stride), ex.init)
    assert not res.nan.any() and not res.no_evidence.any()
    before, after = _pve_mm(model, ex.init, ex.gt), _pve_mm(model, res.params, ex.gt)
    print(f"{solver}: PVE before {before.mean():.1f} mm, after {after.mean():.1f} mm; per frame "
          f"{[round(float(v)) for v in before]} -> {[round(float(v)) for v in after]}")
    assert after.mean() <= 0.5 * before.mean()
    assert (after < before).all()


def test_shipped_recipe_smplify_densepose_runs():
    """The shipped recipe (open GMM, fewer steps) lowers PVE from a ground-truth IUV map."""
    from fitkit.fitting.recipe import load_recipe

    model = load_body_model("open", num_betas=10, dtype=torch.float32)
    ex = _held_out_example(model, 3, seed=4, image_size=(160, 160))
    iuv = open_body_charts(model).render(_vertices(model, ex.gt), ex.observations.intrinsics.float(), (160, 160))
    recipe = load_recipe("smplify_densepose", ["terms.pose.path=priors/open_gmm_08.pkl",
                                               "stages.0.solver.iterations=20", "stages.1.solver.iterations=60"])
    res = fit(model, _observations(ex, iuv, torch.float32), recipe, ex.init)
    before, after = _pve_mm(model, ex.init, ex.gt).mean(), _pve_mm(model, res.params, ex.gt).mean()
    assert after < 0.8 * before, (before, after)
