"""Parameter files: initializations in, fit results out.

Both are pickle-free ``.npz`` files with smplx-named arrays, one row per
frame, so a user of ``smplx`` can read them without fitkit:

============  ===========  ==================================================
entry         shape        meaning
============  ===========  ==================================================
global_orient (N, 3)       root rotation, axis-angle (radians), camera frame
body_pose     (N, 69)      joints 1..23, axis-angle (radians)
betas         (N, k)       shape coefficients
transl        (N, 3)       translation in meters, camera frame (OpenCV axes)
============  ===========  ==================================================

An **init file** needs any subset of these (missing ones default: body
facing the camera, zero pose and shape, translation from the torso keypoints).
A JSON file with the same keys (lists of rows) is accepted too. A result file
is a valid init file. Other names are refused (:func:`load_params` lists the
accepted ones): a misspelt ``body_poses`` must not leave the pose at zero. The
entries fitkit writes beside the parameters (result metadata, ``intrinsics``
of ``fitkit import``, ``benchmark_version``) are accepted and not read.

A **result file** (schema ``fitkit.result/1``) adds:

- ``intrinsics`` (N, 3, 3) — the camera the fit projected with (full-image
  pixels; in crop mode the crop camera written in full-image pixels),
  ``image_size`` (N, 2), ``frame_ids`` (N,), ``keypoint_format``;
- ``energy_<term>`` (N,) — each term's weighted energy at the end, under the
  last stage's weights, and ``energy_total``;
- flags (N,) bool: ``converged``, ``nan`` (rolled back after turning
  non-finite), ``no_evidence`` (nothing observed: init passed through),
  ``transl_from_torso``; ``iterations`` (N, S) per stage and ``stage_names`` (S,);
- ``err2d_px`` (N,) mean 2D keypoint error of the result (NaN without evidence);
- ``body_model``, ``gender``, ``recipe_name``, ``recipe`` (the recipe as YAML).
- ``observations`` (the observation path fitted, absolute) and ``fit_seconds`` (wall
  time up to writing the result), both as strings.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from fitkit.errors import FitkitError
from fitkit.io.atomic import atomic_write

__all__ = ["ParamFileError", "load_params", "save_result", "load_result", "RESULT_SCHEMA", "PARAM_KEYS"]

RESULT_SCHEMA = "fitkit.result/1"
PARAM_KEYS = ("global_orient", "body_pose", "betas", "transl")
#: Other entries an init file may hold, because fitkit itself writes them: a result file
#: (:func:`save_result`, the chunk files of ``fitkit fit`` with their ``stamp``), ``fitkit
#: import`` (``intrinsics``) and a saved benchmark (``benchmark_version``). They are read
#: past; any other name is refused, so that a misspelt parameter cannot silently default.
OTHER_INIT_KEYS = ("schema", "intrinsics", "image_size", "frame_ids", "keypoint_format", "converged", "nan",
                   "no_evidence", "transl_from_torso", "iterations", "stage_names", "stage_seconds",
                   "err2d_px", "reproj_err_crop_px", "body_model", "gender", "recipe_name", "recipe",
                   "observations", "fit_seconds", "stamp", "benchmark_version")
#: Name prefixes of such entries: per-term energies, quality flags, a benchmark's cue truth.
OTHER_INIT_PREFIXES = ("energy_", "quality_", "truth_")


class ParamFileError(FitkitError, ValueError):
    """An unreadable or malformed parameter file; the message names file and field."""


def load_params(path) -> dict[str, np.ndarray]:
    """Read the smplx-named parameters of an init (or result) file.

    Returns: name -> float array (N, ...), only the names the file has.
    Raises ParamFileError naming the file (and field) when it is missing,
    unreadable, has none of the parameter names or a name fitkit does not know
    (:data:`OTHER_INIT_KEYS`), or a parameter is not numeric 2-D.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise ParamFileError(f"{src}: init file not found")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ParamFileError(f"{src}: expected a JSON object of parameter arrays")
        else:
            with np.load(path, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        if isinstance(exc, ParamFileError):
            raise
        raise ParamFileError(f"{src}: cannot read ({type(exc).__name__}: {exc}); expected a .npz "
                             "(no pickles) or .json file of smplx-named arrays") from None
    unknown = sorted(k for k in raw if k not in PARAM_KEYS and k not in OTHER_INIT_KEYS
                     and not str(k).startswith(OTHER_INIT_PREFIXES))
    if unknown:
        raise ParamFileError(f"{src}: unknown field(s) {unknown}; an init file holds {list(PARAM_KEYS)} "
                             f"(and what fitkit writes beside them: {list(OTHER_INIT_KEYS)}, "
                             f"{'/'.join(p + '*' for p in OTHER_INIT_PREFIXES)})")
    out = {}
    for key in PARAM_KEYS:
        if key not in raw:
            continue
        try:
            arr = np.asarray(raw[key], dtype=np.float64)
        except (TypeError, ValueError):
            raise ParamFileError(f"{src}: field {key!r} is not numeric") from None
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2:
            raise ParamFileError(f"{src}: field {key!r} has shape {arr.shape}, expected (N, ...)")
        out[key] = arr
    if not out:
        raise ParamFileError(f"{src}: none of the fields {list(PARAM_KEYS)} found (has {sorted(raw)})")
    rows = {k: v.shape[0] for k, v in out.items()}
    if len(set(rows.values())) > 1:
        raise ParamFileError(f"{src}: fields disagree on the number of frames: {rows}")
    return out


def save_result(path, arrays: Mapping[str, np.ndarray], **meta) -> Path:
    """Write a result file atomically (temporary file, then rename).

    Args:
        arrays: name -> array (see the module doc).
        meta: string entries (body_model, gender, recipe, ...).
    """
    out = {"schema": np.array(RESULT_SCHEMA)}
    for k, v in arrays.items():
        out[k] = np.asarray(v)
    for k, v in meta.items():
        out[k] = np.array(v, dtype=str) if isinstance(v, (list, tuple)) else np.array(str(v))
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(handle, **out)
    return Path(path)


def load_result(path) -> dict[str, np.ndarray]:
    """Everything a result file holds, as numpy arrays (strings as 0-d or 1-d str arrays)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ParamFileError(f"{path}: cannot read the result file ({type(exc).__name__}: {exc})") from None
    if str(out.get("schema", "")) != RESULT_SCHEMA:
        raise ParamFileError(f"{path}: field 'schema' is {out.get('schema')!r}, expected {RESULT_SCHEMA!r}")
    return out
