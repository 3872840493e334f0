"""Video files and panels (fitkit.viz.video) and the synthetic video (fitkit.eval.video)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fitkit.camera import project
from fitkit.errors import ParameterError
from fitkit.eval.video import make_synthetic_video, overlay_video, video_clips
from fitkit.io.optical_flow import compute_flow
from fitkit.render.rasterizer import rasterize
from fitkit.terms.flow import gt_flow
from fitkit.viz.video import side_by_side, write_video

F64 = torch.float64
SIZE = (128, 128)  # (W, H) of the test videos
FRAMES = 5


def _random_video(t=4, h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- write_video

def test_write_gif_and_mp4_read_back(tmp_path):
    from PIL import Image
    import cv2

    video = _random_video()
    gif = write_video(tmp_path / "clip.gif", video, fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.size == (32, 24)
        assert im.info["loop"] == 0 and im.info["duration"] == 100
    mp4 = write_video(tmp_path / "clip.mp4", video.astype(np.float32) / 255.0, fps=12)
    cap = cv2.VideoCapture(str(mp4))
    try:
        count = 0
        while cap.read()[0]:
            count += 1
        assert count == 4
        assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (32, 24)
    finally:
        cap.release()
    odd = write_video(tmp_path / "odd.mp4", _random_video(h=15, w=21), fps=5)  # padded to 22x16
    cap = cv2.VideoCapture(str(odd))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (22, 16)
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.gif", "clip.mp4", "odd.mp4"]  # no temporaries


def test_write_mp4_keeps_rgb_order(tmp_path):
    import cv2

    video = np.zeros((2, 32, 32, 3), np.uint8)
    video[..., 0] = 220  # pure red
    write_video(tmp_path / "red.mp4", video, fps=5)
    cap = cv2.VideoCapture(str(tmp_path / "red.mp4"))
    ok, bgr = cap.read()
    cap.release()
    assert ok and bgr[..., 2].mean() > 180 and bgr[..., 0].mean() < 40  # red is OpenCV's last channel


def test_write_video_rejects_bad_suffix_and_frames(tmp_path):
    with pytest.raises(ValueError, match=r"\.avi.*\.gif.*\.mp4"):
        write_video(tmp_path / "clip.avi", _random_video())
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "clip.gif", _random_video(), fps=0)
    with pytest.raises(ParameterError, match=r"\(T, H, W, 3\)"):
        write_video(tmp_path / "clip.gif", _random_video()[..., :2])
    assert list(tmp_path.iterdir()) == []


def test_failed_writes_leave_nothing_behind(tmp_path, monkeypatch):
    import cv2
    from PIL import Image

    (tmp_path / "keep.gif").write_bytes(b"old")

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(Image.Image, "save", broken_save)
        with pytest.raises(OSError, match="disk full"):
            write_video(tmp_path / "keep.gif", _random_video())
    assert (tmp_path / "keep.gif").read_bytes() == b"old"  # the old file is untouched

    class Writer:  # opens and writes a few bytes, then fails mid-video
        def __init__(self, path, *args):
            self.path = path
            open(path, "wb").write(b"partial")

        def isOpened(self):
            return True

        def write(self, frame):
            raise cv2.error("encoder crashed")

        def release(self):
            pass

    class Closed(Writer):
        def isOpened(self):
            return False

    with monkeypatch.context() as m:
        m.setattr(cv2, "VideoWriter", Writer)
        with pytest.raises(cv2.error, match="encoder crashed"):
            write_video(tmp_path / "clip.mp4", _random_video())
        m.setattr(cv2, "VideoWriter", Closed)
        with pytest.raises(RuntimeError, match=r"clip\.mp4.*\.gif"):
            write_video(tmp_path / "clip.mp4", _random_video())
    assert [p.name for p in tmp_path.iterdir()] == ["keep.gif"]


def test_side_by_side():
    a, b = _random_video(seed=1), _random_video(w=20, seed=2)
    panel = side_by_side(a, b)
    assert panel.shape == (4, 24, 52, 3) and panel.dtype == np.uint8
    np.testing.assert_array_equal(panel[:, :, :32], a)
    np.testing.assert_array_equal(panel[:, :, 32:], b)
    black = np.zeros((2, 40, 60, 3), np.uint8)
    labelled = side_by_side(black, black, labels=["fit", None])
    assert labelled.shape == (2, 40, 120, 3)
    assert labelled[:, :, :60].max() > 200 and labelled[:, :, 60:].max() == 0  # only the first has text
    with pytest.raises(ParameterError, match="height"):
        side_by_side(a, _random_video(h=10))
    with pytest.raises(ParameterError, match="labels"):
        side_by_side(a, b, labels=["x"])


# ---------------------------------------------------------------- the synthetic video

@pytest.fixture(scope="module")
def model():
    from fitkit.body import load_body_model

    return load_body_model("open", num_betas=10)


@pytest.fixture(scope="module")
def video(model):
    return make_synthetic_video(model, clip="punch", frames=FRAMES, start=10, image_size=SIZE, seed=3)


def test_video_shapes_and_fields(video, model):
    t, (w, h) = FRAMES, SIZE
    obs = video.observations
    assert len(video) == t and len(obs) == t and video.fps == pytest.approx(30.0, abs=0.01)
    assert video.images.shape == (t, h, w, 3) and video.images.dtype == np.uint8
    assert video.gt_flow.shape == (t, h, w, 2) and video.gt_flow.dtype == np.float32
    assert obs.keypoints.shape == (t, 25, 3) and obs.keypoint_format == "body25"
    assert obs.frame_ids == [f"punch_{i:06d}" for i in range(10, 10 + t)]
    assert obs.dense["flow"].shape == (t, h, w, 2) and obs.dense["flow"].dtype == model.dtype
    assert torch.isnan(obs.dense["flow"][-1]).all() and np.isnan(video.gt_flow[-1]).all()
    f = math.hypot(w, h)
    np.testing.assert_allclose(video.K.numpy(), [[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], rtol=1e-6)
    for key, shape in (("global_orient", (t, 3)), ("body_pose", (t, 69)), ("betas", (t, 10)), ("transl", (t, 3))):
        assert video.gt[key].shape == shape and video.init[key].shape == shape
    assert video.gt["joints"].shape == (t, 24, 3)
    assert float(video.init["betas"].abs().max()) == 0.0  # mean shape to start from
    pose_err = (video.init["body_pose"] - video.gt["body_pose"]).std()
    assert 0.1 < float(pose_err) < 0.2  # INIT_JITTER body_pose = 0.15 rad
    if "track_ids" in type(obs).__dataclass_fields__:  # one track, numbered by clip frame
        assert len(set(obs.track_ids)) == 1 and len(obs.track_ids) == t
        assert list(obs.frame_numbers) == list(range(10, 10 + t))


def test_whole_body_in_view_and_keypoints_match_the_truth(video, model):
    gt, obs = video.gt, video.observations
    out = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all", keypoints="body25")
    K = obs.intrinsics
    uv = project(out.vertices, K)
    w, h = SIZE
    assert float(uv[..., 0].min()) > 0 and float(uv[..., 0].max()) < w - 1
    assert float(uv[..., 1].min()) > 0 and float(uv[..., 1].max()) < h - 1
    assert float((uv[..., 1].amax(1) - uv[..., 1].amin(1)).min()) > 0.4 * h  # a good part of the image
    clean = project(out.keypoints, K)
    torch.testing.assert_close(clean, gt["keypoints_2d_clean"], atol=1e-3, rtol=0)
    kept = obs.confidence > 0
    assert 0.7 < float(kept.float().mean()) < 1.0  # dropout 0.1
    residual = (obs.keypoints[..., :2] - clean)[kept]
    assert float(residual.std()) == pytest.approx(2.0, rel=0.25)  # noise_px = 2
    assert float(residual.abs().max()) < 5 * 2.0
    assert float(obs.confidence[kept].min()) >= 0.6
    torch.testing.assert_close(out.joints, gt["joints"])


def test_gt_flow_is_the_body_and_zero_flow_on_the_static_background(video):
    covered = np.isfinite(video.gt_flow[:-1]).all(-1)
    assert 0.05 < covered.mean() < 0.5
    dis = video.observations.dense["flow"][:-1].numpy()
    # the background is static: DIS finds (almost) no motion there
    assert np.median(np.abs(dis[~covered])) < 0.05


def _interior(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels of (T, H, W) ``mask`` whose (2r+1)^2 neighbourhood is all inside it."""
    import cv2

    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return np.stack([cv2.erode(m.astype(np.uint8), kernel).astype(bool) for m in mask])


