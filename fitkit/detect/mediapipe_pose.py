"""MediaPipe Pose (BlazePose) as an offline keypoint provider: images -> ``blazepose33`` keypoints.

API. MediaPipe 0.10.21 has two pose APIs; fitkit uses the legacy
``mediapipe.solutions.pose.Pose`` with ``model_complexity`` 1 (default) or 0,
because it is the one that runs from the wheel alone:

* complexity 1 reads ``mediapipe/modules/pose_detection/pose_detection.tflite``
  and ``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``, both
  shipped in the wheel: no network at all (checked with the network unshared).
* complexity 0 (``pose_landmark_lite.tflite``) and 2 (``..._heavy.tflite``) are
  *not* in the wheel; ``Pose(...)`` downloads them from Google Cloud Storage on
  first use. fitkit never lets it: complexity 2 is refused, and complexity 0 is
  accepted only when the lite file is already in the package folder (placed
  there by hand); otherwise :class:`DetectError` says where it would go.
* The newer Tasks API (``mediapipe.tasks.vision.PoseLandmarker``) needs a
  ``pose_landmarker_*.task`` bundle that the wheel does not ship.

Coordinates. MediaPipe gives landmarks normalized by the image width and
height. fitkit's pixels have integer coordinates at pixel *centres*
(``docs/conventions.md``). MediaPipe's CPU graph crops the image with OpenCV
(``warpPerspective`` from the ROI ``normalized * size``), i.e. it already treats
``x * W`` as an OpenCV pixel-centre coordinate, so the conversion is
``u = x * W``, ``v = y * H`` with **no** -0.5 shift. Measured on rendered
bodies (``docs/detect.md``): the image-fixed offset with this rule is below
0.1 px, while ``x * W - 0.5`` would leave a constant -0.5 px.

Confidence is MediaPipe's ``visibility`` clipped to [0, 1] (NaN -> 0).

World landmarks (``pose_world_landmarks``) are metric, with the origin at the
midpoint of the hips, and their axes are the camera's: x right, y down, z away
from the camera (checked against rendered bodies: per-axis correlation with the
true camera-frame positions 0.98 / 1.00 / 0.81, all positive). That is fitkit's
OpenCV camera convention, so they are stored unchanged as ``keypoints3d``
(x, y, z, confidence) with the 2D confidence.

Landmark order: MediaPipe's ``PoseLandmark`` enum (nose, left_eye_inner, ...,
right_foot_index) is exactly ``fitkit.body.keypoint_formats.BLAZEPOSE33``
(``tests/test_detect.py`` checks it when mediapipe is installed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from fitkit.errors import FitkitError

NUM_LANDMARKS = 33
KEYPOINT_FORMAT = "blazepose33"
MEDIAPIPE_VERSION = "0.10.21"

#: The commands that set up the separate environment (tested; see docs/detect.md).
INSTALL_COMMANDS = (
    "python3.11 -m venv venv-detect\n"
    "venv-detect/bin/pip install torch==2.13.0\n"
    f'venv-detect/bin/pip install mediapipe=={MEDIAPIPE_VERSION} "numpy<2" "protobuf<5"\n'
    'venv-detect/bin/pip install "numpy<2" "scipy>=1.9" smplx==0.1.28 "roma>=1.4" "pyyaml>=6" '
    '"tqdm>=4.60" "scikit-learn>=1.2" "zuko>=1.1" "pillow>=9"\n'
    "venv-detect/bin/pip install --no-deps -e .   # in the fitkit checkout\n"
    "venv-detect/bin/fitkit detect ..."
)

# The landmark model file of each offline-capable complexity, relative to the mediapipe package.
_LANDMARK_MODELS = {0: "modules/pose_landmark/pose_landmark_lite.tflite",
                    1: "modules/pose_landmark/pose_landmark_full.tflite"}
_DETECTOR_MODEL = "modules/pose_detection/pose_detection.tflite"


class DetectError(FitkitError):
    """A detector input (image, video, option) or the detector itself is unusable."""


class MediaPipeNotInstalledError(DetectError, ImportError):
    """mediapipe cannot be imported in this environment."""


def import_mediapipe():
    """Import and return the ``mediapipe`` module, or raise :class:`MediaPipeNotInstalledError`
    with the commands that install it in a separate environment."""
    try:
        import mediapipe  # noqa: F401  (heavy; only imported when a detector is made)
        from mediapipe.python.solutions import pose  # noqa: F401
    except Exception as exc:  # ImportError, or numpy-2 ABI errors when installed in the wrong env
        raise MediaPipeNotInstalledError(
            f"fitkit detect needs mediapipe=={MEDIAPIPE_VERSION}, which cannot be imported here "
            f"({type(exc).__name__}: {exc}). It needs numpy<2 and protobuf<5, so it is not part of "
            "fitkit's main environment; install it in a separate one (the 'detect' extra, "
            "docs/detect.md):\n" + INSTALL_COMMANDS) from None
    return mediapipe


@dataclass
class Detection:
    """One person's BlazePose landmarks in one image, as fitkit arrays.

    Attributes:
        keypoints: (33, 3) float64: x, y in full-image pixels (integer
            coordinates at pixel centres), confidence in [0, 1].
        keypoints3d: (33, 4) float64: x, y, z in meters, camera axes (x right,
            y down, z away from the camera), origin at the hips' midpoint, and
            the same confidence; None when the detector gave no world landmarks.
        image_size: (width, height) in pixels.
        mask: (height, width) float32 in [0, 1], MediaPipe's segmentation of
            this person (1 = person), or None when segmentation was off.
    """

    keypoints: np.ndarray
    keypoints3d: Optional[np.ndarray]
    image_size: tuple[int, int]
    mask: Optional[np.ndarray] = None


def _landmark_list(landmarks, what: str) -> list:
    """The landmarks of a mediapipe ``(Normalized)LandmarkList`` (``.landmark``) or a plain sequence."""
    items = list(getattr(landmarks, "landmark", landmarks))
    if len(items) != NUM_LANDMARKS:
        raise ValueError(f"{what}: expected {NUM_LANDMARKS} BlazePose landmarks, got {len(items)}")
    return items


def _confidence(landmark) -> float:
    v = float(getattr(landmark, "visibility", 0.0))
    return min(max(v, 0.0), 1.0) if math.isfinite(v) else 0.0


def landmarks_to_detection(landmarks, world_landmarks, image_size) -> Detection:
    """Convert MediaPipe pose landmarks into fitkit arrays (a pure function).

    Args:
        landmarks: ``results.pose_landmarks`` (a ``NormalizedLandmarkList``) or
            a sequence of 33 objects with ``x``, ``y`` (normalized by the image
            width and height) and ``visibility``.
        world_landmarks: ``results.pose_world_landmarks`` or 33 objects with
            ``x``, ``y``, ``z`` in meters; or None.
        image_size: (width, height) of the image in pixels.
    Returns:
        :class:`Detection`: ``u = x * W``, ``v = y * H`` (no half-pixel shift,
        see the module docstring), confidence = visibility clipped to [0, 1].
        A landmark with a non-finite coordinate gets (0, 0, 0) ("not observed"),
        in 3D (0, 0, 0, 0).
    """
    width, height = (int(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image_size must be positive (width, height), got {tuple(image_size)}")
    kp = np.zeros((NUM_LANDMARKS, 3))
    for i, lm in enumerate(_landmark_list(landmarks, "landmarks")):
        x, y = float(lm.x) * width, float(lm.y) * height
        if math.isfinite(x) and math.isfinite(y):
            kp[i] = (x, y, _confidence(lm))
    kp3 = None
    if world_landmarks is not None:
        kp3 = np.zeros((NUM_LANDMARKS, 4))
        for i, lm in enumerate(_landmark_list(world_landmarks, "world_landmarks")):
            xyz = (float(lm.x), float(lm.y), float(lm.z))
            if all(math.isfinite(v) for v in xyz) and kp[i, 2] > 0:
                kp3[i] = xyz + (kp[i, 2],)
    return Detection(keypoints=kp, keypoints3d=kp3, image_size=(width, height))


def check_rgb_image(image, what: str = "image") -> np.ndarray:
    """``image`` as a C-contiguous (H, W, 3) uint8 array, or ValueError."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} must be an RGB (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


