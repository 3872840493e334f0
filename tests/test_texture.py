"""Back-projected vertex colours and textures (fitkit.render.texture): colours
painted on the open body, rendered from several views and recovered."""
import math

import numpy as np
import pytest
import torch

from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.errors import ParameterError
from fitkit.render import rasterize, render_vertex_colors
from fitkit.render.texture import (atlas_uvs, fill_vertex_colors, render_textured, texture_from_images,
                                   uv_rasterize, vertex_colors_from_images)

F64 = torch.float64
SIZE = 512


@pytest.fixture(scope="module")
def body():
    from fitkit.body import load_body_model
    from fitkit.body.open_body import open_body_arrays

    model = load_body_model("open", num_betas=10, dtype=F64)
    zeros = torch.zeros(1, 3, dtype=F64)

    def pose(**joints):
        bp = torch.zeros(1, 69, dtype=F64)
        for name, aa in joints.items():
            j = SMPL_JOINT_NAMES.index(name)
            bp[0, 3 * (j - 1):3 * j] = torch.tensor(aa, dtype=F64)
        return model(zeros, bp, torch.zeros(1, 10, dtype=F64), vertices="all").vertices[0]

    rest = pose()
    apose = pose(left_shoulder=(0, 0, -0.6), right_shoulder=(0, 0, 0.6))
    # smooth known colours: a function of the rest-pose position
    colors = (0.15 + 0.7 * (rest - rest.amin(0)) / (rest.amax(0) - rest.amin(0))
              + 0.1 * torch.sin(2 * math.pi * rest / 0.4))
    fpart = torch.as_tensor(open_body_arrays()["densepose_part"]).long()
    return {"model": model, "faces": model.faces, "rest": rest, "apose": apose, "pose": pose,
            "colors": colors, "face_part": fpart}


def _views(verts, yaws, pitches, dist=3.0, size=SIZE):
    """(N, V, 3) camera-frame vertices and (N, 3, 3) K: the body (SMPL frame, y up) turned by
    ``yaw`` about its vertical axis, seen upright from ``dist`` m, tilted by ``pitch``."""
    centre = 0.5 * (verts.amin(0) + verts.amax(0))
    flip = axis_angle_to_matrix(torch.tensor([[math.pi, 0.0, 0.0]], dtype=F64))[0]
    out, Ks = [], []
    f = 0.85 * size * dist / 2.0
    for yaw, pitch in zip(yaws, pitches):
        R = (axis_angle_to_matrix(torch.tensor([[pitch, 0.0, 0.0]], dtype=F64))[0] @ flip
             @ axis_angle_to_matrix(torch.tensor([[0.0, yaw, 0.0]], dtype=F64))[0])
        out.append((verts - centre) @ R.T + torch.tensor([0.0, 0.0, dist], dtype=F64))
        Ks.append(torch.tensor([[f, 0, (size - 1) / 2], [0, f, (size - 1) / 2], [0, 0, 1]], dtype=F64))
    return torch.stack(out), torch.stack(Ks)


def _around(n, pitch=0.4):
    return [2 * math.pi * i / n for i in range(n)], [pitch * (-1) ** i for i in range(n)]


def _render(V, faces, K, colors, size=SIZE):
    return render_vertex_colors(rasterize(V, faces, K, (size, size)), faces, colors)


# ---------------------------------------------------------------- per vertex

def test_vertex_colors_recovered_from_four_views(body):
    faces, colors = body["faces"], body["colors"]
    V, K = _views(body["apose"], *_around(4))
    images = _render(V, faces, K, colors)
    rec, seen = vertex_colors_from_images(V, faces, K, images)
    assert rec.shape == colors.shape and seen.shape == (colors.shape[0],) and seen.dtype == torch.long
    assert int(seen.max()) <= 4 and not bool(torch.isnan(rec).any())
    err = (rec - colors).abs().amax(-1)
    s = seen >= 1
    # 4 views: ~78% of the vertices (the dense hands and face self-occlude), ~89% of the area
    rest, fidx = body["rest"], faces
    tri = rest[fidx]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    varea = torch.zeros(rest.shape[0], dtype=F64).index_add_(0, fidx.reshape(-1), area.repeat_interleave(3))
    assert float(s.double().mean()) > 0.75
    assert float((varea * s).sum() / varea.sum()) > 0.85
    # sampling at the vertices' projections vs. the rendered interpolation: ~1e-3 typical
    assert float(err[s].median()) < 0.005
    assert float(err[s].quantile(0.95)) < 0.03
    # the unseen vertices are filled from their neighbours
    assert float(err[~s].median()) < 0.05
    # uint8 images work as well (quantization 1/255)
    rec8, seen8 = vertex_colors_from_images(V, faces, K, (images * 255).round().to(torch.uint8))
    assert torch.equal(seen8, seen) and float((rec8 - colors).abs().amax(-1)[s].median()) < 0.008


