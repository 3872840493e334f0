"""Where pose-prior weight files are found.

A recipe names a prior's weights by path (``path: priors/open_vposer.pt``,
``path: ${FITKIT_PRIORS}/gmm_08.pkl``, ``path: /data/V02_05.ckpt``).
:func:`resolve_weight_path` expands ``~`` and environment variables, then
looks for a relative path first in the current folder and then among the
weights shipped with fitkit (:func:`fitkit.shipped.weight_path`: recipes write
``priors/open_gmm_08.pkl``), so the open weights are found from any folder,
in a checkout or an installed wheel alike.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Union

from fitkit import shipped
from fitkit.errors import ModelFileError, ParameterError

__all__ = ["PriorFileNotFoundError", "resolve_weight_path", "plain_metadata", "file_sha256", "frozen_copy"]

PathLike = Union[str, os.PathLike]


class PriorFileNotFoundError(ModelFileError, FileNotFoundError):
    """A prior's weight file does not exist (also a ``FileNotFoundError``)."""


def expand(path: PathLike) -> Path:
    """``~`` and ``$VARS`` expanded."""
    return Path(os.path.expanduser(os.path.expandvars(os.fspath(path))))


def resolve_weight_path(path: PathLike, what: str, hint: str = "") -> Path:
    """The existing file ``path`` names, as an absolute path (see the module docstring).

    Args:
        path: as written in a recipe or on the command line.
        what: what the file is, for the error message (e.g. ``'VPoser weights'``).
        hint: where to get the file, appended to the error message.
    Raises:
        PriorFileNotFoundError: naming every place that was tried.
    """
    p = expand(path)
    if p.is_file():
        return p.resolve()
    where = str(p)
    if not p.is_absolute():
        where += f" in {Path.cwd()}"
        try:
            return shipped.weight_path(p.as_posix()).resolve()
        except shipped.NotShippedError:
            where += f", and among the shipped weights {shipped.weight_names()}"
    unset = " (an environment variable in it is unset, e.g. FITKIT_PRIORS)" if "$" in str(p) else ""
    raise PriorFileNotFoundError(f"{path}: {what} not found{unset} (looked for {where})"
                                 + (f"; {hint}" if hint else ""))


def plain_metadata(value: Any, where: str) -> Any:
    """``value`` made of what ``torch.load(weights_only=True)`` reads back: tensors, str,
    int, float, bool, None, lists and dicts (numpy values, 0-d arrays, tuples, paths and
    str/number subclasses such as ``torch.__version__`` converted).

    Raises:
        ParameterError: naming ``where`` (e.g. ``'extra.data'``) for anything else.
    """
    import numpy as np
    import torch

    if value is None:
        return None
    for kind in (bool, int, float, str):  # subclasses (numpy.float64, TorchVersion) as the base type
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        if value.ndim == 0:
            return plain_metadata(value.item(), where)
        return torch.as_tensor(value).detach().cpu().clone()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): plain_metadata(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_metadata(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ParameterError(f"{where}: cannot store a {type(value).__name__} in a weight file "
                         "(use tensors, strings, numbers, lists and dicts)")


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MB blocks), for the provenance of trained weights and data."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def frozen_copy(cache: dict, module, device, dtype):
    """``module`` on ``device`` in ``dtype``, in eval mode with frozen parameters, copied once per
    (device, dtype) into ``cache`` (what a learned prior evaluates in a fit)."""
    import copy

    key = (str(device), dtype)
    if key not in cache:
        cache[key] = copy.deepcopy(module).to(device=device, dtype=dtype).eval().requires_grad_(False)
    return cache[key]
