"""Dense optical flow between consecutive video frames, as a fitkit dense cue.

Three entry points:

* :func:`compute_flow` runs OpenCV's optical flow (DIS or Farnebäck) on a
  video held in memory;
* :func:`read_flow_files` reads one precomputed flow file per frame (e.g. from
  RAFT), through the readers of :mod:`fitkit.io.flow_readers`;
* :func:`add_flow` attaches such a flow stack to :class:`Observations` as
  ``observations.dense['flow']``.

Flow convention (the one OpenCV, Middlebury and RAFT use): ``flow[t]`` is the
*forward* flow from frame t to frame t + 1, an (H, W, 2) float32 map of
``(u, v)`` in pixels with u along +x (to the right) and v along +y (down),
pixel centres at integer coordinates, such that

    frame[t + 1](x + u, y + v) ≈ frame[t](x, y).

The last frame has no successor: its map is all NaN, and so is the map of any
frame whose flow file is missing. NaN means "no value"; a flow term skips those
pixels, so an all-NaN map skips the pair (t, t + 1) entirely.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from fitkit.errors import ObservationError, ParameterError
from fitkit.io.flow_readers import read_displacement_field
from fitkit.io.observations import Observations, read_dense_cue

__all__ = ["FLOW_METHODS", "DIS_PRESETS", "FARNEBACK_PARAMS", "compute_flow", "read_flow_files",
           "add_flow"]

PathLike = Union[str, os.PathLike]

#: Methods :func:`compute_flow` knows.
FLOW_METHODS = ("dis", "farneback")
#: DIS presets (OpenCV's speed/accuracy trade-offs), fastest first.
DIS_PRESETS = ("ultrafast", "fast", "medium")

#: Parameters of ``cv2.calcOpticalFlowFarneback`` used by :func:`compute_flow`:
#: a 4-level pyramid halving the image at each level (handles motions of tens of
#: pixels), a 21-pixel averaging window (robust to noise, blurs motion
#: boundaries a little), 5 iterations per level, and a polynomial expansion over
#: 7-pixel neighbourhoods with the Gaussian sigma OpenCV recommends for that
#: size (1.5). ``flags = cv2.OPTFLOW_FARNEBACK_GAUSSIAN`` weights the window
#: with a Gaussian instead of a box (slower, more accurate).
FARNEBACK_PARAMS = {"pyr_scale": 0.5, "levels": 4, "winsize": 21, "iterations": 5, "poly_n": 7,
                    "poly_sigma": 1.5}

#: Flow file suffixes :func:`read_flow_files` looks for.
FLOW_SUFFIXES = (".flo", ".npy")


# ---------------------------------------------------------------- computing flow

def _gray_frames(frames) -> np.ndarray:
    """(T, H, W) uint8 grayscale from (T, H, W, 3) RGB / (T, H, W) gray, uint8 or float in [0, 1]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3) or 0 in arr.shape:
        raise ParameterError(f"frames must have shape (T, H, W, 3) (RGB) or (T, H, W) (gray), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ParameterError("frames: float frames must be finite values in [0, 1]")
        arr = np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ParameterError(f"frames must be uint8 (0..255) or float (0..1), got dtype {arr.dtype}")
    if arr.ndim == 3:
        return np.ascontiguousarray(arr)
    import cv2

    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in arr])


def _pair_flow(method: str, preset: str):
    """A function (gray0, gray1) -> (H, W, 2) float32 forward flow."""
    import cv2

    if method == "dis":
        if preset not in DIS_PRESETS:
            raise ValueError(f"preset must be one of {DIS_PRESETS} for method 'dis', got {preset!r}")
        dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        return lambda a, b: dis.calc(a, b, None)
    params = dict(FARNEBACK_PARAMS)
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN, **params)


