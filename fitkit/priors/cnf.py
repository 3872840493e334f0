"""A ProHMR-style conditional normalizing-flow pose prior (Kolotouros et al., ICCV 2021).

The model is a conditional density ``p(x | c)`` over the D numbers of
``body_pose`` (D = 69 for SMPL and the open body: 23 joints, axis-angle,
radians), built from `zuko <https://github.com/probabilists/zuko>`_'s layers:

    x --standardize--> x' --T_c--> z ~ N(0, I_D)

- *standardize*: a fixed per-component affine map ``x' = (x - loc) / scale``
  (loc, scale from the training poses), so that zuko's splines, defined on
  [-5, 5], see unit-variance inputs.
- *T_c*: ``transforms`` coupling layers
  (:class:`zuko.flows.GeneralCouplingTransform`) with monotonic
  rational-quadratic spline transforms (:class:`zuko.transforms.MonotonicRQSTransform`,
  the neural spline flow of Durkan et al. 2019). Each layer keeps one half of
  the components fixed and transforms the other half with splines whose
  parameters an MLP computes from the fixed half and the context embedding.
  The MLPs' output layers start at zero, so an untrained flow is exactly the
  diagonal Gaussian ``N(loc, diag(scale^2))`` and training departs from it.
  Consecutive layers use complementary halves (random, seeded splits, stored
  with the weights). A coupling layer costs one hypernetwork pass in *both*
  directions, so ``x -> z`` (log-density) and ``z -> x`` (sampling, decoding
  a latent code) are equally cheap and differentiable. (zuko's NSF/MAF with
  ``passes=2`` is the same family but needs two passes for the inverse.)
- *context*: ``c`` goes through a small MLP embedding
  (``context_dim -> embed_dim -> embed_dim``, ProHMR's "context embedding")
  and is fed to every hypernetwork.

The log-density is exact (change of variables)::

    log p(x | c) = log N(T_c(x'); 0, I) + log |det dT_c/dx'| - sum_i log scale_i

Why axis-angle and not ProHMR's 6D rotations: a 6D representation lives on a
6-dimensional embedding of a 3-dimensional manifold, so a flow over 6D numbers
has no proper density on rotations (ProHMR adds an orthogonality loss and
reads its log-likelihood only up to that embedding). Axis-angle body poses
are D free real numbers (joint rotations of a body stay far from the
pi-ambiguity), so the flow is a proper density on R^D and ``-log p(x | c)``
is a meaningful penalty in nats, comparable with the GMM prior's energy.

Contexts (the ``context`` option of the model and of the term):

- ``'keypoints'`` (default): the frame's 2D keypoints, normalized by
  :func:`keypoint_context` into 39 numbers (13 named points x (x', y', visible)).
  Frames with fewer than :data:`MIN_VISIBLE` visible points get the all-zero
  context, which the training data includes (blank views,
  :func:`make_keypoint_contexts`), so it stands for "nothing seen": the flow
  then falls back to (an approximation of) the marginal pose prior.
- ``'features'``: a user regressor's image features, one (F,) row per frame,
  read from a ``.npy`` file; needs weights trained with that width
  (:func:`train_cnf` takes contexts directly).
- ``'none'``: unconditional (context width 0).

The term ``cnf`` (:class:`CNFPosePrior`) uses the flow in one of two modes:

- ``mode: latent`` (ProHMR's downstream optimization): the solver optimizes
  the base-space code z instead of ``body_pose`` (``body_pose = T_c^-1(z)``,
  a :class:`~fitkit.terms.base.PoseLatent`); the prior's residuals are z, its
  energy ``||z||^2``. A least-squares term, but Levenberg–Marquardt cannot
  optimize through the latent: use adam or lbfgs.
- ``mode: nll``: ``body_pose`` stays the free parameter and the energy is
  ``-log p(body_pose | c)`` in nats (can be negative): an energy term for
  adam / lbfgs.

Weight files (``fitkit.cnf/1``, :func:`save_flow` / :func:`load_flow`) are
plain ``torch.save`` dicts of tensors, strings and numbers, read with
``torch.load(weights_only=True)``: nothing in the file is run.
"""
from __future__ import annotations

import datetime
import math
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from fitkit.body.keypoint_formats import KeypointFormat, get_format
from fitkit.errors import ModelFileError, ParameterError
from fitkit.io.atomic import atomic_write
from fitkit.priors.files import PriorFileNotFoundError, expand, plain_metadata, resolve_weight_path
from fitkit.priors.row_blocks import frozen_block_copy, in_row_blocks
from fitkit.terms.base import LATENT_KEY, Batch, Needs, PoseLatent, Term, register_term

__all__ = ["ConditionalPoseFlow", "CNFPosePrior", "FlowPoseLatent", "keypoint_context",
           "make_keypoint_contexts", "train_cnf", "mean_nll", "save_flow", "load_flow", "PriorFileNotFoundError",
           "CONTEXT_KEYPOINTS", "CONTEXT_KINDS", "KEYPOINT_CONTEXT_DIM", "MIN_VISIBLE", "FORMAT",
           "DEFAULT_CNF_PATH"]

PathLike = Union[str, os.PathLike]

