"""Several people per image with a one-person detector, and stable track ids over a video.

MediaPipe Pose finds one person per image (the most prominent). To find up to
``max_people``, :func:`detect_people` detects on the full image, paints the found
person out with a neutral grey (its segmentation mask, dilated, or when there is
no mask its keypoint box, enlarged) and detects again, until nobody is found,
``max_people`` are found, or the detector returns a person that overlaps one
already found (it saw through the paint).

:class:`BoxTracker` gives the people of consecutive frames stable track
indices: a Hungarian assignment (``scipy.optimize.linear_sum_assignment``) of
the frame's detections to the live tracks on ``1 - IoU`` of their keypoint
boxes, gated by ``min_iou``; a detection left unmatched starts a new track; a
track unseen for more than ``max_gap`` frames is closed.

Everything here is pure numpy / OpenCV on :class:`~fitkit.detect.mediapipe_pose.Detection`
objects and runs without mediapipe (tests use a fake detector).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)

#: The colour the found people are painted with before detecting again (RGB).
NEUTRAL_RGB = (128, 128, 128)


def keypoint_box(keypoints: np.ndarray, min_confidence: float = 0.0) -> Optional[np.ndarray]:
    """(4,) ``x0, y0, x1, y1`` in pixels around the observed keypoints, or None.

    Args:
        keypoints: (K, 3) x, y, confidence; a keypoint counts when its confidence
            is > ``min_confidence`` (and > 0) and its coordinates are finite.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    seen = (kp[:, 2] > max(min_confidence, 0.0)) & np.isfinite(kp[:, :2]).all(axis=1)
    if seen.sum() < 2:
        return None
    xy = kp[seen, :2]
    return np.concatenate([xy.min(axis=0), xy.max(axis=0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection over union of boxes ``a`` (N, 4) and ``b`` (M, 4), ``x0, y0, x1, y1``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def paint_out(image: np.ndarray, detection, grow: float = 0.03, colour=NEUTRAL_RGB) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with the detected person painted ``colour``.

    The region is the person's segmentation mask (> 0.5) dilated by ``grow`` times
    the image diagonal, or, without a mask, its keypoint box enlarged by 15 % of
    its size plus the same margin. The original is not changed.
    """
    import cv2

    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    margin = max(1, int(round(grow * float(np.hypot(w, h)))))
    mask = getattr(detection, "mask", None)
    if mask is not None and np.asarray(mask).shape == (h, w) and (np.asarray(mask) > 0.5).any():
        region = (np.asarray(mask) > 0.5).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        region = cv2.dilate(region, kernel) > 0
        out[region] = colour
        return out
    box = keypoint_box(detection.keypoints)
    if box is None:
        return out
    pad = 0.15 * (box[2:] - box[:2]) + margin
    x0, y0 = np.floor(box[:2] - pad).astype(int)
    x1, y1 = np.ceil(box[2:] + pad).astype(int)
    out[max(y0, 0):max(min(y1 + 1, h), 0), max(x0, 0):max(min(x1 + 1, w), 0)] = colour
    return out


def detect_people(detector, image: np.ndarray, max_people: int, *, same_person_iou: float = 0.5,
                  grow: float = 0.03) -> list:
    """Up to ``max_people`` detections in one RGB image, by detecting and painting out in turn.

    Args:
        detector: an object with ``detect(rgb) -> Detection | None``.
        image: (H, W, 3) uint8 RGB.
        max_people: >= 1.
        same_person_iou: a new detection whose keypoint box overlaps an earlier
            one's by more than this is the same person seen through the paint;
            the search stops there.
    Returns:
        The detections in the order found (the most prominent first).
    """
    if max_people < 1:
        raise ValueError(f"max_people must be >= 1, got {max_people}")
    found: list = []
    boxes: list = []
    current = image
    for _ in range(max_people):
        det = detector.detect(current)
        if det is None:
            break
        box = keypoint_box(det.keypoints)
        if box is None:
            break
        if boxes and box_iou(box, np.stack(boxes)).max() > same_person_iou:
            logger.debug("detection %d overlaps an earlier one (IoU > %.2f): stopping", len(found), same_person_iou)
            break
        found.append(det)
        boxes.append(box)
        if len(found) < max_people:
            current = paint_out(current, det, grow=grow)
    return found


@dataclass
class _Track:
    index: int
    box: np.ndarray
    last_frame: int


@dataclass
class BoxTracker:
    """Stable track indices 0, 1, 2, ... for the people of consecutive frames.

    Args:
        min_iou: a detection joins a track only when their boxes overlap by at
            least this IoU (the track's box is its last detection's).
        max_gap: a track unseen for more than this many frames is closed.
    """

    min_iou: float = 0.2
    max_gap: int = 10
    _live: list = field(default_factory=list)
    _next: int = 0

    def update(self, frame: int, boxes: list) -> list[int]:
        """The track index of each box (``x0, y0, x1, y1``) of frame ``frame`` (increasing)."""
        from scipy.optimize import linear_sum_assignment

        self._live = [t for t in self._live if frame - t.last_frame <= self.max_gap]
        out = [-1] * len(boxes)
        if boxes and self._live:
            iou = box_iou(np.stack(boxes), np.stack([t.box for t in self._live]))
            rows, cols = linear_sum_assignment(1.0 - iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.min_iou:
                    out[r] = self._live[c].index
                    self._live[c].box = np.asarray(boxes[r], dtype=np.float64)
                    self._live[c].last_frame = frame
        for r, box in enumerate(boxes):
            if out[r] < 0:
                out[r] = self._next
                self._live.append(_Track(self._next, np.asarray(box, dtype=np.float64), frame))
                self._next += 1
        return out
