"""Fit overlays: what is drawn where, mesh painting order, atomic PNG output, speed."""
import os
import time

import numpy as np
import pytest

from fitkit.errors import ParameterError
from fitkit.viz import overlay
from fitkit.viz.overlay import draw_overlay, skeleton_edges

cv2 = pytest.importorskip("cv2")

GREY = overlay.CANVAS_GREY


def _read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _window(img, x, y, r=3):
    return img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3).astype(int)


def _is_green(px):
    b, g, r = px
    return g > 150 and g > r + 60 and g > b + 60


def _is_red(px):
    b, g, r = px
    return r > 150 and r > g + 60 and r > b + 60


def test_keypoints_drawn_on_grey_canvas(tmp_path):
    observed = np.array([[50.0, 50.0, 1.0], [150.0, 30.0, 0.0], [100.0, 70.0, 0.8]])
    fitted = np.array([[60.0, 50.0], [170.0, 85.0], [112.0, 80.0]])
    out = draw_overlay(tmp_path / "ov.png", image_size=(200, 100), observed=observed, fitted=fitted)
    assert out == tmp_path / "ov.png"
    assert os.listdir(tmp_path) == ["ov.png"]  # no temporary file left
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = _read(out)
    assert img.shape == (100, 200, 3) and img.dtype == np.uint8
    # observed points with confidence > 0: green circles around them
    for x, y in ((50, 50), (100, 70)):
        assert any(_is_green(px) for px in _window(img, x, y)), (x, y)
    # the confidence-0 point is not drawn: its neighbourhood is still plain grey
    assert (_window(img, 150, 30, 4) == GREY).all()
    # fitted points: red crosses centred on them (all three, fitted has no confidence)
    for x, y in ((60, 50), (170, 85), (112, 80)):
        assert _is_red(img[y, x]), (x, y, img[y, x])
    # the pair line between observed and fitted keypoint 0 crosses (55, 50)
    assert (img[50, 55] != GREY).any()
    # far from everything the canvas is untouched
    assert (img[5:20, 5:30] == GREY).all() and (img[90:, 0:30] == GREY).all()
    assert (_window(img, 160, 57, 2) == GREY).all()  # no pair line for the confidence-0 point


def test_image_array_is_kept_outside_the_drawing(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    before = image.copy()
    out = draw_overlay(tmp_path / "a.png", image=image, observed=np.array([[40.0, 30.0, 1.0]]),
                       fitted=np.array([[42.0, 31.0]]))
    img = _read(out)
    assert img.shape == (60, 80, 3)
    assert np.array_equal(image, before)  # the caller's array is not modified
    assert np.array_equal(img[:20], image[:20]) and np.array_equal(img[45:], image[45:])
    assert not np.array_equal(img[25:36, 35:46], image[25:36, 35:46])
    gray = rng.integers(0, 255, (60, 80), dtype=np.uint8)
    img = _read(draw_overlay(tmp_path / "g.png", image=gray, image_size=(80, 60)))
    assert np.array_equal(img[..., 0], gray) and np.array_equal(img[..., 2], gray)


def test_image_path_and_errors(tmp_path):
    src = tmp_path / "frame.png"
    cv2.imwrite(str(src), np.full((40, 30, 3), 7, np.uint8))
    img = _read(draw_overlay(tmp_path / "out" / "o.png", image=str(src), image_size=(30, 40)))
    assert img.shape == (40, 30, 3) and (img == 7).all()
    missing = tmp_path / "nope" / "frame_0001.jpg"
    with pytest.raises(FileNotFoundError, match="frame_0001.jpg"):
        draw_overlay(tmp_path / "x.png", image=missing)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ParameterError, match="broken.png"):
        draw_overlay(tmp_path / "x.png", image=tmp_path / "broken.png")
    with pytest.raises(ParameterError, match="image is 30x40 but image_size"):
        draw_overlay(tmp_path / "x.png", image=src, image_size=(40, 30))
    with pytest.raises(ParameterError, match="image_size"):
        draw_overlay(tmp_path / "x.png")
    with pytest.raises(ParameterError, match=r"observed must have shape \(K, 3\)"):
        draw_overlay(tmp_path / "x.png", image_size=(10, 10), observed=np.zeros((4, 2)))
    with pytest.raises(ParameterError, match="observed has 4 keypoints but fitted has 3"):
        draw_overlay(tmp_path / "x.png", image_size=(10, 10), observed=np.zeros((4, 3)), fitted=np.zeros((3, 2)))
    with pytest.raises(ParameterError, match="mesh_depth"):
        draw_overlay(tmp_path / "x.png", image_size=(10, 10), mesh_2d=np.zeros((3, 2)), faces=[[0, 1, 2]],
                     mesh_depth=np.ones(4))
    with pytest.raises(ParameterError, match="faces index"):
        draw_overlay(tmp_path / "x.png", image_size=(10, 10), mesh_2d=np.zeros((3, 2)), faces=[[0, 1, 3]])
    assert sorted(os.listdir(tmp_path)) == ["broken.png", "frame.png", "out"]  # nothing half-written


