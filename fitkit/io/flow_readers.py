"""Readers and writers for dense 2D displacement fields (optical-flow files).

A displacement field is an (H, W, 2) float32 array on the image grid: for the
pixel in row y, column x, ``field[y, x] = (dx, dy)`` in pixels (x to the
right, y down), and NaN marks pixels without a value. Several frames stacked
to (N, H, W, 2) go to :meth:`fitkit.io.observations.Observations.from_arrays`
as ``dense={'displacements': field}`` (see :mod:`fitkit.terms.displacements`).

Formats:

- ``.flo`` (Middlebury optical flow): the float32 magic number 202021.25
  (the bytes ``PIEH``), int32 width, int32 height, then H * W * 2 float32
  values row-major with u, v interleaved, all little-endian. A component with
  magnitude >= 1e9 means "unknown" (Middlebury's ``UNKNOWN_FLOW_THRESH``);
  both components of such a pixel are read as NaN. :func:`write_flo` writes
  NaN (or inf) pixels as 1e10 in both components.
- ``.npy``: a numeric (H, W, 2) array (NaN allowed; no pickled objects).

Every error is an :class:`~fitkit.errors.ObservationError` whose message
starts with the file name.

The ``.flo`` code is fitkit's own although OpenCV has ``cv2.readOpticalFlow``:
OpenCV returns None without a reason for a missing, corrupt or truncated file,
keeps the "unknown" marker as a number, and read a 1920x1080 file 1.2-2x
slower here (tools/bench_replacements.py). tests/test_flo_cv2.py checks that both
read and write the same bytes and values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from fitkit.errors import ObservationError
from fitkit.io.atomic import atomic_write

__all__ = ["FLO_MAGIC", "FLO_UNKNOWN", "read_flo", "write_flo", "read_displacement_field"]

#: Middlebury magic number (float32; the bytes 'PIEH').
FLO_MAGIC = 202021.25
#: Components with magnitude at or above this are "unknown flow".
FLO_UNKNOWN = 1e9
#: Value :func:`write_flo` stores for unknown pixels.
_FLO_UNKNOWN_WRITTEN = 1e10
#: Largest width or height a .flo header may declare (guards against garbage headers).
_FLO_MAX_SIDE = 1 << 16

PathLike = Union[str, Path]


def read_flo(path: PathLike) -> np.ndarray:
    """Read a Middlebury ``.flo`` file.

    Args:
        path: the file.
    Returns:
        (H, W, 2) float32, pixels; unknown pixels (a component >= 1e9 in
        magnitude, or NaN in the file) are NaN in both components.
    Raises:
        ObservationError naming the file: missing/unreadable, wrong magic
        number, bad header, truncated data or trailing bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ObservationError(f"{path}: file not found") from None
    except OSError as exc:
        raise ObservationError(f"{path}: cannot read the file ({exc})") from None
    if len(raw) < 12:
        raise ObservationError(f"{path}: not a .flo file: {len(raw)} bytes, shorter than the 12-byte header")
    magic = np.frombuffer(raw, dtype="<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise ObservationError(f"{path}: not a .flo file: magic number {float(magic)!r} (bytes {raw[:4]!r}), "
                               f"expected {FLO_MAGIC} ('PIEH')")
    width, height = (int(v) for v in np.frombuffer(raw, dtype="<i4", count=2, offset=4))
    if not (0 < width <= _FLO_MAX_SIDE and 0 < height <= _FLO_MAX_SIDE):
        raise ObservationError(f"{path}: bad .flo header: width {width}, height {height} "
                               f"(each must be in 1..{_FLO_MAX_SIDE})")
    want = 12 + 4 * 2 * width * height
    if len(raw) < want:
        raise ObservationError(f"{path}: truncated .flo file: {len(raw)} bytes, expected {want} for "
                               f"{width}x{height} pixels (W x H)")
    if len(raw) > want:
        raise ObservationError(f"{path}: {len(raw) - want} unexpected trailing bytes after the "
                               f"{width}x{height} flow field (expected {want} bytes)")
    field = np.frombuffer(raw, dtype="<f4", offset=12).reshape(height, width, 2).astype(np.float32)
    unknown = ~(np.abs(field) < FLO_UNKNOWN).all(axis=-1)  # NaN compares False: unknown too
    field[unknown] = np.nan
    return field


def _as_field(field, source: str) -> np.ndarray:
    if hasattr(field, "detach"):  # a torch tensor
        field = field.detach().cpu().numpy()
    arr = np.asarray(field)
    if arr.dtype.kind not in "fiu":
        raise ObservationError(f"{source}: displacement field must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ObservationError(f"{source}: displacement field has shape {arr.shape}, expected (H, W, 2)")
    return arr.astype(np.float32)


def write_flo(path: PathLike, field) -> None:
    """Write an (H, W, 2) field (numpy array or tensor, pixels) as a Middlebury ``.flo`` file.

    The file is written atomically (a reader never sees half of it). Pixels with
    a NaN or infinite component are stored as unknown (1e10 in both components),
    so :func:`read_flo` gives them back as NaN.

    Raises:
        ObservationError naming the file for a field that is not (H, W, 2) numeric
        or too large for the format.
    """
    path = Path(path)
    arr = _as_field(field, str(path))
    height, width = arr.shape[:2]
    if width > _FLO_MAX_SIDE or height > _FLO_MAX_SIDE:
        raise ObservationError(f"{path}: field of {width}x{height} pixels is too large for .flo "
                               f"(at most {_FLO_MAX_SIDE} per side)")
    arr = arr.copy()
    arr[~np.isfinite(arr).all(axis=-1)] = _FLO_UNKNOWN_WRITTEN
    with atomic_write(path, "wb") as handle:
        handle.write(np.array([FLO_MAGIC], dtype="<f4").tobytes())
        handle.write(np.array([width, height], dtype="<i4").tobytes())
        handle.write(np.ascontiguousarray(arr, dtype="<f4").tobytes())


def read_displacement_field(path: PathLike) -> np.ndarray:
    """Read one frame's displacement field from a ``.flo`` or ``.npy`` file.

    Args:
        path: ``*.flo`` (Middlebury, see :func:`read_flo`) or ``*.npy`` (a numeric
            (H, W, 2) array, NaN = no value; pickles are refused).
    Returns:
        (H, W, 2) float32 displacements in pixels (NaN = no value).
    Raises:
        ObservationError naming the file: unknown extension, unreadable or
        corrupt file, wrong shape or dtype.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        return read_flo(path)
    if suffix != ".npy":
        raise ObservationError(f"{path}: unknown displacement-field format {path.suffix!r}; "
                               "expected a .flo or .npy file")
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ObservationError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise ObservationError(f"{path}: cannot read the .npy file ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ObservationError(f"{path}: expected one (H, W, 2) array, got {type(arr).__name__}")
    return _as_field(arr, str(path))
