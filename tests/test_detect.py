"""``fitkit detect`` (fitkit.commands.detect) and the MediaPipe landmark conversion (fitkit.detect).

Everything but the last section runs without mediapipe (the main environment), with a
fake detector. The last section runs only where mediapipe imports (the separate detect
environment, docs/detect.md): the landmark order and the real detector on rendered bodies.
"""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from fitkit.cli import build_parser
from fitkit.body.keypoint_formats import get_format
from fitkit.commands import detect as detect_cmd
from fitkit.detect import (
    DetectError,
    Detection,
    MediaPipeNotInstalledError,
    MediaPipePoseDetector,
    import_mediapipe,
    landmarks_to_detection,
)
from fitkit.errors import FitkitError
from fitkit.io.observations import load_observations


def _landmarks(n=33, seed=0):
    """A fake mediapipe result: ``.landmark`` lists like NormalizedLandmarkList / LandmarkList."""
    rng = np.random.default_rng(seed)
    norm = [SimpleNamespace(x=float(x), y=float(y), z=float(z), visibility=float(v))
            for x, y, z, v in zip(rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.normal(0, 0.1, n),
                                  rng.uniform(0, 1, n))]
    world = [SimpleNamespace(x=float(x), y=float(y), z=float(z), visibility=lm.visibility)
             for (x, y, z), lm in zip(rng.normal(0, 0.3, (n, 3)), norm)]
    return SimpleNamespace(landmark=norm), SimpleNamespace(landmark=world)


# ---------------------------------------------------------------- conversion

def test_landmarks_to_detection_pixels_confidence_and_world():
    lms, world = _landmarks()
    lms.landmark[0].visibility = 1.7      # clipped to 1
    lms.landmark[1].visibility = -0.2     # clipped to 0
    lms.landmark[2].visibility = math.nan  # -> 0
    lms.landmark[3].x = math.inf          # a non-finite landmark is "not observed"
    world.landmark[4].z = math.nan
    det = landmarks_to_detection(lms, world, (200, 100))
    assert isinstance(det, Detection) and det.image_size == (200, 100)
    kp, kp3 = det.keypoints, det.keypoints3d
    assert kp.shape == (33, 3) and kp3.shape == (33, 4)
    for i in range(5, 33):  # x * W, y * H: no half-pixel shift (module docstring)
        lm = lms.landmark[i]
        np.testing.assert_allclose(kp[i], [lm.x * 200, lm.y * 100, lm.visibility])
        w = world.landmark[i]
        np.testing.assert_allclose(kp3[i], [w.x, w.y, w.z, lm.visibility])  # axes unchanged
    assert kp[0, 2] == 1.0 and kp[1, 2] == 0.0 and kp[2, 2] == 0.0
    np.testing.assert_array_equal(kp[3], 0.0)
    np.testing.assert_array_equal(kp3[3], 0.0)  # its 2D keypoint is unobserved
    np.testing.assert_array_equal(kp3[4], 0.0)  # non-finite world landmark
    assert ((kp[:, 2] >= 0) & (kp[:, 2] <= 1)).all()
    np.testing.assert_array_equal(kp3[:, 3], kp[:, 2] * (kp3[:, :3] != 0).any(axis=1))


def test_landmarks_to_detection_plain_sequences_and_errors():
    lms, _ = _landmarks()
    det = landmarks_to_detection(lms.landmark, None, (64, 48))  # a plain list works too
    assert det.keypoints3d is None
    np.testing.assert_allclose(det.keypoints[7, :2], [lms.landmark[7].x * 64, lms.landmark[7].y * 48])
    with pytest.raises(ValueError, match="expected 33 BlazePose landmarks, got 17"):
        landmarks_to_detection(_landmarks(17)[0], None, (64, 48))
    with pytest.raises(ValueError, match="image_size"):
        landmarks_to_detection(lms, None, (0, 48))


# ---------------------------------------------------------------- fake detector

class FakeDetector:
    """Detects a 'person' in images whose mean brightness is >= 100; records its options."""

    made: list = []

    def __init__(self, **options):
        self.options = options
        self.closed = False
        FakeDetector.made.append(self)

    def detect(self, image):
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if image.mean() < 100:
            return None
        h, w = image.shape[:2]
        lms, world = _landmarks(seed=int(image.mean()))
        lms.landmark[5].visibility = 0.05  # below --min-confidence 0.1 in one test
        return landmarks_to_detection(lms, world, (w, h))

    def close(self):
        self.closed = True