#: Where the ``cnf`` prior looks when a recipe gives no ``path`` (resolved against the checkout).
DEFAULT_CNF_PATH = "priors/open_cnf.pt"
#: Layout tag of the weight files.
FORMAT = "fitkit.cnf/1"
CONTEXT_KINDS = ("keypoints", "features", "none")
MODES = ("latent", "nll")

#: The 13 points every keypoint format has, in the order of the keypoint context.
CONTEXT_KEYPOINTS = ("nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                     "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
                     "left_ankle", "right_ankle")
_HIP_SLOTS = (7, 8)
#: Width of the keypoint context: (x', y', visible) per point of :data:`CONTEXT_KEYPOINTS`.
KEYPOINT_CONTEXT_DIM = 3 * len(CONTEXT_KEYPOINTS)
#: Frames with fewer visible context points than this get the all-zero context.
MIN_VISIBLE = 4

_HINT = ("train one with tools/train_cnf.py (or point the recipe's 'path' at your weights); "
         "see priors/README.md")
_PAYLOAD_KEYS = ("format", "config", "state_dict")
_CONFIG_KEYS = ("dim", "context", "context_dim", "embed_dim", "transforms", "hidden", "bins",
                "activation", "mask_seed")
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU}


# ---------------------------------------------------------------------------------------
# Keypoint context


def _keypoint_format(keypoint_format: str | KeypointFormat) -> KeypointFormat:
    if isinstance(keypoint_format, KeypointFormat):
        return keypoint_format
    try:
        return get_format(str(keypoint_format))
    except ValueError as exc:
        raise ParameterError(f"keypoint_format: {exc}") from None


def keypoint_context(keypoints: torch.Tensor, keypoint_format: str | KeypointFormat,
                     min_confidence: float = 0.1, min_visible: int = MIN_VISIBLE) -> torch.Tensor:
    """Normalized 2D keypoints of N frames as the flow's (N, 39) context.

    The 13 points of :data:`CONTEXT_KEYPOINTS` (nose, shoulders, elbows,
    wrists, hips, knees, ankles; picked by name, so every format gives the
    same layout) are normalized per frame:

    - visible: confidence > ``min_confidence`` (and finite x, y);
    - center: mean of the visible hips, or of all visible points when no hip is visible;
    - scale: largest distance of a visible point to the center (1 when that is 0);
    - per point ``((x - cx) / scale, (y - cy) / scale, 1)`` when visible,
      ``(0, 0, 0)`` when not.

    The result does not change when the keypoints are translated or scaled in
    the image (pixels are y-down, so y' < 0 is above the center). Frames with
    fewer than ``min_visible`` visible points get the all-zero context (the
    "nothing seen" context the flow is trained with).

    Args:
        keypoints: (N, K, 3) [x_px, y_px, confidence] in ``keypoint_format``'s order.
        keypoint_format: format name (or alias) or a
            :class:`~fitkit.body.keypoint_formats.KeypointFormat`.
    Returns:
        (N, 39) in the dtype of ``keypoints`` (float32 for non-float input),
        flattened per point: ``[x'_0, y'_0, v_0, x'_1, ...]``.
    Raises:
        ParameterError: a needed name is not in the format (naming it), or a bad shape.
    """
    fmt = _keypoint_format(keypoint_format)
    missing = [n for n in CONTEXT_KEYPOINTS if n not in fmt.names]
    if missing:
        raise ParameterError(f"keypoint format {fmt.name!r} has no {missing}: the flow's keypoint "
                             f"context needs {list(CONTEXT_KEYPOINTS)}")
    kp = torch.as_tensor(keypoints)
    if not kp.is_floating_point():
        kp = kp.to(torch.float32)
    if kp.ndim != 3 or kp.shape[2] != 3 or kp.shape[1] != fmt.num_keypoints:
        raise ParameterError(f"keypoints: expected (N, {fmt.num_keypoints}, 3) for format {fmt.name!r}, "
                             f"got {tuple(kp.shape)}")
    idx = torch.as_tensor([fmt.names.index(n) for n in CONTEXT_KEYPOINTS], device=kp.device)
    sel = kp.index_select(1, idx)                                     # (N, 13, 3)
    xy, conf = sel[..., :2], sel[..., 2]
    vis = (conf > min_confidence) & torch.isfinite(xy).all(-1) & torch.isfinite(conf)
    w = vis.to(kp.dtype)                                              # (N, 13)
    xy = torch.where(vis[..., None], xy, torch.zeros_like(xy))
    hips = list(_HIP_SLOTS)
    n_hips, n_all = w[:, hips].sum(1), w.sum(1)
    c_hips = (xy[:, hips] * w[:, hips, None]).sum(1) / n_hips.clamp_min(1)[:, None]
    c_all = (xy * w[..., None]).sum(1) / n_all.clamp_min(1)[:, None]
    center = torch.where((n_hips > 0)[:, None], c_hips, c_all)       # (N, 2)
    rel = xy - center[:, None]
    dist = (rel.square().sum(-1).sqrt() * w).amax(1)
    scale = torch.where(dist > 1e-9, dist, torch.ones_like(dist))
    out = torch.cat([rel / scale[:, None, None] * w[..., None], w[..., None]], dim=-1)  # (N, 13, 3)
    enough = (n_all >= min_visible).to(kp.dtype)
    return (out * enough[:, None, None]).reshape(kp.shape[0], KEYPOINT_CONTEXT_DIM)


