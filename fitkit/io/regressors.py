"""Import the outputs of body regressors (HMR, SPIN, PARE, CLIFF, HMR2, ...) as fitkit init files.

A regressor's output becomes a fitkit init file (see :mod:`fitkit.io.params`):
smplx-named arrays, one row per frame, ``global_orient`` (N, 3) and
``body_pose`` (N, 69) axis-angle, ``betas`` (N, k) and ``transl`` (N, 3)
meters in the full-image camera frame (OpenCV axes: x right, y down, z
forward), plus ``intrinsics`` (N, 3, 3), the full-image camera that
``transl`` belongs to (when it is known).

Input files
-----------
``.npz`` (read without pickles), ``.json`` and ``.pkl`` (read with fitkit's
restricted unpickler :func:`fitkit.body.safe_pickle.load_pickle`: plain
dicts, lists and numpy arrays only; nothing in the file is run, and torch
tensors, joblib files and other classes are refused). Nested dicts are
flattened (``pred_smpl_params`` -> ``pred_smpl_params.global_orient``, found
by its last name ``global_orient`` when no top-level field has that name; a
leaf name found in two nested dicts is an error). A list of per-frame dicts
(records) is stacked field by field. Every array is per frame: ``(N, ...)``;
a single frame may drop the leading axis.

Field names (the first name found wins; ``N`` = frames)
-------------------------------------------------------

===========================  =====================================================  ==========================
role                         names                                                  shapes
===========================  =====================================================  ==========================
pose, all 24 joints          ``pred_pose``, ``poses``, ``pose``, ``pred_rotmat``    (N, 72), (N, 24, 3) axis-angle;
                                                                                    (N, 24, 3, 3), (N, 216) rotation matrices
pose, split (HMR2)           ``global_orient`` + ``body_pose``                      (N, 3), (N, 1, 3) | (N, 3, 3), (N, 1, 3, 3);
                                                                                    (N, 69), (N, 23, 3) | (N, 23, 3, 3), (N, 207)
shape                        ``betas``, ``pred_betas``, ``pred_shape``, ``shape``   (N, k); one (k,) row is shared by all frames
full-image translation       ``pred_cam_t_full``, ``pred_cam_full``, ``global_t``,  (N, 3) meters
(layout ``cliff``)           ``pred_cam_t``, ``cam_t``, ``transl``
its focal (optional)         ``focal_length``, ``focal_l``                          (N,), (N, 1), (N, 2) fx, fy, or one number
crop camera                  ``pred_cam``, ``cam``, ``pred_camera``                 (N, 3) (s, tx, ty)
(layout ``hmr``) + a box     ``bbox`` or ``bbox_xyxy``                              (N, 4) x0, y0, x1, y1 pixels
                             ``bbox_xywh``                                          (N, 4) x0, y0, w, h pixels
                             ``bbox_cxcywh``                                        (N, 4) centre x, y, w, h pixels
                             ``center`` + ``scale`` (SPIN / PARE)                   (N, 2) pixels + (N,): box side / 200
                             ``box_center`` + ``box_size`` (HMR2)                   (N, 2) + (N,) pixels
image size (optional)        ``image_size``, ``img_size``                           (N, 2) or (2,) as (width, height)
===========================  =====================================================  ==========================

The pose is the SMPL pose in fitkit's (and SPIN's) camera convention: the
global orientation already turns the body into the OpenCV camera frame (a
body facing the camera has ``global_orient`` near (pi, 0, 0)). Rotation
matrices are converted to axis-angle after projecting each onto SO(3) with
``roma.special_procrustes`` (the nearest rotation in the Frobenius norm), so
approximately orthonormal matrices (averaged or regressed ones) are accepted;
matrices that are far from a rotation (``||R^T R - I||_F > 1``) or mirror
(``det R <= 0``) are refused, since they mean a misread layout. Axis-angle
input passes through unchanged. Any NaN/inf in a field that is used is an
error naming the field and the rows.

Layouts
-------
``cliff`` (CLIFF, HMR2's ``pred_cam_t_full``, any full-frame translation):
the translation is already in the full-image camera frame and passes through
unchanged. Its depth belongs to the focal the regressor used (``focal_length``
/ ``focal_l`` if the file has it); fit with that camera. ``intrinsics`` is
written with that focal (else ``focal=``, the given intrinsics, or fitkit's
default focal) and the principal point of the given intrinsics or the image
centre; with no image size and no intrinsics it is left out. When the file's
focal differs from the one given (``focal=``, ``intrinsics=``) by more than 1%
a warning says so: the depth is not rescaled.

``hmr`` (HMR, SPIN, PARE, HMR2's ``pred_cam``): a weak-perspective camera
``(s, tx, ty)`` of the square crop the regressor saw (``s * (X + tx, Y + ty)``
in normalized crop coordinates, -1/+1 the crop edges, see
:mod:`fitkit.camera`), and the box of that crop in full-image pixels. A
non-square box is made square with side ``bbox_scale * max(w, h)`` about its
centre (SPIN's rule; SPIN's demo enlarges detector boxes by 1.2, pass
``bbox_scale=1.2`` for raw detections; ``center``/``scale`` and
``box_center``/``box_size`` are the crop itself and are not rescaled). SPIN
and PARE write ``scale`` as box side / 200 (pixels), from the 200-pixel
person height of the original HMR/LSP preprocessing. The full-image
translation is CLIFF's (:func:`fitkit.camera.crop_cam_to_full_translation`):
``tz = 2 f / (b s)``, ``tx' = tx + 2 (cx - px) / (b s)`` (same for y), with
box centre (cx, cy), side b, full-image focal f and principal point (px, py).
It needs the image size (principal point at the image centre, default focal)
or full-image intrinsics; without either it is an error.

The full-image focal f is, in this order: ``focal=`` (pixels, full image);
``crop_focal=`` (pixels *in the crop*: HMR/SPIN/PARE project with a fixed
5000 px focal in their 224 px crop, HMR2 5000 px in 256 px); the given
intrinsics (mean of fx, fy; their principal point); else fitkit's default
``sqrt(W^2 + H^2)`` (:func:`fitkit.camera.default_focal`), the camera
``fitkit fit`` uses when the observations carry no intrinsics. A crop focal
F_c maps to the full-image focal ``f = F_c * b / crop_res`` for each frame
(:func:`fitkit.camera.crop_intrinsics`: a crop of b pixels resampled to
crop_res pixels scales the focal by crop_res / b). It reproduces the
regressor's own depth, but f then differs per frame (with the box size), so
the returned ``intrinsics`` must be the fit's camera too. The default gives
every frame the camera the fit uses; the body's image (position and size)
is the same whatever f is, only its depth scales with f. ``crop_res`` only
matters with ``crop_focal``.

HMR2 writes ``pred_cam_t`` relative to its crop (focal 5000 px in a 256 px
crop), and its demo computes ``pred_cam_t_full`` for the full image. A file
holding ``pred_cam_t`` together with ``pred_cam`` and a box is therefore
ambiguous: ``layout='auto'`` refuses it and asks for ``hmr`` (convert
``pred_cam`` with the box) or ``cliff`` (``pred_cam_t`` is full-frame).
Otherwise ``auto`` picks ``cliff`` when a full-image translation is present,
else ``hmr``.

Errors are :class:`RegressorImportError` (a
:class:`fitkit.io.params.ParamFileError`), one line naming the file: all
missing fields and the layouts tried, a field's wrong shape and the expected
ones, NaN fields with their rows, a refused pickle.
"""
from __future__ import annotations