@pytest.fixture
def fake():
    FakeDetector.made = []
    return FakeDetector


def _args(inputs, output, **kw):
    argv = ["detect", *map(str, inputs), "-o", str(output), "--quiet"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return build_parser().parse_args(argv)


def _png(path, w, h, value):
    from PIL import Image

    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)
    return path


def test_parser_defaults(tmp_path):
    args = _args(["a.png"], tmp_path / "o.npz")
    assert (args.min_confidence, args.model_complexity, args.every, args.min_detection_confidence) == (0.0, 1, 1, 0.5)
    with pytest.raises(SystemExit):
        _args(["a.png"], tmp_path / "o.npz", model_complexity=2)  # heavy: would download, not offered


def test_images_with_an_empty_frame(tmp_path, fake, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    _png(folder / "b.png", 40, 30, 200)
    _png(folder / "a.png", 40, 30, 150)
    _png(folder / "c.jpg", 20, 50, 10)   # dark: no detection
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out" / "obs.npz"
    summary = detect_cmd.run(_args([folder], out, min_confidence=0.1), detector_factory=fake)

    assert [d.options for d in fake.made] == [dict(static_image_mode=True, model_complexity=1,
                                                   min_detection_confidence=0.5)]
    assert fake.made[0].closed
    assert summary["frames"] == 3 and summary["detected"] == 2 and summary["no_detection"] == ["c"]
    obs = load_observations(out)
    assert obs.keypoint_format == "blazepose33" and obs.num_keypoints == 33
    assert obs.frame_ids == ["a", "b", "c"]  # sorted names, file stems
    assert obs.image_paths == [str(folder / n) for n in ("a.png", "b.png", "c.jpg")]
    assert obs.track_ids is None and obs.frame_numbers is None
    np.testing.assert_array_equal(obs.image_size.numpy(), [[40, 30], [40, 30], [20, 50]])
    assert obs.has_evidence.tolist() == [True, True, False]
    assert (obs.keypoints[2] == 0).all()                # the empty frame: all (0, 0, 0)
    assert (obs.keypoints[:2, 5] == 0).all()            # below --min-confidence: not observed
    expected = FakeDetector().detect(np.full((30, 40, 3), 150, np.uint8)).keypoints
    expected[expected[:, 2] < 0.1] = 0.0
    np.testing.assert_allclose(obs.keypoints[0, 6:].numpy(), expected[6:], rtol=1e-6)
    assert obs.keypoints3d.shape == (3, 33, 4)
    assert (obs.keypoints3d[2] == 0).all() and (obs.keypoints3d[:2, 5] == 0).all()
    np.testing.assert_array_equal(obs.keypoints3d[..., 3].numpy(), obs.keypoints[..., 2].numpy())

    detect_cmd.print_summary(summary)
    text = capsys.readouterr().out
    assert "1 of 3 frames had no detection: c" in text and str(out) in text


def test_video_every_and_empty_frames(tmp_path, fake):
    from fitkit.viz.video import write_video

    frames = np.full((7, 32, 48, 3), 200, np.uint8)
    frames[[2, 4]] = 0  # no person in frames 2 and 4
    video = write_video(tmp_path / "clip.mp4", frames, fps=10)
    out = tmp_path / "vid.npz"
    summary = detect_cmd.run(_args([video], out, every=2), detector_factory=fake)

    assert fake.made[0].options["static_image_mode"] is False and fake.made[0].closed
    obs = load_observations(out)
    assert obs.frame_ids == ["frame_000000", "frame_000002", "frame_000004", "frame_000006"]
    assert obs.track_ids == ["clip"] * 4 and obs.frame_numbers == [0, 1, 2, 3]
    assert obs.image_paths == [f"{video}#{i}" for i in (0, 2, 4, 6)]  # the frames overlays read back
    np.testing.assert_array_equal(obs.image_size.numpy(), [[48, 32]] * 4)
    assert obs.has_evidence.tolist() == [True, False, False, True]
    assert summary["no_detection"] == ["frame_000002", "frame_000004"]
    assert detect_cmd.empty_frames_line(summary) == "2 of 4 frames had no detection: frame_000002, frame_000004"

    # two videos: ids prefixed by the video's stem, one track (and one fresh detector) each
    other = write_video(tmp_path / "other.mp4", frames[:2], fps=10)
    detect_cmd.run(_args([video, other], out), detector_factory=fake)
    obs = load_observations(out)
    assert obs.frame_ids[-2:] == ["other_frame_000000", "other_frame_000001"]
    assert obs.frame_ids[0] == "clip_frame_000000" and obs.track_ids == ["clip"] * 7 + ["other"] * 2
    assert obs.frame_numbers == list(range(7)) + [0, 1]
    assert len(fake.made) == 3


def test_every_frame_empty_is_written(tmp_path, fake):
    _png(tmp_path / "dark.png", 8, 8, 0)
    summary = detect_cmd.run(_args([tmp_path / "dark.png"], tmp_path / "o.npz"), detector_factory=fake)
    assert summary["detected"] == 0 and summary["no_detection"] == ["dark"]
    assert not load_observations(tmp_path / "o.npz").has_evidence.any()


def test_repeated_stems_get_unique_ids(tmp_path, fake):
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        _png(tmp_path / d / "f.png", 8, 8, 200)
    detect_cmd.run(_args([tmp_path / "x", tmp_path / "y"], tmp_path / "o.npz"), detector_factory=fake)
    assert load_observations(tmp_path / "o.npz").frame_ids == ["f", "f_1"]


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.png", "missing.png: no such file or folder"),
    (lambda p: (p / "bad.png").write_text("not a png") and p / "bad.png", "bad.png: cannot read the image"),
    (lambda p: (p / "bad.mp4").write_text("not a video") and p / "bad.mp4", "bad.mp4: cannot open the video"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "notes.txt: not an image"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "empty: folder has no images"),
])
def test_bad_inputs_name_the_file(tmp_path, fake, make, message):
    bad = make(tmp_path)
    good = _png(tmp_path / "good.png", 8, 8, 200)
    out = tmp_path / "o.npz"
    inputs = [bad] if bad.suffix == ".mp4" else [good, bad]  # images and videos do not mix
    with pytest.raises(DetectError, match=message) as info:
        detect_cmd.run(_args(inputs, out), detector_factory=fake)
    assert isinstance(info.value, FitkitError)  # the CLI prints it as one line
    assert not out.exists()  # nothing written


