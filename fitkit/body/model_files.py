"""Find, load and validate licensed SMPL-family model files; build smplx modules from them.

Licensed files are never shipped with fitkit: users point to a folder laid out
as smplx expects (see ``docs/model_files.md``)::

    <FITKIT_MODELS>/smpl/SMPL_NEUTRAL.pkl     (or the official basicModel_*.pkl)
    <FITKIT_MODELS>/smplh/SMPLH_MALE.pkl
    <FITKIT_MODELS>/smplx/SMPLX_NEUTRAL.npz

``.pkl`` files go through :func:`fitkit.body.safe_pickle.load_pickle` (no
chumpy, no code execution); ``.npz`` files are read with ``allow_pickle=False``.
smplx itself never unpickles a user file.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from fitkit.body.safe_pickle import load_pickle
from fitkit.errors import ModelFileError

__all__ = [
    "ENV_VAR",
    "MODEL_TYPES",
    "GENDERS",
    "REQUIRED_KEYS",
    "ModelArrays",
    "resolve_model_dir",
    "find_model_file",
    "load_model_arrays",
    "create_smplx_module",
]

PathLike = Union[str, os.PathLike]

ENV_VAR = "FITKIT_MODELS"
MODEL_TYPES = ("smpl", "smplh", "smplx")
GENDERS = ("neutral", "male", "female")
EXTENSIONS = ("pkl", "npz")
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights",
                 "kintree_table", "f")

_PRETTY = {"smpl": "SMPL", "smplh": "SMPL-H", "smplx": "SMPL-X"}
# smplx's own default extension per model type, tried first.
_DEFAULT_EXT = {"smpl": "pkl", "smplh": "pkl", "smplx": "npz"}
# Names inside the official SMPL downloads (v1.0.0 from smpl.is.tue.mpg.de and
# SMPLify's neutral model; v1.1.0 from SMPL_python_v.1.1.0).
_OFFICIAL_SMPL_NAMES = {
    "neutral": ("basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
                "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl"),
    "male": ("basicmodel_m_lbs_10_207_0_v1.0.0.pkl",
             "basicmodel_m_lbs_10_207_0_v1.1.0.pkl"),
    "female": ("basicModel_f_lbs_10_207_0_v1.0.0.pkl",
               "basicmodel_f_lbs_10_207_0_v1.1.0.pkl"),
}
_HAND_KEYS = ("hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr")
_FACE_KEYS = ("lmk_faces_idx", "lmk_bary_coords")
_CONTOUR_KEYS = ("dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
_TYPE_KEYS = {"smpl": (), "smplh": _HAND_KEYS, "smplx": _HAND_KEYS + _FACE_KEYS}
_INT_KEYS = frozenset({"kintree_table", "f"})
# Largest magnitude accepted in the float arrays of a model: v_template, shapedirs and
# posedirs are meters (a body far beyond 100 m, or a blend shape moving a vertex that far,
# is a broken or mis-scaled file, e.g. millimetres); J_regressor and weights are mixing
# weights, normally in [0, 1].
MAX_ABS_VALUE = 100.0
_HAND_POSE_DIM = 45  # 15 hand joints x 3 axis-angle components


class ModelArrays(dict):
    """``dict[str, np.ndarray]`` read from one model file.

    Attributes:
        path: the file the arrays came from.
        skipped: ``{key: reason}`` for entries that were not kept (object
            arrays that would need pickle, strings, non-finite extras, ...).
    """

    def __init__(self, arrays: dict, path: Path, skipped: dict):
        super().__init__(arrays)
        self.path = path
        self.skipped = dict(skipped)


# ----------------------------------------------------------------------------
# Locating files


def _choice(value: str, allowed: tuple, argument: str) -> str:
    normalized = str(value).lower()
    if normalized not in allowed:
        raise ModelFileError(f"{argument}={value!r} is not supported; allowed values: "
                             + ", ".join(allowed))
    return normalized


def resolve_model_dir(model_dir: Optional[PathLike] = None) -> Path:
    """The folder holding licensed models: ``model_dir`` if given, else ``$FITKIT_MODELS``.

    Raises:
        ModelFileError: neither is set, or the chosen path is not a folder.
    """
    if model_dir is not None and str(model_dir) != "":
        raw, source = model_dir, "the model_dir argument"
    elif os.environ.get(ENV_VAR):
        raw, source = os.environ[ENV_VAR], f"${ENV_VAR}"
    else:
        raise ModelFileError(
            f"No body-model folder given: pass model_dir=<folder> or set the environment "
            f"variable {ENV_VAR}=<folder>, where <folder> holds smpl/, smplh/ or smplx/ "
            "with the licensed files (see docs/model_files.md)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise ModelFileError(f"{path} (from {source}) is not a folder; it should hold "
                             "smpl/, smplh/ or smplx/ with the licensed model files")
    return path


def _candidate_names(model_type: str, gender: str, exts: tuple) -> list[str]:
    names = [f"{model_type.upper()}_{gender.upper()}.{ext}" for ext in exts]
    if model_type == "smpl" and "pkl" in exts:
        names.extend(_OFFICIAL_SMPL_NAMES[gender])
    return names


def _match(folder: Path, name: str) -> Optional[Path]:
    """``folder/name`` if it is a file, else a file whose name differs only in case."""
    exact = folder / name
    if exact.is_file():
        return exact
    for entry in sorted(folder.iterdir()):
        if entry.name.lower() == name.lower() and entry.is_file():
            return entry
    return None


def _model_files_in(folders: list[Path]) -> list[str]:
    return sorted({entry.name for folder in folders for entry in folder.iterdir()
                   if entry.is_file() and entry.suffix.lower() in (".pkl", ".npz")})


def find_model_file(model_type: str, gender: str = "neutral",
                    model_dir: Optional[PathLike] = None, *,
                    ext: Optional[str] = None) -> Path:
    """Path of a licensed model file in smplx's folder layout.

    Looks in ``<dir>/<model_type>/`` and then in ``<dir>`` itself (so ``<dir>``
    may also be the per-type folder) for ``<MODELTYPE>_<GENDER>.<ext>``, and for
    SMPL also the official ``basicModel_*_lbs_10_207_0_v1.*.pkl`` names. Names
    match case-insensitively.

    Args:
        model_type: 'smpl', 'smplh' or 'smplx'.
        gender: 'neutral', 'male' or 'female'.
        model_dir: the models folder; default ``$FITKIT_MODELS``.
        ext: 'pkl' or 'npz' to accept only that; default both, smplx's default
            for the model type first (pkl for smpl/smplh, npz for smplx).

    Raises:
        ModelFileError: unknown model_type/gender/ext (naming the allowed
            values), or no file found (one line naming the paths tried, the
            expected layout and the model files that do exist there).
    """
    model_type = _choice(model_type, MODEL_TYPES, "model_type")
    gender = _choice(gender, GENDERS, "gender")
    if ext is None:
        first = _DEFAULT_EXT[model_type]
        exts = (first,) + tuple(e for e in EXTENSIONS if e != first)
    else:
        exts = (_choice(str(ext).lstrip("."), EXTENSIONS, "ext"),)
    root = resolve_model_dir(model_dir)
    folders = [folder for folder in (root / model_type, root) if folder.is_dir()]
    names = _candidate_names(model_type, gender, exts)
    tried = []
    for folder in folders:
        for name in names:
            tried.append(str(folder / name))
            found = _match(folder, name)
            if found is not None:
                return found
    present = _model_files_in(folders)
    raise ModelFileError(
        f"No {_PRETTY[model_type]} model file for gender '{gender}': tried "
        + ", ".join(tried) + " (case-insensitive); expected layout <model_dir>/"
        + f"{model_type}/{model_type.upper()}_{gender.upper()}.{'|'.join(exts)}; "
        + ("model files present there: " + ", ".join(present) if present
           else "no .pkl/.npz model files present there"))


# ----------------------------------------------------------------------------
# Loading and validating arrays


def load_model_arrays(path: PathLike) -> ModelArrays:
    """Numeric arrays of a SMPL-family model file, validated, with smplx's key names.

    Returns:
        :class:`ModelArrays` (a dict) with at least ``v_template`` (V, 3),
        ``shapedirs`` (V, 3, K), ``posedirs`` (V, 3, 9*(J-1)), ``J_regressor``
        (J, V) dense, ``weights`` (V, J) — floats, meters where geometric — and
        ``kintree_table`` (2, J), ``f`` (F, 3) as int64; plus every other
        numeric, finite entry (e.g. SMPL-H/X ``hands_components*``). Entries
        not kept are listed in ``.skipped``.

    Raises:
        ModelFileError: unknown extension, unreadable or unsafe file, a
            required key missing, or a shape/dtype/finiteness violation, or a
            float array with magnitudes above :data:`MAX_ABS_VALUE` (100 m);
            the message names the file, the key and what was expected.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        raw, skipped = _pickle_entries(path), {}
    elif suffix == ".npz":
        raw, skipped = _npz_entries(path)
    else:
        raise ModelFileError(f"{path}: unknown model file extension '{path.suffix}'; "
                             "expected .pkl or .npz")
    arrays = {}
    for key, value in raw.items():
        array, reason = _numeric_array(value)
        if reason is None:
            arrays[key] = array
        else:
            skipped[key] = reason
    _check_required(arrays, skipped, path)
    arrays = _validate_core(arrays, path)
    return ModelArrays(arrays, path, skipped)