def compute_flow(frames, method: str = "dis", *, preset: str = "medium") -> np.ndarray:
    """Forward optical flow between consecutive frames, with OpenCV.

    Args:
        frames: (T, H, W, 3) RGB video (or (T, H, W) gray), uint8 0..255 or float
            in [0, 1] (numpy array or tensor); converted to uint8 grayscale.
        method: ``'dis'`` (``cv2.DISOpticalFlow``, dense inverse search: fast,
            good on textured surfaces) or ``'farneback'``
            (``cv2.calcOpticalFlowFarneback`` with :data:`FARNEBACK_PARAMS`).
        preset: DIS speed/accuracy preset, one of :data:`DIS_PRESETS`
            (ignored by Farnebäck).
    Returns:
        (T, H, W, 2) float32 flow in pixels (module docstring for the
        convention): row t is the flow from frame t to frame t + 1; the last
        row is all NaN.
    Raises:
        ValueError listing the choices for an unknown method or preset;
        ParameterError for frames of the wrong shape or dtype.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown optical-flow method {method!r}; choose one of {FLOW_METHODS}")
    gray = _gray_frames(frames)
    calc = _pair_flow(method, preset)
    t, h, w = gray.shape
    flow = np.full((t, h, w, 2), np.nan, dtype=np.float32)
    for i in range(t - 1):
        flow[i] = calc(gray[i], gray[i + 1])
    return flow


# ---------------------------------------------------------------- reading flow files

def _size_wh(image_size) -> tuple[int, int]:
    """(W, H) from a (width, height) pair, or an (N, 2) array/tensor whose rows are all equal."""
    if isinstance(image_size, torch.Tensor):
        image_size = image_size.detach().cpu().numpy()
    arr = np.asarray(image_size, dtype=np.float64).reshape(-1, 2) if np.size(image_size) >= 2 else None
    if arr is None or len(arr) == 0 or not (arr == arr[0]).all():
        raise ParameterError(f"image_size must be (width, height) in pixels, or (N, 2) equal rows; got {image_size!r}")
    w, h = arr[0]
    if not (w >= 1 and h >= 1 and w == int(w) and h == int(h)):
        raise ParameterError(f"image_size must be whole positive pixels (width, height), got {image_size!r}")
    return int(w), int(h)


def _find_flow_files(directory_or_paths, frame_ids: Sequence[str]) -> dict[str, Path]:
    """frame id -> its flow file; ObservationError for a frame with both a .flo and a .npy file."""
    wanted = set(frame_ids)
    found: dict[str, list[Path]] = {}
    if isinstance(directory_or_paths, (str, os.PathLike)):
        folder = Path(directory_or_paths)
        if not folder.is_dir():
            raise ObservationError(f"{folder}: flow directory not found")
        for fid in frame_ids:
            hits = [folder / f"{fid}{s}" for s in FLOW_SUFFIXES if (folder / f"{fid}{s}").is_file()]
            if hits:
                found[fid] = hits
    else:
        for p in dict.fromkeys(map(Path, directory_or_paths)):  # a path listed twice counts once
            if p.suffix.lower() not in FLOW_SUFFIXES:
                raise ObservationError(f"{p}: not a flow file: expected a name <frame_id>.flo or <frame_id>.npy")
            if p.stem in wanted:
                found.setdefault(p.stem, []).append(p)
    for fid, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(str(p) for p in paths)
            raise ObservationError(f"{names}: frame {fid!r} has {len(paths)} flow files; keep exactly one "
                                   "(.flo or .npy)")
    return {fid: paths[0] for fid, paths in found.items()}


def read_flow_files(directory_or_paths: Union[PathLike, Sequence[PathLike]], frame_ids: Sequence[str],
                    image_size) -> tuple[np.ndarray, list[str]]:
    """Read one forward-flow file per frame (e.g. RAFT or Middlebury output).

    Frame ``frame_ids[i]``'s flow (to the next frame) is the file
    ``<frame_id>.flo`` (Middlebury, see :func:`fitkit.io.flow_readers.read_flo`)
    or ``<frame_id>.npy`` (a numeric (H, W, 2) array saved with ``np.save``,
    NaN = no value), read with
    :func:`~fitkit.io.flow_readers.read_displacement_field`.

    Args:
        directory_or_paths: a folder holding the files, or a list of file
            paths; listed files whose name is not ``<frame_id>`` of one of
            ``frame_ids`` are ignored (e.g. flows of frames not being fitted).
        frame_ids: N frame names, e.g. ``observations.frame_ids``.
        image_size: (W, H) pixels every map must have (or an (N, 2) array of
            equal rows, e.g. ``observations.image_size``).
    Returns:
        (flow (N, H, W, 2) float32 pixels, missing): frames without a file get
        an all-NaN map and their ids are listed in ``missing`` (in frame
        order), so a flow term skips their pair (t, t + 1). The last frame of a
        video normally has no file.
    Raises:
        ObservationError naming the file: a map of another size than
        ``image_size`` (saying both), a frame with both a .flo and a .npy
        file, a listed path with another suffix, a missing folder, or an
        unreadable / corrupt file (the readers' errors).
    """
    frame_ids = [str(f) for f in frame_ids]
    w, h = _size_wh(image_size)
    files = _find_flow_files(directory_or_paths, frame_ids)
    flow = np.full((len(frame_ids), h, w, 2), np.nan, dtype=np.float32)
    missing = []
    for i, fid in enumerate(frame_ids):
        path = files.get(fid)
        if path is None:
            missing.append(fid)
            continue
        field = read_displacement_field(path)
        if field.shape[:2] != (h, w):
            raise ObservationError(f"{path}: flow map is {field.shape[1]}x{field.shape[0]} pixels (W x H), "
                                   f"expected {w}x{h} (the image size)")
        flow[i] = field
    return flow, missing


# ---------------------------------------------------------------- attaching flow

def add_flow(observations: Observations, flow) -> Observations:
    """A copy of ``observations`` with ``dense['flow']`` set to ``flow``.

    Args:
        observations: N frames.
        flow: (N, H, W, 2) forward flow in pixels (numpy array or tensor; NaN =
            no value), on every frame's image grid (W, H = its image size).
    Returns:
        New :class:`Observations` (other dense cues kept; an existing
        ``'flow'`` is replaced) whose flow is a tensor of the keypoints'
        dtype and device.
    Raises:
        ObservationError naming the source and ``dense_flow``: wrong shape,
        frame count or grid size, or non-numeric values.
    """
    src = observations.source
    if isinstance(flow, torch.Tensor):
        flow = flow.detach()
    else:
        arr = np.asarray(flow)
        if arr.dtype.kind not in "fiu":
            raise ObservationError(f"{src}: field 'dense_flow' must be numeric, got dtype {arr.dtype}")
        flow = torch.from_numpy(np.ascontiguousarray(arr))
    ref = observations.keypoints
    flow = flow.to(device=ref.device, dtype=ref.dtype)
    dense = dict(observations.dense or {})
    dense["flow"] = flow
    out = dataclasses.replace(observations, dense=dense)  # checks the frame count and the rank
    read_dense_cue(out, "flow", 2, reader="flow", content="(u, v) pixels", image_size=out.image_size)
    return out