def test_bad_options(tmp_path, fake):
    good = _png(tmp_path / "good.png", 8, 8, 200)
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    with pytest.raises(DetectError, match="not both"):
        detect_cmd.run(_args([good, video], tmp_path / "o.npz"), detector_factory=fake)
    for option, value in (("every", 0), ("min_confidence", 1.5)):
        with pytest.raises(SystemExit):  # the parser refuses it
            _args([good], tmp_path / "o.npz", **{option: value})
        args = _args([good], tmp_path / "o.npz")  # and so does run() when called with a Namespace
        setattr(args, option, value)
        with pytest.raises(DetectError, match="--" + option.replace("_", "-")):
            detect_cmd.run(args, detector_factory=fake)
    with pytest.raises(DetectError, match="is a folder"):
        detect_cmd.run(_args([good], tmp_path), detector_factory=fake)


# ---------------------------------------------------------------- several people (fake detector)

class FakeMultiDetector:
    """'People' are bright (>= 200) rectangles; detects the largest one with 33 keypoints on a grid
    inside it and (with enable_segmentation) its mask. Painted-out people (grey 128) are not seen."""

    made: list = []

    def __init__(self, **options):
        self.options = options
        self.calls = 0
        self.closed = False
        FakeMultiDetector.made.append(self)

    def detect(self, image):
        import cv2

        self.calls += 1
        bright = (image[..., 0] >= 200).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
        if n < 2:
            return None
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = stats[k, :4]
        gx, gy = np.meshgrid(np.linspace(x, x + w - 1, 3), np.linspace(y, y + h - 1, 11))
        kp = np.stack([gx.ravel(), gy.ravel(), np.full(33, 0.9)], axis=1)
        mask = (labels == k).astype(np.float32) if self.options.get("enable_segmentation") else None
        return Detection(keypoints=kp, keypoints3d=np.concatenate([kp[:, :2] / 100, kp[:, 2:] * 0, kp[:, 2:]], 1),
                         image_size=(image.shape[1], image.shape[0]), mask=mask)

    def close(self):
        self.closed = True


