"""3D keypoints as a data term: the body's keypoints against observed ones in meters.

The observations' ``keypoints3d`` (N, K, 4) hold x, y, z in meters in
*camera-aligned axes* (OpenCV: x right, y down, z forward, away from the
camera) and a confidence in [0, 1]. ``fitkit detect`` writes MediaPipe's world
landmarks there unchanged: MediaPipe gives them in exactly these axes
(``fitkit/detect/mediapipe_pose.py`` checked the axis signs on rendered
bodies), with the origin at the mid-point of the hips. The body model's
keypoints (``batch.keypoints``, camera frame, meters) live in the same axes,
so the term compares them directly, without any rotation. Only the origin
differs (MediaPipe's is the hips, the model's the camera), so both sides are
made *root-relative*: the root is the mid-point of the format's ``left_hip``
and ``right_hip``, for the model's keypoints and the observed ones alike.

For keypoint k of sample b, with model point X_bk, observed point O_bk,
roots X_b0 and O_b0 (hip mid-points) and confidence c_bk::

    e_bk = (X_bk - X_b0) - s_b (O_bk - O_b0)                 (3 coordinates, meters)
    E_b  = sum_k  c_bk**p * w_k * rho(e_bk)                  (rho per coordinate)

``rho`` is Geman–McClure with scale ``sigma`` in meters (plain squares when
``sigma`` is null), as the 2D term's in pixels.

``scale: fixed`` uses s_b = 1: the observed skeleton is taken at its metric
size. ``scale: free`` ignores the observed skeleton's global size (a monocular
detector's metric size is a guess: BlazePose's shoulders of the open body
were 10-15% short): s_b is the least-squares optimal scale of the observed
root-relative skeleton onto the model's,

    s_b = argmin_s sum_k a_bk |m_bk - s o_bk|^2 = (sum_k a_bk m_bk . o_bk) / (sum_k a_bk |o_bk|^2)

with m_bk = X_bk - X_b0, o_bk = O_bk - O_b0 and a_bk = c_bk**p * w_k. The
residuals are then invariant to a scaling of the observations. s_b is a
function of the model's pose and shape and the gradient flows through it:
for the squared loss (``sigma: null``) that part of the gradient is zero at
the optimum (envelope theorem: dE/ds = 0 there), and with the robust kernel
s_b is not the optimum of the robust energy, so dropping it would give a
gradient of a different function than the one evaluated; keeping it makes
the energy and its gradient agree (checked against finite differences). A
frame whose observed skeleton has no extent gets s_b = 1 (no division by 0).
Scaling the observation onto the model keeps the residuals in the model's
meters; the energy ``|m|^2 (1 - cos^2)`` then favours a smaller body (on
the real dev set the fitted man came out 15% short at weight 8000: the
shape prior does not outweigh it).

``scale: model`` scales the model onto the observation instead:
e_bk = t_b m_bk - o_bk with t_b = (sum_k a_bk m_bk . o_bk) / (sum_k a_bk |m_bk|^2)
(the same closed form with the roles swapped, gradient kept), so the
residuals are in the observed skeleton's units and do not change when the
model's size does: the term then says nothing about the body's size, which
is left to the 2D keypoints and the shape prior.

``rotation`` says how much of the observed skeleton's orientation counts:

- ``camera`` (default): none is removed; the residuals are measured in
  camera axes, so the term also pulls the body's facing towards the
  detector's.
- ``yaw``: the observed root-relative skeleton is first turned about the
  camera's vertical (y) axis by the angle that best aligns it with the
  model's: with A = sum_k a_bk (m_x o_x + m_z o_z) and
  B = sum_k a_bk (m_x o_z - m_z o_x), cos = A / r, sin = B / r,
  r = sqrt(A^2 + B^2), and o' = (cos o_x + sin o_z, o_y, -sin o_x + cos o_z)
  (closed form, differentiable; the least-squares optimum for any scale).
  The detector then gives the pose's shape and its lean, not its facing,
  which comes from the 2D keypoints and the start.
- ``kabsch``: the full optimal rotation (Kabsch, weighted, no reflection) per
  sample; only the pose's shape counts. The rotation is computed without a
  gradient (for squared residuals that gradient is zero at the optimum;
  with the robust kernel it is an approximation).

The rotation is applied before the scale of ``scale: free``; for squared
residuals the pair is the joint optimum.

A keypoint is used when its 3D confidence is > ``min_confidence`` and both
observed hips are (the root needs them). Frames without ``keypoints3d``
(the field is None, or every confidence 0) contribute zero residuals and have
no evidence from this term. Each residual row reads three keypoints (k and
both hips), so the term is not ``pointwise``: the Levenberg–Marquardt solver
takes its generic forward-mode path.
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term
from fitkit.terms.keypoints2d import _power, name_weights
from fitkit.terms.robust import geman_mcclure

__all__ = ["Keypoints3D", "root_relative", "optimal_scale", "optimal_yaw", "optimal_rotation"]

SCALE_MODES = ("fixed", "free", "model")
ROTATION_MODES = ("camera", "yaw", "kabsch")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def root_relative(points: torch.Tensor, left_hip: int, right_hip: int) -> torch.Tensor:
    """(B, K, 3) points minus the mid-point of points ``left_hip`` and ``right_hip``."""
    root = 0.5 * (points[:, left_hip] + points[:, right_hip])
    return points - root[:, None]


def optimal_scale(model_rel: torch.Tensor, obs_rel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B,) s minimising ``sum_k weight_k |model_rel_k - s obs_rel_k|^2``.

    Args:
        model_rel, obs_rel: (B, K, 3) root-relative points (meters).
        weight: (B, K) non-negative weights.
    Returns:
        (B,) the closed-form scale; 1 where the weighted observed skeleton has
        (numerically) no extent.
    """
    num = (weight * (model_rel * obs_rel).sum(-1)).sum(-1)
    den = (weight * (obs_rel * obs_rel).sum(-1)).sum(-1)
    ok = den > 1e-12
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.ones_like(den))


