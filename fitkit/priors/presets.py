"""One-line pose-prior choices for recipes: ``--prior NAME``.

Recipes name their pose prior ``pose`` under ``terms:``; swapping the prior
is replacing that one line. :data:`PRIOR_PRESETS` holds the lines for
fitkit's openly trained weights in ``priors/`` (model cards beside them), with
weights tuned for the size-scaled 2D keypoint term of ``demo.yaml``
(``tools/compare_priors.py --tune`` re-derives them on training clips)::

    pose: {type: gmm, weight: 30, path: priors/open_gmm_08.pkl}
    pose: {type: vposer, weight: ..., path: priors/open_vposer.pt, mode: latent}
    pose: {type: cnf, weight: ..., path: priors/open_cnf.pt, mode: latent}

Official files work the same way (``path: /data/V02_05.ckpt``); their
weights need retuning. ``none`` removes the ``pose`` term from the recipe.
"""
from __future__ import annotations

import copy
from typing import Any

from fitkit.fitting.recipe import RecipeError

__all__ = ["PRIOR_PRESETS", "PRIOR_NAMES", "with_prior"]

#: name -> the ``terms.pose`` line it stands for.
PRIOR_PRESETS: dict[str, dict[str, Any]] = {
    "gmm": {"type": "gmm", "weight": 10.0, "path": "priors/open_gmm_08.pkl"},
    "vposer": {"type": "vposer", "weight": 3.0, "path": "priors/open_vposer.pt", "mode": "encoder"},
    "cnf": {"type": "cnf", "weight": 10.0, "path": "priors/open_cnf.pt", "mode": "nll"},
}
PRIOR_NAMES = ("none", *PRIOR_PRESETS)


def with_prior(data: dict, name: str, source: str = "<recipe>", key: str = "pose") -> dict:
    """A copy of recipe ``data`` whose pose prior (``terms.<key>``) is ``name``.

    A preset name replaces the line; ``none`` removes the term from ``terms``
    and from every stage. Raises :class:`RecipeError` for an unknown name or a
    recipe without that term.
    """
    if name not in PRIOR_NAMES:
        raise RecipeError(f"{source}: unknown prior {name!r}; choose from {list(PRIOR_NAMES)}")
    data = copy.deepcopy(data)
    terms = data.get("terms") or {}
    if key not in terms:
        raise RecipeError(f"{source}: --prior needs a pose prior under terms.{key} to replace "
                          f"(terms: {sorted(terms)})")
    if name != "none":
        terms[key] = dict(PRIOR_PRESETS[name])
        return data
    del terms[key]
    for stage in data.get("stages") or []:
        st = stage.get("terms")
        if isinstance(st, list):
            stage["terms"] = [k for k in st if k != key]
        elif isinstance(st, dict):
            st.pop(key, None)
    return data