def _people_frames(T=6):
    """(T, 60, 90, 3): a big person moving right, a small one moving left, absent in frame 3."""
    frames = np.zeros((T, 60, 90, 3), np.uint8)
    for t in range(T):
        frames[t, 5:55, 5 + 2 * t:25 + 2 * t] = 230          # big: 20 x 50
        if t != 3:
            frames[t, 20:50, 70 - 2 * t:82 - 2 * t] = 210    # small: 12 x 30
    return frames


def test_box_iou_and_keypoint_box():
    from fitkit.detect.multi import box_iou, keypoint_box

    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 5, 10]], float)
    iou = box_iou(a, b)
    np.testing.assert_allclose(iou, [[1, 0, 0.5], [25 / 175, 0, 0]])
    kp = np.array([[1, 2, 0.9], [5, 9, 0.8], [100, 100, 0.0], [3, 4, 0.5]])
    np.testing.assert_array_equal(keypoint_box(kp), [1, 2, 5, 9])
    assert keypoint_box(kp, min_confidence=0.85) is None  # one point is not a box


def test_detect_people_paints_out_and_stops():
    from fitkit.detect.multi import detect_people, paint_out

    image = _people_frames()[0]
    det = FakeMultiDetector(enable_segmentation=True)
    found = detect_people(det, image, 3)
    assert len(found) == 2 and det.calls == 3  # the third search finds nobody
    assert found[0].keypoints[:, 0].min() == 5 and found[1].keypoints[:, 0].min() == 70  # largest first
    painted = paint_out(image, found[0])
    assert (painted[5:55, 5:25] == 128).all() and (painted[20:50, 70:82] == 210).all()
    assert (image[5:55, 5:25] == 230).all()  # the input is not changed
    # without a mask, the keypoint box (enlarged) is painted
    no_mask = FakeMultiDetector()
    found = detect_people(no_mask, image, 2)
    assert len(found) == 2 and found[0].mask is None
    assert len(detect_people(no_mask, image, 1)) == 1

    class Stubborn:  # returns the same person through the paint
        def detect(self, im):
            return found[0]
    assert len(detect_people(Stubborn(), image, 4)) == 1
    with pytest.raises(ValueError, match="max_people"):
        detect_people(no_mask, image, 0)


def test_box_tracker_keeps_ids_through_a_gap_and_swapped_order():
    from fitkit.detect.multi import BoxTracker

    tr = BoxTracker(min_iou=0.2, max_gap=2)
    a0, b0 = [0, 0, 10, 20], [50, 0, 60, 20]
    assert tr.update(0, [a0, b0]) == [0, 1]
    assert tr.update(1, [[51, 0, 61, 20], [1, 0, 11, 20]]) == [1, 0]  # order of detection does not matter
    assert tr.update(2, [[2, 0, 12, 20]]) == [0]                      # b missed
    assert tr.update(3, [[52, 0, 62, 20], [3, 0, 13, 20]]) == [1, 0]  # b back within max_gap
    assert tr.update(4, [[200, 0, 210, 20]]) == [2]                   # far away: a new track
    assert tr.update(9, [[3, 0, 13, 20]]) == [3]                      # a was closed after the gap


