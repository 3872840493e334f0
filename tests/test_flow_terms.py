"""Optical-flow temporal terms (vertex_flow, photometric_flow) and the gt_flow oracle."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import default_focal, facing_camera_orient, make_intrinsics
from fitkit.errors import ObservationError, ParameterError
from fitkit.render.rasterizer import rasterize
from fitkit.terms.base import Batch, SequenceGrid, SetupContext, get_term_class
from fitkit.terms.flow import PhotometricFlow, VertexFlow, gt_flow, screen_barycentrics

F64 = torch.float64
H = W = 128
HIP_Z = 2  # body_pose component: left hip, about the camera-facing z axis (moves the leg in the image plane)


@pytest.fixture(scope="module")
def model():
    return load_body_model("open", num_betas=10, dtype=F64)


def _vertices(model, p):
    return model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], vertices="all").vertices


@pytest.fixture(scope="module")
def scene(model):
    """Frame 0: arms lowered, facing the camera, 3 m away; frame 1: moved by 5 cm, turned and a leg swung."""
    f = default_focal(W, H)
    K = make_intrinsics(f, f, (W - 1) / 2, (H - 1) / 2, batch_size=1, dtype=F64)
    body_pose = torch.zeros(1, 69, dtype=F64)
    body_pose[0, 3 * 15 + 2], body_pose[0, 3 * 16 + 2] = -0.9, 0.9  # shoulders
    p0 = dict(global_orient=facing_camera_orient(1, dtype=F64), body_pose=body_pose,
              betas=torch.zeros(1, 10, dtype=F64), transl=torch.tensor([[0.0, -0.25, 3.0]], dtype=F64))
    p1 = {k: v.clone() for k, v in p0.items()}
    p1["transl"] += torch.tensor([0.04, -0.03, 0.05], dtype=F64)
    p1["global_orient"][0, 1] += 0.15
    p1["body_pose"][0, HIP_Z] += 0.15
    v0, v1 = _vertices(model, p0), _vertices(model, p1)
    flow = gt_flow(torch.cat([v0, v1]), model.faces, K, (H, W))
    return SimpleNamespace(K=K.expand(2, 3, 3), p0=p0, p1=p1, v0=v0, v1=v1, flow=flow)


def _setup(term, model, flow, K):
    n = flow.shape[0]
    obs = SimpleNamespace(dense={"flow": flow}, source="clip.npz")
    size = torch.tensor([[W, H]] * n, dtype=F64)
    cam = SimpleNamespace(K=K[:1].expand(n, 3, 3), image_size=size, pixel_scale=torch.ones(n, dtype=F64))
    term.setup(SetupContext(obs, model, cam, {}, torch.device("cpu"), F64))
    return term


def _batch(vertices, K, frames=((0, 1),), valid=None):
    frames = torch.tensor(frames)
    valid = torch.ones_like(frames, dtype=torch.bool) if valid is None else torch.tensor(valid)
    B = frames.numel()
    return Batch(index=frames.reshape(-1), params={}, init={}, K=K[:1].expand(B, 3, 3),
                 pixel_scale=torch.ones(B, dtype=F64), vertices=vertices,
                 sequence=SequenceGrid(frames=frames, valid=valid))


def _energy(term, scene, v1):
    return float((term.residuals(_batch(torch.cat([scene.v0, v1]), scene.K)) ** 2).sum())


TERMS = {"vertex_flow": lambda: VertexFlow(), "photometric_flow": lambda: PhotometricFlow()}


# ---------------------------------------------------------------- helpers and oracle

def test_terms_are_registered_temporal_data_terms():
    for name, cls in (("vertex_flow", VertexFlow), ("photometric_flow", PhotometricFlow)):
        assert get_term_class(name) is cls
        assert cls.temporal and cls.kind == "data" and cls.least_squares and cls.pointwise is None
    assert VertexFlow().needs().vertices == "all"
    for bad in (dict(sigma=0), dict(vertex_stride=0), dict(vertex_stride=1.5)):
        with pytest.raises(ValueError, match="vertex_flow"):
            VertexFlow(**bad)
    for bad in (dict(stride=0), dict(gradient="prev")):
        with pytest.raises(ValueError, match="photometric_flow"):
            PhotometricFlow(**bad)


def test_gt_flow_of_a_sideways_shift_is_focal_times_shift_over_depth(model, scene):
    """A rigid shift by dx moves every surface point by fx dx / Z pixels along x: checked
    against the rasterizer's depth map, an independent route to the same numbers."""
    dx = 0.05
    verts = torch.cat([scene.v0, scene.v0 + torch.tensor([dx, 0.0, 0.0], dtype=F64)])
    flow = gt_flow(verts, model.faces, scene.K[0], (H, W))
    frags = rasterize(scene.v0, model.faces, scene.K[:1], (H, W))
    cover = frags.mask[0]
    assert cover.sum() > 1000
    expect = scene.K[0, 0, 0] * dx / frags.depth[0][cover]
    torch.testing.assert_close(flow[0][cover][:, 0], expect, rtol=1e-9, atol=1e-9)
    assert flow[0][cover][:, 1].abs().max() < 1e-9
    assert torch.isnan(flow[0][~cover]).all() and torch.isnan(flow[1]).all()


