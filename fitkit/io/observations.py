"""Image observations for fitting: 2D keypoints, image sizes, cameras, boxes.

:class:`Observations` is the one container the fitting engine reads; every
reader in :mod:`fitkit.io.keypoint_readers` produces it, and
:func:`save_observations` / :func:`load_observations` store it as a
pickle-free ``.npz`` file (schema ``fitkit.observations/1``, documented field
by field in ``docs/observations.md``).

Conventions: batch (frame) dimension first; pixels in full-image coordinates,
integer coordinates at pixel *centres* (see ``docs/conventions.md``);
intrinsics in OpenCV form.

Validation policy (applied by :meth:`Observations.from_arrays`, and so by
every reader and by :func:`load_observations`):

* A keypoint whose x, y or confidence is NaN or +-inf becomes (0, 0, 0),
  i.e. "not observed". This is never silent: the number of such keypoints is
  stored in ``Observations.invalid_keypoints`` and an
  :class:`~fitkit.errors.ObservationWarning` names the source, the field and
  the count.
* Everything else that is wrong raises :class:`~fitkit.errors.ObservationError`
  (a ``ValueError``) whose message starts with the source (file name or
  ``<arrays>``) and names the field: a confidence outside [0, 1] (after the
  NaN repair), a wrong number of dimensions or wrong shape, a keypoint count
  that does not match the format, frame counts that disagree between fields,
  a non-positive or non-finite image size, bad intrinsics (non-finite,
  non-positive focal, last row not (0, 0, 1)), a bad box (non-finite or
  x1 < x0 / y1 < y0), empty / duplicated / path-like frame ids, an unknown
  keypoint format, a missing required field, an unreadable or corrupt file,
  a wrong schema or an unknown file entry.
* Keypoints outside the image are allowed (truncated people are common).
* Frames whose confidences are all zero are allowed. They carry no evidence:
  the fitting engine flags them ``no_evidence`` and passes their
  initialisation through unchanged. :attr:`Observations.has_evidence` gives
  the per-frame mask.

Constructing :class:`Observations` directly only checks shapes and types
(cheap, no device synchronisation, suitable inside a fitting loop); build
from untrusted data with :meth:`Observations.from_arrays`.
"""
from __future__ import annotations

import dataclasses
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from fitkit.body.keypoint_formats import KeypointFormat, get_format
from fitkit.errors import ObservationError, ObservationWarning
from fitkit.io.atomic import atomic_write

SCHEMA = "fitkit.observations/1"

#: Entries a ``fitkit.observations/1`` file may hold.
REQUIRED_ENTRIES = ("schema", "keypoints", "keypoint_format", "image_size")
OPTIONAL_ENTRIES = ("intrinsics", "bbox", "frame_ids", "image_paths", "track_ids", "frame_numbers",
                    "keypoints3d", "extrinsics")
#: File entries ``dense_<name>`` hold the dense cue ``<name>`` (see :attr:`Observations.dense`).
DENSE_PREFIX = "dense_"
#: File suffixes (lower case) that make an ``image_paths`` entry a video: ``<video>#<frame index>``.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")


def video_frame_ref(entry: str) -> Optional[tuple[str, int]]:
    """``(video path, frame index)`` when an ``image_paths`` entry names a video frame, else None.

    A video frame is written ``<video>#<index>``: a path whose suffix is one of
    :data:`VIDEO_SUFFIXES`, then ``#`` and the 0-based index of the frame in
    decoding order (``cv2.VideoCapture``), e.g. ``clips/run.mp4#123``. The
    index is not checked here (see ``_video_refs``).
    """
    path, sep, index = entry.rpartition("#")
    if not sep or not Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return None
    return path, int(index) if index.isdigit() else -1


def default_frame_ids(n: int) -> list[str]:
    """``['000000', '000001', ...]``: the frame ids used when none are given."""
    return [f"{i:06d}" for i in range(n)]


def _fail(source: str, field: str, message: str) -> ObservationError:
    return ObservationError(f"{source}: field '{field}' {message}")


def _shape_str(shape) -> str:
    shape = tuple(shape)
    return f"({shape[0]},)" if len(shape) == 1 else str(shape)


def _lookup_format(name, source: str) -> KeypointFormat:
    if not isinstance(name, str):
        raise _fail(source, "keypoint_format", f"must be a string, got {type(name).__name__}")
    try:
        return get_format(name)
    except ValueError as exc:
        raise _fail(source, "keypoint_format", str(exc)) from None


