"""Load official SMPL-family ``.pkl`` files without chumpy and without running code.

Official SMPL / SMPL-H / SMPL-X / MANO pickles were written by Python 2 and hold
numpy arrays, ``scipy.sparse`` csc matrices (``J_regressor``) and chumpy
objects (``v_template``, ``shapedirs``, ...). A plain ``pickle.load`` would
import chumpy and scipy and, worse, would call whatever global a file names, so
a crafted "model file" could run arbitrary code.

:func:`load_pickle` uses an unpickler whose ``find_class`` admits only a fixed
table of array constructors. chumpy and scipy.sparse classes are replaced by
inert stand-ins that only record their pickled state; after loading, the
stand-ins are turned into plain numpy arrays without importing either library.
Any other global is refused with :class:`~fitkit.errors.ModelFileError` before
it can be called.
"""
from __future__ import annotations

import _compat_pickle
import os
import pickle
from pathlib import Path
from typing import Any, Union

import numpy as np

from fitkit.errors import ModelFileError

__all__ = ["load_pickle"]

PathLike = Union[str, os.PathLike]

_SPARSE_MODULES = frozenset({
    "scipy.sparse", "scipy.sparse.csc", "scipy.sparse.csr",
    "scipy.sparse._csc", "scipy.sparse._csr",
})
_SPARSE_CLASSES = {
    "csc_matrix": "csc", "csc_array": "csc",
    "csr_matrix": "csr", "csr_array": "csr",
}
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})


def _numpy_multiarray():
    """numpy's ``multiarray`` module under its numpy-2 name, else the numpy-1 one."""
    try:
        from numpy._core import multiarray
        multiarray._reconstruct  # numpy 1.26 ships a partial numpy._core shim
    except (ImportError, AttributeError):
        from numpy.core import multiarray
    return multiarray


_MULTIARRAY = _numpy_multiarray()


class _PickledObject:
    """Inert stand-in for a chumpy or scipy.sparse object found in a pickle.

    It never runs the original class's code: it only keeps what the pickle
    hands it (constructor arguments and the ``BUILD`` state).
    """

    kind = ""     # 'chumpy', 'csc' or 'csr'
    origin = ""   # 'module.name' as written in the pickle

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in_class(module: str, name: str, kind: str) -> type:
    """One stand-in subclass per pickled class name, so errors can name it."""
    key = (module, name)
    if key not in _STAND_INS:
        _STAND_INS[key] = type(name, (_PickledObject,),
                               {"kind": kind, "origin": f"{module}.{name}"})
    return _STAND_INS[key]


class _ObjectBaseMarker:
    """Type of the marker handed out for ``builtins.object``.

    ``object`` only ever appears as ``copyreg._reconstructor``'s base argument;
    the marker is not callable, so a pickle cannot use it for anything else.
    """

    pickled_name = "builtins.object"


_OBJECT_BASE = _ObjectBaseMarker()


class _NdarrayMarker:
    """Type of the marker handed out for ``numpy.ndarray``.

    Pickled arrays name ``ndarray`` only as ``_reconstruct``'s first argument;
    the class itself (whose constructor can wrap raw buffers) stays out of reach.
    """

    pickled_name = "numpy.ndarray"