def test_screen_barycentrics_reproduce_the_point_and_have_exact_gradients():
    g = torch.Generator().manual_seed(0)
    tri = torch.rand(20, 3, 2, generator=g, dtype=F64) * 10
    p = torch.rand(20, 2, generator=g, dtype=F64) * 10
    b = screen_barycentrics(p, tri)
    torch.testing.assert_close(b.sum(-1), torch.ones(20, dtype=F64))
    torch.testing.assert_close((b[..., None] * tri).sum(-2), p)
    torch.testing.assert_close(screen_barycentrics(tri[:, 1], tri), torch.eye(3, dtype=F64)[1].expand(20, 3))
    assert torch.autograd.gradcheck(screen_barycentrics, (p.requires_grad_(), tri.requires_grad_()))


# ---------------------------------------------------------------- the terms

@pytest.mark.parametrize("name", sorted(TERMS))
def test_residuals_vanish_at_the_true_motion(name, model, scene):
    term = _setup(TERMS[name](), model, scene.flow, scene.K)
    r = term.residuals(_batch(torch.cat([scene.v0, scene.v1]), scene.K))
    assert r.shape[0] == 1 and r.dtype == F64
    shifted = scene.v1 + torch.tensor([0.02, 0.0, 0.0], dtype=F64)  # 1.2 px
    r2 = term.residuals(_batch(torch.cat([scene.v0, shifted]), scene.K))
    assert r2.shape == r.shape
    e, e2 = float((r ** 2).sum()), float((r2 ** 2).sum())
    if name == "vertex_flow":
        # second-order perspective terms and flow sampled across occlusion edges: < 0.5 px
        assert r.abs().max() < 0.5 and (r != 0).sum() > 2000
        assert e < 1e-3 * e2
    else:
        # colours in [0, 1]; residuals are differences / sqrt(3 n): e is a mean square
        assert e < 1e-4 and e < 0.05 * e2
    assert torch.isfinite(r).all()


def test_vertex_flow_recovers_the_next_frame(model, scene):
    """From transl off by 5 cm in x and y and a hip off by 0.3 rad, L-BFGS on the vertex-flow
    energy alone (all 75 pose and translation parameters of frame 1) finds frame 1."""
    term = _setup(VertexFlow(), model, scene.flow, scene.K)
    start = {k: v.clone() for k, v in scene.p1.items()}
    start["transl"] += torch.tensor([0.05, -0.05, 0.0], dtype=F64)
    start["body_pose"][0, HIP_Z] += 0.3
    free = {k: start[k].clone().requires_grad_(True) for k in ("global_orient", "body_pose", "transl")}
    opt = torch.optim.LBFGS(list(free.values()), lr=1.0, max_iter=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        v1 = _vertices(model, {**scene.p1, **free})
        e = (term.residuals(_batch(torch.cat([scene.v0, v1]), scene.K)) ** 2).sum()
        e.backward()
        return e

    opt.step(closure)
    with torch.no_grad():
        err0 = (_vertices(model, start) - scene.v1).norm(dim=-1).mean()
        err = (_vertices(model, {**scene.p1, **free}) - scene.v1).norm(dim=-1).mean()
    assert err0 > 0.05
    assert err < 0.01 and err < 0.15 * err0
    assert (free["transl"] - scene.p1["transl"])[0, :2].abs().max() < 0.005


def test_photometric_flow_recovers_the_next_frame(model, scene):
    """Same start; Adam on the photometric energy alone, frame 1's global orientation,
    translation and the perturbed hip free. The warped gradient texture pins the in-image
    motion; depth and out-of-plane turns are weakly seen, hence ~1 cm, not mm."""
    term = _setup(PhotometricFlow(), model, scene.flow, scene.K)
    start = {k: v.clone() for k, v in scene.p1.items()}
    start["transl"] += torch.tensor([0.05, -0.05, 0.0], dtype=F64)
    start["body_pose"][0, HIP_Z] += 0.3
    free = {"global_orient": start["global_orient"].clone().requires_grad_(True),
            "transl": start["transl"].clone().requires_grad_(True),
            "hip": start["body_pose"][:, :3].clone().requires_grad_(True)}

    def current():
        pose = torch.cat([free["hip"], start["body_pose"][:, 3:]], dim=1)
        return {**scene.p1, "global_orient": free["global_orient"], "transl": free["transl"], "body_pose": pose}

    iters = 80
    opt = torch.optim.Adam(list(free.values()), lr=0.015)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.1 ** (1 / iters))
    for _ in range(iters):
        opt.zero_grad()
        v1 = _vertices(model, current())
        (1e4 * term.residuals(_batch(torch.cat([scene.v0, v1]), scene.K)).square().sum()).backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        err0 = (_vertices(model, start) - scene.v1).norm(dim=-1).mean()
        err = (_vertices(model, current()) - scene.v1).norm(dim=-1).mean()
    assert err0 > 0.05
    assert err < 0.02 and err < 0.25 * err0
    assert (free["transl"] - scene.p1["transl"])[0, :2].abs().max() < 0.005