@dataclass(eq=False)
class Observations:
    """2D observations of N frames (one person per frame).

    Attributes:
        keypoints: (N, K, 3) float; x, y in full-image pixels, confidence in
            [0, 1] (0 = not observed).
        keypoint_format: canonical format name (``get_format(...).name``);
            aliases given here are replaced by the canonical name.
        image_size: (N, 2) float (width, height) in pixels.
        intrinsics: (N, 3, 3) full-image K in pixels, or None (the fit then
            uses a default camera).
        bbox: (N, 4) float x0, y0, x1, y1 in pixels, or None.
        frame_ids: N unique names; None is replaced by ``'000000', '000001', ...``
            so after construction this is always a list.
        image_paths: N paths (``''`` where unknown) for overlays, or None.
        track_ids: N track names (which person each frame shows), or None: all
            frames belong to one track. Sequence stages fit one shape per track.
        frame_numbers: N ints, each frame's time index within its track, or
            None: 0, 1, 2, ... in the order the frames of a track appear. Unique
            within a track; a gap (a missing number) splits a track into
            separate segments for temporal terms (:mod:`fitkit.fitting.sequence`).
        source: where the data came from, used in error messages.
        dense: per-pixel cues by name, each a floating (N, H, W, C) tensor on
            the full image grid (H, W = image height, width; every frame the
            same size), e.g. ``'iuv'`` (C = 3: DensePose part index 0-24, U, V)
            or ``'displacements'`` (C = 2, pixels); NaN marks pixels without a
            value. None when there are none.
        keypoints3d: (N, K, 4) float or None: the same K keypoints in 3D, x, y,
            z in meters in camera-aligned axes (x right, y down, z forward; a
            root-centred origin is fine), and a confidence in [0, 1] (0 = not
            observed), e.g. MediaPipe's world landmarks or a lifting network's
            output. Read by the ``smplr`` initializer.
        extrinsics: (N, 4, 4) float or None: each frame's world -> camera
            transform [[R, t], [0, 0, 0, 1]] (t in meters), set from a
            calibration file by :func:`fitkit.io.cameras.apply_camera`. The fit
            itself works in camera coordinates; this says where that camera is.

    Instances compare by identity (``eq=False``): tensors have no single truth value.
        invalid_keypoints: how many NaN/inf keypoints were turned into
            confidence 0 when the data was read. It counts the whole source:
            :meth:`subset` and :meth:`to` carry it unchanged, so report it
            once per source, not once per batch.
    """

    keypoints: torch.Tensor
    keypoint_format: str
    image_size: torch.Tensor
    intrinsics: Optional[torch.Tensor] = None
    bbox: Optional[torch.Tensor] = None
    frame_ids: Optional[list[str]] = None
    image_paths: Optional[list[str]] = None
    source: str = "<memory>"
    invalid_keypoints: int = 0
    dense: Optional[dict] = None
    track_ids: Optional[list[str]] = None
    frame_numbers: Optional[list[int]] = None
    keypoints3d: Optional[torch.Tensor] = None
    extrinsics: Optional[torch.Tensor] = None

    def __post_init__(self):
        src = self.source
        fmt = _lookup_format(self.keypoint_format, src)
        self.keypoint_format = fmt.name
        k = fmt.num_keypoints
        kp = self.keypoints
        if not isinstance(kp, torch.Tensor) or not kp.is_floating_point():
            raise _fail(src, "keypoints", f"must be a floating-point tensor of shape (N, {k}, 3), "
                                          f"got {type(kp).__name__} {getattr(kp, 'dtype', '')}".rstrip())
        if kp.dim() != 3 or kp.shape[1:] != (k, 3):
            raise _fail(src, "keypoints", f"has shape {_shape_str(kp.shape)}, expected (N, {k}, 3) "
                                          f"for format '{fmt.name}'")
        n = kp.shape[0]
        for name, trailing in (("image_size", (2,)), ("intrinsics", (3, 3)), ("bbox", (4,)),
                               ("extrinsics", (4, 4))):
            value = getattr(self, name)
            if value is None:
                if name == "image_size":
                    raise _fail(src, name, "is required")
                continue
            want = _shape_str((n,) + trailing)
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise _fail(src, name, f"must be a floating-point tensor of shape {want}, "
                                       f"got {type(value).__name__}")
            if tuple(value.shape) != (n,) + trailing:
                raise _fail(src, name, f"has shape {_shape_str(value.shape)}, expected {want} "
                                       f"(N={n} frames from 'keypoints')")
        if self.dense is not None:
            _check_dense(self.dense, n, src)
        k3 = self.keypoints3d
        if k3 is not None:
            if not isinstance(k3, torch.Tensor) or not k3.is_floating_point():
                raise _fail(src, "keypoints3d", f"must be a floating-point tensor of shape (N, {k}, 4), "
                                                f"got {type(k3).__name__}")
            if tuple(k3.shape) != (n, k, 4):
                raise _fail(src, "keypoints3d", f"has shape {_shape_str(k3.shape)}, expected ({n}, {k}, 4) "
                                                f"(the keypoints' N and K; x, y, z, confidence)")
        if self.frame_ids is None:
            self.frame_ids = default_frame_ids(n)
        for name in ("frame_ids", "image_paths", "track_ids", "frame_numbers"):
            value = getattr(self, name)
            if value is None:
                continue
            value = list(value)
            if len(value) != n:
                raise _fail(src, name, f"has {len(value)} entries, expected {n} (N from 'keypoints')")
            if name == "frame_numbers":
                value = _frame_numbers(value, self.track_ids, src)
            elif not all(isinstance(v, str) for v in value):
                raise _fail(src, name, "must hold strings")
            setattr(self, name, value)

    # ------------------------------------------------------------ properties

    def __len__(self) -> int:
        return self.keypoints.shape[0]

    @property
    def format(self) -> KeypointFormat:
        """The :class:`~fitkit.body.keypoint_formats.KeypointFormat` of the keypoints."""
        return get_format(self.keypoint_format)

    @property
    def num_keypoints(self) -> int:
        return self.keypoints.shape[1]

    @property
    def confidence(self) -> torch.Tensor:
        """(N, K) keypoint confidences."""
        return self.keypoints[..., 2]

    @property
    def has_evidence(self) -> torch.Tensor:
        """(N,) bool: frames with at least one keypoint of confidence > 0."""
        return (self.keypoints[..., 2] > 0).any(dim=1)

    # ------------------------------------------------------------ copies

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Observations":
        """A copy with every tensor on ``device``; ``dtype`` (floating) applies to all of them."""
        if dtype is not None and not dtype.is_floating_point:
            raise ObservationError(f"{self.source}: Observations.to(dtype={dtype}) needs a floating dtype")

        def move(t):
            return None if t is None else t.to(device=device, dtype=dtype)

        return dataclasses.replace(
            self, keypoints=move(self.keypoints), image_size=move(self.image_size),
            intrinsics=move(self.intrinsics), bbox=move(self.bbox), keypoints3d=move(self.keypoints3d),
            extrinsics=move(self.extrinsics),
            dense=None if self.dense is None else {k: move(v) for k, v in self.dense.items()},
            frame_ids=list(self.frame_ids),
            image_paths=None if self.image_paths is None else list(self.image_paths),
            track_ids=None if self.track_ids is None else list(self.track_ids),
            frame_numbers=None if self.frame_numbers is None else list(self.frame_numbers))

    def subset(self, index) -> "Observations":
        """The frames selected by ``index`` (an int, a slice, a sequence or tensor of
        ints, or an (N,) bool mask), in that order; the batch dimension is kept.
        ``source`` and ``invalid_keypoints`` are carried over."""
        n = len(self)
        if isinstance(index, slice):
            rows = list(range(n))[index]
        else:
            arr = index.detach().cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"{self.source}: bool mask has shape {arr.shape}, expected ({n},)")
                rows = np.flatnonzero(arr).tolist()
            elif arr.dtype.kind in "iu":
                rows = arr.reshape(-1).tolist()
            else:
                raise IndexError(f"{self.source}: cannot index frames with {type(index).__name__}")
            bad = [r for r in rows if not -n <= r < n]
            if bad:
                raise IndexError(f"{self.source}: frame index {bad[0]} out of range for {n} frames")
            rows = [r % n for r in rows]
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.keypoints.device)

        def pick(t):
            return None if t is None else t.index_select(0, idx.to(t.device))

        return dataclasses.replace(
            self, keypoints=pick(self.keypoints), image_size=pick(self.image_size),
            intrinsics=pick(self.intrinsics), bbox=pick(self.bbox), keypoints3d=pick(self.keypoints3d),
            extrinsics=pick(self.extrinsics),
            dense=None if self.dense is None else {k: pick(v) for k, v in self.dense.items()},
            frame_ids=[self.frame_ids[r] for r in rows],
            image_paths=None if self.image_paths is None else [self.image_paths[r] for r in rows],
            track_ids=None if self.track_ids is None else [self.track_ids[r] for r in rows],
            frame_numbers=self._frame_numbers_of(rows))

    def _frame_numbers_of(self, rows: list[int]) -> Optional[list[int]]:
        """Frame numbers of ``rows``, made explicit when the default (order within a track)
        would change meaning in a subset."""
        if self.frame_numbers is not None:
            return [self.frame_numbers[r] for r in rows]
        if rows == list(range(len(self))):
            return None
        return [self.time_indices()[r] for r in rows]

    def time_indices(self) -> list[int]:
        """N ints: :attr:`frame_numbers`, or 0, 1, 2, ... counted per track in order of appearance."""
        if self.frame_numbers is not None:
            return list(self.frame_numbers)
        tracks = self.track_ids or [""] * len(self)
        seen: dict[str, int] = {}
        out = []
        for t in tracks:
            out.append(seen.get(t, 0))
            seen[t] = out[-1] + 1
        return out

    # ------------------------------------------------------------ validated construction

    @classmethod
    def from_arrays(cls, keypoints, keypoint_format: str, image_size, *, intrinsics=None, bbox=None,
                    frame_ids: Optional[Sequence[str]] = None, image_paths: Optional[Sequence[str]] = None,
                    source: str = "<arrays>", dtype: torch.dtype = torch.float32,
                    dense: Optional[dict] = None, track_ids: Optional[Sequence[str]] = None,
                    frame_numbers: Optional[Sequence[int]] = None,
                    keypoints3d=None, extrinsics=None) -> "Observations":
        """Validate numpy arrays or tensors and build :class:`Observations` on the CPU.

        Args:
            keypoints: (N, K, 3) x, y (pixels), confidence in [0, 1].
            keypoint_format: a format name or alias (see ``get_format``).
            image_size: (N, 2) or one (2,) (width, height) shared by all frames.
            intrinsics: None, (N, 3, 3) or one (3, 3) shared by all frames.
            bbox: None, (N, 4) or one (4,) x0, y0, x1, y1 shared by all frames.
            frame_ids: N unique, non-empty names without '/' or '\\'
                (they may become file names); default ``'000000'...``.
            image_paths: N paths, '' where unknown.
            source: named in error messages and warnings.
            dtype: floating dtype of the tensors.
            dense: name -> (N, H, W, C) per-pixel cue on the image grid (every
                frame's image_size must be (W, H)); NaN allowed (no value).
            track_ids: N track names (non-empty strings; ints are converted), or None.
            frame_numbers: N integer time indices, unique within each track, or None.
            keypoints3d: None or (N, K, 4) x, y, z (meters, camera-aligned axes),
                confidence in [0, 1]; rows with NaN/inf are set to
                (0, 0, 0, 0) like 2D keypoints (counted in the warning).
            extrinsics: None, (N, 4, 4) or one (4, 4) world -> camera transform
                shared by all frames: finite, last row (0, 0, 0, 1), a rotation
                block (orthonormal, det 1, within 1e-5).
        Raises:
            ObservationError: see the module docstring. NaN/inf keypoints are
            repaired with an ObservationWarning instead.
        """
        fields = _validate(keypoints, keypoint_format, image_size, intrinsics, bbox, frame_ids,
                           image_paths, source, repair=True)
        to_t = lambda a: None if a is None else torch.as_tensor(a, dtype=dtype)  # noqa: E731
        if dense is not None:
            dense = {str(k): to_t(_numeric(v, DENSE_PREFIX + str(k), source)) for k, v in dense.items()}
            _check_dense(dense, len(fields["keypoints"]), source, fields["image_size"])
        n = len(fields["keypoints"])
        tracks = _names(track_ids, "track_ids", source, n, ids=True, unique=False)
        numbers = None if frame_numbers is None else _frame_numbers(frame_numbers, tracks, source, n)
        k3 = None if keypoints3d is None else _keypoints3d(keypoints3d, fields["keypoints"].shape, source)
        extr = None if extrinsics is None else _extrinsics(extrinsics, n, source)
        return cls(keypoints=to_t(fields["keypoints"]), keypoint_format=fields["keypoint_format"],
                   image_size=to_t(fields["image_size"]), intrinsics=to_t(fields["intrinsics"]),
                   bbox=to_t(fields["bbox"]), frame_ids=fields["frame_ids"],
                   image_paths=fields["image_paths"], source=source,
                   invalid_keypoints=fields["invalid_keypoints"], dense=dense,
                   track_ids=tracks, frame_numbers=numbers, keypoints3d=to_t(k3), extrinsics=to_t(extr))