def test_eight_views_see_over_ninety_percent(body):
    faces, colors = body["faces"], body["colors"]
    V, K = _views(body["apose"], *_around(8))
    rec, seen = vertex_colors_from_images(V, faces, K, _render(V, faces, K, colors), min_views=2)
    assert float((seen >= 1).double().mean()) > 0.9
    err = (rec - colors).abs().amax(-1)
    assert float(err[seen >= 2].median()) < 0.005


def test_median_ignores_one_corrupted_view(body):
    faces, colors = body["faces"], body["colors"]
    # five frames of a reference sequence: the person turning in front of the camera
    V, K = _views(body["apose"], [-0.6, -0.3, 0.0, 0.3, 0.6], [0.2, -0.2, 0.0, 0.2, -0.2])
    images = _render(V, faces, K, colors)
    g = torch.Generator().manual_seed(0)
    bad = images.clone()
    bad[2] = torch.rand(SIZE, SIZE, 3, generator=g, dtype=F64)
    rec, seen = vertex_colors_from_images(V, faces, K, bad)
    clean = torch.tensor([0, 1, 3, 4])
    _, seen_clean = vertex_colors_from_images(V[clean], faces, K[clean], images[clean], fill=False)
    _, seen_bad = vertex_colors_from_images(V[2:3], faces, K[2:3], images[2:3], fill=False)
    assert torch.equal(seen, seen_clean + seen_bad)  # visibility depends on geometry only
    sel = (seen_clean >= 3) & (seen_bad == 1)
    assert int(sel.sum()) > 300
    err = (rec - colors).abs().amax(-1)[sel]
    assert float(err.median()) < 0.005 and float(err.quantile(0.95)) < 0.03
    # a mean would not survive the corrupted view
    samples = torch.stack([rec, bad[2].mean((0, 1)).expand_as(rec)])
    assert float((samples.mean(0) - colors).abs().amax(-1)[sel].median()) > 0.05


def test_arm_in_front_of_torso_hides_it(body):
    """A forearm bent across the belly: the torso vertices behind it (their pixel shows a face of
    the arm, nearer by > 3 cm) are unseen, although the same vertices are seen without the arm there."""
    faces, fpart = body["faces"], body["face_part"]
    posed = body["pose"](left_shoulder=(0.0, -1.0, -1.1), left_elbow=(0.0, -1.9, 0.0),
                         right_shoulder=(0.0, 0.0, 1.1))
    V, K = _views(posed, [0.0], [0.0])
    frags = rasterize(V, faces, K, (SIZE, SIZE))
    uv = (V[0] / V[0, :, 2:]) @ K[0].T
    x, y = uv[:, 0].round().long().clamp(0, SIZE - 1), uv[:, 1].round().long().clamp(0, SIZE - 1)
    win = frags.face[0, y, x]
    arm_parts = torch.tensor([3, 4] + list(range(15, 23)))
    win_arm = (win >= 0) & torch.isin(fpart[win.clamp(min=0)], arm_parts)
    vpart = torch.zeros(V.shape[1], dtype=torch.long)
    vpart[faces.reshape(-1)] = fpart.repeat_interleave(3)
    torso = (vpart == 1) | (vpart == 2)
    from fitkit.render import vertex_normals
    facing = -(vertex_normals(V, faces)[0] * V[0]).sum(-1) / V[0].norm(dim=-1) > 0.5
    hidden = torso & facing & win_arm & (frags.depth[0, y, x] < V[0, :, 2] - 0.03)
    assert int(hidden.sum()) > 20
    images = _render(V, faces, K, body["colors"])
    _, seen = vertex_colors_from_images(V, faces, K, images, fill=False)
    assert int(seen[hidden].sum()) == 0
    assert float(seen[torso & ~hidden].double().mean()) > 0.3  # other torso vertices are seen
    # without the arm in front (A-pose) most of those vertices are seen from the same camera
    V2, K2 = _views(body["apose"], [0.0], [0.0])
    _, seen2 = vertex_colors_from_images(V2, faces, K2, _render(V2, faces, K2, body["colors"]), fill=False)
    assert float(seen2[hidden].double().mean()) > 0.8