@pytest.mark.parametrize("name", sorted(TERMS))
def test_gradients_match_finite_differences(name, model, scene):
    """Directional derivative of w . r along a random direction of both frames' vertices
    (float64, 1e-7 m steps: no pixel changes face or coverage)."""
    term = _setup(TERMS[name](), model, scene.flow, scene.K)
    verts = torch.cat([scene.v0, scene.v1]) + torch.tensor([0.01, 0.0, 0.0], dtype=F64)  # off the truth
    g = torch.Generator().manual_seed(1)
    d = torch.randn(verts.shape, generator=g, dtype=F64) * 1e-3
    weights = torch.randn(term.residuals(_batch(verts, scene.K)).shape, generator=g, dtype=F64)

    def f(v):
        return (weights * term.residuals(_batch(v, scene.K))).sum()

    for frame in (0, 1):
        dd = torch.zeros_like(d)
        dd[frame] = d[frame]
        v = verts.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(v), v)
        analytic = float((grad * dd).sum())
        h = 1e-4
        with torch.no_grad():
            numeric = float(f(verts + h * dd) - f(verts - h * dd)) / (2 * h)
        assert abs(analytic) > 1e-6
        assert analytic == pytest.approx(numeric, rel=1e-5)


def test_photometric_gradient_next_leaves_frame_t_alone(model, scene):
    both = _setup(PhotometricFlow(), model, scene.flow, scene.K)
    nxt = _setup(PhotometricFlow(gradient="next"), model, scene.flow, scene.K)
    verts = (torch.cat([scene.v0, scene.v1]) + torch.tensor([0.01, 0.0, 0.0], dtype=F64)).requires_grad_(True)
    (g_both,) = torch.autograd.grad(both.residuals(_batch(verts, scene.K)).square().sum(), verts)
    (g_next,) = torch.autograd.grad(nxt.residuals(_batch(verts, scene.K)).square().sum(), verts)
    assert g_both[0].abs().max() > 0 and g_next[0].abs().max() == 0
    torch.testing.assert_close(g_next[1], g_both[1])


@pytest.mark.parametrize("name", sorted(TERMS))
def test_missing_flow_gives_no_residual_and_no_evidence(name, model, scene):
    term = _setup(TERMS[name](), model, scene.flow, scene.K)
    assert term.evidence().tolist() == [True, False]  # the last frame has no next frame
    none = torch.full_like(scene.flow, float("nan"))
    term = _setup(TERMS[name](), model, none, scene.K)
    assert term.evidence().tolist() == [False, False]
    verts = torch.cat([scene.v0, scene.v1 + 0.05]).requires_grad_(True)
    r = term.residuals(_batch(verts, scene.K))
    assert r.shape[0] == 1 and (r == 0).all()
    r.square().sum().backward()
    assert torch.isfinite(verts.grad).all() and (verts.grad == 0).all()


def test_flow_of_the_wrong_size_or_missing_is_refused(model, scene):
    with pytest.raises(ObservationError, match=r"clip.npz.*dense_flow.*128x120.*128x128"):
        _setup(VertexFlow(), model, scene.flow[:, :120], scene.K)
    with pytest.raises(ObservationError, match=r"dense_flow.*\(N, H, W, 2\)"):
        _setup(PhotometricFlow(), model, scene.flow[..., :1], scene.K)
    with pytest.raises(ObservationError, match=r"dense_motion.*missing"):
        _setup(PhotometricFlow(field="motion"), model, scene.flow, scene.K)
    term = _setup(VertexFlow(), model, scene.flow, scene.K)
    flat = Batch(index=torch.arange(2), params={}, init={}, K=scene.K, pixel_scale=torch.ones(2, dtype=F64),
                 vertices=torch.cat([scene.v0, scene.v1]))
    with pytest.raises(ParameterError, match="sequence stage"):
        term.residuals(flat)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_padded_slot_contributes_nothing(name, model, scene):
    """T = 3 with slot 2 a padding copy of frame 1. Frame 1 is given a (wrong) flow, so the
    pair (1, 2) would have residuals if it were not skipped."""
    flow = scene.flow.clone()
    flow[1, ..., 0], flow[1, ..., 1] = 4.0, -3.0
    term = _setup(TERMS[name](), model, flow, scene.K)
    verts = torch.cat([scene.v0, scene.v1, scene.v1])
    two = term.residuals(_batch(verts[:2], scene.K))
    padded = term.residuals(_batch(verts, scene.K, frames=((0, 1, 1),), valid=((True, True, False),)))
    R = two.shape[1]
    assert padded.shape == (1, 2 * R)
    torch.testing.assert_close(padded[:, :R], two)
    assert (padded[:, R:] == 0).all()
    # the same chunk with slot 2 claimed valid does use that pair
    claimed = term.residuals(_batch(verts, scene.K, frames=((0, 1, 1),)))
    assert (claimed[:, R:] != 0).sum() > 100
    # a chunk of one slot has no pair at all
    assert term.residuals(_batch(verts[:1], scene.K, frames=((0,),))).shape == (1, 0)
