"""Shape regulariser: squared norm of the SMPL shape coefficients.

SMPLify's ``L_beta = ||beta||^2`` (Bogo et al., ECCV 2016, Eq. 4 of seed 001's
summary); SPIN uses ``shape_prior_weight = 5`` (recipe weight 25). The betas of
SMPL are coefficients of a PCA basis with unit variance over the training
population, so this is the negative log of a standard normal up to 1/2 and a
constant.
"""
from __future__ import annotations

import torch

from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["ShapeL2Prior"]


@register_term("shape_l2")
class ShapeL2Prior(Term):
    """``E = sum_i beta_i^2``; residuals = ``betas`` (B, k), dimensionless."""

    kind = "prior"

    def needs(self) -> Needs:
        return Needs(params=("betas",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def residuals(self, batch: Batch) -> torch.Tensor:
        return batch.params["betas"]

    def __repr__(self) -> str:
        return "ShapeL2Prior()"