def model_path(model_complexity: int) -> Path:
    """Where the wheel keeps the landmark model of ``model_complexity`` (imports mediapipe)."""
    mp = import_mediapipe()
    return Path(mp.__file__).parent / _LANDMARK_MODELS[model_complexity]


class MediaPipePoseDetector:
    """The most prominent person's BlazePose landmarks, from the files in the mediapipe wheel.

    Args:
        static_image_mode: True for unrelated images (every image runs the person
            detector); False for consecutive video frames (MediaPipe tracks the
            person from the previous frame and smooths the landmarks). Make one
            detector per video.
        model_complexity: 1 (the full model, shipped in the wheel; default) or 0
            (lite; only when its file was placed in the package by hand).
        min_detection_confidence: MediaPipe's person-detection score threshold.
        min_tracking_confidence: MediaPipe's landmark-tracking threshold (video mode).
        enable_segmentation: also return the person's segmentation mask
            (:attr:`Detection.mask`; the model is in the same landmark file).
    Raises:
        MediaPipeNotInstalledError: mediapipe cannot be imported.
        DetectError: a complexity whose model would be downloaded.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, *, static_image_mode: bool = True, model_complexity: int = 1,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5,
                 enable_segmentation: bool = False):
        if model_complexity not in _LANDMARK_MODELS:
            raise DetectError(f"model_complexity must be 0 or 1, got {model_complexity!r} (2, the heavy model, "
                              "is not in the mediapipe wheel and would be downloaded at run time)")
        for name, value in (("min_detection_confidence", min_detection_confidence),
                            ("min_tracking_confidence", min_tracking_confidence)):
            if not 0.0 <= value <= 1.0:
                raise DetectError(f"{name} must lie in [0, 1], got {value!r}")
        mp = import_mediapipe()
        root = Path(mp.__file__).parent
        for rel in (_DETECTOR_MODEL, _LANDMARK_MODELS[model_complexity]):
            if not (root / rel).is_file():
                raise DetectError(
                    f"{root / rel}: model file missing. mediapipe {mp.__version__} would download it at run time, "
                    "which fitkit does not do (offline by design). Use --model-complexity 1 (the full model, "
                    "shipped in the mediapipe wheel), or place the file there yourself.")
        from mediapipe.python.solutions import pose

        self.model_complexity = model_complexity
        self.static_image_mode = static_image_mode
        self.enable_segmentation = bool(enable_segmentation)
        self._pose = pose.Pose(static_image_mode=static_image_mode, model_complexity=model_complexity,
                               smooth_landmarks=True, enable_segmentation=self.enable_segmentation,
                               min_detection_confidence=min_detection_confidence,
                               min_tracking_confidence=min_tracking_confidence)

    def detect(self, image_rgb: np.ndarray) -> Optional[Detection]:
        """Landmarks of the most prominent person in an RGB (H, W, 3) uint8 image, or None."""
        image = check_rgb_image(image_rgb).view()
        image.flags.writeable = False  # read-only view: mediapipe can use the buffer without a copy
        results = self._pose.process(image)
        if results.pose_landmarks is None:
            return None
        h, w = image.shape[:2]
        det = landmarks_to_detection(results.pose_landmarks, results.pose_world_landmarks, (w, h))
        mask = getattr(results, "segmentation_mask", None)
        if self.enable_segmentation and mask is not None:
            det.mask = np.clip(np.asarray(mask, dtype=np.float32).reshape(h, w), 0.0, 1.0)
        return det

    def close(self) -> None:
        if self._pose is not None:
            self._pose.close()
            self._pose = None

    def __enter__(self) -> "MediaPipePoseDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