def _pickle_entries(path: Path) -> dict:
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a dict of arrays, found "
                             f"{type(data).__name__}")
    return {str(key): value for key, value in data.items()}


def _npz_entries(path: Path) -> tuple[dict, dict]:
    """Arrays of an ``.npz`` loaded with pickle disabled; object arrays are skipped."""
    entries, skipped = {}, {}
    try:
        archive = np.load(path, allow_pickle=False)
        if not hasattr(archive, "files"):
            raise ModelFileError(f"{path}: not an .npz archive (a single .npy array?)")
        with archive:
            for key in archive.files:
                try:
                    entries[key] = archive[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):
                        raise
                    skipped[key] = "object array (would need pickle to load; refused)"
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/header/read errors all mean a bad file
        raise ModelFileError(f"{path}: not a readable .npz model file: "
                             f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc
    return entries, skipped


def _numeric_array(value: Any) -> tuple[Optional[np.ndarray], Optional[str]]:
    """``(array, None)`` for a finite numeric value, else ``(None, reason)``."""
    if isinstance(value, (str, bytes, dict)) or value is None:
        return None, f"not an array ({type(value).__name__})"
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        return None, f"not convertible to an array ({exc})"
    if array.dtype.kind not in "biuf":
        return None, f"non-numeric dtype {array.dtype}"
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        return None, "contains NaN or infinite values"
    return array, None


def _check_required(arrays: dict, skipped: dict, path: Path) -> None:
    for key in REQUIRED_KEYS:
        if key not in arrays:
            why = f"it was unusable: {skipped[key]}" if key in skipped else "it is missing"
            raise ModelFileError(f"{path}: required key '{key}' not loaded ({why}); "
                                 "a SMPL-format model needs " + ", ".join(REQUIRED_KEYS))


def _fail(path: Path, key: str, expected: str, array: np.ndarray) -> ModelFileError:
    return ModelFileError(f"{path}: key '{key}' has shape {tuple(array.shape)} and dtype "
                          f"{array.dtype}; expected {expected}")


def _validate_core(arrays: dict, path: Path) -> dict:
    """Check the SMPL-format keys against each other; ints become int64, others float."""
    out = dict(arrays)
    for key in REQUIRED_KEYS:
        array = out[key]
        if key in _INT_KEYS:
            if array.dtype.kind not in "iu":
                raise _fail(path, key, "an integer array", array)
            out[key] = array.astype(np.int64)
        elif array.dtype.kind != "f":
            out[key] = array.astype(np.float64)

    for key in REQUIRED_KEYS:
        if key in _INT_KEYS or not out[key].size:
            continue
        peak = float(np.abs(out[key]).max())
        if peak > MAX_ABS_VALUE:
            unit = "meters" if key in ("v_template", "shapedirs", "posedirs") else "mixing weights"
            raise ModelFileError(f"{path}: key '{key}' holds values up to {peak:.3g} in magnitude; expected "
                                 f"{unit} within +-{MAX_ABS_VALUE:g} (a corrupt or mis-scaled file?)")
    v_template, kintree = out["v_template"], out["kintree_table"]
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise _fail(path, "v_template", "(V, 3)", v_template)
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] < 1:
        raise _fail(path, "kintree_table", "(2, J) with J >= 1", kintree)
    n_verts, n_joints = v_template.shape[0], kintree.shape[1]
    expected_shapes = {
        "shapedirs": ((n_verts, 3, None), f"(V, 3, K) with V={n_verts}"),
        "posedirs": ((n_verts, 3, 9 * (n_joints - 1)),
                     f"(V, 3, 9*(J-1)) = ({n_verts}, 3, {9 * (n_joints - 1)})"),
        "J_regressor": ((n_joints, n_verts), f"(J, V) = ({n_joints}, {n_verts})"),
        "weights": ((n_verts, n_joints), f"(V, J) = ({n_verts}, {n_joints})"),
        "f": ((None, 3), "(F, 3)"),
    }
    for key, (shape, text) in expected_shapes.items():
        if not _shape_matches(out[key].shape, shape):
            raise _fail(path, key, text, out[key])
    _check_tree(out["kintree_table"][0], path)
    faces = out["f"]
    if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
        raise ModelFileError(f"{path}: key 'f' has vertex indices outside [0, {n_verts}); "
                             f"expected indices into v_template's {n_verts} vertices")
    return out


