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
    out = draw_overlay(tmp_path / "ov.png", image_size=(200, 100), observed=observed, fitted=fitted, legend=False)
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
                       fitted=np.array([[42.0, 31.0]]), legend=False)
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
                             mesh_depth=depth, legend=False)).astype(float)
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
    args = dict(image_size=(1000, 1000), observed=kps, fitted=kps[:, :2] + 3, mesh_2d=verts, faces=faces,
                legend=False)
    draw_overlay(tmp_path / "warm.png", mesh_depth=depth, **args)  # imports and first-call costs
    for name, d in (("filled.png", depth), ("wire.png", None)):
        start = time.perf_counter()
        draw_overlay(tmp_path / name, mesh_depth=d, **args)
        assert time.perf_counter() - start < 1.0, name
    filled = _read(tmp_path / "filled.png")
    assert (filled[500, 500] != GREY).any() and (filled[10, 10] == GREY).all()


# ---------------------------------------------------------------- legend, scaling, side views

def test_legend_and_frame_id_are_drawn_in_their_box():
    from fitkit.viz.overlay import compose_overlay, legend_box

    observed = np.array([[300.0, 200.0, 1.0], [320.0, 260.0, 1.0]])
    fitted = np.array([[303.0, 204.0], [320.0, 250.0]])
    args = dict(image_size=(400, 300), observed=observed, fitted=fitted)
    plain = compose_overlay(legend=False, **args)
    with_id = compose_overlay(frame_id="frame_000042", **args)
    no_id = compose_overlay(**args)
    x0, y0, x1, y1 = legend_box(plain.shape, lines=4)  # frame, error, observed, fitted
    assert x1 < 300 and y1 < 190  # the keypoints lie outside the box
    outside = np.ones(plain.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(with_id[outside], plain[outside])  # only the box changes
    assert (with_id[y0:y1, x0:x1] != plain[y0:y1, x0:x1]).any(axis=2).mean() > 0.3  # darkened box and text
    assert not np.array_equal(with_id, no_id)  # the frame id line is there
    # swatches: a green circle and a red cross inside the box
    box = with_id[y0:y1, x0:x1].reshape(-1, 3).astype(int)
    assert any(_is_green(px) for px in box) and any(_is_red(px) for px in box)
    # the 2D error: (5 + 10) / 2 = 7.5 px computed when not given; a given value replaces it
    assert np.array_equal(compose_overlay(error_px=7.5, **args), no_id)
    assert not np.array_equal(compose_overlay(error_px=70.5, **args), no_id)
    # a fitted point at NaN makes the computed error "n/a", not a crash
    bad = compose_overlay(image_size=(400, 300), observed=observed, fitted=np.full((2, 2), np.nan))
    assert bad.shape == plain.shape


def _circle_centre(img):
    """Centroid of the green channel over a black background (the observed circle is symmetric)."""
    g = img[..., 1].astype(float) - img[..., 2]  # green minus red: the circle, not the legend
    g[g < 0] = 0
    ys, xs = np.indices(g.shape)
    return (xs * g).sum() / g.sum(), (ys * g).sum() / g.sum()


def test_half_size_image_scales_the_coordinates():
    from fitkit.viz.overlay import compose_overlay

    observed = np.array([[1001.0, 601.0, 1.0]])
    full = compose_overlay(image=np.zeros((1200, 2000, 3), np.uint8), image_size=(2000, 1200),
                           observed=observed, legend=False)
    half = compose_overlay(image=np.zeros((600, 1000, 3), np.uint8), image_size=(2000, 1200),
                           observed=observed, legend=False)
    assert half.shape == (600, 1000, 3)
    cx, cy = _circle_centre(full)
    assert abs(cx - 1001) < 0.3 and abs(cy - 601) < 0.3
    # pixel centres scale as (u + 0.5) / 2 - 0.5: (1001, 601) -> (500.25, 300.25)
    cx, cy = _circle_centre(half)
    assert abs(cx - 500.25) < 0.3 and abs(cy - 300.25) < 0.3, (cx, cy)
    # a slightly different aspect ratio (within 3 %) is accepted, a crop is not
    compose_overlay(image=np.zeros((610, 1000, 3), np.uint8), image_size=(2000, 1200), observed=observed)
    with pytest.raises(ParameterError, match=r"image is 1000x800 but image_size is \(2000, 1200\).*aspect"):
        compose_overlay(image=np.zeros((800, 1000, 3), np.uint8), image_size=(2000, 1200), observed=observed)


def test_side_views_are_appended_at_the_image_height(tmp_path):
    from fitkit.viz.overlay import compose_overlay

    view = np.zeros((50, 40, 3), np.uint8)
    view[:, :20] = (255, 0, 0)
    view[:, 20:] = (0, 0, 255)
    out = compose_overlay(image_size=(120, 100), side_views=[view, np.full((100, 30, 3), 77, np.uint8)],
                          legend=False)
    assert out.shape == (100, 120 + 80 + 30, 3)
    assert (out[:, :120] == GREY).all()
    assert (out[:, 125:155] == (255, 0, 0)).all() and (out[:, 165:195] == (0, 0, 255)).all()
    assert (out[:, 200:] == 77).all()
    written = _read(draw_overlay(tmp_path / "s.png", image_size=(120, 100), side_views=[view], legend=False))
    assert written.shape == (100, 200, 3)
    with pytest.raises(ParameterError, match=r"side_views\[0\]"):
        compose_overlay(image_size=(120, 100), side_views=[np.zeros((5, 5), np.uint8)])


def test_frame_selection_parser():
    from fitkit.viz.overlay import parse_frame_selection

    ids = [f"frame_{i:06d}" for i in range(100)]
    assert parse_frame_selection("all", ids) == list(range(100))
    assert parse_frame_selection(True, ids) == list(range(100))
    assert parse_frame_selection("0,10,50", ids) == [0, 10, 50]
    assert parse_frame_selection("frame_000010, 3", ids) == [3, 10]
    assert parse_frame_selection("::10", ids) == list(range(0, 100, 10))
    assert parse_frame_selection("0:20:5,90:", ids) == [0, 5, 10, 15] + list(range(90, 100))
    assert parse_frame_selection("50,50,0:51:50", ids) == [0, 50]
    # a frame id wins over an index of the same spelling
    assert parse_frame_selection("1", ["5", "1"]) == [1]
    assert parse_frame_selection("0", ["5", "1"]) == [0]
    for spec, message in (("100", r"'100' is outside the indices 0..99"), ("frame_x", r"'frame_x' is neither"),
                          ("0:200", r"'0:200' is out of range .*stop 0..100"), ("::0", "step >= 1"),
                          ("1:2:3:4", "not start:stop:step"), ("a:b", "integers"), ("1,,2", "empty entry"),
                          ("-1", "outside the indices 0..99")):
        with pytest.raises(ParameterError, match=message):
            parse_frame_selection(spec, ids)


# ---------------------------------------------------------------- images from readers and videos

def _zero_fit_arrays(n, size):
    """Result arrays of n frames: the open body upright facing the camera 3 m ahead, default camera."""
    w, h = size
    f = float(np.hypot(w, h))
    rotation = np.zeros((n, 3))
    rotation[:, 0] = np.pi
    return {"global_orient": rotation, "body_pose": np.zeros((n, 69)), "betas": np.zeros((n, 10)),
            "transl": np.tile([0.0, 0.3, 3.0], (n, 1)), "err2d_px": np.full(n, 4.25),
            "intrinsics": np.tile(np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]]), (n, 1, 1))}