_NDARRAY = _NdarrayMarker()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only through a fixed allow-list."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path
        reconstruct, scalar = self._reconstruct, _MULTIARRAY.scalar
        self._allowed: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.multiarray", "scalar"): scalar,
            ("numpy._core.multiarray", "scalar"): scalar,
            # Protocol-5 pickles rebuild contiguous arrays from a buffer.
            ("numpy.core.numeric", "_frombuffer"): _frombuffer,
            ("numpy._core.numeric", "_frombuffer"): _frombuffer,
            # Python 3 writes bytes as encode(str, 'latin1') in protocols < 3.
            ("_codecs", "encode"): self._latin1_encode,
            ("builtins", "bytes"): self._empty_bytes,  # how b'' is written
            ("copyreg", "_reconstructor"): self._reconstructor,
            ("builtins", "object"): _OBJECT_BASE,
            # A chumpy Ch's pickled state keeps its dirty-variable names in a set.
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
        }

    def _refuse(self, what: str) -> ModelFileError:
        return ModelFileError(
            f"{self._path}: refused to load global '{what}': model files may only "
            "contain arrays (numpy, scipy.sparse csc/csr, chumpy values); nothing "
            "in the file was run")

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in_class(module, name, "chumpy")
        if module in _SPARSE_MODULES and name in _SPARSE_CLASSES:
            return _stand_in_class(module, name, _SPARSE_CLASSES[name])
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise self._refuse(f"{module}.{name}") from None

    def _reconstruct(self, subtype, shape, dtype):
        if subtype is not _NDARRAY:
            raise self._refuse(f"numpy _reconstruct of {_describe(subtype)}")
        return _MULTIARRAY._reconstruct(np.ndarray, shape, dtype)

    def _reconstructor(self, cls, base, state):
        # Protocols 0/1 rebuild plain objects as _reconstructor(cls, object, None).
        if not (isinstance(cls, type) and issubclass(cls, _PickledObject)):
            raise self._refuse(f"copyreg._reconstructor of {_describe(cls)}")
        if base is not _OBJECT_BASE or state is not None:
            raise self._refuse(f"copyreg._reconstructor with base {_describe(base)}")
        return cls.__new__(cls)

    def _empty_bytes(self, *args):
        if args:
            raise self._refuse("builtins.bytes with arguments")
        return b""

    def _latin1_encode(self, text, encoding="utf-8", errors="strict"):
        if not isinstance(text, str) or str(encoding).lower() not in _LATIN1_NAMES:
            raise self._refuse(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Map Python-2 global names (``__builtin__``, ``copy_reg``) to Python 3's."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _describe(obj: Any) -> str:
    if isinstance(obj, (_ObjectBaseMarker, _NdarrayMarker)):
        return obj.pickled_name
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return type(obj).__name__


def _frombuffer(buf, dtype, shape, order):
    """Array from a protocol-5 pickle buffer; numpy refuses object dtypes here."""
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


def load_pickle(path: PathLike) -> Any:
    """Load a Python-2 or Python-3 SMPL-family pickle with no code execution.

    Args:
        path: the ``.pkl`` file.

    Returns:
        The unpickled object (for model files a ``dict``), in which every
        chumpy object became ``np.asarray`` of its value and every
        ``scipy.sparse`` csc/csr matrix became a dense float ``np.ndarray`` of
        its shape. Containers are walked through ``dict``/``list``/``tuple``.

    Raises:
        ModelFileError: the file is missing, truncated or corrupt, names a
            global outside the allow-list (e.g. ``os.system``), or holds a
            chumpy/sparse object that does not reduce to an array. The message
            is one line naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            loaded = _SafeUnpickler(file, path).load()
        return _replace_stand_ins(loaded, path, where="", done={})
    except ModelFileError:
        raise
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read model file: {_one_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelFileError(
            f"{path}: not a readable model pickle (truncated or corrupt?): "
            f"{type(exc).__name__}: {_one_line(exc)}") from exc


def _replace_stand_ins(obj: Any, path: Path, where: str, done: dict[int, Any]) -> Any:
    """Return ``obj`` with stand-ins replaced by arrays; ``where`` names the key.

    ``done`` maps ``id`` of containers already converted to their conversion,
    so a container the pickle shares between keys is converted once.
    """
    if isinstance(obj, _PickledObject):
        return _stand_in_to_array(obj, path, where)
    if not isinstance(obj, (dict, list, tuple)):
        return obj
    if id(obj) in done:
        return done[id(obj)]
    done[id(obj)] = obj  # a self-referencing container keeps its cycle unconverted
    if isinstance(obj, dict):
        converted = {key: _replace_stand_ins(value, path, _join(where, key), done)
                     for key, value in obj.items()}
    else:
        items = [_replace_stand_ins(value, path, _join(where, i), done)
                 for i, value in enumerate(obj)]
        converted = items if isinstance(obj, list) else tuple(items)
    done[id(obj)] = converted
    return converted


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _state_dict(obj: _PickledObject) -> dict:
    state = obj.state
    # BUILD state may come as (dict, slot_dict) for classes with __slots__.
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
        state = state[0]
    return state if isinstance(state, dict) else {}


def _stand_in_to_array(obj: _PickledObject, path: Path, where: str) -> np.ndarray:
    if obj.kind == "chumpy":
        return _chumpy_value(obj, path, where)
    return _sparse_to_dense(obj, path, where)


def _chumpy_value(obj: _PickledObject, path: Path, where: str) -> np.ndarray:
    """The value a chumpy ``Ch`` keeps under ``'x'``, as a numeric array."""
    state = _state_dict(obj)
    value = state.get("x")
    if value is not None and not isinstance(value, _PickledObject):
        array = np.asarray(value)
        if array.dtype.kind in "biuf":
            return array
    raise ModelFileError(
        f"{path}: key '{where}' holds a {obj.origin} object with no numeric array "
        "under 'x'; only plain chumpy Ch values can be read without chumpy "
        "(re-export this key as a numpy array)")


def _sparse_to_dense(obj: _PickledObject, path: Path, where: str) -> np.ndarray:
    """Dense (rows, cols) float array from a pickled csc/csr matrix's raw fields."""
    state = _state_dict(obj)

    def bad(reason: str) -> ModelFileError:
        return ModelFileError(f"{path}: key '{where}' holds a {obj.origin} that "
                              f"cannot be read: {reason}")

    shape = state.get("_shape", state.get("shape"))
    try:
        rows, cols = (int(n) for n in shape)
        data = np.asarray(state["data"])
        indices = np.asarray(state["indices"])
        indptr = np.asarray(state["indptr"])
    except (KeyError, TypeError, ValueError):
        raise bad("expected 'data', 'indices', 'indptr' arrays and a 2-D '_shape'") from None
    if data.dtype.kind not in "biuf" or indices.dtype.kind not in "iu" \
            or indptr.dtype.kind not in "iu":
        raise bad("non-numeric data or non-integer indices")
    major, minor = (cols, rows) if obj.kind == "csc" else (rows, cols)
    if rows < 0 or cols < 0 or data.ndim != 1 or indices.shape != data.shape \
            or indptr.shape != (major + 1,):
        raise bad(f"inconsistent sizes for shape ({rows}, {cols})")
    if indptr[0] != 0 or indptr[-1] != data.size or np.any(np.diff(indptr) < 0):
        raise bad("'indptr' is not a valid offset table")
    if indices.size and (indices.min() < 0 or indices.max() >= minor):
        raise bad("'indices' out of range")
    major_index = np.repeat(np.arange(major), np.diff(indptr))
    dtype = data.dtype if data.dtype.kind == "f" else np.float64
    dense = np.zeros((rows, cols), dtype=dtype)
    row, col = (indices, major_index) if obj.kind == "csc" else (major_index, indices)
    np.add.at(dense, (row, col), data)  # duplicates add up, as in scipy
    return dense