def test_video_several_people_tracks_rows_and_masks(tmp_path):
    from fitkit.viz.video import write_video

    FakeMultiDetector.made = []
    frames = _people_frames()
    video = write_video(tmp_path / "cam07.mp4", frames, fps=10)
    out, masks = tmp_path / "obs.npz", tmp_path / "masks.npz"
    summary = detect_cmd.run(_args([video], out, max_people=3, masks=masks), detector_factory=FakeMultiDetector)
    made = FakeMultiDetector.made
    assert len(made) == 1 and made[0].closed
    assert made[0].options == dict(static_image_mode=True, model_complexity=1, min_detection_confidence=0.5,
                                   enable_segmentation=True)
    assert summary["people"] == {"cam07_p0": 6, "cam07_p1": 5}
    obs = load_observations(out)
    assert obs.track_ids == ["cam07_p0"] * 6 + ["cam07_p1"] * 6
    assert obs.frame_numbers == list(range(6)) * 2
    assert obs.frame_ids[:2] == ["frame_000000_p0", "frame_000001_p0"] and obs.frame_ids[9] == "frame_000003_p1"
    assert obs.image_paths[9] == f"{video}#3"
    # the small person's missing frame is an all-zero row inside its track
    assert obs.has_evidence.tolist() == [True] * 9 + [False] + [True] * 2
    assert summary["no_detection"] == ["frame_000003_p1"]
    kp = obs.keypoints.numpy()
    assert np.allclose(kp[:6, :, 0].min(axis=1), 5 + 2 * np.arange(6), atol=1.5)     # p0 is the big one
    assert np.allclose(kp[[6, 7, 8, 10, 11], :, 0].min(axis=1), 70 - 2 * np.array([0, 1, 2, 4, 5]), atol=1.5)
    m = np.load(masks)
    assert m["masks"].shape == (12, 15, 23) and m["masks"].dtype == np.uint8 and int(m["scale"]) == 4
    assert list(m["frame_ids"]) == obs.frame_ids and list(m["track_ids"]) == obs.track_ids
    assert m["masks"][9].sum() == 0 and m["masks"][0].sum() > 0
    assert m["masks"][0, 2:13, 2:6].all() and not m["masks"][0, :, 12:].any()  # 1/4 size: columns 5..24 -> 1..6

    # the default stays one person per frame, one MediaPipe tracker (video mode), no masks
    FakeMultiDetector.made = []
    summary = detect_cmd.run(_args([video], out), detector_factory=FakeMultiDetector)
    assert FakeMultiDetector.made[0].options == dict(static_image_mode=False, model_complexity=1,
                                                     min_detection_confidence=0.5)
    obs = load_observations(out)
    assert obs.track_ids == ["cam07"] * 6 and "people" not in summary


def test_images_several_people(tmp_path):
    FakeMultiDetector.made = []
    frames = _people_frames()
    _png(tmp_path / "a.png", 90, 60, 0)
    from PIL import Image
    Image.fromarray(frames[0]).save(tmp_path / "b.png")
    summary = detect_cmd.run(_args([tmp_path], tmp_path / "o.npz", max_people=2), detector_factory=FakeMultiDetector)
    obs = load_observations(tmp_path / "o.npz")
    assert obs.frame_ids == ["a_p0", "b_p0", "b_p1"] and summary["no_detection"] == ["a_p0"]
    assert obs.image_paths == [str(tmp_path / "a.png")] + [str(tmp_path / "b.png")] * 2
    with pytest.raises(SystemExit):
        _args([tmp_path], tmp_path / "o.npz", max_people=0)


# ---------------------------------------------------------------- mediapipe missing