def optimal_yaw(model_rel: torch.Tensor, obs_rel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) ``obs_rel`` turned about the y axis by the angle minimising
    ``sum_k weight_k |model_rel_k - R_y obs_rel_k|^2`` (module docstring); unchanged where
    the weighted cross terms vanish. Inputs as for :func:`optimal_scale`."""
    mx, mz = model_rel[..., 0], model_rel[..., 2]
    ox, oy, oz = obs_rel[..., 0], obs_rel[..., 1], obs_rel[..., 2]
    a = (weight * (mx * ox + mz * oz)).sum(-1)
    b = (weight * (mx * oz - mz * ox)).sum(-1)
    r2 = a * a + b * b
    ok = r2 > 1e-20
    r = torch.where(ok, r2, torch.ones_like(r2)).sqrt()
    c = torch.where(ok, a / r, torch.ones_like(a))[:, None]
    s = torch.where(ok, b / r, torch.zeros_like(b))[:, None]
    return torch.stack([c * ox + s * oz, oy, -s * ox + c * oz], dim=-1)


def optimal_rotation(model_rel: torch.Tensor, obs_rel: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) the proper rotation R minimising ``sum_k weight_k |model_rel_k - R obs_rel_k|^2``
    (weighted Kabsch), computed without gradient. Inputs as for :func:`optimal_scale`."""
    with torch.no_grad():
        h = torch.einsum("bk,bki,bkj->bij", weight, obs_rel, model_rel)  # sum w o m^T
        u, _, vh = torch.linalg.svd(h)
        v = vh.transpose(-1, -2)
        d = torch.sign(torch.linalg.det(v @ u.transpose(-1, -2)))
        d = torch.where(d == 0, torch.ones_like(d), d)
        fix = torch.ones(h.shape[0], 3, dtype=h.dtype, device=h.device)
        fix[:, 2] = d
        return v @ torch.diag_embed(fix) @ u.transpose(-1, -2)


