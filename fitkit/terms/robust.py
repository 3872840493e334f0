"""Robust kernels in residual form.

Solvers minimise sums of squared residuals, so a robust kernel rho(e) is
applied as the residual ``s(e)`` with ``s(e)**2 == rho(e)``.
"""
from __future__ import annotations

import torch

__all__ = ["geman_mcclure"]


def geman_mcclure(e: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Geman–McClure residual: ``s(e)**2 = sigma**2 e**2 / (sigma**2 + e**2)``.

    The energy of SMPLify's ``GMoF``: quadratic (``~ e**2``) for ``|e| << sigma``
    and saturating at ``sigma**2`` for outliers. ``s`` keeps the sign of ``e``
    and is smooth at 0, so Gauss–Newton sees a well-defined Jacobian.

    Args:
        e: residuals of any shape, in the same units as ``sigma`` (pixels).
        sigma: scale (> 0), broadcastable to ``e``.
    """
    return sigma * e * torch.rsqrt(sigma * sigma + e * e)