import json
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import roma
import torch

from fitkit.camera import (crop_cam_to_full_translation, crop_intrinsics, default_focal,
                           make_intrinsics)
from fitkit.errors import FitkitError, ModelFileError
from fitkit.io.atomic import atomic_write
from fitkit.io.params import PARAM_KEYS, ParamFileError

__all__ = ["RegressorImportError", "ImportResult", "LAYOUTS", "FIELD_NAMES", "read_regressor_output",
           "import_regressor_output", "save_init", "load_regressor_file"]

LAYOUTS = ("auto", "hmr", "cliff")

#: Accepted field names per role, in order of preference (see the module doc).
FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "pose": ("pred_pose", "poses", "pose", "pred_rotmat"),
    "global_orient": ("global_orient",),
    "body_pose": ("body_pose",),
    "betas": ("betas", "pred_betas", "pred_shape", "shape"),
    "full_transl": ("pred_cam_t_full", "pred_cam_full", "global_t", "pred_cam_t", "cam_t", "transl"),
    "focal": ("focal_length", "focal_l"),
    "crop_cam": ("pred_cam", "cam", "pred_camera"),
    "image_size": ("image_size", "img_size"),
}
#: Single-array boxes: name -> format.
BOX_FIELDS = (("bbox", "xyxy"), ("bbox_xyxy", "xyxy"), ("bbox_xywh", "xywh"), ("bbox_cxcywh", "cxcywh"))
#: Two-array boxes: (centre name, size name, pixels per size unit).
BOX_PAIRS = (("center", "scale", 200.0), ("box_center", "box_size", 1.0))

#: ||R^T R - I||_F above which a "rotation matrix" is refused instead of projected.
MAX_ORTHO_DEVIATION = 1.0


class RegressorImportError(ParamFileError):
    """A regressor output that cannot be imported; the message names the file and the fields."""


