"""Quadratic pull towards the initialization (the regressor's estimate).

Used when fitting refines a network prediction (e.g. the "+GMM" rows of seed
001 start from ProHMR / HMR+ / PARE): the fit may move only as far as the
image evidence justifies. The energy is

    E = sum_{name} w_name * ||param_name - init_name||^2

over smplx parameter names (``global_orient``, ``body_pose`` in radians of
axis-angle; ``betas`` dimensionless; ``transl`` in meters). Residuals are the
differences scaled by ``sqrt(w_name)``, so per-name weights keep their meaning
under the stage's overall recipe weight.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from fitkit.errors import ParameterError
from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["InitL2Prior", "PARAM_NAMES"]

#: Names accepted in ``params``, in the order their residuals are concatenated.
PARAM_NAMES = ("global_orient", "body_pose", "betas", "transl")


@register_term("init_l2")
class InitL2Prior(Term):
    """L2 distance of the parameters to their initial values.

    ``E = sum_name w_name ||p_name - p_name_init||^2`` (see the module
    docstring); residuals (B, R) = concatenation, in the order of
    :data:`PARAM_NAMES`, of ``sqrt(w_name) * (p - p_init)`` flattened per
    sample, over the names with ``w_name > 0`` (R = 69 + k with the default).

    Args:
        params: ``{name: weight}``, weights >= 0; default
            ``{'body_pose': 1.0, 'betas': 1.0}``.
    """

    kind = "prior"

    def __init__(self, params: Mapping[str, float] | None = None):
        if params is None:
            params = {"body_pose": 1.0, "betas": 1.0}
        if not isinstance(params, Mapping):
            raise ParameterError(f"init_l2: 'params' must map parameter names to weights, "
                                 f"got {type(params).__name__}")
        unknown = sorted(set(params) - set(PARAM_NAMES))
        if unknown:
            raise ParameterError(f"init_l2: unknown parameter name(s) {unknown}; "
                                 f"allowed: {list(PARAM_NAMES)}")
        weights: dict[str, float] = {}
        for name in PARAM_NAMES:
            if name not in params:
                continue
            try:
                weight = float(params[name])
            except (TypeError, ValueError):
                raise ParameterError(f"init_l2: weight of '{name}' must be a number, "
                                     f"got {params[name]!r}") from None
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ParameterError(f"init_l2: weight of '{name}' must be finite and >= 0, "
                                     f"got {weight}")
            if weight > 0.0:
                weights[name] = weight
        if not weights:
            raise ParameterError("init_l2: every weight in 'params' is zero; give at least one "
                                 f"positive weight among {list(PARAM_NAMES)}")
        self.weights = weights
        self._scales = {name: math.sqrt(weight) for name, weight in weights.items()}

    def needs(self) -> Needs:
        return Needs(params=tuple(self.weights))

    def evidence(self) -> torch.Tensor | None:
        return None

    def residuals(self, batch: Batch) -> torch.Tensor:
        parts = []
        for name, scale in self._scales.items():
            value = batch.params[name]
            init = batch.init[name].to(value.dtype)
            diff = (value - init).reshape(value.shape[0], -1)
            parts.append(diff * scale)
        return torch.cat(parts, dim=-1)

    def __repr__(self) -> str:
        return f"InitL2Prior(params={self.weights})"
