"""Side and top views of a fitted body (fitkit.viz.views): what turns when the body turns, the camera marker."""
import numpy as np
import pytest
import torch

from fitkit.errors import ParameterError
from fitkit.viz import views
from fitkit.viz.views import render_body_views

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def model():
    from fitkit.body import load_body_model

    return load_body_model("open")


def _body(model, yaw: float, depth: float = 3.0):
    """(V, 3) vertices of the zero-pose (T-pose) body upright in the camera frame, facing the camera
    for yaw 0, turned by ``yaw`` radians about the vertical axis; the pelvis about ``depth`` m ahead."""
    from scipy.spatial.transform import Rotation

    # SMPL's zero orientation is y-up facing +z; a half turn about x makes it upright (y down) facing the camera.
    r = (Rotation.from_rotvec([0.0, yaw, 0.0]) * Rotation.from_rotvec([np.pi, 0.0, 0.0])).as_rotvec()
    z = torch.zeros
    out = model(torch.tensor(r[None], dtype=torch.float32), z(1, 69), z(1, 10),
                torch.tensor([[0.0, 0.2, depth]]), vertices="all")
    return out.vertices[0]


def _mask(img):
    """The body's pixels: the largest connected non-background region (not the marker or the labels)."""
    fg = (np.abs(img.astype(int) - np.array(views.BACKGROUND)).sum(axis=2) > 30).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    assert count > 1, "blank view"
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


def _camera(img):
    return np.abs(img.astype(int) - np.array(views.CAMERA_COLOR)).sum(axis=2) < 60


def _width(mask):
    cols = np.flatnonzero(mask.any(axis=0))
    return cols[-1] - cols[0] + 1


def _height(mask):
    rows = np.flatnonzero(mask.any(axis=1))
    return rows[-1] - rows[0] + 1


def test_side_and_top_views_turn_with_the_body(model):
    facing = _body(model, 0.0)
    turned = _body(model, np.pi / 2)
    side_f, top_f = render_body_views(facing, model.faces, size=(240, 320))
    side_t, top_t = render_body_views(turned, model.faces, size=(240, 320))
    for img in (side_f, top_f, side_t, top_t):
        assert img.shape == (320, 240, 3) and img.dtype == np.uint8
        assert 0.01 < _mask(img).mean() < 0.6  # a body is drawn, and it is not everything

    # In the side view the facing T-pose body shows its depth (narrow); turned, its arm span (wide).
    ws_f, ws_t = _width(_mask(side_f)), _width(_mask(side_t))
    assert ws_t > 3 * ws_f, (ws_f, ws_t)
    # Independent check: the side view's widths are in the ratio of the bodies' z extents
    # (the view scale does not depend on the turn).
    zext = lambda v: float(v[:, 2].max() - v[:, 2].min())  # noqa: E731
    assert ws_t / ws_f == pytest.approx(zext(turned) / zext(facing), rel=0.2)
    # From above, the facing body's arms run across the image, the turned body's up and down it.
    mf, mt = _mask(top_f), _mask(top_t)
    assert _width(mf) > 2.5 * _height(mf) and _height(mt) > 2.5 * _width(mt)
    assert np.sum(mt) > 0 and not np.array_equal(side_f, side_t)


def test_camera_marker_is_on_the_cameras_side(model):
    verts = _body(model, 0.0)
    side, top = render_body_views(verts, model.faces, size=(240, 320))
    h, w = side.shape[:2]
    ys, xs = np.nonzero(_camera(side))
    assert len(xs) > 20 and xs.max() < w / 4  # side view: the camera (at smaller z) is on the left
    ys, xs = np.nonzero(_camera(top))
    assert len(ys) > 20 and ys.min() > 0.7 * h  # top view: the camera is at the bottom
    # A camera behind the body (z = 6 m, body at 3 m) is on the right of the side view and on top of the top view.
    side_b, top_b = render_body_views(verts, model.faces, size=(240, 320), camera_center=[0.0, 0.0, 6.0])
    ys, xs = np.nonzero(_camera(side_b))
    assert xs.min() > 0.75 * w
    ys, xs = np.nonzero(_camera(top_b))
    assert ys.max() < 0.3 * h


def test_front_faces_tinted_and_labels(model):
    side, = render_body_views(_body(model, 0.0), model.faces, views=("side",), size=(240, 320))
    mask = _mask(side)
    rows = np.flatnonzero(mask.sum(axis=1) > 6)
    row = rows[len(rows) // 3]  # a chest-high row: the camera-facing front is on the left
    cols = np.flatnonzero(mask[row])
    left, right = side[row, cols[1]].astype(int), side[row, cols[-2]].astype(int)
    # FRONT_COLOR is warm (red > blue), BACK_COLOR cool (blue > red), in BGR
    assert left[2] > left[0] and right[0] > right[2], (left, right)
    # the view's name is written in its top-left corner (light grey text on the background)
    corner = side[:30, :60].astype(int)
    assert (corner.min(axis=2) > 140).sum() > 10 and (side[:30, -60:] == views.BACKGROUND).all()


def test_bad_input():
    v = np.random.default_rng(0).normal(size=(10, 3)) + [0, 0, 3]
    f = np.array([[0, 1, 2], [2, 3, 4]])
    with pytest.raises(ParameterError, match="unknown view 'front'"):
        render_body_views(v, f, views=("front",))
    with pytest.raises(ParameterError, match=r"vertices must be a numeric \(V, 3\)"):
        render_body_views(v[:, :2], f)
    with pytest.raises(ParameterError, match="faces index"):
        render_body_views(v, [[0, 1, 10]])
    with pytest.raises(ParameterError, match="size"):
        render_body_views(v, f, size=(4, 4))
    with pytest.raises(ParameterError, match="camera_center"):
        render_body_views(v, f, camera_center=[0.0, 1.0])
    imgs = render_body_views(torch.as_tensor(v), torch.as_tensor(f), views="top", size=(32, 24))
    assert len(imgs) == 1 and imgs[0].shape == (24, 32, 3)