def test_dis_flow_agrees_with_the_geometric_flow_on_the_body(video):
    # Measured: median endpoint error 0.10 px on this video (128 x 128, punch), 0.29 px over 48 frames
    # at 256 x 256, 0.6 px on the fast 'run' clip at 128 x 128; the true motion is ~0.5-1.5 px per frame.
    gt = video.gt_flow[:-1]
    dis = video.observations.dense["flow"][:-1].numpy()
    inside = _interior(np.isfinite(gt).all(-1))
    epe = np.linalg.norm(dis - gt, axis=-1)[inside]
    assert np.median(epe) < 0.5
    assert np.median(np.linalg.norm(gt[inside], axis=-1)) > 0.2  # the body does move


def test_flow_choices(model, video):
    kw = dict(clip="punch", frames=2, start=10, image_size=SIZE, seed=3)
    gt = make_synthetic_video(model, flow="gt", **kw)
    np.testing.assert_array_equal(gt.observations.dense["flow"].numpy(), gt.gt_flow.astype(np.float32))
    none = make_synthetic_video(model, flow=None, **kw)
    assert none.observations.dense is None
    np.testing.assert_array_equal(none.images, gt.images)  # the flow choice changes nothing else
    np.testing.assert_array_equal(none.gt_flow, gt.gt_flow)
    # 'dis' is OpenCV DIS on the rendered frames
    np.testing.assert_array_equal(video.observations.dense["flow"][:1].numpy(), compute_flow(video.images[:2])[:1])
    with pytest.raises(ValueError, match="flow"):
        make_synthetic_video(model, flow="raft", **kw)


