"""SPIN's camera-depth prior: keep the body's depth near its initial value.

From SPIN's SMPLify (Kolotouros et al., ICCV 2019): ``(t_z - t_z_init)^2`` with
``depth_loss_weight = 100`` (recipe weight 100**2 = 1e4). It stops the fit from
trading depth for scale when only 2D keypoints constrain it. In fitkit the
camera translation of SPIN is the body's ``transl``, expressed in the camera
frame, so ``t_z`` is ``transl[:, 2]`` (meters, along the optical axis).
Seed 001 (Sec. 4.1) reports better fits with this term removed; a recipe turns
it off by leaving it out.
"""
from __future__ import annotations

import torch

from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["CameraDepthPrior"]


@register_term("camera_depth")
class CameraDepthPrior(Term):
    """``E = (transl_z - init_transl_z)^2``; residuals (B, 1) in meters."""

    kind = "prior"

    def needs(self) -> Needs:
        return Needs(params=("transl",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def residuals(self, batch: Batch) -> torch.Tensor:
        transl = batch.params["transl"]
        init = batch.init["transl"].to(transl.dtype)
        return transl[:, 2:3] - init[:, 2:3]

    def __repr__(self) -> str:
        return "CameraDepthPrior()"