@register_term("keypoints3d")
class Keypoints3D(Term):
    """Args:
        sigma: Geman–McClure scale in meters, or None for squared error.
        scale: ``'fixed'`` (observations at their metric size), ``'free'``
            (the observations scaled onto the model per sample) or ``'model'``
            (the model scaled onto the observations), see the module docstring.
        confidence_power: p in ``c**p`` (0: confidences only say used / unused).
        ignore: keypoint names given weight 0.
        weights: ``{name: weight}`` per-keypoint weights (default 1).
        min_confidence: keypoints at or below this 3D confidence are unused.
        rotation: ``'camera'``, ``'yaw'`` or ``'kabsch'``: how much of the observed
            orientation is aligned away first (module docstring).
    """

    kind = "data"

    def __init__(self, sigma: float | None = 0.1, scale: str = "fixed", confidence_power: float = 1.0,
                 ignore: Sequence[str] = (), weights: Mapping[str, float] | None = None,
                 min_confidence: float = 0.0, rotation: str = "camera"):
        if sigma is not None and not (_is_real(sigma) and 0 < sigma < math.inf):
            raise ValueError(f"keypoints3d.sigma: expected a positive number of meters or null, got {sigma!r}")
        if scale not in SCALE_MODES:
            raise ValueError(f"keypoints3d.scale: expected one of {list(SCALE_MODES)}, got {scale!r}")
        for name, value in (("confidence_power", confidence_power), ("min_confidence", min_confidence)):
            if not (_is_real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"keypoints3d.{name}: expected a finite number >= 0, got {value!r}")
        if weights is not None and not (isinstance(weights, Mapping) and all(
                _is_real(w) and math.isfinite(w) and w >= 0 for w in weights.values())):
            raise ValueError(f"keypoints3d.weights: expected a mapping keypoint name -> finite number >= 0, "
                             f"got {weights!r}")
        if isinstance(ignore, str) or not all(isinstance(n, str) for n in ignore):
            raise ValueError(f"keypoints3d.ignore: expected a list of keypoint names, got {ignore!r}")
        if rotation not in ROTATION_MODES:
            raise ValueError(f"keypoints3d.rotation: expected one of {list(ROTATION_MODES)}, got {rotation!r}")
        self.rotation = rotation
        self.sigma = None if sigma is None else float(sigma)
        self.scale = scale
        self.confidence_power = float(confidence_power)
        self.ignore = tuple(ignore)
        self.weights = dict(weights or {})
        self.min_confidence = float(min_confidence)
        self.format = None

    def _name_weights(self, names: Sequence[str]) -> torch.Tensor:
        return name_weights("keypoints3d", self.format, names, self.weights, self.ignore)

    def setup(self, ctx: SetupContext) -> None:
        obs = ctx.observations
        fmt = get_format(obs.keypoint_format)
        self.format = fmt.name
        names = fmt.names
        if "left_hip" not in names or "right_hip" not in names:
            raise ValueError(f"keypoints3d: format {fmt.name!r} has no left_hip/right_hip (the root)")
        self._hips = (names.index("left_hip"), names.index("right_hip"))
        N, K = obs.keypoints.shape[:2]
        k3 = obs.keypoints3d
        if k3 is None:
            k3 = torch.zeros(N, K, 4)
        k3 = k3.to(device=ctx.device, dtype=ctx.dtype)
        conf = k3[..., 3]
        finite = torch.isfinite(k3).all(dim=-1)
        usable = finite & (conf > self.min_confidence)
        usable = usable & usable[:, self._hips[0], None] & usable[:, self._hips[1], None]
        conf = torch.where(finite, conf, torch.zeros_like(conf)).clamp(min=0)
        w = _power(conf, self.confidence_power)  # bit-identical wherever a frame sits in the batch
        w = w * self._name_weights(names).to(w)
        w = torch.where(usable, w, torch.zeros_like(w))
        pts = torch.where(usable[..., None], k3[..., :3], torch.zeros_like(k3[..., :3]))
        # the root of a frame without both hips is never used (all its weights are 0)
        self._obs_rel = root_relative(pts, *self._hips)
        self._w = w
        self._sqrt_w = w.sqrt()
        self._evidence = (w > 0).any(dim=1)

    def needs(self) -> Needs:
        return Needs(keypoints=self.format, params=())

    def evidence(self) -> torch.Tensor:
        return self._evidence

    def sample_scale(self, batch: Batch) -> torch.Tensor:
        """(B,) the scale s_b applied to the observations (1 in ``fixed`` mode; 1 / t_b in ``model`` mode)."""
        if self.scale == "model":
            model_rel = root_relative(batch.keypoints, *self._hips)
            w = batch.rows(self._w)
            return 1.0 / optimal_scale(self._aligned(model_rel, batch.rows(self._obs_rel), w), model_rel, w)
        if self.scale == "fixed":
            return torch.ones(batch.keypoints.shape[0], dtype=batch.keypoints.dtype,
                              device=batch.keypoints.device)
        model_rel = root_relative(batch.keypoints, *self._hips)
        w = batch.rows(self._w)
        return optimal_scale(model_rel, self._aligned(model_rel, batch.rows(self._obs_rel), w), w)

    def _aligned(self, model_rel: torch.Tensor, obs_rel: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """(B, K, 3) the observed root-relative points with the ``rotation`` mode's alignment applied."""
        if self.rotation == "yaw":
            return optimal_yaw(model_rel, obs_rel, w)
        if self.rotation == "kabsch":
            return obs_rel @ optimal_rotation(model_rel, obs_rel, w).transpose(-1, -2)
        return obs_rel

    def residuals(self, batch: Batch) -> torch.Tensor:
        """(B, 3K): per keypoint, the x, y, z residual (meters before the robust kernel)."""
        model_rel = root_relative(batch.keypoints, *self._hips)
        w = batch.rows(self._w)
        obs_rel = self._aligned(model_rel, batch.rows(self._obs_rel), w)
        if self.scale == "free":
            s = optimal_scale(model_rel, obs_rel, w)
            obs_rel = obs_rel * s[:, None, None]
        elif self.scale == "model":
            model_rel = model_rel * optimal_scale(obs_rel, model_rel, w)[:, None, None]
        e = model_rel - obs_rel
        r = e if self.sigma is None else geman_mcclure(e, self.sigma)
        r = r * batch.rows(self._sqrt_w)[..., None]
        return r.reshape(r.shape[0], -1)

    def __repr__(self) -> str:
        return (f"Keypoints3D(sigma={self.sigma}, scale={self.scale!r}, "
                f"confidence_power={self.confidence_power}, rotation={self.rotation!r}, ignore={list(self.ignore)})")