def _shape_matches(shape: tuple, expected: tuple) -> bool:
    return len(shape) == len(expected) and all(
        want is None or have == want for have, want in zip(shape, expected))


def _check_tree(parents: np.ndarray, path: Path) -> None:
    """Every joint but the root must have an earlier joint as parent (smplx's chain order)."""
    index = np.arange(1, parents.shape[0])
    bad = index[(parents[1:] < 0) | (parents[1:] >= index)]
    if bad.size:
        joint = int(bad[0])
        raise ModelFileError(
            f"{path}: key 'kintree_table' gives joint {joint} the parent "
            f"{int(parents[joint])}; expected a parent index in [0, {joint})")


def _check_type_keys(arrays: ModelArrays, model_type: str, contour: bool) -> None:
    """Keys smplx needs beyond SMPL's for SMPL-H / SMPL-X, with their trailing shapes."""
    keys = _TYPE_KEYS[model_type] + (_CONTOUR_KEYS if contour else ())
    for key in keys:
        if key not in arrays:
            why = (f"it was unusable: {arrays.skipped[key]}" if key in arrays.skipped
                   else "it is missing")
            raise ModelFileError(f"{arrays.path}: key '{key}', needed for a "
                                 f"{_PRETTY[model_type]} model, not loaded ({why})")
    trailing = {
        "hands_componentsl": ((None, _HAND_POSE_DIM), "(N, 45)"),
        "hands_componentsr": ((None, _HAND_POSE_DIM), "(N, 45)"),
        "hands_meanl": ((_HAND_POSE_DIM,), "(45,)"),
        "hands_meanr": ((_HAND_POSE_DIM,), "(45,)"),
        "lmk_faces_idx": ((None,), "(L,) integer"),
        "lmk_bary_coords": ((None, 3), "(L, 3)"),
    }
    for key in keys:
        shape, text = trailing.get(key, (None, ""))
        if shape is not None and not _shape_matches(arrays[key].shape, shape):
            raise _fail(arrays.path, key, text, arrays[key])
    if model_type == "smplx" and arrays["shapedirs"].shape[2] < 20:
        raise _fail(arrays.path, "shapedirs",
                    "(V, 3, K) with K >= 20 (10 shape + 10 expression components)",
                    arrays["shapedirs"])