def _write_extras(obs, tmp_path, **args):
    from types import SimpleNamespace

    import torch

    from fitkit.body import load_body_model
    from fitkit.commands.fit import _write_extras as write

    ns = SimpleNamespace(**{"meshes": False, "overlays": "all", **args})
    size = tuple(int(v) for v in obs.image_size[0].tolist())
    calls = []
    files = write(ns, load_body_model("open"), obs, _zero_fit_arrays(len(obs), size), tmp_path / "out",
                  torch.device("cpu"), progress=lambda done, total: calls.append((done, total)))
    return files, calls


def test_openpose_images_beside_the_json_are_used(tmp_path):
    import json

    from fitkit.io.keypoint_readers import read_keypoints

    folder = tmp_path / "clip"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = []
    for i in range(2):
        kp = np.zeros((25, 3))
        kp[1] = (80 + i, 30, 0.9)
        (folder / f"clip_{i:06d}_keypoints.json").write_text(json.dumps(
            {"people": [{"pose_keypoints_2d": kp.ravel().tolist()}]}))
        images.append(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        cv2.imwrite(str(folder / f"clip_{i:06d}.png"), images[-1])
    obs = read_keypoints(folder)  # sizes from the images beside the json files
    assert obs.image_paths == [str(folder / f"clip_{i:06d}.png") for i in range(2)]
    assert obs.image_size.tolist() == [[160.0, 120.0]] * 2
    files, calls = _write_extras(obs, tmp_path, overlays="clip_000001")
    assert [f.name for f in files] == ["clip_000001.png"] and calls == [(1, 1)]
    img = _read(files[0])
    # the bottom-right corner (no legend, no body there) is the frame's own image, not grey
    assert np.array_equal(img[100:, 140:], images[1][100:, 140:])
    # without images beside the json there are no image paths (and a size must be given)
    for p in folder.glob("*.png"):
        p.unlink()
    assert read_keypoints(folder, image_size=(160, 120)).image_paths is None


def _tiny_video(path, frames):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    cap = cv2.VideoCapture(str(path))  # what a decoder gives back (MJPG is lossy)
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == len(frames)
    return decoded


def test_video_observations_draw_on_the_video_frames(tmp_path):
    from fitkit.io.observations import Observations, load_observations, save_observations

    frames = []
    for i in range(6):
        frame = np.zeros((96, 128, 3), np.uint8)
        frame[:, :, 0] = 40 * i  # each frame its own colour
        frame[:, :, 2] = np.arange(128, dtype=np.uint8)[None, :] * 2
        frames.append(frame)
    video = tmp_path / "walk.avi"
    decoded = _tiny_video(video, frames)
    kp = np.zeros((6, 25, 3))
    kp[:, 1] = (60, 20, 1.0)
    obs = Observations.from_arrays(kp, "body25", (128, 96), frame_ids=[f"frame_{i:06d}" for i in range(6)],
                                   image_paths=[f"{video}#{i}" for i in range(6)], track_ids=["walk"] * 6)
    obs = load_observations(save_observations(tmp_path / "obs.npz", obs))  # the reference survives the file
    assert obs.image_paths[4] == f"{video}#4"
    files, calls = _write_extras(obs, tmp_path, overlays="1,frame_000004")
    assert [f.name for f in files] == ["frame_000001.png", "frame_000004.png"] and calls == [(1, 2), (2, 2)]
    for f, i in zip(files, (1, 4)):
        img = _read(f)
        corner = (slice(80, None), slice(100, None))
        assert np.array_equal(img[corner], decoded[i][corner]), f
        assert not np.array_equal(img[corner], decoded[i - 1][corner])


def test_video_frames_read_forwards_and_reopen(tmp_path):
    from fitkit.viz.overlay import VideoFrames

    frames = [np.full((32, 48, 3), 30 * i, np.uint8) for i in range(5)]
    video = tmp_path / "v.avi"
    decoded = _tiny_video(video, frames)
    with VideoFrames() as reader:
        assert np.array_equal(reader.frame(video, 1), decoded[1])
        assert np.array_equal(reader.frame(video, 1), decoded[1])  # the same frame twice
        assert np.array_equal(reader.frame(video, 3), decoded[3])
        assert np.array_equal(reader.frame(video, 0), decoded[0])  # backwards: reopened
        with pytest.raises(ParameterError, match="ends before frame 9"):
            reader.frame(video, 9)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        VideoFrames().frame(tmp_path / "nope.mp4", 0)
    # draw_overlay reads a single video frame from a '#' reference too
    img = compose_overlay_of(video, 2)
    assert np.array_equal(img, decoded[2])


def compose_overlay_of(video, index):
    from fitkit.viz.overlay import compose_overlay

    return compose_overlay(image=f"{video}#{index}", image_size=(48, 32), legend=False)


def test_video_references_are_validated(tmp_path):
    from fitkit.errors import ObservationError
    from fitkit.io.observations import Observations, video_frame_ref

    assert video_frame_ref("a/b/run.MP4#12") == ("a/b/run.MP4", 12)
    assert video_frame_ref("shot#1.png") is None and video_frame_ref("img.png") is None
    kp = np.zeros((1, 25, 3))
    for entry, message in (("run.mp4", r"entry 0 \('run.mp4'\) is a video; name one frame as 'run.mp4#"),
                           ("run.mp4#x", r"entry 0 .*frame index"), ("run.mp4#-3", r"entry 0 .*frame index")):
        with pytest.raises(ObservationError, match="field 'image_paths' " + message):
            Observations.from_arrays(kp, "body25", (10, 10), image_paths=[entry], source="obs.npz")


def test_meshes_for_every_frame_in_the_chosen_axes(tmp_path):
    from fitkit.io.observations import Observations

    obs = Observations.from_arrays(np.zeros((3, 25, 3)), "body25", (64, 48))
    files, calls = _write_extras(obs, tmp_path, meshes=True, overlays=None, axes="yup")
    assert [f.name for f in files] == ["000000.obj", "000001.obj", "000002.obj"] and calls == []
    assert not (tmp_path / "out" / "overlays").exists()
    up = np.loadtxt(files[0], usecols=(1, 2, 3), comments="f")
    files, _ = _write_extras(obs, tmp_path, meshes=True, overlays="2")
    assert [f.name for f in files] == ["000000.obj", "000001.obj", "000002.obj", "000002.png"]
    cv = np.loadtxt(files[0], usecols=(1, 2, 3), comments="f")
    np.testing.assert_allclose(up[:, 1], -cv[:, 1], atol=2e-6)  # y-up: 180 degrees about x


def test_fit_command_draws_selected_overlays_with_side_views_on_video_frames(tmp_path):
    import torch

    from fitkit.body import load_body_model
    from fitkit.camera import project
    from fitkit.cli import main
    from fitkit.io.observations import Observations, save_observations

    frames = [np.full((120, 160, 3), 60 + 50 * i, np.uint8) for i in range(3)]
    video = tmp_path / "clip.avi"
    decoded = _tiny_video(video, frames)
    arrays = _zero_fit_arrays(3, (160, 120))
    model = load_body_model("open")
    out = model(*(torch.as_tensor(arrays[k], dtype=torch.float32)
                  for k in ("global_orient", "body_pose", "betas", "transl")), keypoints="body25")
    kp2d = project(out.keypoints, torch.as_tensor(arrays["intrinsics"], dtype=torch.float32)).numpy()
    kp = np.concatenate([kp2d, np.ones(kp2d.shape[:2] + (1,))], axis=2)
    obs_path = save_observations(tmp_path / "obs.npz", Observations.from_arrays(
        kp, "body25", (160, 120), frame_ids=[f"frame_{i:06d}" for i in range(3)],
        image_paths=[f"{video}#{i}" for i in range(3)], track_ids=["clip"] * 3))
    out_dir = tmp_path / "fit"
    assert main(["fit", "--config", "demo", "--input", str(obs_path), "--output", str(out_dir), "--quiet",
                 "--device", "cpu", "--overlays", "frame_000002", "--side-views"]) == 0
    written = sorted(p.name for p in (out_dir / "overlays").iterdir())
    assert written == ["frame_000002.png"]
    img = _read(out_dir / "overlays" / "frame_000002.png")
    assert img.shape[0] == 120 and img.shape[1] > 160 + 2 * 60  # the image, then two views at its height
    corner = (slice(100, 120), slice(130, 160))
    assert np.array_equal(img[corner], decoded[2][corner])