def _two_triangles():
    # A (far, depth 5) covers the left part, B (near, depth 2) the right part; they overlap around (50, 50).
    mesh = np.array([[10.0, 10], [60, 50], [10, 90], [90, 10], [40, 50], [90, 90]])
    depth = np.array([5.0, 5, 5, 2, 2, 2])
    return mesh, depth


@pytest.mark.parametrize("faces", [[[0, 1, 2], [3, 4, 5]], [[3, 4, 5], [0, 1, 2]]])
def test_filled_mesh_is_painted_far_to_near(tmp_path, faces):
    mesh, depth = _two_triangles()
    img = _read(draw_overlay(tmp_path / "m.png", image_size=(100, 100), mesh_2d=mesh, faces=faces,
                             mesh_depth=depth)).astype(float)
    color = np.asarray(overlay.MESH_COLOR, float)
    a = overlay.MESH_ALPHA

    def expected(shade):
        return a * np.round(color * shade) + (1 - a) * GREY

    near, far = expected(1.0), expected(0.55)
    assert np.abs(img[50, 50] - near).max() <= 2, img[50, 50]  # overlap: the near triangle is on top
    assert np.abs(img[50, 20] - far).max() <= 2, img[50, 20]  # only the far triangle
    assert np.abs(img[50, 80] - near).max() <= 2
    assert (img[3, 50] == GREY).all() and (img[97, 50] == GREY).all()


def test_wireframe_without_depth_and_bad_vertices(tmp_path):
    mesh = np.array([[10.0, 10], [90, 10], [50, 90], [np.nan, 5]])
    img = _read(draw_overlay(tmp_path / "w.png", image_size=(100, 100), mesh_2d=mesh,
                             faces=[[0, 1, 2], [0, 1, 3]])).astype(int)
    assert (img[10, 50] != GREY).any()  # on the edge (10,10)-(90,10)
    assert (img[40, 50] == GREY).all()  # inside: a wireframe is not filled
    dots = _read(draw_overlay(tmp_path / "d.png", image_size=(100, 100), mesh_2d=mesh[:3]))
    assert (dots[90, 50] != GREY).any() and (dots[40, 50] == GREY).all()


def test_skeleton_bones_are_drawn(tmp_path):
    edges = skeleton_edges("body25")
    assert (1, 8) in edges and (9, 10) in edges  # neck-mid_hip, right_hip-right_knee
    assert all(a < 25 and b < 25 for a, b in edges)
    assert len(skeleton_edges("coco25")) > 15 and len(skeleton_edges("blazepose33")) > 20
    observed = np.zeros((25, 3))
    observed[1] = (50, 20, 1.0)
    observed[8] = (50, 80, 1.0)
    with_bones = _read(draw_overlay(tmp_path / "s.png", image_size=(100, 100), observed=observed,
                                    skeleton_format="body25"))
    plain = _read(draw_overlay(tmp_path / "p.png", image_size=(100, 100), observed=observed))
    assert _is_green(with_bones[50, 50]) and (plain[50, 50] == GREY).all()
    with pytest.raises(ParameterError, match="format 'coco25' has 23"):
        draw_overlay(tmp_path / "x.png", image_size=(100, 100), observed=observed, skeleton_format="coco25")


def _grid_mesh(nx=118, ny=117, size=900.0, offset=50.0):
    xs, ys = np.meshgrid(np.linspace(0, size, nx), np.linspace(0, size, ny))
    verts = np.stack([xs.ravel() + offset, ys.ravel() + offset], axis=1)
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)])
    depth = 3.0 + np.sin(verts[:, 0] / 100.0) * 0.3
    return verts, faces, depth


def test_large_mesh_draws_quickly(tmp_path):
    verts, faces, depth = _grid_mesh()
    assert len(verts) >= 13718
    kps = np.concatenate([verts[::600], np.ones((len(verts[::600]), 1))], axis=1)
    args = dict(image_size=(1000, 1000), observed=kps, fitted=kps[:, :2] + 3, mesh_2d=verts, faces=faces)
    draw_overlay(tmp_path / "warm.png", mesh_depth=depth, **args)  # imports and first-call costs
    for name, d in (("filled.png", depth), ("wire.png", None)):
        start = time.perf_counter()
        draw_overlay(tmp_path / name, mesh_depth=d, **args)
        assert time.perf_counter() - start < 1.0, name
    filled = _read(tmp_path / "filled.png")
    assert (filled[500, 500] != GREY).any() and (filled[10, 10] == GREY).all()
