"""Reading a ``fitkit fit`` output folder back for reports and viewers.

A fit folder ``OUT`` holds ``OUT/result.npz`` (schema ``fitkit.result/1``, see
:mod:`fitkit.io.params`) and optionally ``OUT/overlays/<frame id>.png`` and
``OUT/meshes/<frame id>.obj``. The result records the observation file it was
fitted on (entry ``observations``, written by ``fitkit fit``); when that file
can still be read, its track ids, frame numbers, image paths and observed
keypoints are used too. Everything here is optional except the result file.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from fitkit.errors import FitkitError

log = logging.getLogger(__name__)

__all__ = ["FitFolder", "FitFolderError", "load_fit_folder", "load_model_for", "body_vertices", "read_image_rgb",
           "VideoReader"]

PARAM_NAMES = ("global_orient", "body_pose", "betas", "transl")
#: Suffixes that make an ``image_paths`` entry ``<video>#<frame index>`` a video frame.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")


class FitFolderError(FitkitError, ValueError):
    """The folder is not a fit result (the message names what is missing)."""


@dataclass
class FitFolder:
    """A fit result with whatever else its folder and observation file offer.

    Attributes:
        path: the folder.
        result: every entry of ``result.npz`` (numpy arrays; strings 0-d or 1-d).
        frame_ids: N frame ids, in the result's row order.
        observations: the :class:`~fitkit.io.observations.Observations` fitted, or None
            when the file is not recorded or cannot be read.
        observations_path: where they were read from (or were expected), or None.
        notes: human-readable remarks on what was missing (for the report).
    """
    path: Path
    result: dict
    frame_ids: list
    observations: Optional[object] = None
    observations_path: Optional[str] = None
    notes: list = field(default_factory=list)
    _video: Optional[object] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.frame_ids)

    def text(self, key: str, default: str = "") -> str:
        """A string entry of the result (``default`` when absent)."""
        return str(self.result[key]) if key in self.result else default

    @property
    def track_ids(self) -> Optional[list]:
        obs = self.observations
        return None if obs is None or obs.track_ids is None else list(obs.track_ids)

    @property
    def time_indices(self) -> Optional[list]:
        """N ints: each row's time within its track, or None without observations carrying tracks."""
        obs = self.observations
        if obs is None or (obs.track_ids is None and obs.frame_numbers is None):
            return None
        return list(obs.time_indices())

    @property
    def is_video(self) -> bool:
        return self.time_indices is not None

    def overlay_path(self, row: int) -> Optional[Path]:
        """``OUT/overlays/<frame id>.png`` of a row when ``fitkit fit --overlays`` wrote it."""
        p = self.path / "overlays" / f"{self.frame_ids[row]}.png"
        return p if p.is_file() else None

    def image_entry(self, row: int) -> Optional[str]:
        """The row's input image when the observations name one that exists: an image
        file, or ``<video>#<frame index>`` (see ``fitkit.io.observations``) of an existing video."""
        obs = self.observations
        if obs is None or obs.image_paths is None or not obs.image_paths[row]:
            return None
        entry = obs.image_paths[row]
        path, sep, index = entry.rpartition("#")
        if sep and index.isdigit() and Path(path).suffix.lower() in VIDEO_SUFFIXES:
            video = self._existing(path)
            return None if video is None else f"{video}#{index}"
        found = self._existing(entry)
        return None if found is None else str(found)

    def _existing(self, name: str) -> Optional[Path]:
        p = Path(name)
        if not p.is_absolute() and self.observations_path:
            # relative paths: beside the observation file first, then the working folder
            beside = Path(self.observations_path).parent / p
            if beside.is_file():
                return beside
        return p if p.is_file() else None

    def frame_image(self, row: int) -> Optional[np.ndarray]:
        """The row's input image as (H, W, 3) uint8 RGB, or None when there is none."""
        entry = self.image_entry(row)
        if entry is None:
            return None
        path, sep, index = entry.rpartition("#")
        if sep and index.isdigit() and Path(path).suffix.lower() in VIDEO_SUFFIXES:
            if self._video is None:
                self._video = VideoReader()
            return self._video.frame(path, int(index))
        return read_image_rgb(entry)

    def observed_keypoints(self, row: int) -> Optional[np.ndarray]:
        """(K, 3) observed x, y (pixels), confidence of a row, or None without observations."""
        if self.observations is None:
            return None
        return self.observations.keypoints[row].detach().cpu().numpy()