# ---------------------------------------------------------------------------------------
# The flow


def _coupling_masks(dim: int, transforms: int, seed: int) -> list[torch.Tensor]:
    """Split masks (True = conditioning half): random halves, complementary in pairs."""
    gen = torch.Generator().manual_seed(int(seed))
    masks = []
    for i in range(transforms):
        if i % 2 == 0:
            perm = torch.randperm(dim, generator=gen)
            mask = torch.zeros(dim, dtype=torch.bool)
            mask[perm[: dim // 2]] = True
        else:
            mask = ~masks[-1]
        masks.append(mask)
    return masks


class ConditionalPoseFlow(nn.Module):
    """Conditional spline-coupling flow over ``body_pose`` (see the module docstring).

    Args:
        dim: D, the width of ``body_pose`` (69 for SMPL / the open body).
        context: ``'keypoints'``, ``'features'`` or ``'none'``.
        context_dim: width of the raw context (keypoints: 39, the default;
            features: required; none: 0).
        transforms: number of coupling layers (even numbers transform every component equally often).
        hidden: hidden widths of each layer's hypernetwork.
        bins: spline bins per component.
        embed_dim: width of the context embedding.
        activation: ``'elu'``, ``'relu'`` or ``'silu'`` (hypernetworks and embedding).
        mask_seed: seed of the coupling splits.

    Attributes:
        config: the arguments above as a plain dict (stored with the weights).
        loc, scale: (D,) buffers of the standardization ``x' = (x - loc) / scale``.
        embed: the context embedding (None for ``'none'``).
        flow: the :class:`zuko.flows.Flow` over standardized poses.
    """

    def __init__(self, dim: int = 69, context: str = "keypoints", context_dim: int | None = None, *,
                 transforms: int = 4, hidden: Sequence[int] = (64, 64), bins: int = 8,
                 embed_dim: int = 64, activation: str = "elu", mask_seed: int = 0):
        super().__init__()
        import zuko
        from zuko.flows.coupling import GeneralCouplingTransform
        from zuko.transforms import MonotonicRQSTransform

        dim, transforms, bins, embed_dim = int(dim), int(transforms), int(bins), int(embed_dim)
        hidden = [int(h) for h in hidden]
        if dim < 2:
            raise ParameterError(f"dim must be >= 2, got {dim}")
        if context not in CONTEXT_KINDS:
            raise ParameterError(f"context must be one of {CONTEXT_KINDS}, got {context!r}")
        if context == "keypoints":
            context_dim = KEYPOINT_CONTEXT_DIM if context_dim is None else int(context_dim)
            if context_dim != KEYPOINT_CONTEXT_DIM:
                raise ParameterError(f"context 'keypoints' has width {KEYPOINT_CONTEXT_DIM}, got context_dim={context_dim}")
        elif context == "features":
            if context_dim is None or int(context_dim) < 1:
                raise ParameterError(f"context 'features' needs context_dim >= 1 (the feature width), got {context_dim}")
            context_dim = int(context_dim)
        else:
            if context_dim not in (None, 0):
                raise ParameterError(f"context 'none' has width 0, got context_dim={context_dim}")
            context_dim = 0
        if transforms < 1 or bins < 2 or embed_dim < 1 or not hidden or min(hidden) < 1:
            raise ParameterError(f"need transforms >= 1, bins >= 2, embed_dim >= 1 and hidden widths >= 1; "
                                 f"got transforms={transforms}, bins={bins}, embed_dim={embed_dim}, hidden={hidden}")
        if activation not in _ACTIVATIONS:
            raise ParameterError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        act = _ACTIVATIONS[activation]
        self.config = {"dim": dim, "context": context, "context_dim": context_dim,
                       "embed_dim": embed_dim if context_dim else 0, "transforms": transforms,
                       "hidden": hidden, "bins": bins, "activation": activation, "mask_seed": int(mask_seed),
                       "architecture": "zuko GeneralCouplingTransform + MonotonicRQSTransform"}
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        flow_context = 0
        self.embed = None
        if context_dim:
            self.embed = zuko.nn.MLP(context_dim, embed_dim, hidden_features=[embed_dim], activation=act)
            flow_context = embed_dim
        layers = [GeneralCouplingTransform(features=dim, context=flow_context, mask=mask,
                                           univariate=partial(MonotonicRQSTransform, slope=1e-3),
                                           shapes=[(bins,), (bins,), (bins - 1,)],
                                           hidden_features=hidden, activation=act)
                  for mask in _coupling_masks(dim, transforms, mask_seed)]
        for layer in layers:  # zero output layer: every spline starts as the identity
            nn.init.zeros_(layer.hyper[-1].weight)
            nn.init.zeros_(layer.hyper[-1].bias)
        base = zuko.lazy.UnconditionalDistribution(zuko.distributions.DiagNormal, loc=torch.zeros(dim),
                                                   scale=torch.ones(dim), buffer=True)
        self.flow = zuko.lazy.Flow(layers, base)

    # ------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config["dim"]

    @property
    def context_kind(self) -> str:
        return self.config["context"]

    @property
    def context_dim(self) -> int:
        return self.config["context_dim"]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ConditionalPoseFlow":
        """A fresh (untrained) flow with the layout of ``config``."""
        return cls(config["dim"], config["context"], config["context_dim"], transforms=config["transforms"],
                   hidden=config["hidden"], bins=config["bins"], embed_dim=config["embed_dim"] or 64,
                   activation=config["activation"], mask_seed=config["mask_seed"])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_standardization(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        """Set the fixed map ``x' = (x - loc) / scale`` ((D,) each, scale > 0)."""
        loc = torch.as_tensor(loc, dtype=self.loc.dtype).reshape(-1)
        scale = torch.as_tensor(scale, dtype=self.scale.dtype).reshape(-1)
        if loc.shape != (self.dim,) or scale.shape != (self.dim,) or not bool((scale > 0).all()):
            raise ParameterError(f"standardization: loc and scale must be ({self.dim},) with scale > 0")
        with torch.no_grad():
            self.loc.copy_(loc)
            self.scale.copy_(scale)

    # ------------------------------------------------------------ maps
    def _check_x(self, x: torch.Tensor, name: str) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ParameterError(f"{name}: expected (B, {self.dim}), got {tuple(x.shape)}")

    def _context(self, c: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        """Embedded (B, embed_dim) context for a batch like ``like`` (B, D); None when unconditional.

        ``c`` may be (B, C), (C,) (shared) or None (the all-zero "nothing seen" context).
        """
        B = like.shape[0]
        if self.context_dim == 0:
            if c is not None and c.numel() != 0:
                raise ParameterError(f"this flow is unconditional but a context of shape {tuple(c.shape)} was given")
            return None
        if c is None:
            c = like.new_zeros(B, self.context_dim)
        c = torch.as_tensor(c).to(device=like.device, dtype=like.dtype)
        if c.ndim == 1:
            c = c.expand(B, -1)
        if c.shape != (B, self.context_dim):
            raise ParameterError(f"context: expected ({B}, {self.context_dim}) for a batch of {B} "
                                 f"({self.context_kind!r} context), got {tuple(c.shape)}")
        return self.embed(c)

    def log_prob(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) ``log p(x | c)`` in nats of poses ``x`` (B, D) (radians)."""
        self._check_x(x, "x")
        xs = (x - self.loc) / self.scale
        return self.flow(self._context(c, x)).log_prob(xs) - torch.log(self.scale).sum()

    def to_latent(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) base-space code z of poses ``x`` (B, D): z = T_c((x - loc) / scale)."""
        self._check_x(x, "x")
        return self.flow.transform(self._context(c, x))((x - self.loc) / self.scale)

    def from_latent(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) poses of codes ``z`` (B, D): the inverse of :meth:`to_latent`, differentiable in z."""
        self._check_x(z, "z")
        return self.loc + self.scale * self.flow.transform(self._context(c, z)).inv(z)

    def sample(self, n: int, c: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) poses drawn from ``p(x | c)`` (c: (n, C), (C,) or None)."""
        z = torch.randn(n, self.dim, generator=generator, dtype=self.loc.dtype,
                        device=self.loc.device if generator is None else generator.device)
        return self.from_latent(z.to(self.loc.device), c)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.log_prob(x, c)


# ---------------------------------------------------------------------------------------
# Files


def save_flow(path: PathLike, flow: ConditionalPoseFlow, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``flow`` as a ``fitkit.cnf/1`` file (atomically; parent folders created).

    Layout: ``{'format': 'fitkit.cnf/1', 'config': flow.config, 'state_dict':
    {name: tensor}, 'fitkit': {'version', 'torch', 'zuko', 'created', **extra}}``
    with nothing but tensors, strings, numbers, lists and dicts, so that
    :func:`load_flow` reads it with ``torch.load(weights_only=True)``.

    Args:
        extra: provenance (training data, command, seed, metrics...).
    Returns:
        The path written (``~`` and ``$VARS`` expanded).
    """
    import zuko

    import fitkit

    if not isinstance(flow, ConditionalPoseFlow):
        raise ParameterError(f"save_flow: expected a ConditionalPoseFlow, got {type(flow).__name__}")
    provenance = {"version": fitkit.__version__, "torch": torch.__version__, "zuko": zuko.__version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    provenance.update(dict(extra or {}))
    provenance = plain_metadata(provenance, "extra")
    payload = {"format": FORMAT, "config": plain_metadata(flow.config, "config"),
               "state_dict": {k: v.detach().to("cpu").clone() for k, v in flow.state_dict().items()},
               "fitkit": provenance}
    path = expand(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def load_flow(path: PathLike, *, with_info: bool = False):
    """Read a ``fitkit.cnf/1`` file written by :func:`save_flow`.

    Returns:
        The :class:`ConditionalPoseFlow` (CPU, float32, eval mode), or
        ``(flow, provenance dict)`` with ``with_info=True``.
    Raises:
        PriorFileNotFoundError: the file does not exist (naming every place tried).
        ModelFileError: unreadable file, wrong layout (naming the missing keys)
            or weights that do not fit the stored configuration.
    """
    resolved = resolve_weight_path(path, "conditional flow weights", hint=_HINT)
    try:
        payload = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip and torch errors alike)
        raise ModelFileError(f"{resolved}: not a readable conditional flow weight file "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(payload, Mapping):
        raise ModelFileError(f"{resolved}: expected a dict with keys {list(_PAYLOAD_KEYS)}, "
                             f"found {type(payload).__name__}")
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    if missing:
        raise ModelFileError(f"{resolved}: missing key(s) {missing} (a {FORMAT} file has "
                             f"{list(_PAYLOAD_KEYS)}; found {sorted(map(str, payload))})")
    if payload["format"] != FORMAT:
        raise ModelFileError(f"{resolved}: format {payload['format']!r} is not {FORMAT!r}")
    config, state = payload["config"], payload["state_dict"]
    if not isinstance(config, Mapping) or not isinstance(state, Mapping):
        raise ModelFileError(f"{resolved}: 'config' and 'state_dict' must be dicts")
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if missing:
        raise ModelFileError(f"{resolved}: config is missing key(s) {missing} (expected {list(_CONFIG_KEYS)})")
    try:
        flow = ConditionalPoseFlow.from_config(config)
    except (ParameterError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{resolved}: invalid config ({exc})") from None
    try:
        flow.load_state_dict(dict(state), strict=True)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = str(exc).splitlines()
        raise ModelFileError(f"{resolved}: the weights do not match the stored configuration "
                             f"({' '.join(s.strip() for s in first[:3])})") from None
    flow.eval()
    if with_info:
        return flow, dict(payload.get("fitkit") or {})
    return flow


# ---------------------------------------------------------------------------------------
# Training data and training


def _look_at(cam_pos: torch.Tensor) -> torch.Tensor:
    """(M, 3, 3) world-to-camera rotations (rows: right, down, forward; OpenCV axes) of cameras
    at ``cam_pos`` (M, 3) in a y-up world, looking at the origin with no roll."""
    forward = -cam_pos / cam_pos.norm(dim=-1, keepdim=True)
    down = torch.tensor([0.0, -1.0, 0.0], dtype=cam_pos.dtype).expand_as(forward)
    right = torch.linalg.cross(down, forward, dim=-1)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right, dim=-1)
    return torch.stack([right, down, forward], dim=-2)


def make_keypoint_contexts(model, body_pose, global_orient, *, views_per_pose: int = 4,
                           generator: torch.Generator, keypoint_format: str = "body25",
                           noise_px: float = 2.0, dropout: float = 0.1, blank: float = 0.05,
                           distance: tuple[float, float] = (3.0, 8.0),
                           focal: tuple[float, float] = (1000.0, 1500.0),
                           elevation_deg: float = 30.0, roll_deg: float = 5.0,
                           chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Training pairs (pose, keypoint context): every pose seen by random cameras.

    For each pose and each of ``views_per_pose`` views (all random numbers from
    ``generator``, in float64 on the CPU):

    1. betas ~ N(0, 0.8^2) on the first 10 coefficients (the model's others 0);
    2. the body (``global_orient`` taken in a y-up world, as in the open pose
       set; AMASS's z-up orientations must be rotated first) with its pelvis
       at the origin, ``model(global_orient, body_pose, betas, keypoints=fmt)``;
    3. a camera looking at the pelvis from yaw uniform in [0, 2 pi) (all
       around), elevation uniform in +-``elevation_deg``, distance uniform in
       ``distance`` meters, rolled about its axis by uniform +-``roll_deg``,
       focal uniform in ``focal`` pixels;
    4. projection (:func:`fitkit.camera.project`), N(0, noise_px^2) pixel noise,
       each point dropped (confidence 0) with probability ``dropout``, then
       :func:`keypoint_context`; with probability ``blank`` the whole context
       is zeroed (the "nothing seen" context, so that the flow also learns the
       marginal pose distribution).

    Args:
        model: a :class:`fitkit.body.BodyModel` with the keypoint set ``keypoint_format``.
        body_pose: (N, D) axis-angle; global_orient: (N, 3).
    Returns:
        poses (N * V, D) float32 (each pose repeated V times in a row) and
        contexts (N * V, 39) float32.
    """
    from fitkit.camera import make_intrinsics, project

    f64 = torch.float64
    bp = torch.as_tensor(np.asarray(body_pose) if not isinstance(body_pose, torch.Tensor) else body_pose)
    go = torch.as_tensor(np.asarray(global_orient) if not isinstance(global_orient, torch.Tensor) else global_orient)
    bp, go = bp.detach().to("cpu", f64), go.detach().to("cpu", f64)
    if bp.ndim != 2 or bp.shape[1] != model.body_pose_dim or go.shape != (bp.shape[0], 3):
        raise ParameterError(f"body_pose must be (N, {model.body_pose_dim}) and global_orient (N, 3); "
                             f"got {tuple(bp.shape)} and {tuple(go.shape)}")
    if views_per_pose < 1:
        raise ParameterError(f"views_per_pose must be >= 1, got {views_per_pose}")
    if not (0 <= dropout < 1 and 0 <= blank <= 1 and noise_px >= 0):
        raise ParameterError(f"need 0 <= dropout < 1, 0 <= blank <= 1, noise_px >= 0; "
                             f"got {dropout}, {blank}, {noise_px}")
    fmt = _keypoint_format(keypoint_format)
    if fmt.name not in model.keypoint_sets:
        raise ParameterError(f"keypoint_format {fmt.name!r}: the model has no such keypoint set "
                             f"(it has {sorted(model.keypoint_sets)})")
    V = int(views_per_pose)
    bp, go = bp.repeat_interleave(V, 0), go.repeat_interleave(V, 0)
    M = bp.shape[0]
    g = generator
    u = lambda lo, hi, n=M: lo + (hi - lo) * torch.rand(n, generator=g, dtype=f64)  # noqa: E731
    betas = torch.zeros(M, model.num_betas, dtype=f64)
    nb = min(10, model.num_betas)
    betas[:, :nb] = 0.8 * torch.randn(M, nb, generator=g, dtype=f64)
    yaw = u(0.0, 2.0 * math.pi)
    elev = u(-math.radians(elevation_deg), math.radians(elevation_deg))
    roll = u(-math.radians(roll_deg), math.radians(roll_deg))
    dist = u(*distance)
    f = u(*focal)
    cam_pos = dist[:, None] * torch.stack([torch.cos(elev) * torch.sin(yaw), torch.sin(elev),
                                           torch.cos(elev) * torch.cos(yaw)], dim=-1)
    zero, one = torch.zeros(M, dtype=f64), torch.ones(M, dtype=f64)
    c, s = torch.cos(roll), torch.sin(roll)
    R_roll = torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                          torch.stack([zero, zero, one], -1)], dim=-2)
    R = R_roll @ _look_at(cam_pos)                                    # world -> camera
    K = make_intrinsics(f, f, zero, zero)

    kp_world = []
    for start in range(0, M, chunk):
        part = slice(start, start + chunk)
        args = [t[part].to(device=model.device, dtype=model.dtype) for t in (go, bp, betas)]
        with torch.no_grad():
            out = model(*args, keypoints=fmt.name)
        pts = (out.keypoints - out.joints[:, :1]).to("cpu", f64)
        kp_world.append(pts)
    pts = torch.cat(kp_world)                                         # (M, K, 3), pelvis at origin
    cam_pts = (pts - cam_pos[:, None]) @ R.transpose(1, 2)
    uv = project(cam_pts, K)
    uv = uv + noise_px * torch.randn(uv.shape, generator=g, dtype=f64)
    seen = torch.rand(uv.shape[:2], generator=g, dtype=f64) >= dropout
    kp = torch.cat([uv, seen.to(f64)[..., None]], dim=-1)
    ctx = keypoint_context(kp, fmt)
    blanked = torch.rand(M, generator=g, dtype=f64) < blank
    ctx[blanked] = 0.0
    return bp.to(torch.float32), ctx.to(torch.float32)


def _as_float_tensor(value, name: str) -> torch.Tensor:
    t = value.detach() if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    t = t.to("cpu", torch.float32)
    if t.ndim != 2:
        raise ParameterError(f"{name}: expected a 2D array, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ParameterError(f"{name}: holds non-finite values")
    return t


def mean_nll(flow: ConditionalPoseFlow, x: torch.Tensor, c: torch.Tensor | None = None, batch: int = 4096) -> float:
    """Mean ``-log p(x | c)`` in nats per pose over (N, D) poses ``x`` (and (N, C) contexts ``c``)."""
    total = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            total += float(-flow.log_prob(x[s:s + batch], None if c is None else c[s:s + batch]).sum())
    return total / max(1, x.shape[0])


def train_cnf(poses, contexts=None, *, context: str | None = None, transforms: int = 4,
              hidden: Sequence[int] = (64, 64), bins: int = 8, embed_dim: int = 64, epochs: int = 20,
              batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 0.0, pose_noise: float = 0.02,
              seed: int = 0, val=None, keep_best: bool = True, log: Callable[[str], None] | None = print,
              log_every: int | None = None) -> tuple[ConditionalPoseFlow, list[dict]]:
    """Fit a :class:`ConditionalPoseFlow` by maximum likelihood (Adam, cosine learning rate).

    Each step minimises the mean ``-log p(x + eps | c)`` over a shuffled
    minibatch, ``eps ~ N(0, pose_noise^2)`` per component: the noise keeps
    the density finite along components the data never moves (e.g. the
    1-DoF knees of retargeted mocap) and smooths it at the scale of the
    noise. The standardization uses the data mean and
    ``sqrt(var + pose_noise^2)``. Deterministic given ``seed`` (same
    machine and thread count); the global RNG state is left untouched.

    Args:
        poses: (N, D) training poses (radians).
        contexts: (N, C) or None (unconditional).
        context: ``'keypoints'`` / ``'features'`` / ``'none'``; default
            ``'none'`` without contexts, ``'keypoints'`` for C = 39, else ``'features'``.
        transforms, hidden, bins, embed_dim: the flow's layout (:class:`ConditionalPoseFlow`).
        epochs, batch_size, lr, weight_decay: optimisation.
        val: ``(poses, contexts or None)`` evaluated after every epoch (no noise).
        keep_best: with ``val``, return the weights of the epoch with the lowest
            validation NLL (early stopping); the validation data should then be
            held out from any test data (e.g. other motion clips).
        log: called with a progress line every ``log_every`` epochs (default: ~10 lines); None: silent.
    Returns:
        (flow in eval mode, history: one dict per epoch with ``epoch``,
        ``train_nll`` (nats per pose, with noise), ``val_nll`` (or None), ``lr``,
        ``seconds``, ``best`` (whether the returned weights are this epoch's)).
    """
    x = _as_float_tensor(poses, "poses")
    c = None if contexts is None else _as_float_tensor(contexts, "contexts")
    if c is not None and c.shape[0] != x.shape[0]:
        raise ParameterError(f"contexts has {c.shape[0]} rows but poses has {x.shape[0]}")
    if c is not None and c.shape[1] == 0:
        c = None
    if context is None:
        context = "none" if c is None else ("keypoints" if c.shape[1] == KEYPOINT_CONTEXT_DIM else "features")
    if (context == "none") != (c is None):
        raise ParameterError(f"context {context!r} but contexts are {'missing' if c is None else 'given'}")
    vx = vc = None
    if val is not None:
        vx = _as_float_tensor(val[0], "val poses")
        vc = None if c is None else _as_float_tensor(val[1], "val contexts")
    if epochs < 1 or batch_size < 1:
        raise ParameterError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    n, d = x.shape
    log_every = log_every or max(1, epochs // 10)
    history: list[dict] = []
    best_state, best_val = None, math.inf
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        gen = torch.Generator().manual_seed(int(seed) + 1)
        flow = ConditionalPoseFlow(d, context, None if c is None else c.shape[1], transforms=transforms,
                                   hidden=hidden, bins=bins, embed_dim=embed_dim, mask_seed=seed)
        std = torch.sqrt(x.double().var(0, unbiased=False) + pose_noise ** 2).clamp_min(1e-3)
        flow.set_standardization(x.double().mean(0).float(), std.float())
        opt = torch.optim.Adam(flow.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(n / batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            flow.train()
            order = torch.randperm(n, generator=gen)
            total = 0.0
            for s in range(0, n, batch_size):
                idx = order[s:s + batch_size]
                xb = x[idx]
                if pose_noise > 0:
                    xb = xb + pose_noise * torch.randn(xb.shape, generator=gen)
                loss = -flow.log_prob(xb, None if c is None else c[idx]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            flow.eval()
            val_nll = None if vx is None else mean_nll(flow, vx, vc)
            rec = {"epoch": epoch, "train_nll": total / n, "val_nll": val_nll,
                   "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0, "best": False}
            history.append(rec)
            if keep_best and val_nll is not None and val_nll < best_val:
                best_val = val_nll
                best_state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
                for h in history:
                    h["best"] = h is rec
            if log is not None and (epoch % log_every == 0 or epoch == epochs or epoch == 1):
                vtxt = "" if val_nll is None else f"  val NLL {val_nll:9.3f}"
                log(f"epoch {epoch:4d}/{epochs}  train NLL {rec['train_nll']:9.3f}{vtxt}  "
                    f"({rec['seconds']:.1f} s)")
    if best_state is not None:
        flow.load_state_dict(best_state)
    elif history:
        history[-1]["best"] = True
    flow.eval()
    return flow, history


# ---------------------------------------------------------------------------------------
# The term


class FlowPoseLatent(PoseLatent):
    """``body_pose = from_latent(z, context[index])`` of a :class:`CNFPosePrior`."""

    def __init__(self, term: "CNFPosePrior"):
        self.term = term
        self.dim = term.flow.dim

    def encode(self, body_pose: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        flow = self.term._for(body_pose.device, body_pose.dtype)
        return in_row_blocks(flow.to_latent, body_pose, self.term._rows(index, body_pose))

    def decode(self, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        flow = self.term._for(z.device, z.dtype)
        return in_row_blocks(flow.from_latent, z, self.term._rows(index, z))


@register_term("cnf")
class CNFPosePrior(Term):
    """Conditional normalizing-flow pose prior (ProHMR-style; see :mod:`fitkit.priors.cnf`).

    Energy per sample (before the recipe weight), x = ``body_pose`` (B, D), c
    the frame's context:

    - ``mode: latent`` (default): the stage optimizes z with
      ``x = T_c^-1(z)``; residuals z (B, D), energy ``||z||^2``. Where the
      stage does not free ``body_pose``, z = T_c(x) of the current pose.
    - ``mode: nll``: energy ``-log p(x | c)`` in nats (an energy-only term).

    Args:
        path: ``fitkit.cnf/1`` weights (``~`` and ``${VARS}`` expanded; a
            relative path is also looked up in the fitkit checkout); default
            ``priors/open_cnf.pt``. Ignored when ``flow`` is given.
        mode: ``'latent'`` or ``'nll'``.
        context: override of the weights' context kind: the same kind, or
            ``'none'`` to give a conditional flow the all-zero "nothing seen"
            context for every frame. Default: the weights' kind.
        features: ``.npy`` file of (N, F) image features, one row per observed
            frame (context ``'features'`` only).
        flow: an in-memory :class:`ConditionalPoseFlow` instead of a file.

    The flow (context embedding included) is evaluated on the batch padded to
    whole blocks of 32 rows, its products multiplied block by block
    (:mod:`fitkit.priors.row_blocks`), so that a frame's result does not
    depend on the other frames of its batch.
    """

    kind = "prior"

    def __init__(self, path: PathLike | None = None, mode: str = "latent", context: str | None = None,
                 features: PathLike | None = None, flow: ConditionalPoseFlow | None = None):
        if mode not in MODES:
            raise ParameterError(f"cnf: mode must be one of {MODES}, got {mode!r}")
        if flow is not None:
            if not isinstance(flow, ConditionalPoseFlow):
                raise ParameterError(f"cnf: 'flow' must be a ConditionalPoseFlow, got {type(flow).__name__}")
            self.path, self.source = None, "cnf prior"
        else:
            raw = os.fspath(path) if path is not None else DEFAULT_CNF_PATH
            self.path = resolve_weight_path(raw, "conditional flow weights", hint=_HINT)
            self.source = str(self.path)
            flow = load_flow(self.path)
        self.flow = flow.eval()
        for p in self.flow.parameters():
            p.requires_grad_(False)
        self.mode = mode
        # an instance attribute: the engine and objective read term.least_squares
        self.least_squares = mode == "latent"
        trained = flow.context_kind
        self.context_kind = trained if context is None else context
        if self.context_kind not in CONTEXT_KINDS:
            raise ParameterError(f"cnf: context must be one of {CONTEXT_KINDS}, got {context!r}")
        if self.context_kind not in (trained, "none"):
            raise ParameterError(f"{self.source}: these weights are trained with context {trained!r}; "
                                 f"context {self.context_kind!r} cannot be used (use {trained!r} or 'none')")
        if self.context_kind == "features" and features is None:
            raise ParameterError(f"{self.source}: context 'features' needs 'features: path/to/features.npy' "
                                 f"((N, {flow.context_dim}) array, one row per frame)")
        if features is not None and self.context_kind != "features":
            raise ParameterError(f"cnf: 'features' is only used with context 'features' "
                                 f"(this term uses context {self.context_kind!r})")
        self.features = None if features is None else expand(features)
        self._cast: dict[tuple, ConditionalPoseFlow] = {}
        self._context: torch.Tensor | None = None
        self._latent = FlowPoseLatent(self) if mode == "latent" else None

    # ------------------------------------------------------------ setup
    def needs(self) -> Needs:
        return Needs(params=("body_pose",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def latent(self) -> PoseLatent | None:
        return self._latent

    def setup(self, ctx) -> None:
        want = ctx.model.body_pose_dim
        if self.flow.dim != want:
            raise ParameterError(f"{self.source}: this flow pose prior is over D = {self.flow.dim} numbers "
                                 f"({self.flow.dim // 3} joints) but the body model's body_pose has {want} "
                                 f"({want // 3} joints): a prior for a different joint count than the body "
                                 "model; use weights trained for this model")
        self._context = self.contexts(ctx.observations).to(device=ctx.device, dtype=ctx.dtype)
        self._for(torch.device(ctx.device), ctx.dtype)

    def contexts(self, observations) -> torch.Tensor:
        """(N, C) raw context of every frame of ``observations`` (before the embedding)."""
        n = len(observations)
        C = self.flow.context_dim
        if self.context_kind == "none":
            return torch.zeros(n, C)
        if self.context_kind == "keypoints":
            kp = observations.keypoints.detach().to("cpu", torch.float64)
            return keypoint_context(kp, observations.keypoint_format)
        where = str(self.features)
        if not self.features.is_file():
            raise ParameterError(f"{where}: features file not found (context 'features')")
        try:
            arr = np.load(self.features, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ParameterError(f"{where}: cannot read the features ({exc})") from None
        if arr.ndim != 2 or arr.shape != (n, C) or arr.dtype.kind not in "fiu":
            raise ParameterError(f"{where}: features have shape {arr.shape} (dtype {arr.dtype}), expected "
                                 f"({n}, {C}): one row per observed frame ({n}) of the width the flow "
                                 f"was trained with ({C})")
        if not np.isfinite(arr).all():
            raise ParameterError(f"{where}: features hold non-finite values")
        return torch.from_numpy(arr.astype(np.float64))

    def _for(self, device: torch.device, dtype: torch.dtype) -> ConditionalPoseFlow:
        return frozen_block_copy(self._cast, self.flow, device, dtype)

    def _rows(self, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self._context is None:
            raise RuntimeError("CNFPosePrior: setup() must run before the term is evaluated")
        return self._context.index_select(0, index.to(self._context.device)).to(device=like.device,
                                                                                 dtype=like.dtype)

    # ------------------------------------------------------------ evaluation
    def residuals(self, batch: Batch) -> torch.Tensor:
        if self.mode != "latent":
            raise RuntimeError("cnf in mode 'nll' defines an energy, not residuals (use adam or lbfgs)")
        z = batch.params.get(LATENT_KEY)
        if z is not None and z.shape[1] == self.flow.dim:
            return z
        pose = batch.params["body_pose"]
        flow = self._for(pose.device, pose.dtype)
        return in_row_blocks(flow.to_latent, pose, self._rows(batch.index, pose))

    def energy(self, batch: Batch) -> torch.Tensor:
        if self.mode == "latent":
            return super().energy(batch)
        return self.nll(batch.params["body_pose"], batch.index)

    def nll(self, body_pose: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) ``-log p(body_pose | c)`` in nats for rows ``index`` (default: all) of the fit."""
        if index is None:
            index = torch.arange(body_pose.shape[0], device=body_pose.device)
        flow = self._for(body_pose.device, body_pose.dtype)
        return -in_row_blocks(flow.log_prob, body_pose, self._rows(index, body_pose))

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path is not None else "flow=<memory>"
        return f"CNFPosePrior({where}, mode={self.mode!r}, context={self.context_kind!r})"