def test_clear_error_when_mediapipe_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` fail in any environment
    with pytest.raises(MediaPipeNotInstalledError) as info:
        import_mediapipe()
    text = str(info.value)
    assert "mediapipe==0.10.21" in text and "numpy<2" in text and "protobuf<5" in text
    assert "python3.11 -m venv venv-detect" in text and "pip install --no-deps -e ." in text
    assert isinstance(info.value, ImportError) and isinstance(info.value, FitkitError)
    with pytest.raises(MediaPipeNotInstalledError):
        MediaPipePoseDetector()
    good = _png(tmp_path / "good.png", 8, 8, 200)
    with pytest.raises(MediaPipeNotInstalledError, match="separate"):
        detect_cmd.run(_args([good], tmp_path / "o.npz"))  # the default factory
    assert not (tmp_path / "o.npz").exists()


def test_importing_fitkit_detect_does_not_import_mediapipe():
    import subprocess

    code = "import sys, fitkit.detect, fitkit.commands.detect; print('mediapipe' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


# ---------------------------------------------------------------- real mediapipe (detect env only)

def _render_people(size=(256, 256), frames=2, clip="run", seed=1):
    """Skin-coloured open bodies on a plain background (2x supersampled), with their true
    ``blazepose33`` keypoints (T, 33, 2) and camera-frame 3D keypoints (T, 33, 3).
    (The textured frames of make_synthetic_video are not detected by BlazePose.)"""
    import cv2
    import torch

    from fitkit.body import load_body_model
    from fitkit.eval.video import make_synthetic_video
    from fitkit.render.rasterizer import rasterize
    from fitkit.render.shading import render_normals, shade

    model = load_body_model("open")
    w, h = size
    v = make_synthetic_video(model, clip=clip, frames=frames, image_size=size, flow=None,
                             keypoint_format="blazepose33", noise_px=0.0, dropout=0.0, seed=seed)
    g = v.gt
    out = model(g["global_orient"], g["body_pose"], g["betas"], g["transl"], vertices="all", keypoints="blazepose33")
    K = v.observations.intrinsics.to(out.vertices.dtype)
    ss = 2
    K2 = K.clone()
    K2[:, :2, :2] *= ss
    K2[:, :2, 2] = (K[:, :2, 2] + 0.5) * ss - 0.5  # pixel centres of the 2x grid
    frags = rasterize(out.vertices, model.faces, K2, (h * ss, w * ss))
    normals = render_normals(frags, out.vertices, model.faces)
    skin = torch.tensor([0.85, 0.64, 0.52], dtype=normals.dtype)
    lit = shade(normals, frags.mask, (0.0, -0.3, -1.0), ambient=0.35, albedo=skin).clamp(0, 1)
    img = torch.where(frags.mask[..., None], lit, torch.tensor([0.75, 0.78, 0.8], dtype=normals.dtype))
    img = (img * 255).round().to(torch.uint8).numpy()
    images = np.stack([cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in img])
    return images, g["keypoints_2d_clean"].numpy(), out.keypoints.detach().double().numpy()


def test_mediapipe_landmark_order_is_blazepose33():
    pytest.importorskip("mediapipe")
    from mediapipe.python.solutions.pose import PoseLandmark

    assert [lm.name.lower() for lm in sorted(PoseLandmark, key=int)] == list(get_format("blazepose33").names)


def test_real_detector_on_rendered_bodies(tmp_path):
    pytest.importorskip("mediapipe")
    import cv2

    images, true2d, true3d = _render_people()
    with MediaPipePoseDetector(static_image_mode=True) as det:
        dets = [det.detect(im) for im in images]
        assert det.detect(np.full((120, 160, 3), 190, np.uint8)) is None  # nobody there
    assert all(d is not None for d in dets)
    err = np.array([np.linalg.norm(d.keypoints[:, :2] - t, axis=1) for d, t in zip(dets, true2d)])
    # measured: mean 2.5 px on 256 x 256 frames (bodies ~190 px tall), see docs/detect.md
    assert err.mean() < 6.0, err.mean(axis=1)
    assert np.median([d.keypoints[:, 2] for d in dets]) > 0.5  # visibility; occluded points score lower
    # world landmarks: metric, hip-centred, camera axes (x right, y down, z away)
    for d, t in zip(dets, true3d):
        w = d.keypoints3d[:, :3]
        t = t - (t[23] + t[24]) / 2
        assert np.abs((w[23] + w[24]) / 2).max() < 0.02
        for axis, least in ((0, 0.8), (1, 0.9), (2, 0.3)):
            assert np.corrcoef(w[:, axis], t[:, axis])[0, 1] > least, axis
        assert np.linalg.norm(w - t, axis=1).mean() < 0.2

    # end to end through the command: two frames and an empty one
    for i, im in enumerate(images):
        cv2.imwrite(str(tmp_path / f"person_{i}.png"), im[..., ::-1])
    cv2.imwrite(str(tmp_path / "wall.png"), np.full((100, 140, 3), 190, np.uint8))
    summary = detect_cmd.run(_args([tmp_path], tmp_path / "obs.npz"))
    assert summary["no_detection"] == ["wall"]
    obs = load_observations(tmp_path / "obs.npz")
    assert obs.frame_ids == ["person_0", "person_1", "wall"] and obs.has_evidence.tolist() == [True, True, False]
    got = obs.keypoints[:2, :, :2].numpy()
    assert np.linalg.norm(got - true2d, axis=-1).mean() < 6.0


def test_real_detector_finds_two_people_side_by_side():
    pytest.importorskip("mediapipe")
    from fitkit.detect.multi import detect_people, keypoint_box

    images, true2d, _ = _render_people(frames=2)
    pair = np.concatenate([images[0], images[1]], axis=1)  # 512 x 256: one body in each half
    with MediaPipePoseDetector(static_image_mode=True, enable_segmentation=True) as det:
        found = detect_people(det, pair, 3)
    assert len(found) == 2
    assert all(d.mask is not None and d.mask.shape == (256, 512) for d in found)
    centres = sorted(float(keypoint_box(d.keypoints)[[0, 2]].mean()) for d in found)
    assert centres[0] < 256 < centres[1]
    left = min(found, key=lambda d: d.keypoints[:, 0].mean())
    assert np.linalg.norm(left.keypoints[:, :2] - true2d[0], axis=1).mean() < 8.0
