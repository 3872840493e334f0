"""2D keypoint reprojection: SMPLify's data term.

For keypoint k of sample b with observed pixel position o_bk and confidence
c_bk, the model keypoint X_bk (camera frame) projects to pi(X_bk) and

    E_b = sum_k  c_bk**p * w_k * rho( s_b * (pi(X_bk) - o_bk) )

summed over x and y, where ``rho`` is Geman–McClure with scale ``sigma``
(or plain squares when ``sigma`` is null), ``w_k`` per-keypoint weights (0 to
ignore a keypoint, as SPIN ignores the hips), ``p`` = ``confidence_power``
(2 in SMPLify/SPIN) and ``s_b`` the pixel scale:

- the camera's ``pixel_scale`` (1 for a full-image fit, crop size / box
  size in crop mode, so that ``sigma`` is in crop pixels as in SPIN), times
- with ``scale_by_size: true``, ``reference_size / person_size`` with
  person_size the longest side of the box around the confident keypoints,
  enlarged by 1.2 (the box SPIN would crop). This is our reading of seed 001,
  Sec. 4.1, "we scale the reprojection loss depending on the size of the
  person": the residuals of a full-image fit are measured as if the person
  filled a ``reference_size``-pixel crop, so that one weight and one sigma
  suit people of every size.

Observed keypoints come from the fit's observations and must be in the format
of the body model's keypoint set of the same name. Samples without any usable
keypoint have no evidence (the engine passes their initialization through and
flags them ``no_evidence``).
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.camera import project
from fitkit.fitting.camera_setup import confident_box
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term
from fitkit.terms.robust import geman_mcclure


def _power(c: torch.Tensor, p: float) -> torch.Tensor:
    """``c ** p`` elementwise, the same for an element wherever it sits in ``c``.

    A general power rounds differently in the vectorized body and the scalar
    tail of torch's CPU kernel, so a frame's weights would depend on the
    frames fitted with it; padded to a multiple of 64 elements, every element
    goes through the vectorized body (single-threaded; tensors over torch's
    grain size may be split between threads). Powers 0, 1 and 2 are exact anyway.
    """
    flat = c.reshape(-1)
    pad = (-flat.numel()) % 64
    out = torch.cat([flat, flat.new_ones(pad)]) ** p
    return out[:flat.numel()].reshape(c.shape)


def _is_real(value) -> bool:
    """An int or float (a numpy scalar too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)



def name_weights(term: str, format_name, names: Sequence[str], weights: Mapping[str, float],
                 ignore: Sequence[str], only: Sequence[str] | None = None) -> torch.Tensor:
    """(K,) float64 per-keypoint weights of a keypoint term: 1, or 0 outside ``only``; then
    ``weights`` by name; 0 for ``ignore``. An unknown name is a ValueError naming ``term``."""
    lookup = {n: i for i, n in enumerate(names)}
    listed = list(ignore) + list(only or ()) + list(weights)
    unknown = sorted({n for n in listed if n not in lookup})
    if unknown:
        raise ValueError(f"{term}: unknown keypoint name(s) {unknown} for format "
                         f"{format_name!r}; its names are {list(names)}")
    w = torch.ones(len(names), dtype=torch.float64)
    if only is not None:
        w.zero_()
        w[[lookup[n] for n in only]] = 1.0
    for n, value in weights.items():
        w[lookup[n]] = float(value)
    for n in ignore:
        w[lookup[n]] = 0.0
    return w