# ---------------------------------------------------------------- validation

def _extrinsics(value, n: int, source: str) -> np.ndarray:
    """(N, 4, 4) float64 world -> camera transforms, checked (finite, last row 0 0 0 1, rotation block)."""
    arr = _per_frame(value, "extrinsics", source, n, (4, 4))
    if not np.isfinite(arr).all():
        raise _fail(source, "extrinsics", f"must be finite; bad in {_bad_frames(~np.isfinite(arr))}")
    bad = (arr[:, 3, :] != np.array([0.0, 0.0, 0.0, 1.0])).any(axis=1)
    if bad.any():
        raise _fail(source, "extrinsics", f"last row must be (0, 0, 0, 1); bad in {_bad_frames(bad)}")
    rot = arr[:, :3, :3]
    ortho = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    bad = (ortho > 1e-5) | (np.abs(np.linalg.det(rot) - 1.0) > 1e-5)
    if bad.any():
        raise _fail(source, "extrinsics", f"[:3, :3] must be a rotation (orthonormal, det 1); bad in "
                                          f"{_bad_frames(bad)}")
    return arr


def _keypoints3d(value, kp_shape, source: str) -> np.ndarray:
    """(N, K, 4) float64 3D keypoints, checked; NaN/inf rows become "not observed" with a warning."""
    arr = _numeric(value, "keypoints3d", source)
    n, k = kp_shape[0], kp_shape[1]
    if arr.shape != (n, k, 4):
        raise _fail(source, "keypoints3d", f"has shape {_shape_str(arr.shape)}, expected ({n}, {k}, 4) "
                                           f"(the keypoints' N and K; x, y, z, confidence)")
    bad = ~np.isfinite(arr).all(axis=-1)
    if bad.any():
        warnings.warn(f"{source}: field 'keypoints3d' has {int(bad.sum())} keypoint(s) with NaN/inf values; "
                      f"they are treated as not observed", ObservationWarning, stacklevel=3)
        arr = arr.copy()
        arr[bad] = 0.0
    conf = arr[..., 3]
    if ((conf < 0) | (conf > 1)).any():
        raise _fail(source, "keypoints3d", f"confidence (last column) must lie in [0, 1]; "
                                           f"{int(((conf < 0) | (conf > 1)).sum())} value(s) outside")
    return arr