def test_plate_in_front_hides_what_it_covers(body):
    """A camera-parallel square plate in front of the chest: no body vertex projecting inside it is seen."""
    faces = body["faces"]
    V, K = _views(body["apose"], [0.0], [0.0])
    zp = float(V[0, :, 2].min()) - 0.1
    h = 0.25
    plate = torch.tensor([[-h, -0.4, zp], [h, -0.4, zp], [h, 0.1, zp], [-h, 0.1, zp]], dtype=F64)
    nv = V.shape[1]
    Vp = torch.cat([V, plate[None]], 1)
    fp = torch.cat([faces, torch.tensor([[nv, nv + 2, nv + 1], [nv, nv + 3, nv + 2]])])
    images = _render(Vp, fp, K, torch.cat([body["colors"], torch.full((4, 3), 0.5, dtype=F64)]))
    _, seen = vertex_colors_from_images(Vp, fp, K, images, fill=False)
    uv = (V[0] / V[0, :, 2:]) @ K[0].T
    f, c = float(K[0, 0, 0]), float(K[0, 0, 2])
    lo_u, hi_u = c + f * -h / zp, c + f * h / zp
    lo_v, hi_v = c + f * -0.4 / zp, c + f * 0.1 / zp
    inside = (uv[:, 0] > lo_u + 1) & (uv[:, 0] < hi_u - 1) & (uv[:, 1] > lo_v + 1) & (uv[:, 1] < hi_v - 1)
    assert int(inside.sum()) > 500
    assert int(seen[:nv][inside].sum()) == 0
    _, seen_free = vertex_colors_from_images(V, faces, K, _render(V, faces, K, body["colors"]), fill=False)
    assert float(seen_free[inside].double().mean()) > 0.4  # the front half of those is seen without it


def test_fill_vertex_colors_propagates_over_edges():
    faces = torch.tensor([[0, 1, 2], [1, 3, 2], [3, 4, 2]])
    colors = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [float("nan")] * 3, [0.0, 0, 1], [float("nan")] * 3])
    out = fill_vertex_colors(colors, faces)
    assert not bool(torch.isnan(out).any())
    assert torch.equal(out[[0, 1, 3]], colors[[0, 1, 3]])
    assert torch.allclose(out[2].sum(), torch.tensor(1.0)) and float(out[2, 0]) > 0.5
    assert torch.all(fill_vertex_colors(torch.full((5, 3), float("nan")), faces) == 0.5)


# ---------------------------------------------------------------- per texel

def test_atlas_and_uv_rasterization():
    uvs = atlas_uvs(10)
    assert uvs.shape == (10, 3, 2) and float(uvs.min()) >= 0 and float(uvs.max()) <= 1
    face, bary = uv_rasterize(uvs, 64)
    ids = face[face >= 0].unique()
    assert torch.equal(ids, torch.arange(10))  # every face owns texels, none overlap the others' cells
    assert torch.allclose(bary[face >= 0].sum(-1), torch.ones(int((face >= 0).sum()), dtype=F64))
    assert int(face[0, 0]) == -1  # the margin
    with pytest.raises(ParameterError):
        atlas_uvs(10, cells=3)