@register_term("keypoints2d")
class Keypoints2D(Term):
    """Args:
        sigma: Geman–McClure scale in (scaled) pixels, or None for squared error.
        confidence_power: p in ``c**p`` (2 as in SMPLify/SPIN; 0 ignores confidences
            except that confidence-0 keypoints stay unused).
        ignore: keypoint names given weight 0 (e.g. ``[left_hip, right_hip]``).
        only: if given, the only keypoint names used (SPIN's camera stage: torso).
        weights: ``{name: weight}`` per-keypoint weights (default 1).
        min_confidence: keypoints at or below this confidence are unused.
        scale_by_size: measure residuals relative to the person's size (see module doc).
        reference_size: the person size (pixels) residuals are scaled to.
    """

    kind = "data"
    pointwise = "keypoints"

    def __init__(self, sigma: float | None = 100.0, confidence_power: float = 2.0,
                 ignore: Sequence[str] = (), only: Sequence[str] | None = None,
                 weights: Mapping[str, float] | None = None, min_confidence: float = 0.0,
                 scale_by_size: bool = False, reference_size: float = 224.0):
        if sigma is not None and not (_is_real(sigma) and 0 < sigma < math.inf):
            raise ValueError(f"keypoints2d.sigma: expected a positive number of pixels or null, got {sigma!r}")
        for name, value, positive in (("confidence_power", confidence_power, False),
                                      ("min_confidence", min_confidence, False),
                                      ("reference_size", reference_size, True)):
            if not (_is_real(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)):
                raise ValueError(f"keypoints2d.{name}: expected a finite number {'>' if positive else '>='} 0, "
                                 f"got {value!r}")
        if weights is not None and not (isinstance(weights, Mapping) and all(
                _is_real(w) and math.isfinite(w) and w >= 0 for w in weights.values())):
            raise ValueError(f"keypoints2d.weights: expected a mapping keypoint name -> finite number >= 0, "
                             f"got {weights!r}")
        self.sigma = None if sigma is None else float(sigma)
        self.confidence_power = float(confidence_power)
        self.ignore = tuple(ignore)
        self.only = None if only is None else tuple(only)
        self.weights = dict(weights or {})
        self.min_confidence = float(min_confidence)
        self.scale_by_size = bool(scale_by_size)
        self.reference_size = float(reference_size)
        self.format = None

    def _name_weights(self, names: Sequence[str]) -> torch.Tensor:
        return name_weights("keypoints2d", self.format, names, self.weights, self.ignore, self.only)

    def setup(self, ctx: SetupContext) -> None:
        obs = ctx.observations
        self.format = get_format(obs.keypoint_format).name
        names = get_format(self.format).names
        kps = obs.keypoints.to(device=ctx.device, dtype=ctx.dtype)
        conf = kps[..., 2]
        usable = conf > self.min_confidence
        w = _power(conf.clamp(min=0), self.confidence_power) * self._name_weights(names).to(kps)
        w = torch.where(usable, w, torch.zeros_like(w))
        # unused keypoints get a harmless target: a NaN there would make the
        # residual NaN * 0 = NaN and stop a sample that does not even use it
        self._target = torch.where((w > 0)[..., None], kps[..., :2], torch.zeros_like(kps[..., :2]))
        self._sqrt_w = w.sqrt()
        self._evidence = (w > 0).any(dim=1)
        scale = torch.ones(kps.shape[0], dtype=ctx.dtype, device=ctx.device)
        if self.scale_by_size:
            _, side, has = confident_box(kps, max(self.min_confidence, 0.0))
            size = torch.where(has, 1.2 * side, torch.ones_like(scale))
            scale = self.reference_size / size.clamp(min=1.0)
        self._size_scale = scale

    def needs(self) -> Needs:
        return Needs(keypoints=self.format, params=())

    def evidence(self) -> torch.Tensor:
        return self._evidence

    def residual_points(self) -> torch.Tensor:
        """(2K,): residuals 2k and 2k+1 (x, y) belong to keypoint k."""
        return torch.arange(self._target.shape[1], device=self._target.device).repeat_interleave(2)

    def residuals(self, batch: Batch) -> torch.Tensor:
        """(B, 2K): per keypoint, the x then y residual."""
        proj = project(batch.keypoints, batch.K)
        scale = (batch.pixel_scale * batch.rows(self._size_scale))[:, None, None]
        e = (proj - batch.rows(self._target)) * scale
        r = e if self.sigma is None else geman_mcclure(e, self.sigma)
        r = r * batch.rows(self._sqrt_w)[..., None]
        return r.reshape(r.shape[0], -1)

    def __repr__(self) -> str:
        return (f"Keypoints2D(sigma={self.sigma}, confidence_power={self.confidence_power}, "
                f"ignore={list(self.ignore)}, only={self.only}, scale_by_size={self.scale_by_size})")
