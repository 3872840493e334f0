"""Rasterizer and renders: hand-made triangles with known answers, the open body
against an independent ray caster (warp), interpolation, renders, CUDA parity."""
import numpy as np
import pytest
import torch

from fitkit.errors import ParameterError
from fitkit.render import (interpolate, overlay, position_colors, rasterize, render_depth,
                           render_mask, render_normals, render_uv_texture, render_vertex_colors, shade)
import fitkit.render.rasterizer as rasterizer_module

F64 = torch.float64


def _K(f=1.0, cx=0.0, cy=0.0, batch=1, dtype=F64):
    K = torch.zeros(batch, 3, 3, dtype=dtype)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, cx, cy, 1.0
    return K


def _tri(points, z=1.0):
    """(1, V, 3) vertices at depth z whose pixels under _K() are ``points``."""
    p = torch.as_tensor(points, dtype=F64)
    zz = torch.full((p.shape[0], 1), float(z), dtype=F64)
    return torch.cat([p * zz, zz], dim=1)[None]


def _pixels(h, w):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=F64), torch.arange(w, dtype=F64), indexing="ij")
    return xs, ys


# ---------------------------------------------------------------- hand-made cases

def test_right_triangle_covers_centres_on_and_below_its_diagonal():
    verts = _tri([[0, 0], [4, 0], [0, 4]])
    faces = torch.tensor([[0, 1, 2]])
    fr = rasterize(verts, faces, _K(), (6, 8))  # H != W
    assert fr.face.shape == (1, 6, 8) and fr.bary.shape == (1, 6, 8, 3) and fr.depth.shape == (1, 6, 8)
    xs, ys = _pixels(6, 8)
    expected = (xs + ys <= 4)  # edges inclusive
    assert torch.equal(fr.mask[0], expected)
    assert int(fr.mask.sum()) == 15
    assert torch.all(fr.face[0][expected] == 0) and torch.all(fr.face[0][~expected] == -1)
    assert torch.allclose(fr.bary[0, 1, 1], torch.tensor([0.5, 0.25, 0.25], dtype=F64))
    assert torch.allclose(fr.bary[0, 0, 4], torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    assert torch.allclose(fr.bary[0][expected].sum(-1), torch.ones(15, dtype=F64))
    assert torch.all(fr.bary[0][~expected] == 0)
    assert torch.allclose(fr.depth[0][expected], torch.ones(15, dtype=F64))
    assert torch.all(torch.isinf(fr.depth[0][~expected]))
    # the half-pixel-shifted triangle covers only the centres strictly below
    fr2 = rasterize(_tri([[-0.5, -0.5], [4.0, -0.5], [-0.5, 4.0]]), faces, _K(), (6, 8))
    assert torch.equal(fr2.mask[0], xs + ys <= 3)


def test_shared_edge_has_no_gap_and_ties_go_to_the_smaller_face_id():
    verts = _tri([[0, 0], [5, 0], [5, 5], [0, 5]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    fr = rasterize(verts, faces, _K(), (7, 7))
    xs, ys = _pixels(7, 7)
    square = (xs <= 5) & (ys <= 5)
    assert torch.equal(fr.mask[0], square)
    diag = square & (xs == ys)
    assert torch.all(fr.face[0][diag] == 0)
    assert torch.all(fr.face[0][square & (xs > ys)] == 0) and torch.all(fr.face[0][square & (xs < ys)] == 1)


def test_nearer_triangle_wins_whatever_the_order():
    near = _tri([[0, 0], [6, 0], [0, 6]], z=1.0)
    far = _tri([[0, 0], [6, 0], [0, 6]], z=2.0)
    verts = torch.cat([far, near], dim=1)
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        fr = rasterize(verts, faces, _K(), (8, 8))
        nearer = int(torch.nonzero((faces == 3).any(1))[0])
        assert torch.all(fr.face[fr.mask] == nearer)
        assert torch.allclose(fr.depth[fr.mask], torch.ones(int(fr.mask.sum()), dtype=F64))


def test_both_windings_and_backface_culling():
    verts = _tri([[0, 0], [4, 0], [0, 4]])
    away = torch.tensor([[0, 1, 2]])  # normal (v1-v0)x(v2-v0) = +z, away from the camera
    facing = torch.tensor([[0, 2, 1]])
    fa, ff = rasterize(verts, away, _K(), (6, 6)), rasterize(verts, facing, _K(), (6, 6))
    assert torch.equal(fa.mask, ff.mask) and int(fa.mask.sum()) == 15
    assert torch.allclose(fa.bary[..., [0, 2, 1]], ff.bary) and torch.equal(fa.depth, ff.depth)
    assert not rasterize(verts, away, _K(), (6, 6), cull_backfaces=True).mask.any()
    assert torch.equal(rasterize(verts, facing, _K(), (6, 6), cull_backfaces=True).mask, ff.mask)


def test_faces_behind_the_camera_or_degenerate_or_nan_are_skipped():
    verts = torch.cat([_tri([[0, 0], [4, 0], [0, 4]]), _tri([[0, 0], [4, 0], [0, 4]])], dim=1)
    verts[0, 3, 2] = -1.0  # second copy: one vertex behind the camera
    faces = torch.tensor([[3, 4, 5], [0, 1, 1], [0, 1, 2]])
    fr = rasterize(verts, faces, _K(), (6, 6))
    assert torch.all(fr.face[fr.mask] == 2) and int(fr.mask.sum()) == 15
    verts[0, 4, 2] = 1e-4  # below near
    verts[0, 3] = float("nan")
    fr = rasterize(verts, faces, _K(), (6, 6), near=1e-3)
    assert torch.all(fr.face[fr.mask] == 2)
    assert not rasterize(verts, faces[:2], _K(), (6, 6)).mask.any()
    assert not rasterize(verts, faces[:0], _K(), (6, 6)).mask.any()


def test_perspective_correct_barycentrics_give_points_on_the_pixel_rays():
    verts = torch.tensor([[[-1.0, -1.0, 2.0], [2.0, -0.5, 5.0], [-0.5, 2.0, 3.0]]], dtype=F64)
    K = _K(f=20.0, cx=15.5, cy=12.0)
    fr = rasterize(verts, torch.tensor([[0, 1, 2]]), K, (30, 40))
    assert int(fr.mask.sum()) > 100
    points = interpolate(fr, verts, torch.tensor([[0, 1, 2]]))[fr.mask]  # (N, 3)
    xs, ys = _pixels(30, 40)
    uv = points[:, :2] / points[:, 2:] * 20.0 + torch.tensor([15.5, 12.0], dtype=F64)
    assert torch.allclose(uv, torch.stack([xs, ys], -1)[fr.mask[0]], atol=1e-9)
    assert torch.allclose(points[:, 2], fr.depth[fr.mask], atol=1e-12)


def test_batch_of_two_cameras_equals_two_single_calls(body):
    verts, faces = body["verts"][:2], body["faces"]
    K = body["K"](96, 128)[:2]
    K[1, 0, 0] *= 0.8
    K[1, 0, 2] += 7.0
    both = rasterize(verts, faces, K, (96, 128))
    for b in range(2):
        one = rasterize(verts[b:b + 1], faces, K[b:b + 1], (96, 128))
        assert torch.equal(one.face[0], both.face[b])
        assert torch.allclose(one.bary[0], both.bary[b]) and torch.equal(one.mask[0], both.mask[b])
        assert torch.allclose(one.depth[0][one.mask[0]], both.depth[b][both.mask[b]])


def test_chunking_does_not_change_the_result(body, monkeypatch):
    verts, faces, K = body["verts"][:1], body["faces"], body["K"](64, 48)[:1]
    ref = rasterize(verts, faces, K, (64, 48))
    monkeypatch.setattr(rasterizer_module, "MAX_CANDIDATES", 7)
    small = rasterize(verts, faces, K, (64, 48))
    assert torch.equal(ref.face, small.face) and torch.equal(ref.bary, small.bary)
    # one face larger than the image
    big = _tri([[-100, -100], [300, -100], [-100, 300]])
    fr = rasterize(big, torch.tensor([[0, 1, 2]]), _K(), (20, 30))
    assert fr.mask.all()


def test_bad_arguments_raise_parameter_error():
    verts, faces = _tri([[0, 0], [4, 0], [0, 4]]), torch.tensor([[0, 1, 2]])
    with pytest.raises(ParameterError, match="vertices"):
        rasterize(verts[0], faces, _K(), (4, 4))
    with pytest.raises(ParameterError, match="K"):
        rasterize(verts, faces, _K(batch=2), (4, 4))
    with pytest.raises(ParameterError, match="faces"):
        rasterize(verts, faces.float(), _K(), (4, 4))
    with pytest.raises(ParameterError, match="image_size"):
        rasterize(verts, faces, _K(), (4, 0))
    fr = rasterize(verts, faces, _K(), (4, 4))
    with pytest.raises(ParameterError, match="attributes"):
        interpolate(fr, torch.zeros(2, 3, 1), faces)


# ---------------------------------------------------------------- the open body

@pytest.fixture(scope="module")
def body():
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example

    model = load_body_model("open", num_betas=10, dtype=F64)
    ex = make_keypoint_example(model, 3, seed=7)
    g = ex.gt
    verts = model(g["global_orient"], g["body_pose"], g["betas"], g["transl"], vertices="all").vertices

    def K_for(h, w, fill=0.8):
        """Intrinsics making the body's box fill ``fill`` of the image (per sample)."""
        p = verts[..., :2] / verts[..., 2:]
        lo, hi = p.amin(1), p.amax(1)
        s = fill * torch.minimum(h / (hi - lo)[:, 1], w / (hi - lo)[:, 0])
        c = (lo + hi) / 2
        K = _K(batch=verts.shape[0])
        K[:, 0, 0], K[:, 1, 1] = s, s
        K[:, 0, 2], K[:, 1, 2] = (w - 1) / 2 - s * c[:, 0], (h - 1) / 2 - s * c[:, 1]
        return K

    return {"model": model, "verts": verts, "faces": model.faces, "K": K_for}


def _warp_cast(verts, faces, K, h, w):
    """Ray-cast one ray per pixel centre with warp: (hit, face, depth, bary) as (H, W) tensors."""
    wp = pytest.importorskip("warp")
    wp.config.quiet = True
    wp.init()
    kernel = _warp_kernel(wp)
    mesh = wp.Mesh(points=wp.array(verts.numpy().astype(np.float32), dtype=wp.vec3, device="cpu"),
                   indices=wp.array(faces.numpy().astype(np.int32).flatten(), dtype=int, device="cpu"))
    xs, ys = _pixels(h, w)
    dirs = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3) @ torch.linalg.inv(K).T
    n = dirs.shape[0]
    face, t, u, v = (wp.zeros(n, dtype=dt, device="cpu") for dt in (int, float, float, float))
    wp.launch(kernel, dim=n, inputs=[mesh.id, wp.array(dirs.numpy().astype(np.float32), dtype=wp.vec3,
                                                      device="cpu"), face, t, u, v], device="cpu")
    face, t, u, v = (torch.from_numpy(a.numpy()) for a in (face, t, u, v))
    hit = face >= 0
    depth = t.double() * dirs[:, 2]  # t is along the unnormalized direction, whose z is 1
    bary = torch.stack([u, v, 1 - u - v], -1).double()  # warp: u weights vertex 0, v vertex 1
    return hit.view(h, w), face.view(h, w), depth.view(h, w), bary.view(h, w, 3)


_KERNEL = {}


def _warp_kernel(wp):
    if "k" not in _KERNEL:
        @wp.kernel
        def cast(mesh: wp.uint64, dirs: wp.array(dtype=wp.vec3), face: wp.array(dtype=int),
                 t: wp.array(dtype=float), u: wp.array(dtype=float), v: wp.array(dtype=float)):
            i = wp.tid()
            q = wp.mesh_query_ray(mesh, wp.vec3(0.0, 0.0, 0.0), dirs[i], 1.0e6)
            face[i] = -1
            if q.result:
                face[i] = q.face
                t[i] = q.t
                u[i] = q.u
                v[i] = q.v
        _KERNEL["k"] = cast
    return _KERNEL["k"]


@pytest.mark.parametrize("size", [(128, 96), (256, 256)])
def test_body_matches_warp_ray_casting(body, size):
    pytest.importorskip("warp")
    h, w = size
    verts, faces = body["verts"][:2], body["faces"]
    K = body["K"](h, w)[:2]
    fr = rasterize(verts, faces, K, (h, w))
    for b in range(2):
        hit, face, depth, bary = _warp_cast(verts[b], faces, K[b], h, w)
        mask = fr.mask[b]
        assert int(hit.sum()) > 0.05 * h * w
        assert (hit == mask).double().mean() >= 0.995
        both = hit & mask
        same = both & (face == fr.face[b])
        assert same.sum() >= 0.99 * both.sum()
        assert (depth - fr.depth[b])[same].abs().max() < 1e-4
        assert (bary - fr.bary[b])[same].abs().max() < 2e-3


def test_body_float32_agrees_with_float64(body):
    verts, faces, K = body["verts"][:1], body["faces"], body["K"](160, 120)[:1]
    f64 = rasterize(verts, faces, K, (160, 120))
    f32 = rasterize(verts.float(), faces, K.float(), (160, 120))
    assert f32.bary.dtype == torch.float32 and f32.depth.dtype == torch.float32
    assert (f32.face == f64.face).double().mean() > 0.999
    same = f32.face == f64.face
    assert (f32.depth.double() - f64.depth)[same & f64.mask].abs().max() < 1e-4


def test_interpolate_positions_reproduce_depth_and_constants_stay_constant(body):
    verts, faces, K = body["verts"][:2], body["faces"], body["K"](64, 64)[:2]
    fr = rasterize(verts, faces, K, (64, 64))
    pos = interpolate(fr, verts, faces)
    assert pos.shape == (2, 64, 64, 3)
    assert torch.allclose(pos[..., 2][fr.mask], fr.depth[fr.mask], atol=1e-10)
    assert torch.all(pos[~fr.mask] == 0)
    const = interpolate(fr, torch.full((verts.shape[1], 2), 0.25, dtype=F64), faces)
    assert torch.allclose(const[fr.mask], torch.full_like(const[fr.mask], 0.25))
    assert torch.all(const[~fr.mask] == 0)


def test_interpolate_gradient_flows_to_attributes():
    verts = _tri([[0, 0], [4, 0], [0, 4], [4, 4]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    fr = rasterize(verts, faces, _K(), (5, 6))
    attrs = torch.randn(1, 4, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(fr, a, faces), (attrs,))
    shared = torch.randn(4, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: interpolate(fr, a, faces), (shared,))


# ---------------------------------------------------------------- renders

def test_renders_shapes_and_sanity(body):
    verts, faces, K = body["verts"][:2], body["faces"], body["K"](80, 64)[:2]
    fr = rasterize(verts, faces, K, (80, 64))
    mask, depth = render_mask(fr), render_depth(fr)
    assert mask.shape == (2, 80, 64, 1) and torch.equal(mask[..., 0] > 0, fr.mask)
    assert depth.shape == (2, 80, 64, 1) and torch.all(depth[~fr.mask] == 0)
    assert torch.all(depth[fr.mask] > 1.0)
    pos = interpolate(fr, verts, faces)[fr.mask]
    for smooth in (True, False):
        n = render_normals(fr, verts, faces, smooth=smooth)
        assert n.shape == (2, 80, 64, 3) and torch.all(n[~fr.mask] == 0)
        assert torch.allclose(n[fr.mask].norm(dim=-1), torch.ones(int(fr.mask.sum()), dtype=F64))
        facing = ((n[fr.mask] * -pos).sum(-1) >= 0).double().mean()
        assert facing > (0.99 if not smooth else 0.97)
    colors = render_vertex_colors(fr, faces, position_colors(body["model"].v_template))
    assert colors.shape == (2, 80, 64, 3)
    assert colors[fr.mask].min() >= 0 and colors[fr.mask].max() <= 1
    shaded = shade(render_normals(fr, verts, faces), fr.mask)
    assert shaded.shape == (2, 80, 64, 3) and torch.all(shaded[~fr.mask] == 0)
    assert shaded[fr.mask].min() >= 0.8 * 0.3 - 1e-9 and shaded[fr.mask].max() <= 0.8 + 1e-9
    # culling keeps only faces towards the camera and the same silhouette
    front = rasterize(verts, faces, K, (80, 64), cull_backfaces=True)
    assert (front.mask == fr.mask).double().mean() > 0.995
    assert (front.face == fr.face)[fr.mask].double().mean() > 0.99


def test_uv_texture_constant_and_orientation():
    verts = _tri([[0, 0], [4, 0], [0, 4]])
    faces = torch.tensor([[0, 1, 2]])
    fr = rasterize(verts, faces, _K(), (6, 6))
    tex = torch.full((1, 4, 5, 3), 0.6, dtype=F64)
    uvs = torch.rand(1, 3, 2, dtype=F64)
    out = render_uv_texture(fr, faces, uvs, tex)
    assert out.shape == (1, 6, 6, 3)
    assert torch.allclose(out[fr.mask], torch.full_like(out[fr.mask], 0.6)) and torch.all(out[~fr.mask] == 0)
    lr = torch.tensor([0.0, 1.0], dtype=F64).view(1, 1, 2, 1)  # left texel 0, right texel 1
    at = lambda u, v: torch.tensor([[[u, v]] * 3], dtype=F64)  # noqa: E731
    assert torch.allclose(render_uv_texture(fr, faces, at(0.25, 0.5), lr)[fr.mask], torch.zeros(1, dtype=F64))
    assert torch.allclose(render_uv_texture(fr, faces, at(0.75, 0.5), lr)[fr.mask], torch.ones(1, dtype=F64))
    tb = torch.tensor([0.0, 1.0], dtype=F64).view(1, 2, 1, 1)  # top row 0, bottom row 1
    assert torch.allclose(render_uv_texture(fr, faces, at(0.5, 0.75), tb)[fr.mask], torch.zeros(1, dtype=F64))
    assert torch.allclose(render_uv_texture(fr, faces, at(0.5, 0.75), tb, flip_v=False)[fr.mask],
                          torch.ones(1, dtype=F64))
    tex = torch.rand(1, 4, 5, 3, dtype=F64, requires_grad=True)
    render_uv_texture(fr, faces, uvs, tex).sum().backward()
    assert tex.grad.abs().sum() > 0


def test_overlay_keeps_background_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    rendered = np.ones((6, 7, 3))
    mask = np.zeros((6, 7), bool)
    mask[2:4, 3:5] = True
    out = overlay(image, rendered, mask, alpha=0.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])
    expected = np.round(image[mask] / 255 * 0.5 * 255 + 0.5 * 255)
    assert np.abs(out[mask].astype(int) - expected).max() <= 1
    timg = torch.rand(6, 7, 3)
    tout = overlay(timg, torch.zeros(6, 7, 3), torch.from_numpy(mask), alpha=1.0)
    assert torch.equal(tout[~torch.from_numpy(mask)], timg[~torch.from_numpy(mask)])
    assert torch.all(tout[torch.from_numpy(mask)] == 0)


# ---------------------------------------------------------------- CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(body):
    verts, faces, K = body["verts"][:2].float(), body["faces"], body["K"](128, 96)[:2].float()
    cpu = rasterize(verts, faces, K, (128, 96))
    gpu = rasterize(verts.cuda(), faces.cuda(), K.cuda(), (128, 96))
    assert gpu.face.device.type == "cuda"
    assert (gpu.face.cpu() == cpu.face).double().mean() > 0.999
    same = (gpu.face.cpu() == cpu.face) & cpu.mask
    assert torch.allclose(gpu.bary.cpu()[same], cpu.bary[same], atol=1e-4)
    assert torch.allclose(gpu.depth.cpu()[same], cpu.depth[same], atol=1e-5)
    colors = position_colors(verts[0])
    img = render_vertex_colors(gpu, faces.cuda(), colors.cuda())
    assert torch.allclose(img.cpu(), render_vertex_colors(cpu, faces, colors), atol=1e-4)
