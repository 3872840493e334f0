"""Short videos for people to look at: animated GIF / MP4 files and side-by-side panels.

Frames are (T, H, W, 3) uint8 **RGB** arrays (numpy or tensors), as the
renderers and :func:`fitkit.eval.video.make_synthetic_video` produce them.
Files are written atomically: to a temporary file beside the target, renamed
over it only once complete, so a failed write leaves neither a half-written
video nor a stray temporary file (an existing file at the path is kept).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from fitkit.errors import ParameterError
from fitkit.io.atomic import atomic_path, atomic_write

__all__ = ["VIDEO_SUFFIXES", "write_video", "side_by_side"]

#: Suffixes :func:`write_video` can write.
VIDEO_SUFFIXES = (".gif", ".mp4")

PathLike = Union[str, os.PathLike]


def _as_video(frames, name: str = "frames") -> np.ndarray:
    """(T, H, W, 3) uint8 from uint8 or float-in-[0, 1] frames (numpy or tensor)."""
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ParameterError(f"{name} must have shape (T, H, W, 3) (RGB, T >= 1), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ParameterError(f"{name}: float frames must be finite values in [0, 1]")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ParameterError(f"{name} must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)


def write_video(path: PathLike, frames, fps: float = 15.0) -> Path:
    """Write an RGB video as an animated GIF or an MP4 file, atomically.

    Args:
        path: ``*.gif`` (Pillow; loops forever; frame times are rounded to
            10 ms by the format) or ``*.mp4`` (OpenCV's ``mp4v`` codec; an odd
            width or height is padded to even by repeating the last column / row).
        frames: (T, H, W, 3) RGB, uint8 or float in [0, 1].
        fps: frames per second (> 0).
    Returns:
        ``path`` as a Path.
    Raises:
        ValueError for another suffix or a bad fps; ParameterError for bad
        frames; RuntimeError when OpenCV cannot open or finish an MP4 file
        (the message suggests writing a .gif instead).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: unsupported video suffix {path.suffix!r}; choose one of {VIDEO_SUFFIXES}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"{path}: fps must be a positive number, got {fps!r}")
    video = _as_video(frames)
    if suffix == ".gif":
        _write_gif(path, video, fps)
    else:
        _write_mp4(path, video, fps)
    return path


def _write_gif(path: Path, video: np.ndarray, fps: float) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in video]
    duration = max(10, int(round(1000.0 / fps)))  # milliseconds per frame
    with atomic_write(path, "wb") as handle:
        images[0].save(handle, format="GIF", save_all=True, append_images=images[1:], duration=duration,
                       loop=0, optimize=False)


def _even(video: np.ndarray) -> np.ndarray:
    """Pad (T, H, W, 3) to even H and W by repeating the last row / column (MPEG-4 needs even
    sizes; OpenCV would otherwise crop the odd row / column away)."""
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if not (pad_h or pad_w):
        return video
    return np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _write_mp4(path: Path, video: np.ndarray, fps: float) -> None:
    import cv2

    video = _even(video)
    t, h, w = video.shape[:3]
    with atomic_path(path, suffix=path.suffix) as tmp:
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        try:
            if not writer.isOpened():
                raise RuntimeError(f"{path}: OpenCV cannot open an MP4 writer (codec 'mp4v', {w}x{h} pixels) "
                                   "in this build; write a .gif instead")
            for frame in video:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        if os.path.getsize(tmp) == 0:
            raise RuntimeError(f"{path}: OpenCV wrote an empty MP4 file ({t} frames of {w}x{h} pixels); "
                               "write a .gif instead")


def side_by_side(*videos, labels: Optional[Sequence[Optional[str]]] = None) -> np.ndarray:
    """Videos next to each other, left to right, with optional captions.

    Args:
        videos: k >= 1 videos (T, H, W_i, 3), uint8 or float in [0, 1], with the
            same T and H (widths may differ).
        labels: None, or k captions (None or '' for none), drawn small in the
            top-left corner of each panel (white with a dark outline).
    Returns:
        (T, H, sum W_i, 3) uint8 (W * k for equal widths).
    """
    if not videos:
        raise ParameterError("side_by_side needs at least one video")
    panels = [_as_video(v, f"video {i}") for i, v in enumerate(videos)]
    t, h = panels[0].shape[:2]
    for i, p in enumerate(panels[1:], 1):
        if p.shape[:2] != (t, h):
            raise ParameterError(f"video {i} has {p.shape[0]} frames of height {p.shape[1]}, video 0 has "
                                 f"{t} frames of height {h}: they must agree")
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(panels):
            raise ParameterError(f"labels has {len(labels)} entries for {len(panels)} videos")
        panels = [_label(p, text) if text else p for p, text in zip(panels, labels)]
    return np.concatenate(panels, axis=2)


def _label(video: np.ndarray, text: str) -> np.ndarray:
    """A copy of (T, H, W, 3) ``video`` with ``text`` in its top-left corner."""
    import cv2

    h = video.shape[1]
    scale = max(0.3, h / 500.0)
    (_, th), _ = cv2.getTextSize(str(text), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    origin = (3, 3 + th)
    out = video.copy()
    for frame in out:
        cv2.putText(frame, str(text), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(frame, str(text), origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