@dataclass
class ImportResult:
    """What :func:`read_regressor_output` made of a file.

    Attributes:
        params: ``global_orient`` (N, 3), ``body_pose`` (N, 69), ``betas`` (N, k),
            ``transl`` (N, 3), float64, and ``intrinsics`` (N, 3, 3) when known.
        layout: ``'hmr'`` or ``'cliff'``.
        fields: role -> the file's field used for it.
        notes: what was done (projections onto SO(3), the focal used, ...).
        warnings: what the caller should know (a focal mismatch, ...).
    """

    params: dict[str, np.ndarray]
    layout: str
    fields: dict[str, str]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return int(self.params["transl"].shape[0])


# ------------------------------------------------------------------ reading files

class _Partial:
    """A record field present in only some records of a list of per-frame dicts."""

    def __init__(self, missing: list[int]):
        self.missing = missing


def _leaf(key: str) -> str:
    return re.split(r"[./]", key)[-1]


def _flatten(obj: Any, prefix: str, out: dict, src: str) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out, src)
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(e, dict) for e in obj):
        _flatten_records(obj, prefix, out, src)
    else:
        out[prefix or "<top level>"] = obj


def _flatten_records(records: Sequence[dict], prefix: str, out: dict, src: str) -> None:
    """Stack a list of per-frame dicts field by field."""
    flat = []
    for rec in records:
        f: dict = {}
        _flatten(rec, "", f, src)
        flat.append(f)
    keys = list(dict.fromkeys(k for f in flat for k in f))
    for key in keys:
        name = f"{prefix}.{key}" if prefix else key
        missing = [i for i, f in enumerate(flat) if key not in f]
        if missing:
            out[name] = _Partial(missing)
            continue
        try:
            values = [np.asarray(f[key]) for f in flat]
        except (TypeError, ValueError):
            continue
        if any(v.dtype.kind not in "biuf" for v in values):
            continue  # names, paths: not used
        shapes = {v.shape for v in values}
        if len(shapes) > 1:
            raise RegressorImportError(f"{src}: field {name!r} has different shapes in different records: "
                                       f"{sorted(shapes)}")
        shape = values[0].shape
        out[name] = np.concatenate(values) if shape and shape[0] == 1 else np.stack(values)