def test_constant_body_gives_constant_texture_and_render(body):
    faces = body["faces"]
    c = torch.tensor([0.2, 0.5, 0.8], dtype=F64)
    V, K = _views(body["apose"], *_around(4), size=256)
    images = _render(V, faces, K, c.expand(V.shape[1], 3), size=256)
    face_uvs = atlas_uvs(faces.shape[0], dtype=F64)
    tex, seen = texture_from_images(V, faces, K, images, face_uvs, 1024)
    assert tex.shape == (1024, 1024, 3) and seen.shape == (1024, 1024)
    charts = uv_rasterize(face_uvs, 1024)[0] >= 0
    assert float((seen[charts] >= 1).double().mean()) > 0.75
    assert int((seen[~charts]).sum()) == 0
    assert torch.allclose(tex[seen >= 1], c.expand(int((seen >= 1).sum()), 3), atol=1e-9)
    assert torch.allclose(tex, c.expand(1024, 1024, 3), atol=1e-9)  # filled everywhere from seen texels
    out = render_textured(V[:2], faces, K[:2], (256, 256), uv_texture=(face_uvs, tex), shading=False)
    mask = rasterize(V[:2], faces, K[:2], (256, 256)).mask
    assert torch.allclose(out[mask], c.expand(int(mask.sum()), 3), atol=1e-6)
    assert torch.all(out[~mask] == 0)
    shaded = render_textured(V[:2], faces, K[:2], (256, 256), uv_texture=(face_uvs, tex))
    assert torch.all(shaded[mask] <= c + 1e-9) and float(shaded[mask].mean()) > 0.5 * float(c.mean())
    # over images: untouched off the body
    bg = np.full((256, 256, 3), 40, np.uint8)
    over = render_textured(V[:1], faces, K[:1], (256, 256), uv_texture=(face_uvs, tex), background=bg,
                           shading=False)
    assert over.dtype == torch.uint8 and torch.all(over[0][~mask[0]] == 40)
    assert torch.all((over[0][mask[0]].double() - (c * 255).round()).abs() <= 1)


def test_texture_reproduces_smooth_colours(body):
    """Texture from 4 views of the smooth colours, rendered back in view 0: close to the original render."""
    faces, colors = body["faces"], body["colors"]
    V, K = _views(body["apose"], *_around(4), size=256)
    images = _render(V, faces, K, colors, size=256)
    face_uvs = atlas_uvs(faces.shape[0], dtype=F64)
    tex, seen = texture_from_images(V, faces, K, images, face_uvs, 1024)
    out = render_textured(V[:1], faces, K[:1], (256, 256), uv_texture=(face_uvs, tex), shading=False)
    mask = rasterize(V[:1], faces, K[:1], (256, 256)).mask
    err = (out[mask] - images[:1][mask]).abs().amax(-1)
    assert float(err.median()) < 0.01 and float(err.quantile(0.9)) < 0.05
    # and with vertex colours
    rec, _ = vertex_colors_from_images(V, faces, K, images)
    outv = render_textured(V[:1], faces, K[:1], (256, 256), vertex_colors=rec, shading=False)
    assert float((outv[mask] - images[:1][mask]).abs().amax(-1).median()) < 0.01


def test_bad_arguments(body):
    faces = body["faces"]
    V, K = _views(body["apose"], [0.0], [0.0], size=32)
    img = torch.zeros(1, 32, 32, 3, dtype=F64)
    with pytest.raises(ParameterError):
        vertex_colors_from_images(V, faces, K, img[..., :2])
    with pytest.raises(ParameterError):
        vertex_colors_from_images(V, faces, K[:0], img)
    with pytest.raises(ParameterError):
        vertex_colors_from_images(V, faces, K, img, min_views=0)
    with pytest.raises(ParameterError):
        render_textured(V, faces, K, (32, 32))


def test_chart_atlas_puts_each_part_in_its_own_tile():
    from fitkit.render.iuv import open_body_charts
    from fitkit.render.texture import chart_atlas_uvs

    from fitkit.body import load_body_model

    model = load_body_model("open", num_betas=10)
    charts = open_body_charts(model)
    uv = chart_atlas_uvs(charts.face_part, charts.face_uv)
    assert uv.shape == charts.face_uv.shape and (uv >= 0).all() and (uv <= 1).all()
    tile = (uv[..., 0] * 6).floor() + 6 * ((1 - uv[..., 1]) * 4).floor()  # columns of 6, rows of 4, from the top
    assert torch.equal(tile.long(), (charts.face_part - 1)[:, None].expand(-1, 3))
