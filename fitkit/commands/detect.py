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

Several people (``--max-people N``, N > 1): every frame is searched up to N
times (:func:`fitkit.detect.multi.detect_people`: detect, paint the person out,
detect again) with a static-mode detector, and the people are tracked by box
overlap (:class:`fitkit.detect.multi.BoxTracker`) into tracks
``<video stem>_p<k>``; each track has one row per frame from its first to its
last detection (all-zero rows where it was missed), frame ids
``frame_000123_p<k>``. ``--masks PATH`` also writes the rows' segmentation
masks at 1/4 size (:func:`save_masks`).

A frame where no person is detected is kept as an empty frame: every keypoint
(0, 0, 0), i.e. "not observed" (the fit flags it ``no_evidence``); the summary
lists those frame ids. Missing, unreadable or unknown inputs raise
:class:`~fitkit.detect.mediapipe_pose.DetectError` naming the file, before
anything is written.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from fitkit.detect.mediapipe_pose import KEYPOINT_FORMAT, NUM_LANDMARKS, DetectError, MediaPipePoseDetector
from fitkit.detect.multi import BoxTracker, detect_people, keypoint_box
from fitkit.io.observations import Observations, save_observations

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
#: How many frame ids the printed summary lists (the JSON summary has all of them).
SHOWN_IDS = 20

#: ``factory(static_image_mode=..., model_complexity=..., min_detection_confidence=...)`` -> a detector
#: with ``detect(rgb) -> Detection | None`` and ``close()``.
DetectorFactory = Callable[..., object]


def default_detector_factory(*, static_image_mode: bool, model_complexity: int,
                             min_detection_confidence: float, enable_segmentation: bool = False
                             ) -> MediaPipePoseDetector:
    return MediaPipePoseDetector(static_image_mode=static_image_mode, model_complexity=model_complexity,
                                 min_detection_confidence=min_detection_confidence,
                                 enable_segmentation=enable_segmentation)


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

    masks: list = field(default_factory=list)
    tracks: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def add(self, frame_id: str, image_size: tuple[int, int], detection, min_confidence: float,
            mask_scale: int = 0) -> None:
        """One row; ``image_size`` is (width, height); ``mask_scale`` > 0 also keeps the
        detection's mask downscaled by that factor (zeros without a detection)."""
        w, h = image_size
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
        if mask_scale:
            self.masks.append(downscale_mask(getattr(detection, "mask", None), (w, h), mask_scale))
        self.ids.append(frame_id)
        self.sizes.append((w, h))
        self.keypoints.append(kp)
        self.keypoints3d.append(kp3)


#: Masks are written at 1 / MASK_SCALE of the image's width and height.
MASK_SCALE = 4


def downscale_mask(mask: Optional[np.ndarray], image_size: tuple[int, int], scale: int) -> np.ndarray:
    """(ceil(H / scale), ceil(W / scale)) uint8 0/1: a (H, W) [0, 1] mask averaged over
    ``scale`` x ``scale`` blocks and thresholded at 0.5; zeros when ``mask`` is None."""
    w, h = image_size
    hs, ws = -(-h // scale), -(-w // scale)
    if mask is None:
        return np.zeros((hs, ws), np.uint8)
    import cv2

    m = np.asarray(mask, dtype=np.float32).reshape(h, w)
    return (cv2.resize(m, (ws, hs), interpolation=cv2.INTER_AREA) > 0.5).astype(np.uint8)


def save_masks(path: Path, frames: "_Frames", scale: int) -> None:
    """The masks file beside an observation file: ``masks`` (N, h, w) uint8 0/1 at 1/``scale``
    of each row's image, ``frame_ids`` and ``track_ids`` of the rows, ``scale``; npz-compressed."""
    from fitkit.io.atomic import atomic_write

    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, masks=np.stack(frames.masks), frame_ids=np.array(frames.ids, dtype=str),
                            track_ids=np.array(frames.tracks or [""] * len(frames.ids), dtype=str),
                            scale=np.int64(scale), format=np.array("fitkit.masks/1"))