def read_dense_cue(observations, name: str, channels: int, *, reader: str, content: str,
                   image_size: torch.Tensor) -> torch.Tensor:
    """The dense cue ``name`` of ``observations`` for a term, checked: (N, H, W, channels)
    floating, one map per frame, on every frame's image grid (``image_size`` (N, 2) W, H).

    Args:
        reader: the term reading it (named in errors), e.g. ``'densepose'``.
        content: what the channels hold (named in errors), e.g. ``'(I, U, V)'``.
    Raises:
        ObservationError: naming the source and ``dense_<name>``.
    """
    src = getattr(observations, "source", "<observations>")
    dense = getattr(observations, "dense", None) or {}
    field = DENSE_PREFIX + name
    if name not in dense:
        raise ObservationError(f"{src}: field '{field}' is missing: the {reader} term reads the dense cue "
                               f"{name!r}, the observations have {sorted(dense) if dense else 'no dense cues'}")
    f = dense[name]
    n = image_size.shape[0]
    if not isinstance(f, torch.Tensor) or not f.is_floating_point() or f.dim() != 4 or f.shape[-1] != channels:
        raise ObservationError(f"{src}: field '{field}' must be a floating (N, H, W, {channels}) tensor of "
                               f"{content}, got {type(f).__name__} {tuple(getattr(f, 'shape', ()))}")
    if f.shape[0] != n:
        raise ObservationError(f"{src}: field '{field}' has {f.shape[0]} frames, expected {n}")
    h, w = int(f.shape[1]), int(f.shape[2])
    size = image_size.detach().to("cpu", torch.float64)
    bad = torch.nonzero((size[:, 0] != w) | (size[:, 1] != h)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ObservationError(f"{src}: field '{field}' is {w}x{h} pixels (W x H) but frame {i}'s image is "
                               f"{size[i, 0]:g}x{size[i, 1]:g}: dense cues must be on the full image grid")
    return f


def _check_dense(dense, n: int, source: str, image_size=None) -> None:
    """Shapes (and, given the (N, 2) image sizes, the grid size) of the dense cues."""
    if not isinstance(dense, dict):
        raise _fail(source, "dense", f"must be a dict name -> (N, H, W, C) tensor, got {type(dense).__name__}")
    for name, value in dense.items():
        field = DENSE_PREFIX + str(name)
        if not str(name).isidentifier():
            raise _fail(source, field, "needs a name made of letters, digits and '_'")
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 4:
            raise _fail(source, field, f"must be a floating-point (N, H, W, C) tensor, got "
                                       f"{type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
        if value.shape[0] != n:
            raise _fail(source, field, f"has {value.shape[0]} frames, expected {n} (N from 'keypoints')")
        if image_size is not None:
            h, w = value.shape[1:3]
            sizes = np.asarray(image_size).reshape(-1, 2)
            bad = np.flatnonzero((sizes[:, 0] != w) | (sizes[:, 1] != h))
            if len(bad):
                raise _fail(source, field, f"is {w}x{h} pixels but frame {int(bad[0])}'s image is "
                                           f"{sizes[bad[0], 0]:g}x{sizes[bad[0], 1]:g} (W x H): dense cues "
                                           "must be on the image grid")


def _numeric(value, field: str, source: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise _fail(source, field, f"is not a numeric array ({exc})") from None
    if arr.dtype.kind not in "fiu":
        raise _fail(source, field, f"must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _per_frame(value, field: str, source: str, n: int, trailing: tuple) -> np.ndarray:
    """A (N, *trailing) array; a single (*trailing) value is repeated for every frame."""
    arr = _numeric(value, field, source)
    if arr.shape == trailing:
        arr = np.broadcast_to(arr, (n,) + trailing).copy()
    want = _shape_str((n,) + trailing)
    if arr.shape != (n,) + trailing:
        raise _fail(source, field, f"has shape {_shape_str(arr.shape)}, expected {want} or "
                                   f"{_shape_str(trailing)} (N={n} frames from 'keypoints')")
    return arr


def _bad_frames(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    more = f" (+{len(rows) - 10} more)" if len(rows) > 10 else ""
    return f"frames {rows[:10].tolist()}{more}"


def _frame_numbers(values, tracks, source: str, n: Optional[int] = None) -> list[int]:
    """Integer frame numbers, unique within each track."""
    field = "frame_numbers"
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise _fail(source, field, f"has shape {_shape_str(arr.shape)}, expected ({n if n is not None else 'N'},)")
    if arr.dtype.kind == "f" and len(arr) and (not np.isfinite(arr).all() or (arr != np.round(arr)).any()):
        raise _fail(source, field, "must hold whole numbers")
    if len(arr) and arr.dtype.kind not in "fiu":
        raise _fail(source, field, f"must hold integers, got dtype {arr.dtype}")
    out = [int(v) for v in arr]
    seen: dict[tuple, int] = {}
    for i, (t, f) in enumerate(zip(tracks or [""] * len(out), out)):
        if (t, f) in seen:
            where = f" of track {t!r}" if tracks else ""
            raise _fail(source, field, f"entries {seen[(t, f)]} and {i} are both frame {f}{where}; "
                                       "frame numbers must be unique within a track")
        seen[(t, f)] = i
    return out


def _names(values, field: str, source: str, n: int, ids: bool, unique: bool = True) -> Optional[list[str]]:
    if values is None:
        return None
    if isinstance(values, (str, bytes)):
        raise _fail(source, field, f"must be a sequence of {n} strings, got a single string")
    if isinstance(values, np.ndarray):
        values = values.tolist()
    values = list(values)
    if len(values) != n:
        raise _fail(source, field, f"has {len(values)} entries, expected {n} (N from 'keypoints')")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and ids:
            v = str(v)
        if not isinstance(v, str):
            raise _fail(source, field, f"entry {i} is {type(v).__name__}, expected a string")
        out.append(v)
    if ids:
        for i, v in enumerate(out):
            if not v or "/" in v or "\\" in v:
                raise _fail(source, field, f"entry {i} ({v!r}) must be a non-empty name without '/' or '\\'")
        seen = {}
        for i, v in enumerate(out if unique else []):
            if v in seen:
                raise _fail(source, field, f"entries {seen[v]} and {i} are both {v!r}; frame ids must be unique")
            seen[v] = i
    return out


def _video_refs(paths: Optional[list[str]], source: str) -> Optional[list[str]]:
    """``image_paths`` with every video entry checked to be ``<video>#<frame index>``."""
    for i, p in enumerate(paths or []):
        ref = video_frame_ref(p)
        if ref is not None and ref[1] < 0:
            raise _fail(source, "image_paths", f"entry {i} ({p!r}) must end in '#' and a frame index "
                                               "(an integer >= 0) after the video path")
        if ref is None and Path(p).suffix.lower() in VIDEO_SUFFIXES:
            raise _fail(source, "image_paths", f"entry {i} ({p!r}) is a video; name one frame as "
                                               f"'{p}#<frame index>'")
    return paths


def _validate(keypoints, keypoint_format, image_size, intrinsics, bbox, frame_ids, image_paths,
              source: str, repair: bool) -> dict:
    """Check every field as numpy float64; NaN keypoints repaired (with a warning) if ``repair``."""
    fmt = _lookup_format(keypoint_format, source)
    k = fmt.num_keypoints
    if keypoints is None:
        raise _fail(source, "keypoints", "is required")
    if image_size is None:
        raise _fail(source, "image_size", "is required")
    kp = _numeric(keypoints, "keypoints", source)
    if kp.ndim != 3 or kp.shape[1:] != (k, 3):
        raise _fail(source, "keypoints", f"has shape {_shape_str(kp.shape)}, expected (N, {k}, 3) "
                                         f"for format '{fmt.name}'")
    n = kp.shape[0]
    if n == 0:
        raise _fail(source, "keypoints", "has no frames (N = 0)")

    nonfinite = ~np.isfinite(kp).all(axis=2)
    invalid = int(nonfinite.sum())
    if invalid:
        if not repair:
            raise _fail(source, "keypoints", f"has {invalid} keypoint(s) with NaN/inf values in "
                                             f"{_bad_frames(nonfinite)}")
        kp = kp.copy()
        kp[nonfinite] = 0.0
        warnings.warn(f"{source}: field 'keypoints' has {invalid} keypoint(s) with NaN/inf x, y or "
                      f"confidence in {_bad_frames(nonfinite)}; they were set to (0, 0, confidence 0)",
                      ObservationWarning, stacklevel=3)
    conf = kp[..., 2]
    out_of_range = (conf < 0) | (conf > 1)
    if out_of_range.any():
        f, j = np.argwhere(out_of_range)[0]
        raise _fail(source, "keypoints", f"confidence must lie in [0, 1]; {int(out_of_range.sum())} value(s) "
                                         f"outside it, first at frame {f}, keypoint {j} "
                                         f"('{fmt.names[j]}'): {conf[f, j]!r}")

    size = _per_frame(image_size, "image_size", source, n, (2,))
    bad = ~np.isfinite(size) | (size <= 0)
    if bad.any():
        raise _fail(source, "image_size", f"(width, height) must be finite and > 0; bad in {_bad_frames(bad)}")

    if intrinsics is not None:
        intrinsics = _per_frame(intrinsics, "intrinsics", source, n, (3, 3))
        bad = ~np.isfinite(intrinsics)
        if bad.any():
            raise _fail(source, "intrinsics", f"must be finite; bad in {_bad_frames(bad)}")
        bad = (intrinsics[:, 0, 0] <= 0) | (intrinsics[:, 1, 1] <= 0)
        if bad.any():
            raise _fail(source, "intrinsics", f"focal lengths K[0,0], K[1,1] must be > 0; bad in {_bad_frames(bad)}")
        bad = (intrinsics[:, 2, :] != np.array([0.0, 0.0, 1.0])).any(axis=1)
        if bad.any():
            raise _fail(source, "intrinsics", f"last row must be (0, 0, 1); bad in {_bad_frames(bad)}")

    if bbox is not None:
        bbox = _per_frame(bbox, "bbox", source, n, (4,))
        bad = ~np.isfinite(bbox)
        if bad.any():
            raise _fail(source, "bbox", f"must be finite; bad in {_bad_frames(bad)}")
        bad = (bbox[:, 2] < bbox[:, 0]) | (bbox[:, 3] < bbox[:, 1])
        if bad.any():
            raise _fail(source, "bbox", f"(x0, y0, x1, y1) needs x1 >= x0 and y1 >= y0; bad in {_bad_frames(bad)}")

    return {
        "keypoints": kp, "keypoint_format": fmt.name, "image_size": size, "intrinsics": intrinsics,
        "bbox": bbox, "frame_ids": _names(frame_ids, "frame_ids", source, n, ids=True),
        "image_paths": _video_refs(_names(image_paths, "image_paths", source, n, ids=False), source),
        "invalid_keypoints": invalid,
    }


# ---------------------------------------------------------------- file

def save_observations(path, obs: Observations) -> Path:
    """Write ``obs`` to a ``fitkit.observations/1`` .npz file, atomically.

    The file is exactly ``path`` (no suffix is added). Strings are stored as
    numpy unicode arrays, so the file loads with ``allow_pickle=False``.
    Optional fields that are None are left out. Observations that fail
    validation (including NaN keypoints) are refused with ObservationError
    naming ``path``; ``source`` and ``invalid_keypoints`` are not stored.
    """
    path = Path(path)
    src = str(path)
    if not isinstance(obs, Observations):
        raise ObservationError(f"{src}: expected Observations, got {type(obs).__name__}")
    numpy = lambda t: None if t is None else t.detach().cpu().numpy()  # noqa: E731
    _validate(numpy(obs.keypoints), obs.keypoint_format, numpy(obs.image_size), numpy(obs.intrinsics),
              numpy(obs.bbox), obs.frame_ids, obs.image_paths, src, repair=False)
    arrays = {
        "schema": np.array(SCHEMA),
        "keypoint_format": np.array(obs.keypoint_format),
        "keypoints": numpy(obs.keypoints),
        "image_size": numpy(obs.image_size),
        "frame_ids": np.array(obs.frame_ids, dtype=str),
    }
    for name in ("intrinsics", "bbox"):
        if getattr(obs, name) is not None:
            arrays[name] = numpy(getattr(obs, name))
    if obs.image_paths is not None:
        arrays["image_paths"] = np.array(obs.image_paths, dtype=str)
    if obs.track_ids is not None:
        arrays["track_ids"] = np.array(obs.track_ids, dtype=str)
    if obs.frame_numbers is not None:
        arrays["frame_numbers"] = np.array(obs.frame_numbers, dtype=np.int64)
    if obs.keypoints3d is not None:
        arrays["keypoints3d"] = _keypoints3d(numpy(obs.keypoints3d), tuple(obs.keypoints.shape), src)
    if obs.extrinsics is not None:
        arrays["extrinsics"] = _extrinsics(numpy(obs.extrinsics), len(obs), src)
    if obs.dense is not None:
        _check_dense(obs.dense, len(obs), src, numpy(obs.image_size))
        arrays.update({DENSE_PREFIX + k: numpy(v) for k, v in obs.dense.items()})
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def _string(entries: dict, name: str, src: str, ndim: int):
    arr = entries[name]
    if arr.dtype.kind != "U" or arr.ndim != ndim:
        want = "a string" if ndim == 0 else "a 1-D array of strings"
        shape = _shape_str(arr.shape) if arr.ndim else "()"
        raise _fail(src, name, f"must be {want}, got dtype {arr.dtype} shape {shape}")
    return arr.item() if ndim == 0 else arr.tolist()


def load_observations(path, *, dtype: torch.dtype = torch.float32) -> Observations:
    """Read a ``fitkit.observations/1`` .npz file (``np.load(allow_pickle=False)``).

    Returns Observations with ``source = str(path)``; optional entries absent
    from the file are None (``frame_ids`` then defaults to ``'000000'...``).
    Raises ObservationError naming the file and the field; NaN/inf keypoints
    are repaired with an ObservationWarning (see the module docstring).
    """
    path = Path(path)
    src = str(path)
    if not path.exists():
        raise ObservationError(f"{src}: observation file not found")
    if not path.is_file():
        raise ObservationError(f"{src}: not a file")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ObservationError(f"{src}: cannot read as a .npz archive without pickles "
                               f"({type(exc).__name__}: {exc})") from None
    if isinstance(data, np.ndarray):
        raise ObservationError(f"{src}: is a single .npy array, not a fitkit observations .npz "
                               f"(use read_keypoint_array for bare keypoint arrays)")
    try:
        with data:
            entries = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ObservationError(f"{src}: corrupt .npz archive or an entry needing pickles "
                               f"({type(exc).__name__}: {exc})") from None

    if "schema" not in entries:
        raise _fail(src, "schema", f"is missing; this is not a fitkit observations file (expected '{SCHEMA}')")
    schema = _string(entries, "schema", src, 0)
    if schema != SCHEMA:
        raise _fail(src, "schema", f"is {schema!r}, expected {SCHEMA!r}")
    unknown = sorted(set(entries) - set(REQUIRED_ENTRIES) - set(OPTIONAL_ENTRIES)
                     - {k for k in entries if k.startswith(DENSE_PREFIX)})
    if unknown:
        raise _fail(src, unknown[0], f"is not part of schema {SCHEMA!r}; known fields: "
                                     f"{', '.join(REQUIRED_ENTRIES + OPTIONAL_ENTRIES)}")
    for name in REQUIRED_ENTRIES:
        if name not in entries:
            raise _fail(src, name, "is missing (required)")
    fmt = _string(entries, "keypoint_format", src, 0)
    names = {n: _string(entries, n, src, 1) if n in entries else None
             for n in ("frame_ids", "image_paths", "track_ids")}
    return Observations.from_arrays(
        entries["keypoints"], fmt, entries["image_size"], intrinsics=entries.get("intrinsics"),
        bbox=entries.get("bbox"), frame_ids=names["frame_ids"], image_paths=names["image_paths"],
        source=src, dtype=dtype, track_ids=names["track_ids"], frame_numbers=entries.get("frame_numbers"),
        keypoints3d=entries.get("keypoints3d"), extrinsics=entries.get("extrinsics"),
        dense={k[len(DENSE_PREFIX):]: v for k, v in entries.items() if k.startswith(DENSE_PREFIX)} or None)
