"""Optional keypoint detectors that turn images into fitkit observations.

The one provider so far is MediaPipe Pose (BlazePose, 33 landmarks, format
``blazepose33``): :class:`MediaPipePoseDetector` and the pure conversion
:func:`landmarks_to_detection`. MediaPipe is *not* a dependency of fitkit: it
needs numpy<2 and protobuf<5, so it lives in a separate environment (the
``detect`` extra; see ``docs/detect.md``). Importing this package never imports
mediapipe; constructing a detector does, and raises
:class:`MediaPipeNotInstalledError` with the install commands when it is missing.

The command line front end is ``fitkit detect`` (:mod:`fitkit.commands.detect`).
"""
from __future__ import annotations

from fitkit.detect.mediapipe_pose import (
    INSTALL_COMMANDS,
    NUM_LANDMARKS,
    DetectError,
    Detection,
    MediaPipeNotInstalledError,
    MediaPipePoseDetector,
    import_mediapipe,
    landmarks_to_detection,
)

__all__ = [
    "INSTALL_COMMANDS",
    "NUM_LANDMARKS",
    "DetectError",
    "Detection",
    "MediaPipeNotInstalledError",
    "MediaPipePoseDetector",
    "import_mediapipe",
    "landmarks_to_detection",
]
