"""2D/3D keypoint formats fitkit knows: names and order of each.

- ``coco25``: COCO-17 followed by the six COCO-WholeBody foot points
  (``coco17`` is its first 17 entries).
- ``body25``: OpenPose BODY_25.
- ``blazepose33``: MediaPipe BlazePose's 33 pose landmarks.

Names are snake_case and "left"/"right" are the person's own sides.
"""
from __future__ import annotations

from dataclasses import dataclass

_COCO17 = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_FEET = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")

_BODY25 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe",
    "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)

_BLAZEPOSE33 = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)


@dataclass(frozen=True)
class KeypointFormat:
    name: str
    names: tuple[str, ...]
    aliases: tuple[str, ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.names)


COCO25 = KeypointFormat("coco25", _COCO17 + _FEET, ("coco_feet", "coco17+feet"))
BODY25 = KeypointFormat("body25", _BODY25, ("openpose", "openpose25", "body_25"))
BLAZEPOSE33 = KeypointFormat("blazepose33", _BLAZEPOSE33, ("blazepose", "mediapipe"))

FORMATS = {f.name: f for f in (COCO25, BODY25, BLAZEPOSE33)}


def get_format(name: str) -> KeypointFormat:
    """Look up a format by name or alias (case-insensitive); unknown names raise ValueError."""
    key = name.lower()
    for fmt in FORMATS.values():
        if key == fmt.name or key in fmt.aliases:
            return fmt
    known = ", ".join(f"{f.name} (aliases: {', '.join(f.aliases)})" for f in FORMATS.values())
    raise ValueError(f"unknown keypoint format {name!r}; known formats: {known}")