def load_regressor_file(path) -> dict[str, Any]:
    """Read a regressor output file (.npz, .json, .pkl) into a flat dict: dotted name -> value.

    Nested dicts become dotted names; lists of per-frame dicts are stacked.
    Raises RegressorImportError naming the file when it is missing, unreadable,
    of another type, or (for .pkl) holds anything but plain containers and arrays.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise RegressorImportError(f"{src}: regressor output file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                raw: Any = {}
                for key in data.files:
                    try:
                        raw[key] = data[key]
                    except ValueError:
                        raise RegressorImportError(
                            f"{src}: field {key!r} holds Python objects (it needs pickle, which .npz files "
                            "are read without); save plain numeric arrays") from None
        elif suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
        elif suffix in (".pkl", ".pickle"):
            from fitkit.body.safe_pickle import load_pickle
            try:
                raw = load_pickle(path)
            except ModelFileError as exc:
                detail = str(exc).split(": ", 1)[-1].split(": model files")[0]
                raise RegressorImportError(
                    f"{src}: refused ({detail}): a regressor .pkl may only hold plain dicts, lists and numpy "
                    "arrays (convert torch tensors with .cpu().numpy(); re-save joblib files with np.savez); "
                    "nothing in the file was run") from None
        else:
            raise RegressorImportError(f"{src}: unsupported file type {path.suffix!r}; expected .npz, .json or .pkl")
    except RegressorImportError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RegressorImportError(f"{src}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(raw, (dict, list, tuple)):
        raise RegressorImportError(f"{src}: top level is a {type(raw).__name__}, expected a dict of arrays "
                                   "or a list of per-frame dicts")
    if isinstance(raw, (list, tuple)) and not all(isinstance(e, dict) for e in raw):
        raise RegressorImportError(f"{src}: top level is a list, but not of per-frame dicts")
    out: dict = {}
    _flatten(raw, "", out, src)
    return out


# ------------------------------------------------------------------ field lookup and shapes

class _Fields:
    def __init__(self, flat: dict, src: str):
        self.flat = flat
        self.src = src
        self.used: dict[str, str] = {}

    def find(self, names: Sequence[str]) -> Optional[str]:
        """The file's key for the first of ``names`` present: exact, else a unique nested leaf."""
        for name in names:
            if name in self.flat:
                return self._present(name)
            hits = [k for k in self.flat if "." in k or "/" in k if _leaf(k) == name]
            if len(hits) > 1:
                raise RegressorImportError(f"{self.src}: field {name!r} is ambiguous: found as {hits}")
            if hits:
                return self._present(hits[0])
        return None

    def _present(self, key: str) -> str:
        value = self.flat[key]
        if isinstance(value, _Partial):
            raise RegressorImportError(f"{self.src}: field {key!r} is missing in records {value.missing[:10]}"
                                       + (" ..." if len(value.missing) > 10 else ""))
        return key

    def array(self, key: str, role: str) -> np.ndarray:
        try:
            arr = np.asarray(self.flat[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise RegressorImportError(f"{self.src}: field {key!r} is not a numeric array") from None
        self.used[role] = key
        return arr


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _match(arr: np.ndarray, options: Sequence[tuple], n: Optional[int], key: str, src: str):
    """Interpret ``arr`` as (N, *trailing) for one of ``options`` = [(trailing, kind), ...].

    A single frame may drop the leading axis. With ``n`` known the leading size
    must equal it. Returns (array (N, *trailing), kind).
    """
    batched, single = [], []
    for trailing, kind in options:
        t = tuple(trailing)
        if arr.ndim == len(t) + 1 and arr.shape[1:] == t and (n is None or arr.shape[0] == n):
            batched.append((arr, kind))
        elif arr.ndim == len(t) and arr.shape == t and n in (None, 1):
            single.append((arr[None], kind))
    if batched or single:
        return (batched or single)[0]
    want = " | ".join(_fmt(("N",) + tuple(t)) for t, _ in options)
    bound = f" with N = {n} frames" if n is not None else ""
    raise RegressorImportError(f"{src}: field {key!r} has shape {_fmt(arr.shape)}, expected {want}{bound}")


def _check_finite(arr: np.ndarray, key: str, src: str) -> None:
    bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad).tolist()
        more = f" ... ({len(rows)} rows)" if len(rows) > 10 else ""
        raise RegressorImportError(f"{src}: field {key!r} has NaN/inf values in rows {rows[:10]}{more}")


def _rotations_to_axis_angle(arr: np.ndarray, kind: str, joints: int, key: str, src: str,
                             notes: list[str]) -> np.ndarray:
    """(N, ...) axis-angle or rotation matrices -> (N, joints * 3) axis-angle."""
    n = arr.shape[0]
    _check_finite(arr, key, src)
    if kind == "aa":
        return arr.reshape(n, joints * 3)
    R = torch.as_tensor(arr.reshape(n, joints, 3, 3), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    deviation = torch.linalg.matrix_norm(R.transpose(-1, -2) @ R - eye)      # (N, J)
    det = torch.linalg.det(R)
    bad = ((deviation > MAX_ORTHO_DEVIATION) | (det <= 0)).any(dim=1)
    if bool(bad.any()):
        rows = torch.nonzero(bad).flatten().tolist()
        raise RegressorImportError(
            f"{src}: field {key!r} holds matrices that are not near rotations (det <= 0 or ||R^T R - I|| > "
            f"{MAX_ORTHO_DEVIATION:g}) in rows {rows[:10]}; is the layout right?")
    projected = int((deviation > 1e-6).sum())
    if projected:
        notes.append(f"{key}: {projected} of {n * joints} rotation matrices were not orthonormal "
                     f"(max ||R^T R - I|| = {float(deviation.max()):.2g}) and were projected onto SO(3)")
    rotvec = roma.rotmat_to_rotvec(roma.special_procrustes(R))
    return rotvec.reshape(n, joints * 3).numpy()


def _rotation_options(joints: int) -> list[tuple]:
    opts = [((joints * 3,), "aa"), ((joints, 3), "aa"), ((joints, 3, 3), "rotmat"), ((joints * 9,), "rotmat")]
    if joints == 1:  # (N, 3) / (N, 1, 3) / (N, 3, 3) / (N, 1, 3, 3); a flat (N, 9) is not accepted
        opts = [((3,), "aa"), ((1, 3), "aa"), ((3, 3), "rotmat"), ((1, 3, 3), "rotmat")]
    return opts


# ------------------------------------------------------------------ main entry

def _per_frame(value, n: int, name: str, trailing: tuple, src: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape == trailing:
        arr = np.broadcast_to(arr, (n,) + trailing)
    if arr.shape != (n,) + trailing:
        raise RegressorImportError(f"{src}: {name} has shape {_fmt(arr.shape)}, expected "
                                   f"{_fmt(trailing)} or {_fmt((n,) + trailing)} for the file's {n} frames")
    _check_finite(arr, name, src)
    return np.array(arr)


def _focal_values(value, n: int, name: str, src: str) -> np.ndarray:
    """A focal length field or argument as (N, 2) fx, fy."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 or arr.shape == (1,):
        arr = np.full((n, 2), float(arr.reshape(-1)[0]))
    elif arr.shape == (n,):
        arr = np.stack([arr, arr], axis=1)
    elif arr.shape == (n, 1):
        arr = np.repeat(arr, 2, axis=1)
    elif arr.shape == (2,) and n != 2:
        arr = np.broadcast_to(arr, (n, 2)).copy()
    if arr.shape != (n, 2):
        raise RegressorImportError(f"{src}: {name} has shape {_fmt(arr.shape)}, expected a number, (N,), "
                                   f"(N, 1) or (N, 2) fx, fy with N = {n}")
    _check_finite(arr, name, src)
    if (arr <= 0).any():
        rows = np.flatnonzero((arr <= 0).any(axis=1)).tolist()
        raise RegressorImportError(f"{src}: {name} must be > 0; bad in rows {rows[:10]}")
    return arr


def _missing_message(src: str, flat: dict, problems: list[str], tried: str) -> RegressorImportError:
    have = sorted(k for k in flat if not isinstance(flat[k], _Partial))
    return RegressorImportError(f"{src}: missing fields: " + "; ".join(problems)
                                + f" (layouts tried: {tried}; the file has {have})")


def _crop_camera_description() -> str:
    boxes = [name for name, _ in BOX_FIELDS] + [f"{c}+{s}" for c, s, _ in BOX_PAIRS]
    return (f"a crop camera ({' | '.join(FIELD_NAMES['crop_cam'])}) with a box ({' | '.join(boxes)})")


def _find_box(fields: _Fields):
    """The first box present: ('single', key, format) or ('pair', (centre key, size key), pixels per unit)."""
    for name, fmt in BOX_FIELDS:
        key = fields.find([name])
        if key is not None:
            return ("single", key, fmt)
    for cname, sname, unit in BOX_PAIRS:
        ckey, skey = fields.find([cname]), fields.find([sname])
        if ckey is not None and skey is not None:
            return ("pair", (ckey, skey), unit)
    return None


def read_regressor_output(path, *, image_size=None, intrinsics=None, focal=None, crop_focal=None,
                          crop_res: float = 224, bbox_scale: float = 1.0, layout: str = "auto",
                          camera_source: str = "") -> ImportResult:
    """Convert a regressor output file to fitkit init parameters (see the module doc).

    Args:
        path: .npz, .json or .pkl file.
        image_size: (W, H) or (N, 2) pixels; needed by the ``hmr`` layout unless
            ``intrinsics`` is given (else the file's ``image_size``/``img_size``).
        intrinsics: (3, 3) or (N, 3, 3) full-image K the fit will use (e.g. the
            observations' ``intrinsics``); gives the focal and principal point.
        focal: full-image focal length in pixels (number or (N,)).
        crop_focal: focal length in crop pixels (HMR/SPIN: 5000 at crop_res 224).
        crop_res: the regressor's crop side in pixels (HMR/SPIN/PARE 224, HMR2 256).
        bbox_scale: side of the square crop = bbox_scale * max(w, h) of a ``bbox*`` box.
        layout: ``'auto'``, ``'hmr'`` (crop camera + box) or ``'cliff'`` (full-image translation).
        camera_source: where image_size / intrinsics come from, for error messages.
    Returns:
        :class:`ImportResult`.
    Raises:
        RegressorImportError naming the file and the fields.
    """
    src = str(path)
    if layout not in LAYOUTS:
        raise RegressorImportError(f"{src}: unknown layout {layout!r}; expected one of {list(LAYOUTS)}")
    for name, value in (("crop_res", crop_res), ("bbox_scale", bbox_scale)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise RegressorImportError(f"{src}: {name} must be a positive number, got {value!r}")
    if focal is not None and crop_focal is not None:
        raise RegressorImportError(f"{src}: give focal (full image) or crop_focal (crop), not both")
    if intrinsics is not None and (focal is not None or crop_focal is not None):
        raise RegressorImportError(
            f"{src}: the given intrinsics (e.g. the observations') fix the focal the fit projects with; "
            "a focal or crop_focal as well would give a translation for another camera")
    flat = load_regressor_file(path)
    fields = _Fields(flat, src)
    notes: list[str] = []
    warns: list[str] = []

    # ---- which fields are there
    problems = []
    pose_key = fields.find(FIELD_NAMES["pose"])
    go_key = bp_key = None
    if pose_key is None:
        go_key, bp_key = fields.find(FIELD_NAMES["global_orient"]), fields.find(FIELD_NAMES["body_pose"])
        if go_key is None or bp_key is None:
            found = f" (found {go_key or bp_key!r} but not {'body_pose' if go_key else 'global_orient'})" \
                if (go_key or bp_key) else ""
            problems.append("no pose: expected one of " + " | ".join(FIELD_NAMES["pose"])
                            + " | global_orient+body_pose" + found)
    betas_key = fields.find(FIELD_NAMES["betas"])
    if betas_key is None:
        problems.append("no shape: expected one of " + " | ".join(FIELD_NAMES["betas"]))
    full_key = fields.find(FIELD_NAMES["full_transl"]) if layout in ("auto", "cliff") else None
    cam_key = fields.find(FIELD_NAMES["crop_cam"]) if layout in ("auto", "hmr") else None
    box = _find_box(fields) if layout in ("auto", "hmr") else None
    if layout == "auto" and full_key is not None and _leaf(full_key) == "pred_cam_t" \
            and cam_key is not None and box is not None:
        raise RegressorImportError(
            f"{src}: ambiguous camera: {full_key!r} with {cam_key!r} and a box looks like HMR2's raw output, "
            "whose pred_cam_t is relative to its crop; choose layout 'hmr' (convert the crop camera with "
            "the box) or 'cliff' (the translation is full-frame)")
    chosen = layout
    if layout == "auto":
        chosen = "cliff" if full_key is not None else "hmr"
    cliff_desc = f"a full-image translation ({' | '.join(FIELD_NAMES['full_transl'])})"
    crop_desc = _crop_camera_description()
    if chosen == "cliff" and full_key is None:
        other = fields.find(FIELD_NAMES["crop_cam"])
        hint = f" (found the crop camera {other!r}: layout 'hmr')" if other else ""
        problems.append(f"no camera: expected {cliff_desc}{hint}")
    if chosen == "hmr" and (cam_key is None or box is None):
        expected = crop_desc if layout == "hmr" else f"{cliff_desc} or {crop_desc}"
        if cam_key is not None:
            hint = f" (found {cam_key!r} but no box"
            if fields.find(["bboxes"]) is not None:
                hint += "; 'bboxes' is not read: VIBE/PARE write it as (cx, cy, w, h), rename it bbox_cxcywh"
            for cname, sname, _ in BOX_PAIRS:
                one = [k for k in (cname, sname) if fields.find([k]) is not None]
                if len(one) == 1:
                    hint += f"; found {one[0]!r} without {({cname, sname} - set(one)).pop()!r}"
            expected += hint + ")"
        elif box is not None:
            expected += " (found a box but no crop camera " + " | ".join(FIELD_NAMES["crop_cam"]) + ")"
        other = fields.find(FIELD_NAMES["full_transl"]) if layout == "hmr" else None
        if other:
            expected += f" (found the full-image translation {other!r}: layout 'cliff')"
        problems.append(f"no camera: expected {expected}")
    if problems:
        tried = {"auto": "cliff (full-image translation), hmr (crop camera + box)",
                 "cliff": "cliff (forced)", "hmr": "hmr (forced)"}[layout]
        raise _missing_message(src, flat, problems, tried)

    # ---- rotations (the pose fixes N)
    if pose_key is not None:
        arr, kind = _match(fields.array(pose_key, "pose"), _rotation_options(24), None, pose_key, src)
        pose = _rotations_to_axis_angle(arr, kind, 24, pose_key, src, notes)
        n = pose.shape[0]
        global_orient, body_pose = pose[:, :3], pose[:, 3:]
    else:
        arr, kind = _match(fields.array(bp_key, "body_pose"), _rotation_options(23), None, bp_key, src)
        body_pose = _rotations_to_axis_angle(arr, kind, 23, bp_key, src, notes)
        n = body_pose.shape[0]
        arr, kind = _match(fields.array(go_key, "global_orient"), _rotation_options(1), n, go_key, src)
        global_orient = _rotations_to_axis_angle(arr, kind, 1, go_key, src, notes)

    betas = fields.array(betas_key, "betas")
    if betas.ndim == 1:
        betas = np.broadcast_to(betas, (n, betas.shape[0])).copy()
        if n > 1:
            notes.append(f"{betas_key}: one shape row, used for all {n} frames")
    if betas.ndim != 2 or betas.shape[0] != n:
        raise RegressorImportError(f"{src}: field {betas_key!r} has shape {_fmt(betas.shape)}, expected "
                                   f"(N, k) or (k,) with N = {n} frames")
    _check_finite(betas, betas_key, src)

    # ---- image size and intrinsics given by the caller or the file
    given_by = f" (from {camera_source})" if camera_source else ""
    size_name = "image_size" + given_by
    if image_size is None:
        size_key = fields.find(FIELD_NAMES["image_size"])
        if size_key is not None:
            image_size = fields.array(size_key, "image_size")
            size_name = f"field {size_key!r}"
            notes.append(f"image size (width, height) from the file's {size_key!r}")
    size = None if image_size is None else _per_frame(image_size, n, size_name, (2,), src)
    if size is not None and (size <= 0).any():
        raise RegressorImportError(f"{src}: {size_name} (width, height) must be > 0")
    K_given = None if intrinsics is None else _per_frame(
        intrinsics.detach().cpu().numpy() if isinstance(intrinsics, torch.Tensor) else intrinsics,
        n, "intrinsics" + given_by, (3, 3), src)
    if K_given is not None and ((K_given[:, 0, 0] <= 0) | (K_given[:, 1, 1] <= 0)).any():
        raise RegressorImportError(f"{src}: intrinsics must have positive focal lengths")
    if K_given is not None:
        pp = K_given[:, :2, 2]
    elif size is not None:
        pp = (size - 1.0) / 2.0
    else:
        pp = None

    def t64(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    # ---- camera
    if chosen == "cliff":
        transl, _ = _match(fields.array(full_key, "transl"), [((3,), "")], n, full_key, src)
        _check_finite(transl, full_key, src)
        focal_key = fields.find(FIELD_NAMES["focal"])
        file_f = None if focal_key is None else _focal_values(fields.array(focal_key, "focal"), n,
                                                              f"field {focal_key!r}", src)
        if focal is not None:
            given, given_name = _focal_values(focal, n, "focal", src), "the focal given"
        elif K_given is not None:
            given, given_name = np.stack([K_given[:, 0, 0], K_given[:, 1, 1]], 1), "the intrinsics given"
        else:
            given, given_name = None, ""
        if file_f is not None and given is not None:
            rel = np.abs(file_f - given) / given
            if (rel > 0.01).any():
                warns.append(f"{full_key!r} belongs to the file's {focal_key!r} (e.g. {file_f[0, 0]:.1f} px), "
                             f"not {given_name} (e.g. {given[0, 0]:.1f} px): the translation is passed through "
                             "unchanged, so fit with the file's focal (its depth does not match the other one)")
        f_xy = file_f if file_f is not None else given
        if f_xy is None and size is not None:
            f = default_focal(t64(size[:, 0]), t64(size[:, 1])).numpy()
            f_xy = np.stack([f, f], 1)
            notes.append("no focal in the file or given: intrinsics use fitkit's default focal sqrt(W^2 + H^2)")
        K = None
        if f_xy is not None and pp is not None:
            K = make_intrinsics(t64(f_xy[:, 0]), t64(f_xy[:, 1]), t64(pp[:, 0]), t64(pp[:, 1])).numpy()
        else:
            notes.append("no image size or intrinsics: 'intrinsics' left out")
        transl = np.array(transl)
    else:
        cam, _ = _match(fields.array(cam_key, "crop_cam"), [((3,), "")], n, cam_key, src)
        _check_finite(cam, cam_key, src)
        if (cam[:, 0] <= 0).any():
            rows = np.flatnonzero(cam[:, 0] <= 0).tolist()
            raise RegressorImportError(f"{src}: field {cam_key!r} scale s = {cam_key}[:, 0] must be > 0; "
                                       f"bad in rows {rows[:10]}")
        center, side = _box(fields, box, n, bbox_scale, src)
        if pp is None:
            raise RegressorImportError(
                f"{src}: the crop camera {cam_key!r} needs the full image's size (--image-size W H, or "
                "--observations OBS.npz, or image_size= / intrinsics=) to place the crop in the image")
        if focal is not None:
            f = _focal_values(focal, n, "focal", src)[:, 0]
            notes.append("full-image focal: as given")
        elif crop_focal is not None:
            cf = _focal_values(crop_focal, n, "crop_focal", src)[:, 0]
            K_unit = make_intrinsics(1.0, 1.0, t64(pp[:, 0]), t64(pp[:, 1]))
            crop_per_full = crop_intrinsics(K_unit, t64(center), t64(side), float(crop_res))[:, 0, 0].numpy()
            f = cf / crop_per_full
            notes.append(f"full-image focal from crop_focal {cf[0]:g} px at crop_res {crop_res:g}: "
                         f"{f.min():.1f} to {f.max():.1f} px (per frame, with the box size)")
        elif K_given is not None:
            f = (K_given[:, 0, 0] + K_given[:, 1, 1]) / 2.0
            notes.append("full-image focal and principal point from the intrinsics given")
        else:
            f = default_focal(t64(size[:, 0]), t64(size[:, 1])).numpy()
            notes.append("full-image focal: fitkit's default sqrt(W^2 + H^2)")
        try:
            transl = crop_cam_to_full_translation(t64(cam), t64(center), t64(side), None, t64(f),
                                                  principal_point=t64(pp)).numpy()
        except FitkitError as exc:
            raise RegressorImportError(f"{src}: cannot convert {cam_key!r}: {exc}") from None
        K = K_given if K_given is not None else \
            make_intrinsics(t64(f), t64(f), t64(pp[:, 0]), t64(pp[:, 1])).numpy()

    params = {"global_orient": np.ascontiguousarray(global_orient, dtype=np.float64),
              "body_pose": np.ascontiguousarray(body_pose, dtype=np.float64),
              "betas": np.ascontiguousarray(betas, dtype=np.float64),
              "transl": np.ascontiguousarray(transl, dtype=np.float64)}
    if K is not None:
        params["intrinsics"] = np.ascontiguousarray(K, dtype=np.float64)
    return ImportResult(params=params, layout=chosen, fields=dict(fields.used), notes=notes, warnings=warns)


def _box(fields: _Fields, box, n: int, bbox_scale: float, src: str) -> tuple[np.ndarray, np.ndarray]:
    """(centre (N, 2), side (N,)) of the square crop, full-image pixels."""
    kind, keys, info = box
    if kind == "single":
        arr, _ = _match(fields.array(keys, "box"), [((4,), "")], n, keys, src)
        _check_finite(arr, keys, src)
        if info == "xyxy":
            wh = arr[:, 2:] - arr[:, :2]
            center = (arr[:, :2] + arr[:, 2:]) / 2.0
        elif info == "xywh":
            wh = arr[:, 2:]
            center = arr[:, :2] + wh / 2.0
        else:
            wh = arr[:, 2:]
            center = arr[:, :2]
        bad = (wh <= 0).any(axis=1)
        if bad.any():
            what = "x1 > x0 and y1 > y0" if info == "xyxy" else "w, h > 0"
            raise RegressorImportError(f"{src}: field {keys!r} ({info}) must have {what}; bad in rows "
                                       f"{np.flatnonzero(bad).tolist()[:10]}")
        return center, bbox_scale * wh.max(axis=1)
    ckey, skey = keys
    center, _ = _match(fields.array(ckey, "box_center"), [((2,), "")], n, ckey, src)
    _check_finite(center, ckey, src)
    scale = fields.array(skey, "box_size")
    if scale.ndim == 0:
        scale = np.full(n, float(scale))
    elif scale.shape == (n, 1):
        scale = scale[:, 0]
    if scale.shape != (n,):
        raise RegressorImportError(f"{src}: field {skey!r} has shape {_fmt(scale.shape)}, expected (N,) "
                                   f"with N = {n} frames (one square box size per frame)")
    _check_finite(scale[:, None], skey, src)
    if (scale <= 0).any():
        raise RegressorImportError(f"{src}: field {skey!r} must be > 0; bad in rows "
                                   f"{np.flatnonzero(scale <= 0).tolist()[:10]}")
    return center, scale * info


def import_regressor_output(path, *, image_size=None, focal=None, crop_res: float = 224, layout: str = "auto",
                            crop_focal=None, intrinsics=None, bbox_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Smplx-named init arrays (+ ``intrinsics`` (N, 3, 3) when known) from a regressor output file.

    See :func:`read_regressor_output` for the arguments; its warnings are issued
    as ``UserWarning``.
    """
    result = read_regressor_output(path, image_size=image_size, intrinsics=intrinsics, focal=focal,
                                   crop_focal=crop_focal, crop_res=crop_res, bbox_scale=bbox_scale,
                                   layout=layout)
    for message in result.warnings:
        warnings.warn(f"{path}: {message}", UserWarning, stacklevel=2)
    return result.params


def save_init(path, params) -> Path:
    """Write init parameters atomically: a pickle-free ``.npz`` (or ``.json`` lists by suffix).

    Writes the smplx names of ``params`` and ``intrinsics`` when present;
    :func:`fitkit.io.params.load_params` reads the file back.
    """
    path = Path(path)
    keys = [k for k in (*PARAM_KEYS, "intrinsics") if k in params]
    if not any(k in params for k in PARAM_KEYS):
        raise RegressorImportError(f"{path}: nothing to write: none of {list(PARAM_KEYS)} given")
    arrays = {k: np.asarray(params[k], dtype=np.float64) for k in keys}
    rows = {k: v.shape[0] if v.ndim else 0 for k, v in arrays.items()}
    if len(set(rows.values())) != 1:
        raise RegressorImportError(f"{path}: fields disagree on the number of frames: {rows}")
    if path.suffix.lower() == ".json":
        with atomic_write(path, "w") as handle:
            json.dump({k: v.tolist() for k, v in arrays.items()}, handle)
    else:
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return path
