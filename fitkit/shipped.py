"""The data files shipped with fitkit: recipes, comparison grids, open weights and their cards.

Their only copies live in the repository's top-level folders ``fitting_configs/``
(recipes; ``grids/`` under it), ``priors/`` and ``initializers/`` (weights with a
model card ``<stem>.md`` beside each). setup.py maps those folders to the packages
``fitkit._shipped.fitting_configs``, ``fitkit._shipped.priors`` and
``fitkit._shipped.initializers``, so an editable install and an installed wheel
both reach them through :mod:`importlib.resources`, from any working folder.
Each of the three folders holds an empty ``__init__.py``: setuptools' editable
install maps a package to an outside folder only when the folder is a regular
package.

Names are written as in the repository (``priors/open_gmm_08.pkl``,
``fitting_configs/demo.yaml``) or shorter (``open_gmm_08.pkl``, ``demo``). An
unknown name raises :class:`NotShippedError` listing the shipped ones.

This module imports only the standard library (the command line builds its help
text from :func:`recipe_names` before anything heavy is imported).
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path, PurePosixPath
from typing import Dict, List

from fitkit.errors import FitkitError

__all__ = ["NotShippedError", "recipe_names", "recipe_path", "grid_names", "grid_path", "weight_names",
           "weight_path", "card_path"]

#: top-level folder -> the package setup.py builds from it
_PACKAGES = {
    "fitting_configs": "fitkit._shipped.fitting_configs",
    "priors": "fitkit._shipped.priors",
    "initializers": "fitkit._shipped.initializers",
}
_WEIGHT_FOLDERS = ("priors", "initializers")
_WEIGHT_SUFFIXES = (".pt", ".pkl")


class NotShippedError(FitkitError, LookupError):
    """A name that is not among the files shipped with fitkit; the message lists the shipped ones.

    Attributes:
        name: the name as given.
        shipped: the names that would have been found.
    """

    def __init__(self, message: str, name: str = "", shipped: List[str] = ()):
        super().__init__(message)
        self.name = name
        self.shipped = list(shipped)


def _folder(folder: str):
    """The Traversable of a shipped folder (a real directory: fitkit is installed unzipped)."""
    package = _PACKAGES[folder]
    try:
        return importlib.resources.files(package)
    except ModuleNotFoundError:
        raise FitkitError(f"{package}: fitkit's shipped {folder}/ files are not installed with this copy of "
                          "fitkit (reinstall it: pip install fitkit, or pip install -e . in a checkout)") from None


def _files(folder: str, subfolder: str = "") -> Dict[str, Path]:
    """file name -> path of the files directly in a shipped folder (``__init__.py`` left out)."""
    root = _folder(folder)
    if subfolder:
        root = root.joinpath(subfolder)
        if not root.is_dir():
            return {}
    return {entry.name: entry for entry in root.iterdir()
            if entry.is_file() and entry.name != "__init__.py" and not entry.name.startswith(".")}


def _yaml_lookup(name: str, kind: str, table: Dict[str, Path], prefixes: List[str]) -> Path:
    """``table[file]`` for ``name`` = ``[prefix/]file.yaml`` or ``[prefix/]file``."""
    text = str(name).replace("\\", "/")
    candidates = [text]
    for prefix in prefixes:
        if text.startswith(prefix + "/"):
            candidates.append(text[len(prefix) + 1:])
    for c in candidates:
        if "/" in c:
            continue
        for key in (c, c + ".yaml"):
            if key in table:
                return Path(table[key])
    shipped = sorted(PurePosixPath(n).stem for n in table)
    raise NotShippedError(f"{name}: no shipped {kind} of that name (shipped {kind}s: {shipped})",
                          name=str(name), shipped=shipped)


def recipe_names() -> List[str]:
    """Names (file stems) of the shipped recipes, sorted: ``['demo', 'smplify_densepose', ...]``."""
    return sorted(PurePosixPath(n).stem for n in _files("fitting_configs") if n.endswith(".yaml"))


def recipe_path(name: str) -> Path:
    """The shipped recipe ``name`` (``demo``, ``demo.yaml`` or ``fitting_configs/demo.yaml``).

    Raises:
        NotShippedError: listing the shipped recipes.
    """
    table = {n: p for n, p in _files("fitting_configs").items() if n.endswith(".yaml")}
    return _yaml_lookup(name, "recipe", table, ["fitting_configs"])


def grid_names() -> List[str]:
    """Names (file stems) of the shipped comparison grids (``fitting_configs/grids/``), sorted."""
    return sorted(PurePosixPath(n).stem for n in _files("fitting_configs", "grids") if n.endswith(".yaml"))


def grid_path(name: str) -> Path:
    """The shipped grid ``name`` (``small``, ``small.yaml``, ``grids/small.yaml`` or
    ``fitting_configs/grids/small.yaml``).

    Raises:
        NotShippedError: listing the shipped grids.
    """
    table = {n: p for n, p in _files("fitting_configs", "grids").items() if n.endswith(".yaml")}
    return _yaml_lookup(name, "grid", table, ["fitting_configs/grids", "grids"])


def _weights() -> Dict[str, Path]:
    """``'priors/open_gmm_08.pkl'``-style name -> path, for every shipped weight file."""
    out = {}
    for folder in _WEIGHT_FOLDERS:
        for n, p in _files(folder).items():
            if n.endswith(_WEIGHT_SUFFIXES):
                out[f"{folder}/{n}"] = p
    return out


def weight_names() -> List[str]:
    """The shipped weight files as ``folder/file`` (``['initializers/open_danet.pt', ...,
    'priors/open_gmm_08.pkl', ...]``), sorted."""
    return sorted(_weights())


def weight_path(name: str) -> Path:
    """The shipped weight file ``name``: ``priors/open_gmm_08.pkl``, ``open_gmm_08.pkl`` or
    ``open_gmm_08`` (the file name alone must be unique, which the shipped names are).

    Raises:
        NotShippedError: listing the shipped weights.
    """
    weights = _weights()
    text = str(name).replace("\\", "/")
    if text in weights:
        return Path(weights[text])
    if "/" not in text:
        hits = [k for k in weights if k.split("/", 1)[1] in (text, *(text + s for s in _WEIGHT_SUFFIXES))]
        if len(hits) == 1:
            return Path(weights[hits[0]])
    raise NotShippedError(f"{name}: no shipped weight file of that name (shipped weights: {sorted(weights)})",
                          name=str(name), shipped=sorted(weights))


def card_path(name: str) -> Path:
    """The model card (``<stem>.md`` beside it) of the shipped weight file ``name`` (as in
    :func:`weight_path`).

    Raises:
        NotShippedError: for an unknown weight, or a weight shipped without a card.
    """
    weights = weight_path(name)
    card = weights.parent / (weights.name.rsplit(".", 1)[0] + ".md")
    if not card.is_file():
        raise NotShippedError(f"{name}: shipped without a model card (expected {card.name} beside it)",
                              name=str(name))
    return card