def test_deterministic_by_seed(model, video):
    again = make_synthetic_video(model, clip="punch", frames=FRAMES, start=10, image_size=SIZE, seed=3)
    np.testing.assert_array_equal(again.images, video.images)
    np.testing.assert_array_equal(again.gt_flow, video.gt_flow)
    torch.testing.assert_close(again.observations.keypoints, video.observations.keypoints, rtol=0, atol=0)
    for key in video.init:
        torch.testing.assert_close(again.init[key], video.init[key], rtol=0, atol=0)
    other = make_synthetic_video(model, clip="punch", frames=FRAMES, start=10, image_size=SIZE, seed=4, flow=None)
    assert not np.array_equal(other.images, video.images)
    assert not torch.equal(other.observations.keypoints, video.observations.keypoints)
    torch.testing.assert_close(other.gt["body_pose"], video.gt["body_pose"])  # same motion, other draw


def test_clip_errors(model):
    clips = video_clips()
    assert set(clips) == {"run", "punch", "spin", "dance_b", "turn_left1"}
    n_run = clips["run"][1]
    with pytest.raises(ValueError, match=rf"'run' has {n_run} frames.*punch \(\d+ frames\)"):
        make_synthetic_video(model, clip="run", frames=n_run + 1, image_size=SIZE, flow=None)
    with pytest.raises(ValueError, match="walk.*run"):
        make_synthetic_video(model, clip="walk", frames=2, image_size=SIZE, flow=None)
    full = make_synthetic_video(model, clip="walker/turn_left1", frames=1, image_size=(64, 48), flow=None)
    assert full.observations.frame_ids == ["turn_left1_000000"] and np.isnan(full.gt_flow).all()


def test_gt_flow_of_a_translation_parallel_to_the_image_plane(model):
    """Every body point moving by (dx, dy, 0) m at depth z moves f dx / z, f dy / z pixels."""
    f, (w, h) = 200.0, (96, 128)
    K = torch.tensor([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=F64)
    body = model(torch.tensor([[math.pi, 0.0, 0.0]]), torch.zeros(1, 69), torch.zeros(1, 10),
                 torch.tensor([[0.0, 0.25, 4.0]]), vertices="all").vertices[0].double()
    step = torch.tensor([0.03, -0.02, 0.0], dtype=F64)
    verts = torch.stack([body, body + step, body + 2 * step])
    flow = gt_flow(verts, model.faces, K, (h, w)).numpy()
    assert flow.shape == (3, h, w, 2) and np.isnan(flow[2]).all()
    frags = rasterize(verts, model.faces, K[None].expand(3, 3, 3), (h, w))
    mask = frags.mask.numpy()[:2]
    assert np.array_equal(np.isfinite(flow[:2]).all(-1), mask) and mask.mean() > 0.05
    depth = frags.depth.numpy()[:2][mask]
    expected = f * step[:2].numpy()[None] / depth[:, None]
    np.testing.assert_allclose(flow[:2][mask], expected, rtol=1e-6, atol=1e-9)  # exact: 1/z is affine on screen
    z = float(body[:, 2].mean())
    np.testing.assert_allclose(flow[:2][mask], np.broadcast_to(f * step[:2].numpy() / z, expected.shape), rtol=0.1)


def test_overlay_video(model, video):
    out = overlay_video(model, video.gt, video.K, video.images)
    assert out.shape == video.images.shape and out.dtype == np.uint8
    body = np.isfinite(video.gt_flow[0]).all(-1)  # where frame 0's body is
    assert np.array_equal(out[0][~body], video.images[0][~body])
    assert np.abs(out[0][body].astype(int) - video.images[0][body]).mean() > 10
    with pytest.raises(ParameterError, match="rows"):
        overlay_video(model, {k: v[:2] for k, v in video.gt.items()}, video.K, video.images)