def load_fit_folder(out_dir, observations: Optional[str] = None) -> FitFolder:
    """Read a fit folder.

    Args:
        out_dir: the folder ``fitkit fit -o`` wrote.
        observations: the observation file to use instead of the one the result records.
    Raises:
        FitFolderError naming the missing folder, file or field.
    """
    from fitkit.io.params import load_result

    out = Path(out_dir)
    if not out.exists():
        raise FitFolderError(f"{out} not found (expected the output folder of 'fitkit fit -o OUT')")
    if not out.is_dir():
        raise FitFolderError(f"{out}: not a folder (expected the output folder of 'fitkit fit -o OUT')")
    res_path = out / "result.npz"
    if not res_path.is_file():
        raise FitFolderError(f"{res_path} not found: {out} is not a fitkit fit result folder")
    result = load_result(res_path)
    for key in PARAM_NAMES + ("intrinsics", "image_size", "frame_ids"):
        if key not in result:
            raise FitFolderError(f"{res_path}: field {key!r} missing")
    n = result["frame_ids"].shape[0]
    for key in PARAM_NAMES + ("intrinsics", "image_size"):
        if result[key].shape[0] != n:
            raise FitFolderError(f"{res_path}: field {key!r} has {result[key].shape[0]} rows, "
                                 f"but 'frame_ids' has {n}")
    folder = FitFolder(path=out, result=result, frame_ids=[str(f) for f in result["frame_ids"].tolist()])

    obs_path = observations or (str(result["observations"]) if "observations" in result else None)
    if observations is not None and not Path(observations).exists():
        raise FitFolderError(f"{observations}: observation file not found (--input)")
    folder.observations_path = obs_path
    if obs_path is None:
        folder.notes.append("the result does not record its observation file (pass --input OBS for "
                            "tracks, images and observed keypoints)")
    elif not Path(obs_path).exists():
        folder.notes.append(f"the observation file {obs_path} no longer exists (pass --input OBS)")
    else:
        folder.observations = _read_observations(obs_path, folder, res_path, given=observations is not None)
    return folder


def _read_observations(path: str, folder: FitFolder, res_path: Path, given: bool):
    from fitkit.io.keypoint_readers import read_keypoints

    kwargs = {}
    if "keypoint_format" in folder.result:
        kwargs["keypoint_format"] = str(folder.result["keypoint_format"])
    if Path(path).suffix.lower() == ".npy":
        kwargs["image_size"] = tuple(int(v) for v in folder.result["image_size"][0].tolist())
    try:
        obs = read_keypoints(path, **kwargs)
    except (FitkitError, ValueError, OSError) as exc:
        folder.notes.append(f"cannot read the observation file {path}: {exc}")
        log.warning("%s: cannot read the observations (%s); the report goes on without them", path, exc)
        return None
    if list(obs.frame_ids) != folder.frame_ids:
        if given:
            raise FitFolderError(f"{path}: its frame ids do not match those of {res_path} "
                                 f"({len(obs)} vs {len(folder)} frames)")
        folder.notes.append(f"the observation file {path} changed since the fit (other frame ids); not used")
        return None
    return obs


def body_vertices(folder: FitFolder, rows, model, batch_size: int = 256) -> np.ndarray:
    """Fitted mesh vertices of some rows, camera frame.

    Args:
        rows: row indices (R,).
        model: the body model (``fitkit.body.load_body_model``) the fit used.
    Returns:
        (R, V, 3) float32 vertices in meters, OpenCV camera axes.
    """
    import torch

    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    out = np.zeros((len(rows), model.num_vertices, 3), dtype=np.float32)
    betas = folder.result["betas"]
    if betas.shape[1] > model.num_betas:
        raise FitFolderError(f"{folder.path / 'result.npz'}: field 'betas' has {betas.shape[1]} columns but the "
                             f"model uses {model.num_betas}")
    with torch.no_grad():
        for s in range(0, len(rows), batch_size):
            idx = rows[s:s + batch_size]
            p = {k: torch.as_tensor(np.asarray(folder.result[k][idx], dtype=np.float32), dtype=model.dtype)
                 for k in PARAM_NAMES}
            p["betas"] = torch.nn.functional.pad(p["betas"], (0, model.num_betas - p["betas"].shape[1]))
            v = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], vertices="all").vertices
            out[s:s + len(idx)] = v.detach().cpu().numpy()
    return out


def load_model_for(folder: FitFolder, model_dir=None):
    """The body model a result was fitted with (``body_model``, ``gender`` entries; betas width)."""
    from fitkit.body import load_body_model

    name = folder.text("body_model", "open")
    gender = folder.text("gender", "neutral")
    try:
        return load_body_model(name, gender, model_dir=model_dir,
                               num_betas=int(folder.result["betas"].shape[1]))
    except (FitkitError, ValueError, OSError) as exc:
        raise FitFolderError(f"{folder.path / 'result.npz'}: cannot load its body model "
                             f"(body_model={name!r}, gender={gender!r}): {exc}") from None


def read_image_rgb(path) -> Optional[np.ndarray]:
    """An image file as (H, W, 3) uint8 RGB, or None when OpenCV cannot decode it."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else np.ascontiguousarray(img[:, :, ::-1])



class VideoReader:
    """Frames of one video at a time, read forward with ``cv2.VideoCapture``; an earlier
    index than the last one read reopens the video (seeking is not frame-exact for every codec)."""

    def __init__(self):
        self._path, self._cap, self._next = None, None, 0

    def frame(self, path, index: int) -> Optional[np.ndarray]:
        """Frame ``index`` (0-based, decoding order) as (H, W, 3) uint8 RGB, or None."""
        import cv2

        index = int(index)
        if self._path != str(path) or index < self._next:
            self.close()
            self._path, self._cap, self._next = str(path), cv2.VideoCapture(str(path)), 0
        if not self._cap.isOpened():
            return None
        while self._next < index:
            if not self._cap.grab():
                return None
            self._next += 1
        ok, img = self._cap.read()
        self._next += 1
        return np.ascontiguousarray(img[:, :, ::-1]) if ok else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._path, self._cap, self._next = None, None, 0