@contextmanager
def _running(factory, options: dict, *, static: bool, total: Optional[int], show: bool):
    """A fresh detector and a per-frame progress bar (none when ``show`` is false), both closed at the
    end: yields ``(detector, advance)``, ``advance()`` counting one frame on the bar."""
    detector = factory(static_image_mode=static, **options)
    bar = None
    if show:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True)
    try:
        yield detector, (bar.update if bar is not None else (lambda n=1: None))
    finally:
        detector.close()
        if bar is not None:
            bar.close()


def run(args, detector_factory: Optional[DetectorFactory] = None) -> dict:
    """Detect, write ``args.output`` (and ``args.masks``) and return the summary (see :func:`print_summary`)."""
    t0 = time.perf_counter()
    factory = detector_factory or default_detector_factory
    if args.every < 1:
        raise DetectError(f"--every must be >= 1, got {args.every}")
    if not 0.0 <= args.min_confidence <= 1.0:
        raise DetectError(f"--min-confidence must lie in [0, 1], got {args.min_confidence}")
    max_people = int(getattr(args, "max_people", 1))
    if max_people < 1:
        raise DetectError(f"--max-people must be >= 1, got {max_people}")
    masks_path = getattr(args, "masks", None)
    output = Path(args.output)
    if output.is_dir():
        raise DetectError(f"{output}: is a folder; -o takes the observation file to write (e.g. obs.npz)")
    if masks_path is not None and Path(masks_path).resolve() == output.resolve():
        raise DetectError(f"{masks_path}: --masks must be another file than -o")
    inputs = collect_inputs(args.inputs)
    options = dict(model_complexity=args.model_complexity, min_detection_confidence=args.min_detection_confidence)
    if masks_path is not None or max_people > 1:
        options["enable_segmentation"] = True  # painting a person out uses its mask
    mask_scale = MASK_SCALE if masks_path is not None else 0
    frames = _Frames()
    show = not getattr(args, "quiet", False)
    people: dict[str, int] = {}

    def detect_all(named_images, total: Optional[int], static: bool) -> int:
        """Run one detector over (frame id, RGB image) pairs into ``frames``; the number of frames."""
        count = 0
        with _running(factory, options, static=static, total=total, show=show) as (detector, advance):
            for name, image in named_images:
                h, w = image.shape[:2]
                if max_people == 1:
                    frames.add(name, (w, h), detector.detect(image), args.min_confidence, mask_scale)
                else:
                    found = detect_people(detector, image, max_people)
                    for k, det in enumerate(found or [None]):
                        frames.add(f"{name}_p{k}", (w, h), det, args.min_confidence, mask_scale)
                count += 1
                advance()
        return count

    if inputs.images:
        names = _unique([p.stem for p in inputs.images])
        before = len(frames.ids)
        detect_all(((name, read_image_rgb(path)) for path, name in zip(inputs.images, names)),
                   len(inputs.images), static=True)
        extra = {}
        if max_people == 1:
            frames.paths = [str(p) for p in inputs.images]
        else:  # one row per person found: the image of each row
            by_name = {name: str(path) for path, name in zip(inputs.images, names)}
            frames.paths = [by_name[fid.rsplit("_p", 1)[0]] for fid in frames.ids[before:]]
        extra["image_paths"] = frames.paths
    else:
        tracks = _unique([p.stem for p in inputs.videos])
        for path, track in zip(inputs.videos, tracks):
            prefix = f"{track}_" if len(inputs.videos) > 1 else ""
            if max_people == 1:
                _single_video(path, track, prefix, args, factory, options, frames, mask_scale, show)
            else:
                people.update(_multi_video(path, track, prefix, args, factory, options, frames, mask_scale,
                                           show, max_people))
        extra = dict(track_ids=frames.tracks, frame_numbers=frames.numbers, image_paths=frames.paths)

    obs = Observations.from_arrays(
        np.stack(frames.keypoints), KEYPOINT_FORMAT, np.asarray(frames.sizes, dtype=np.float64),
        frame_ids=frames.ids, keypoints3d=np.stack(frames.keypoints3d), source=str(output), **extra)
    save_observations(output, obs)
    if masks_path is not None:
        save_masks(Path(masks_path), frames, MASK_SCALE)

    n = len(frames.ids)
    summary = {
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
    if max_people > 1:
        summary["max_people"] = max_people
        summary["people"] = people  # track id -> frames where that person was detected
    if masks_path is not None:
        summary["masks"] = str(masks_path)
    return summary


def _single_video(path, track, prefix, args, factory, options, frames, mask_scale, show) -> None:
    """The most prominent person of every kept frame, one MediaPipe tracker (video mode): one track."""
    # a fresh tracker per video
    with _running(factory, options, static=False, total=_video_length(path, args.every),
                  show=show) as (detector, advance):
        for count, (index, image) in enumerate(iter_video_rgb(path, args.every)):
            h, w = image.shape[:2]
            frames.add(f"{prefix}frame_{index:06d}", (w, h), detector.detect(image), args.min_confidence, mask_scale)
            frames.tracks.append(track)
            frames.numbers.append(count)
            frames.paths.append(f"{path}#{index}")  # the frame overlays read back (video_frame_ref)
            advance()


def _multi_video(path, track, prefix, args, factory, options, frames, mask_scale, show, max_people) -> dict:
    """Up to ``max_people`` people per kept frame (static mode, paint out and detect again), tracked
    by box IoU into tracks ``<track>_p0``, ``<track>_p1``, ... Each track gets one row per kept frame
    from its first to its last detection; a frame inside that span where it was not found is an
    all-zero row (the fit flags it no_evidence). Returns track id -> number of frames detected."""
    tracker = BoxTracker()
    per_track: dict[int, dict[int, object]] = {}
    index_of: list[int] = []
    size = None
    with _running(factory, options, static=True, total=_video_length(path, args.every),
                  show=show) as (detector, advance):
        for count, (index, image) in enumerate(iter_video_rgb(path, args.every)):
            size = (image.shape[1], image.shape[0])
            index_of.append(index)
            found = detect_people(detector, image, max_people)
            boxes = [keypoint_box(d.keypoints) for d in found]
            for det, k in zip(found, tracker.update(count, boxes)):
                per_track.setdefault(k, {})[count] = det
            advance()
    counts = {}
    for k in sorted(per_track):
        seen = per_track[k]
        name = f"{track}_p{k}"
        counts[name] = len(seen)
        for count in range(min(seen), max(seen) + 1):
            index = index_of[count]
            frames.add(f"{prefix}frame_{index:06d}_p{k}", size, seen.get(count), args.min_confidence, mask_scale)
            frames.tracks.append(name)
            frames.numbers.append(count)
            frames.paths.append(f"{path}#{index}")
    return counts


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
    unit = "rows (person, frame)" if "people" in summary else "frames"
    print(f"fitkit detect: {summary['frames']} {unit} from {source}, MediaPipe Pose "
          f"(model complexity {summary['model_complexity']}) in {summary['seconds']:.1f} s")
    if "people" in summary:
        tracks = summary["people"]
        print(f"  {len(tracks)} track(s) (up to {summary['max_people']} people per frame): "
              + ", ".join(f"{name} {n}" for name, n in tracks.items()))
        print(f"  {len(summary['no_detection'])} of {summary['frames']} rows had no detection "
              "(a tracked person missed inside its track's span)")
    else:
        print(f"  {empty_frames_line(summary)}")
    if "masks" in summary:
        print(f"  wrote {summary['masks']} (segmentation masks at 1/{MASK_SCALE} size)")
    print(f"  wrote {summary['output']} ({summary['keypoint_format']} keypoints, keypoints3d: world landmarks)")