# ----------------------------------------------------------------------------
# smplx modules


def create_smplx_module(model_type: str, gender: str = "neutral",
                        model_dir: Optional[PathLike] = None, **smplx_kwargs):
    """An ``smplx.SMPL`` / ``smplx.SMPLH`` / ``smplx.SMPLX`` module built from a safely loaded file.

    The file is found with :func:`find_model_file` (``ext=`` in
    ``smplx_kwargs`` restricts it to .pkl or .npz) and read with
    :func:`load_model_arrays`; smplx only ever sees the validated numeric
    arrays, never the user's file.

    Supported (exactly what smplx 0.1.28 supports, nothing more):
        - 'smpl': SMPL, neutral/male/female, official ``.pkl`` (with chumpy
          objects) or converted ``.npz``.
        - 'smplh': SMPL-H with hand PCA (``hands_components*``,
          ``hands_mean*``), as smplx.SMPLH reads it; official releases are
          mostly male/female only.
        - 'smplx': SMPL-X, ``.npz`` or ``.pkl``. smplx.SMPLX cannot take
          arrays directly, so it reads a private temporary ``.npz`` holding
          only the validated numeric arrays (nothing in it needs pickle).
        MANO and FLAME are not supported here.

    Args:
        model_type: 'smpl', 'smplh' or 'smplx'.
        gender: 'neutral', 'male' or 'female'.
        model_dir: models folder; default ``$FITKIT_MODELS``.
        **smplx_kwargs: passed to the smplx constructor (``num_betas``,
            ``batch_size``, ``use_pca``, ``use_face_contour``, ...), except
            ``model_path`` and ``data_struct``, which this function owns.

    Raises:
        ModelFileError: the file is missing, unsafe or invalid, or lacks the
            keys the model type needs.
        TypeError: ``model_path`` or ``data_struct`` given.
    """
    import smplx
    from smplx.utils import Struct

    for owned in ("model_path", "data_struct"):
        if owned in smplx_kwargs:
            raise TypeError(f"create_smplx_module() sets {owned!r} itself; "
                            "pass model_type/gender/model_dir instead")
    model_type = _choice(model_type, MODEL_TYPES, "model_type")
    gender = _choice(gender, GENDERS, "gender")
    path = find_model_file(model_type, gender, model_dir, ext=smplx_kwargs.pop("ext", None))
    arrays = load_model_arrays(path)
    _check_type_keys(arrays, model_type, bool(smplx_kwargs.get("use_face_contour")))
    if model_type == "smplx":
        return _smplx_from_arrays(arrays, gender, smplx_kwargs)
    model_class = smplx.SMPL if model_type == "smpl" else smplx.SMPLH
    return model_class(model_path=str(path), data_struct=Struct(**arrays),
                       gender=gender, **smplx_kwargs)


def _smplx_from_arrays(arrays: ModelArrays, gender: str, smplx_kwargs: dict):
    import smplx

    # smplx.SMPLX (0.1.28) has no data_struct argument and always opens a file
    # itself with np.load(allow_pickle=True). Give it a file we write from the
    # validated numeric arrays: with no object arrays there is nothing to unpickle.
    keys = REQUIRED_KEYS + _HAND_KEYS + _FACE_KEYS + _CONTOUR_KEYS
    tmp = Path(tempfile.mkdtemp(prefix="fitkit_smplx_"))
    try:
        npz_path = tmp / f"SMPLX_{gender.upper()}.npz"
        np.savez(npz_path, **{key: arrays[key] for key in keys if key in arrays})
        return smplx.SMPLX(model_path=str(npz_path), gender=gender, ext="npz",
                           **smplx_kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
