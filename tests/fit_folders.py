"""Small real `fitkit fit` output folders for the report and viewer tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fitkit.body import load_body_model
from fitkit.cli import main
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.io.observations import Observations, save_observations

IMAGE_SIZE = (320, 240)


def _texture(i: int) -> np.ndarray:
    """A (240, 320, 3) uint8 BGR picture that differs from frame to frame."""
    w, h = IMAGE_SIZE
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), np.full_like(x, 40 * i % 255)], axis=-1)
    return img.astype(np.uint8)


def make_fit_folder(root: Path, *, video: bool, overlays: bool, frames: int = 4, seed: int = 3,
                    empty_frame: int | None = None) -> tuple[Path, Path]:
    """Fit ``frames`` synthetic frames with the demo recipe through ``fitkit fit``.

    video: two tracks 'a' and 'b' (frames split in halves) with frame numbers 0, 1, ...
    and images written beside the observation file (relative ``image_paths``).
    empty_frame: a row whose keypoints are all unobserved (no evidence).
    Returns (output folder, observation file).
    """
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, frames, image_size=IMAGE_SIZE, noise_px=1.0, seed=seed)
    obs = ex.observations
    kp = obs.keypoints.numpy().copy()
    if empty_frame is not None:
        kp[empty_frame] = 0.0
    extra = {}
    if video:
        half = frames // 2
        extra["track_ids"] = ["a"] * half + ["b"] * (frames - half)
        extra["frame_numbers"] = list(range(half)) + list(range(frames - half))
        names = []
        for i in range(frames):
            name = f"img_{i:03d}.png"
            cv2.imwrite(str(root / name), _texture(i))
            names.append(name)
        extra["image_paths"] = names
        extra["frame_ids"] = [f"{t}_{n:04d}" for t, n in zip(extra["track_ids"], extra["frame_numbers"])]
    else:
        extra["frame_ids"] = list(obs.frame_ids)
    obs = Observations.from_arrays(kp, obs.keypoint_format, obs.image_size.numpy(),
                                   intrinsics=obs.intrinsics.numpy(), **extra)
    obs_path = save_observations(root / "obs.npz", obs)
    out = root / "out"
    argv = ["fit", "--recipe", "demo", "--input", str(obs_path), "-o", str(out), "--device", "cpu", "--quiet"]
    if overlays:
        argv.append("--overlays")
    assert main(argv) == 0
    return out, obs_path
