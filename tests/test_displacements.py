"""Dense displacement data term (seed 001, Eq. 1, 2, 5, 6, 7) and the .flo/.npy readers."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.errors import ObservationError, ObservationWarning
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit, prepare_init
from fitkit.fitting.objective import Objective, WeightedTerm
from fitkit.fitting.params import ParamLayout
from fitkit.fitting.recipe import recipe_from_dict
from fitkit.io.flow_readers import FLO_MAGIC, read_displacement_field, read_flo, write_flo
from fitkit.io.observations import Observations
from fitkit.priors.pose_data import load_pose_data
from fitkit.render.rasterizer import rasterize
from fitkit.terms.base import Needs, SetupContext, Term, get_term_class
from fitkit.terms.displacements import (VISIBLE_WEIGHT, Displacements, gt_displacement_field,
                                        vertex_displacements)

F64 = torch.float64


# ---------------------------------------------------------------- readers

def _flo_bytes(width, height, data, magic=FLO_MAGIC):
    return (np.array([magic], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
            + np.asarray(data, "<f4").tobytes())


def test_flo_round_trip_keeps_values_and_nan(tmp_path):
    rng = np.random.default_rng(0)
    field = rng.normal(0, 20, (5, 7, 2)).astype(np.float32)
    field[1, 2] = np.nan
    field[3, 4, 0] = np.inf  # one bad component makes the whole pixel unknown
    path = tmp_path / "sub" / "a.flo"
    write_flo(path, field)
    assert path.stat().st_size == 12 + 5 * 7 * 2 * 4
    back = read_flo(path)
    assert back.shape == (5, 7, 2) and back.dtype == np.float32
    unknown = ~np.isfinite(field).all(-1)
    assert np.isnan(back[unknown]).all() and not np.isnan(back[~unknown]).any()
    np.testing.assert_array_equal(back[~unknown], field[~unknown])
    np.testing.assert_array_equal(read_displacement_field(path), back)
    # row-major, u and v interleaved: the first values are pixel (0, 0) then (1, 0)
    raw = np.frombuffer(path.read_bytes()[12:28], "<f4")
    np.testing.assert_array_equal(raw, field[0, :2].reshape(-1))
    write_flo(tmp_path / "t.flo", torch.from_numpy(field))  # tensors too
    np.testing.assert_array_equal(read_flo(tmp_path / "t.flo")[~unknown], field[~unknown])


def test_flo_unknown_values_are_nan(tmp_path):
    data = np.array([[[1.0, 2.0], [1e9, 0.0]], [[0.0, -2e9], [3.0, 4.0]]], np.float32)  # (H=2, W=2, 2)
    path = tmp_path / "u.flo"
    path.write_bytes(_flo_bytes(2, 2, data))
    f = read_flo(path)
    np.testing.assert_array_equal(f[0, 0], [1, 2])
    np.testing.assert_array_equal(f[1, 1], [3, 4])
    assert np.isnan(f[0, 1]).all() and np.isnan(f[1, 0]).all()


def test_flo_errors_name_the_file(tmp_path):
    good = _flo_bytes(3, 2, np.zeros((2, 3, 2)))
    cases = {"magic.flo": (_flo_bytes(3, 2, np.zeros((2, 3, 2)), magic=1.0), "magic"),
             "short.flo": (good[:-4], "truncated"),
             "header.flo": (good[:7], "header"),
             "long.flo": (good + b"\0" * 8, "trailing"),
             "size.flo": (_flo_bytes(-3, 2, []), "width")}
    for name, (raw, word) in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ObservationError, match=word) as err:
            read_flo(path)
        assert name in str(err.value)
    with pytest.raises(ObservationError, match="not found"):
        read_flo(tmp_path / "missing.flo")


def test_npy_reader_checks_shape_and_dtype(tmp_path):
    good = np.zeros((4, 6, 2), np.float64)
    good[0, 0] = np.nan
    np.save(tmp_path / "ok.npy", good)
    f = read_displacement_field(tmp_path / "ok.npy")
    assert f.shape == (4, 6, 2) and f.dtype == np.float32 and np.isnan(f[0, 0]).all()
    for name, arr, word in [("c3.npy", np.zeros((4, 6, 3)), r"\(4, 6, 3\).*\(H, W, 2\)"),
                            ("n4.npy", np.zeros((1, 4, 6, 2)), r"\(1, 4, 6, 2\)"),
                            ("str.npy", np.array([["a", "b"]]), "numeric")]:
        np.save(tmp_path / name, arr)
        with pytest.raises(ObservationError, match=word) as err:
            read_displacement_field(tmp_path / name)
        assert name in str(err.value)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ObservationError, match="obj.npy"):
        read_displacement_field(tmp_path / "obj.npy")
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ObservationError, match="bad.npy"):
        read_displacement_field(tmp_path / "bad.npy")
    with pytest.raises(ObservationError, match=r"x\.png.*\.flo or \.npy"):
        read_displacement_field(tmp_path / "x.png")


# ---------------------------------------------------------------- Eq. 5 by hand

def test_eq5_matches_a_hand_computed_example():
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    nan = float("nan")
    # two samples of a 1 x 4 image
    face = torch.tensor([[[0, 1, -1, 0]], [[1, -1, -1, -1]]])
    bary = torch.tensor([[[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5], [0, 0, 0], [0, 0, 1]]],
                         [[[1.0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]]], dtype=F64)
    field = torch.tensor([[[[2.0, 0], [0, 4], [100, 100], [nan, 1]]],  # background and NaN pixels ignored
                          [[[1.0, 1], [5, 5], [5, 5], [5, 5]]]], dtype=F64)
    v, w = vertex_displacements(SimpleNamespace(face=face, bary=bary), faces, field, 5)
    # sample 0: v0 <- pixel 0 (b=.5); v1 <- pixel 0 (.25), pixel 1 (.3); v2 <- pixel 0 (.25),
    # pixel 1 (.2); v3 <- pixel 1 (.5); v4 untouched
    torch.testing.assert_close(w[0], torch.tensor([0.5, 0.55, 0.45, 0.5, 0.0], dtype=F64))
    expect = torch.tensor([[2.0, 0.0],
                           [0.25 * 2 / 0.55, 0.3 * 4 / 0.55],
                           [0.25 * 2 / 0.45, 0.2 * 4 / 0.45],
                           [0.0, 4.0]], dtype=F64)
    torch.testing.assert_close(v[0, :4], expect)
    assert torch.isnan(v[0, 4]).all()
    # sample 1: face 1 = (2, 1, 3) with b = (1, 0, 0): only vertex 2
    torch.testing.assert_close(w[1], torch.tensor([0, 0, 1.0, 0, 0], dtype=F64))
    torch.testing.assert_close(v[1, 2], torch.tensor([1.0, 1.0], dtype=F64))
    assert torch.isnan(v[1, [0, 1, 3, 4]]).all()


# ---------------------------------------------------------------- ground-truth field

@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=F64)


def _held_out_example(model, n, seed, image_size):
    poses = load_pose_data("test").body_pose
    rows = np.linspace(0, len(poses) - 1, n).round().astype(int)
    return make_keypoint_example(model, n, body_pose=poses[rows], pose_noise=0.3, image_size=image_size,
                                 seed=seed)


def _vertices(model, p):
    return model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], vertices="all").vertices


@pytest.fixture(scope="module")
def example(model):
    ex = _held_out_example(model, 4, seed=3, image_size=(256, 240))  # not square: catches W/H swaps
    K = ex.observations.intrinsics.to(F64)
    field, per_vertex = gt_displacement_field(model, ex.gt, ex.init, K, (256, 240))
    return ex, K, field, per_vertex


def test_gt_field_sends_pixels_to_the_true_projected_surface(model, example):
    ex, K, field, per_vertex = example
    assert field.shape == (4, 240, 256, 2) and per_vertex.shape == (4, model.num_vertices, 2)
    v_init, v_gt = _vertices(model, ex.init), _vertices(model, ex.gt)
    torch.testing.assert_close(per_vertex, project(v_gt, K) - project(v_init, K))  # Eq. 1
    frags = rasterize(v_init, model.faces, K, (240, 256))
    assert torch.equal(torch.isfinite(field).all(-1), frags.mask) and torch.isnan(field[~frags.mask]).all()
    # oracle: screen-space barycentrics of each covered pixel centre in its projected initial
    # triangle (solved here in 2D, not taken from the rasterizer), applied to the true projections
    b, y, x = torch.nonzero(frags.mask, as_tuple=True)
    assert b.numel() > 4 * 500
    vid = model.faces[frags.face[b, y, x]]
    tri = project(v_init, K)[b[:, None], vid]  # (P, 3, 2)
    pix = torch.stack([x, y], -1).to(F64)
    e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], pix - tri[:, 0]
    den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / den
    l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / den
    lam = torch.stack([1 - l1 - l2, l1, l2], -1)
    assert (lam > -1e-9).all()
    target = (lam[..., None] * project(v_gt, K)[b[:, None], vid]).sum(1)
    err = (pix + field[b, y, x] - target).norm(dim=-1)
    assert err.max() < 1e-3
    # the true projection of the same surface point (perspective-correct barycentrics on the gt
    # mesh) differs only by the second-order perspective term: below 0.05 px here
    surf = (frags.bary[b, y, x][..., None] * v_gt[b[:, None], vid]).sum(1)
    surf_px = project(surf[:, None], K[b])[:, 0]
    assert (pix + field[b, y, x] - surf_px).norm(dim=-1).max() < 0.05
    # K_gt: Eq. 1 projects the true body with its own camera
    K2 = K.clone()
    K2[:, 0, 0] *= 1.1
    _, pv2 = gt_displacement_field(model, ex.gt, ex.init, K, (256, 240), K_gt=K2)
    torch.testing.assert_close(pv2, project(v_gt, K2) - project(v_init, K))


def test_eq5_on_the_gt_field_recovers_the_vertex_displacements(model, example):
    """Eq. 5 inverts Eq. 2 only approximately: it averages the (piecewise affine) field
    over the pixels of a vertex's faces, weighted by b_i, and those pixels lie up to a
    triangle away from the vertex on whichever side is visible. At 256 px the open body's
    triangles are about a pixel wide, so the error is (local displacement gradient) x
    (about a pixel): a few tenths of a pixel for 20-40 px displacements."""
    ex, K, field, per_vertex = example
    frags = rasterize(_vertices(model, ex.init), model.faces, K, (240, 256))
    v, w = vertex_displacements(frags, model.faces, field, model.num_vertices)
    visible = w > VISIBLE_WEIGHT
    assert (visible.sum(1) > 1000).all()
    assert torch.isfinite(v[w > 0]).all() and torch.isnan(v[w == 0]).all()
    err = (v - per_vertex).norm(dim=-1)[visible]
    size = per_vertex.norm(dim=-1)[visible].mean()
    assert size > 10  # displacements worth recovering
    assert err.median() < 0.3 and err.mean() < 0.03 * size
    assert torch.quantile(err, 0.95) < 1.5 and err.max() < 0.3 * size


# ---------------------------------------------------------------- the term

def _observations(ex, field, dtype=F64):
    o = ex.observations
    return Observations.from_arrays(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                                    dense={"displacements": field}, dtype=dtype)


def _ctx(model, ex, obs):
    cam = build_fit_camera({"mode": "full"}, obs, dtype=F64)
    init, _ = prepare_init(ex.init, model, len(obs), device="cpu", dtype=F64)
    return SetupContext(obs.to(dtype=F64), model, cam, init, torch.device("cpu"), F64)


def test_setup_builds_eq6_targets_from_the_initial_projection(model, example):
    ex, K, field, per_vertex = example
    term = Displacements()
    with pytest.warns(ObservationWarning, match="off the rendered initial body"):
        # a constant field everywhere: Eq. 5 of a constant is that constant
        const = torch.zeros_like(field)
        const[..., 0], const[..., 1] = 3.0, -2.0
        term.setup(_ctx(model, ex, _observations(ex, const)))
    p_init = project(_vertices(model, ex.init), K)
    vis = term.visible
    torch.testing.assert_close(term.targets[vis], (p_init + torch.tensor([3.0, -2.0], dtype=F64))[vis])
    assert term.evidence().all() and (term.targets[~vis] == 0).all()
    # the declared vertex set is the union of the visible vertices
    assert term.needs() == Needs(vertices=tuple(torch.nonzero(vis.any(0)).flatten().tolist()), params=())
    # size scale: reference size over the longest side of the visible vertices' box
    box = torch.stack([torch.where(vis[i, :, None], p_init[i], math.nan) for i in range(4)])
    side = (box.nan_to_num(-1e9).amax(1) - box.nan_to_num(1e9).amin(1)).amax(1)
    torch.testing.assert_close(term.size_scale, 224.0 / side)


def test_missing_wrong_shape_and_wrong_size_fields_are_refused(model, example):
    ex, K, field, _ = example
    no_dense = ex.observations
    with pytest.raises(ObservationError, match=r"dense_displacements.*missing"):
        Displacements().setup(_ctx(model, ex, no_dense))
    with pytest.raises(ObservationError, match=r"dense_flow.*missing.*\['displacements'\]"):
        Displacements(field="flow").setup(_ctx(model, ex, _observations(ex, field)))
    o = ex.observations
    # built directly (no from_arrays validation): the term checks the grid itself
    small = Observations(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                         dense={"displacements": field[:, :120, :128].float()})
    with pytest.raises(ObservationError, match=r"dense_displacements.*128x120.*256x240"):
        Displacements().setup(_ctx(model, ex, small))
    three = Observations(o.keypoints, o.keypoint_format, o.image_size, intrinsics=o.intrinsics,
                         dense={"displacements": torch.zeros(4, 240, 256, 3)})
    with pytest.raises(ObservationError, match=r"dense_displacements.*\(N, H, W, 2\)"):
        Displacements().setup(_ctx(model, ex, three))
    with pytest.raises(ValueError, match="sigma"):
        Displacements(sigma=0)
    with pytest.raises(ValueError, match="min_visible"):
        Displacements(min_visible=0)


def _recipe(solver, iterations, shape_weight=0.01):
    return recipe_from_dict({
        "name": "displacements_test", "body": {"model": "open", "num_betas": 10},
        "camera": {"mode": "full"}, "init": {"transl": "keep"},
        "terms": {"disp": {"type": "displacements", "weight": 1.0, "sigma": 100},
                  "shape": {"type": "shape_l2", "weight": shape_weight}},
        "stages": [{"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
                    "terms": ["disp", "shape"], "solver": {"type": solver, "iterations": iterations}}]})


def test_frames_without_usable_field_have_no_evidence(model, example):
    ex, K, field, _ = example
    f = field.clone()
    f[1] = float("nan")  # frame 1: no value at all
    keep = torch.nonzero(torch.isfinite(f[2, ..., 0]))[:3]  # frame 2: three pixels, < min_visible vertices
    only = torch.full_like(f[2], float("nan"))
    only[keep[:, 0], keep[:, 1]] = f[2, keep[:, 0], keep[:, 1]]
    f[2] = only
    obs = _observations(ex, f)
    term = Displacements()
    term.setup(_ctx(model, ex, obs))
    assert term.evidence().tolist() == [True, False, False, True]
    assert not term.visible[1:3].any()
    assert Displacements(min_visible=1).setup(_ctx(model, ex, obs)) is None
    res = fit(model, obs, _recipe("lbfgs", 5), ex.init)
    assert res.no_evidence.tolist() == [False, True, True, False]
    for name in ("global_orient", "body_pose", "betas", "transl"):
        assert torch.equal(res.params[name][1:3], ex.init[name][1:3].to(res.params[name]))
        assert not torch.equal(res.params[name][0], ex.init[name][0].to(res.params[name]))


def _pve_mm(model, params, gt):
    """Mean per-vertex error (mm) after aligning the pelvis (root joint) of both meshes."""
    a = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"], vertices="all")
    b = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all")
    pa = a.vertices - a.joints[:, :1]
    pb = b.vertices - b.joints[:, :1]
    return 1000 * (pa - pb).norm(dim=-1).mean(1)


@pytest.mark.parametrize("solver,iterations", [("lbfgs", 60), ("lm", 25)])
def test_recovery_from_the_gt_field_of_held_out_poses(solver, iterations):
    model = load_body_model("open", num_betas=10, dtype=torch.float32)
    ex = _held_out_example(model, 6, seed=11, image_size=(256, 256))
    K = ex.observations.intrinsics.to(torch.float32)
    field, _ = gt_displacement_field(model, ex.gt, ex.init, K, (256, 256))
    res = fit(model, _observations(ex, field, torch.float32), _recipe(solver, iterations), ex.init)
    assert not res.nan.any() and not res.no_evidence.any()
    before, after = _pve_mm(model, ex.init, ex.gt), _pve_mm(model, res.params, ex.gt)
    print(f"{solver}: PVE before {before.mean():.1f} mm, after {after.mean():.1f} mm; per frame "
          f"{[round(float(v)) for v in before]} -> {[round(float(v)) for v in after]}")
    assert after.mean() <= 0.5 * before.mean()
    assert (after < before).all()


# ---------------------------------------------------------------- LM Jacobian

class _FewVertices(Term):
    """Needs a different vertex set, so the objective evaluates the whole mesh and maps rows."""

    def needs(self):
        return Needs(vertices=(5, 17, 4000))

    def residuals(self, batch):
        return batch.vertices[..., 1] - batch.vertices[..., 2] * batch.params["transl"][:, :1]


@pytest.mark.parametrize("others", [False, True])
def test_lm_jacobian_matches_autograd(model, others):
    ex = _held_out_example(model, 3, seed=5, image_size=(96, 80))
    K = ex.observations.intrinsics.to(F64)
    field, _ = gt_displacement_field(model, ex.gt, ex.init, K, (96, 80))
    ctx = _ctx(model, ex, _observations(ex, field))
    terms = []
    for sigma in (30.0, None):  # robust and plain squares
        t = get_term_class("displacements")(sigma=sigma)
        t.setup(ctx)
        terms.append(WeightedTerm(f"disp{sigma}", t, 0.4))
    assert 50 < len(terms[0].term.vertex_ids) < model.num_vertices
    if others:
        terms.append(WeightedTerm("few", _FewVertices(), 1.0))
    layout = ParamLayout(["global_orient", "body_pose", "betas", "transl"],
                         {"global_orient": 3, "body_pose": 69, "betas": 10, "transl": 3})
    obj = Objective(model, terms, layout, ctx.init, ctx.init, ctx.camera)
    g = torch.Generator().manual_seed(0)
    x = layout.encode(ctx.init) + 0.05 * torch.randn(3, layout.dim, generator=g, dtype=F64)
    idx = torch.tensor([2, 0])
    r, J = obj.residuals_and_jacobian(x[idx], idx)
    torch.testing.assert_close(r, obj.residuals(x[idx], idx), rtol=1e-12, atol=1e-12)
    full = torch.autograd.functional.jacobian(lambda xx: obj.residuals(xx, idx), x[idx], vectorize=True,
                                              strategy="forward-mode")
    ref = torch.stack([full[b, :, b] for b in range(2)])
    assert J.shape == ref.shape and (ref != 0).any()
    torch.testing.assert_close(J, ref, rtol=1e-9, atol=1e-9)


def test_shipped_recipe_smplify_displacements_runs(tmp_path):
    """The shipped recipe (with the open GMM and fewer steps) lowers PVE from a GT field."""
    from fitkit.fitting.recipe import load_recipe

    model = load_body_model("open", num_betas=10, dtype=torch.float32)
    ex = _held_out_example(model, 3, seed=4, image_size=(160, 160))
    K = ex.observations.intrinsics.to(torch.float32)
    field, _ = gt_displacement_field(model, ex.gt, ex.init, K, (160, 160))
    recipe = load_recipe("smplify_displacements", ["terms.pose.path=priors/open_gmm_08.pkl",
                                                   "stages.0.solver.iterations=20", "stages.1.solver.iterations=40"])
    res = fit(model, _observations(ex, field, torch.float32), recipe, ex.init)
    assert _pve_mm(model, res.params, ex.gt).mean() < 0.8 * _pve_mm(model, ex.init, ex.gt).mean()
