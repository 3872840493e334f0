"""``fitkit detect``: detect BlazePose keypoints in images or videos and write an observation file.

Inputs are image files, folders of images (their images in sorted name order,
not recursive) or video files (read with OpenCV's ``cv2.VideoCapture``); images
and videos cannot be mixed in one run. The detector is MediaPipe Pose
(:mod:`fitkit.detect.mediapipe_pose`), which lives in a separate environment
(``docs/detect.md``).

The output is a ``fitkit.observations/1`` file (:func:`fitkit.io.observations.save_observations`,
written atomically) with ``keypoint_format='blazepose33'``, ``image_size`` per
frame, ``keypoints3d`` (MediaPipe's metric world landmarks, camera axes, hip
centred) and:

* images: ``frame_ids`` = file stems (a repeated stem gets ``_1``, ``_2``, ...),
  ``image_paths`` = the paths as found; no ``track_ids`` (all one track).
* videos: ``frame_ids`` = ``frame_000123`` (the frame's index in the video;
  ``<video stem>_frame_000123`` when several videos are given),
  ``track_ids`` = the video's stem, ``frame_numbers`` = 0, 1, 2, ... over the
  frames kept by ``--every`` (so consecutive samples stay temporal neighbours
  for the sequence terms), ``image_paths`` = ``<video path>#<frame index>``
  (the frame in the video, read back by ``fitkit fit --overlays``; see
  :func:`fitkit.io.observations.video_frame_ref`).

A frame where no person is detected is kept as an empty frame: every keypoint
(0, 0, 0), i.e. "not observed" (the fit flags it ``no_evidence``); the summary
lists those frame ids. Missing, unreadable or unknown inputs raise
:class:`~fitkit.detect.mediapipe_pose.DetectError` naming the file, before
anything is written.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from fitkit.detect.mediapipe_pose import KEYPOINT_FORMAT, NUM_LANDMARKS, DetectError, MediaPipePoseDetector
from fitkit.io.observations import Observations, save_observations

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
#: How many frame ids the printed summary lists (the JSON summary has all of them).
SHOWN_IDS = 20

#: ``factory(static_image_mode=..., model_complexity=..., min_detection_confidence=...)`` -> a detector
#: with ``detect(rgb) -> Detection | None`` and ``close()``.
DetectorFactory = Callable[..., object]


def default_detector_factory(*, static_image_mode: bool, model_complexity: int,
                             min_detection_confidence: float) -> MediaPipePoseDetector:
    return MediaPipePoseDetector(static_image_mode=static_image_mode, model_complexity=model_complexity,
                                 min_detection_confidence=min_detection_confidence)


# ---------------------------------------------------------------- inputs

@dataclass
class Inputs:
    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)


def collect_inputs(paths) -> Inputs:
    """Sort the command-line paths into images (folders expanded, sorted names) and videos."""
    found = Inputs()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = sorted((f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda f: f.name)
            if not images:
                raise DetectError(f"{path}: folder has no images ({' '.join(IMAGE_SUFFIXES)})")
            found.images.extend(images)
        elif not path.exists():
            raise DetectError(f"{path}: no such file or folder")
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            found.images.append(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            found.videos.append(path)
        else:
            raise DetectError(f"{path}: not an image ({' '.join(IMAGE_SUFFIXES)}) or a video "
                              f"({' '.join(VIDEO_SUFFIXES)}) by its name")
    if found.images and found.videos:
        raise DetectError(f"give images or videos, not both (got {len(found.images)} image(s) and "
                          f"{len(found.videos)} video(s), e.g. {found.videos[0]}): run fitkit detect once for each")
    return found


def read_image_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; DetectError naming the file when OpenCV cannot decode it."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DetectError(f"{path}: cannot read the image (not a supported image file, or corrupt)")
    return np.ascontiguousarray(image[..., ::-1])


def iter_video_rgb(path: Path, every: int) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, (H, W, 3) uint8 RGB) of every ``every``-th frame, from frame 0."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DetectError(f"{path}: cannot open the video (unsupported or corrupt file)")
        index = 0
        while True:
            if index % every == 0:
                ok, frame = cap.read()
                if not ok:
                    break
                if frame is None or frame.ndim != 3 or frame.shape[2] != 3:
                    raise DetectError(f"{path}: frame {index} is not a colour image")
                yield index, np.ascontiguousarray(frame[..., ::-1])
            elif not cap.grab():
                break
            index += 1
        if index == 0:
            raise DetectError(f"{path}: no frame could be decoded from the video")
    finally:
        cap.release()


def _unique(names: list[str]) -> list[str]:
    """``names`` with repeats renamed ``<name>_1``, ``<name>_2``, ... (never clashing with a given name)."""
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 0
        while new in seen or (k and new in taken):
            k += 1
            new = f"{name}_{k}"
        seen.add(new)
        out.append(new)
    return out


# ---------------------------------------------------------------- run

@dataclass
class _Frames:
    ids: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    keypoints: list[np.ndarray] = field(default_factory=list)
    keypoints3d: list[np.ndarray] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)

    def add(self, frame_id: str, image: np.ndarray, detection, min_confidence: float) -> None:
        h, w = image.shape[:2]
        kp = np.zeros((NUM_LANDMARKS, 3))
        kp3 = np.zeros((NUM_LANDMARKS, 4))
        if detection is None:
            self.empty.append(len(self.ids))
        else:
            kp = np.array(detection.keypoints, dtype=np.float64).reshape(NUM_LANDMARKS, 3)
            if detection.keypoints3d is not None:
                kp3 = np.array(detection.keypoints3d, dtype=np.float64).reshape(NUM_LANDMARKS, 4)
            unseen = ~(kp[:, 2] >= max(min_confidence, np.finfo(float).tiny))  # also NaN
            kp[unseen] = 0.0
            kp3[unseen] = 0.0
            if unseen.all():
                self.empty.append(len(self.ids))
        self.ids.append(frame_id)
        self.sizes.append((w, h))
        self.keypoints.append(kp)
        self.keypoints3d.append(kp3)


def _progress(total: Optional[int], enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True)


def run(args, detector_factory: Optional[DetectorFactory] = None) -> dict:
    """Detect, write ``args.output`` and return the summary (see :func:`print_summary`)."""
    t0 = time.perf_counter()
    factory = detector_factory or default_detector_factory
    if args.every < 1:
        raise DetectError(f"--every must be >= 1, got {args.every}")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise DetectError(f"--min-confidence must lie in [0, 1], got {args.min_confidence}")
    output = Path(args.output)
    if output.is_dir():
        raise DetectError(f"{output}: is a folder; -o takes the observation file to write (e.g. obs.npz)")
    inputs = collect_inputs(args.inputs)
    options = dict(model_complexity=args.model_complexity, min_detection_confidence=args.min_detection_confidence)
    frames = _Frames()
    show = not getattr(args, "quiet", False)
    extra: dict = {}

    def detect_all(named_images, total: Optional[int], static: bool) -> int:
        """Run one detector over (frame id, RGB image) pairs into ``frames``; the number of frames."""
        detector = factory(static_image_mode=static, **options)
        bar = _progress(total, show)
        count = 0
        try:
            for name, image in named_images:
                frames.add(name, image, detector.detect(image), args.min_confidence)
                count += 1
                if bar is not None:
                    bar.update(1)
        finally:
            detector.close()
            if bar is not None:
                bar.close()
        return count

    if inputs.images:
        names = _unique([p.stem for p in inputs.images])
        detect_all(((name, read_image_rgb(path)) for path, name in zip(inputs.images, names)),
                   len(inputs.images), static=True)
        extra["image_paths"] = [str(p) for p in inputs.images]
    else:
        tracks = _unique([p.stem for p in inputs.videos])
        track_ids, numbers, video_frames = [], [], []
        for path, track in zip(inputs.videos, tracks):
            prefix = f"{track}_" if len(inputs.videos) > 1 else ""

            def named(path=path, prefix=prefix):
                for index, image in iter_video_rgb(path, args.every):
                    video_frames.append(f"{path}#{index}")  # the frame overlays read back (video_frame_ref)
                    yield f"{prefix}frame_{index:06d}", image

            count = detect_all(named(), _video_length(path, args.every), static=False)  # a fresh tracker per video
            track_ids.extend([track] * count)
            numbers.extend(range(count))
        extra.update(track_ids=track_ids, frame_numbers=numbers, image_paths=video_frames)

    obs = Observations.from_arrays(
        np.stack(frames.keypoints), KEYPOINT_FORMAT, np.asarray(frames.sizes, dtype=np.float64),
        frame_ids=frames.ids, keypoints3d=np.stack(frames.keypoints3d), source=str(output), **extra)
    save_observations(output, obs)

    n = len(frames.ids)
    return {
        "output": str(output),
        "keypoint_format": KEYPOINT_FORMAT,
        "frames": n,
        "detected": n - len(frames.empty),
        "no_detection": [frames.ids[i] for i in frames.empty],
        "images": len(inputs.images),
        "videos": [str(p) for p in inputs.videos],
        "every": args.every if inputs.videos else 1,
        "model_complexity": args.model_complexity,
        "min_confidence": args.min_confidence,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _video_length(path: Path, every: int) -> Optional[int]:
    """Frames ``--every`` keeps, from the container's frame count (None when unknown)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()
    return -(-count // every) if count > 0 else None


def empty_frames_line(summary: dict) -> str:
    """``'k of N frames had no detection: id, id, ... (+m more)'``."""
    ids = summary["no_detection"]
    line = f"{len(ids)} of {summary['frames']} frames had no detection"
    if ids:
        more = f" (+{len(ids) - SHOWN_IDS} more)" if len(ids) > SHOWN_IDS else ""
        line += ": " + ", ".join(ids[:SHOWN_IDS]) + more
    return line


def print_summary(summary: dict) -> None:
    source = (f"{summary['images']} image(s)" if summary["images"] else
              ", ".join(summary["videos"]) + (f" (every {summary['every']} frames)" if summary["every"] > 1 else ""))
    print(f"fitkit detect: {summary['frames']} frames from {source}, MediaPipe Pose "
          f"(model complexity {summary['model_complexity']}) in {summary['seconds']:.1f} s")
    print(f"  {empty_frames_line(summary)}")
    print(f"  wrote {summary['output']} ({summary['keypoint_format']} keypoints, keypoints3d: world landmarks)")
