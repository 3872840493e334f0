"""VPoser, the variational body-pose prior of SMPLify-X, written from its description.

VPoser (Pavlakos et al., "Expressive Body Capture", CVPR 2019) is a
variational autoencoder over the pose of SMPL body joints 1..21 (the first
63 numbers of ``body_pose``: SMPL's two hand joints 22, 23 and SMPL-X's
hands are not part of it). Its encoder maps an axis-angle pose to a Gaussian
posterior over a latent code z (width L, officially 32); its decoder maps z
to one rotation matrix per joint through the continuous 6D representation.
SMPLify-X fits the code z instead of the pose, with the penalty ``||z||^2``
(the negative log of the standard normal prior, up to a factor 2 and a
constant).

This module is fitkit's own implementation (human_body_prior's code is not
used or copied); its modules carry the parameter names of the official
checkpoints, so those files load as they are:

Version 1 (human_body_prior 0.8.5, ``vposer_v1_0/snapshots/TR00_E096.pt``, a
plain ``state_dict``), width N (512), latent width L (32)::

    encoder  bodyprior_enc_bn1 (BatchNorm1d 63) -> bodyprior_enc_fc1 (63->N) -> leaky_relu(0.2)
             -> bodyprior_enc_bn2 (BatchNorm1d N) -> dropout(0.1) -> bodyprior_enc_fc2 (N->N)
             -> leaky_relu(0.2) -> bodyprior_enc_mu (N->L), bodyprior_enc_logvar (N->L)
    decoder  bodyprior_dec_fc1 (L->N) -> leaky_relu(0.2) -> dropout(0.1) -> bodyprior_dec_fc2 (N->N)
             -> leaky_relu(0.2) -> bodyprior_dec_out (N->21*6) -> 6D -> matrix per joint

Version 2 (``V02_05``, a PyTorch-Lightning ``.ckpt`` whose ``state_dict``
keys start with ``vp_model.``)::

    encoder_net  0 flatten, 1 BatchNorm1d(63), 2 Linear(63, N), 3 LeakyReLU(0.01),
                 4 BatchNorm1d(N), 5 Dropout(0.1), 6 Linear(N, N), 7 Linear(N, N)
                 (no activation between 6 and 7, as in the original),
                 8 Gaussian head: ``8.mu`` Linear(N, L), ``8.logvar`` Linear(N, L)
    decoder_net  0 Linear(L, N), 1 LeakyReLU(0.01), 2 Dropout(0.1), 3 Linear(N, N),
                 4 LeakyReLU(0.01), 5 Linear(N, 21*6), 6 6D -> matrix per joint

In both, the posterior is ``Normal(mu, softplus(h))`` where h is the output of
the layer named ``logvar``: despite its name it is used, through a softplus,
as the *standard deviation*. The 6D -> matrix map views a joint's 6 numbers x
as a 3x2 matrix (row-major, entry [i, j] = x[2 i + j]) and orthonormalises its
columns: ``b1 = normalize(c0)``, ``b2 = normalize(c1 - (b1 . c1) b1)``,
``b3 = b1 x b2``, ``R = [b1 b2 b3]`` (as columns). Note the interleaved
layout: it is *not* fitkit's own :func:`fitkit.fitting.rotations.rot6d_to_matrix`.

Files: :func:`load_vposer` reads both official layouts and fitkit's own
(:func:`save_vposer` writes the v2 layout, so one loader reads them all)
with ``torch.load(weights_only=True)``; see its docstring for how pickled
Python objects in Lightning checkpoints are handled without running code.
The official weights are licensed with SMPL-X: download them yourself and
point a recipe's ``path:`` at them. fitkit's open VPoser, trained on open pose
data by ``tools/train_vposer.py`` (:mod:`fitkit.priors.vposer_train`), is
``priors/open_vposer.pt``.

The ``vposer`` term (:class:`VPoserPrior`) uses the network in one of two modes:

- ``latent`` (SMPLify-X): a stage that frees ``body_pose`` optimizes z, and
  the pose is the decoder's output; energy ``||z||^2``.
- ``encoder``: the pose stays axis-angle; energy ``||mu(pose)||^2``, the
  squared norm of the encoder mean (works with every solver, including
  Levenberg–Marquardt).
"""
from __future__ import annotations

import collections
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Mapping, Union

import roma
import torch
import torch.nn.functional as F
from torch import nn

from fitkit.errors import ModelFileError, ParameterError
from fitkit.io.atomic import atomic_write
from fitkit.priors.files import PriorFileNotFoundError, expand, plain_metadata, resolve_weight_path
from fitkit.priors.row_blocks import frozen_block_copy, in_row_blocks
from fitkit.terms.base import LATENT_KEY, Batch, Needs, PoseLatent, Term, register_term

__all__ = ["VPoser", "VPoserV1", "VPoserV2", "VPoserLatent", "VPoserPrior", "PriorFileNotFoundError",
           "load_vposer", "save_vposer", "read_checkpoint", "vposer_from_state_dict",
           "vposer_rot6d_to_matrix",           "DEFAULT_VPOSER_PATH", "NUM_JOINTS", "POSE_DIM", "V2_PREFIX"]

PathLike = Union[str, os.PathLike]

#: Body joints VPoser covers (SMPL joints 1..21).
NUM_JOINTS = 21
#: Axis-angle numbers it reads: the first 63 of ``body_pose``.
POSE_DIM = 3 * NUM_JOINTS
#: Where the ``vposer`` term looks when a recipe gives no ``path`` (fitkit's open weights).
DEFAULT_VPOSER_PATH = "priors/open_vposer.pt"
#: Prefix of the network's keys in a v2 (Lightning) checkpoint's ``state_dict``.
V2_PREFIX = "vp_model."

_HINT = ("the official VPoser weights (v1: vposer_v1_0/snapshots/TR00_E096.pt, v2: "
         "V02_05/snapshots/*.ckpt) are downloaded from the SMPL-X website under its licence and "
         "never shipped by fitkit: give their path in the recipe's 'path:'; fitkit's open VPoser "
         "is priors/open_vposer.pt, written by tools/train_vposer.py")


# ---------------------------------------------------------------------------------------
# The network


def vposer_rot6d_to_matrix(x: torch.Tensor) -> torch.Tensor:
    """(..., 6) VPoser 6D numbers -> (..., 3, 3) rotations (interleaved layout; module docstring)."""
    m = x.reshape(*x.shape[:-1], 3, 2)
    c0, c1 = m[..., 0], m[..., 1]
    b1 = F.normalize(c0, dim=-1)
    b2 = F.normalize(c1 - (b1 * c1).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


class _Rot6dToMatrix(nn.Module):
    """(B, J*6) -> (B, J, 3, 3) with :func:`vposer_rot6d_to_matrix` (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vposer_rot6d_to_matrix(x.reshape(x.shape[0], -1, 6))


class _GaussianHead(nn.Module):
    """Posterior head: ``(mu(h), softplus(logvar(h)))``, the second used as a standard deviation."""

    def __init__(self, num_neurons: int, latent_dim: int):
        super().__init__()
        self.mu = nn.Linear(num_neurons, latent_dim)
        self.logvar = nn.Linear(num_neurons, latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu(h), F.softplus(self.logvar(h))


class VPoser(nn.Module):
    """Common interface of both VPoser versions (:class:`VPoserV1`, :class:`VPoserV2`).

    Poses are the axis-angle numbers of SMPL body joints 1..21, (B, 63) in
    radians. Call ``.eval()`` before using a network for fitting or
    evaluation (batch normalisation then uses its running statistics and
    dropout is off); :func:`load_vposer` returns networks in eval mode. In
    eval mode every method is made of plain differentiable torch operations
    (usable under :mod:`torch.func` transforms).

    Attributes:
        version: 1 or 2 (which official layout the parameter names follow).
        num_neurons: hidden width N.
        latent_dim: latent width L.
        source: where the weights came from (file path, or ``'untrained'``).
        metadata: the ``'fitkit'`` provenance entry of a file written by
            :func:`save_vposer` (else an empty dict).
    """

    version: ClassVar[int] = 0

    def __init__(self, num_neurons: int = 512, latent_dim: int = 32):
        super().__init__()
        if int(num_neurons) < 1 or int(latent_dim) < 1:
            raise ParameterError(f"VPoser: num_neurons and latent_dim must be >= 1, got "
                                 f"{num_neurons}, {latent_dim}")
        self.num_neurons = int(num_neurons)
        self.latent_dim = int(latent_dim)
        self.source = "untrained"
        self.metadata: dict[str, Any] = {}

    # subclasses implement these two
    def _posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode_6d(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 21*6) raw decoder output (before the 6D -> matrix map)."""
        raise NotImplementedError

    @staticmethod
    def _as_pose(body_pose: torch.Tensor) -> torch.Tensor:
        if body_pose.ndim == 3 and tuple(body_pose.shape[1:]) == (NUM_JOINTS, 3):
            body_pose = body_pose.reshape(body_pose.shape[0], POSE_DIM)
        if body_pose.ndim != 2 or body_pose.shape[1] != POSE_DIM:
            raise ParameterError(f"VPoser: expected body poses of shape (B, {POSE_DIM}) (axis-angle of "
                                 f"SMPL joints 1..21), got {tuple(body_pose.shape)}")
        return body_pose

    def _check_latent(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ParameterError(f"VPoser: expected latent codes of shape (B, {self.latent_dim}), "
                                 f"got {tuple(z.shape)}")
        return z

    def encode(self, body_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 63) axis-angle -> posterior mean (B, L) and standard deviation (B, L)."""
        return self._posterior(self._as_pose(body_pose))

    def encode_mean(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B, 63) axis-angle -> (B, L) posterior mean."""
        return self.encode(body_pose)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) latent codes -> (B, 21, 3, 3) rotation matrices of joints 1..21."""
        out = self._decode_6d(self._check_latent(z))
        return vposer_rot6d_to_matrix(out.reshape(z.shape[0], NUM_JOINTS, 6))

    def decode_axis_angle(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) latent codes -> (B, 63) axis-angle (angles in [0, pi]), via roma."""
        R = self.decode(z)
        return roma.rotmat_to_rotvec(R).reshape(z.shape[0], POSE_DIM)

    def forward(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B, 63) -> (B, 21, 3, 3): the decoded posterior mean (the pose's reconstruction)."""
        return self.decode(self.encode_mean(body_pose))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 63) axis-angle poses decoded from z ~ N(0, I).

        ``z`` is drawn on the CPU with ``generator`` (default: torch's global
        generator) and moved to the network's device and dtype.
        """
        if int(n) < 1:
            raise ParameterError(f"VPoser.sample: n must be >= 1, got {n}")
        ref = next(self.parameters())
        z = torch.randn(int(n), self.latent_dim, generator=generator, dtype=torch.float64)
        return self.decode_axis_angle(z.to(device=ref.device, dtype=ref.dtype))

    def extra_repr(self) -> str:
        return (f"version={self.version}, num_neurons={self.num_neurons}, latent_dim={self.latent_dim}, "
                f"source={self.source!r}")


class VPoserV1(VPoser):
    """VPoser version 1 (human_body_prior 0.8.5 parameter names; module docstring)."""

    version = 1
    slope = 0.2

    def __init__(self, num_neurons: int = 512, latent_dim: int = 32):
        super().__init__(num_neurons, latent_dim)
        n, d = self.num_neurons, self.latent_dim
        self.bodyprior_enc_bn1 = nn.BatchNorm1d(POSE_DIM)
        self.bodyprior_enc_fc1 = nn.Linear(POSE_DIM, n)
        self.bodyprior_enc_bn2 = nn.BatchNorm1d(n)
        self.bodyprior_enc_fc2 = nn.Linear(n, n)
        self.bodyprior_enc_mu = nn.Linear(n, d)
        self.bodyprior_enc_logvar = nn.Linear(n, d)
        self.dropout = nn.Dropout(p=0.1)
        self.bodyprior_dec_fc1 = nn.Linear(d, n)
        self.bodyprior_dec_fc2 = nn.Linear(n, n)
        self.bodyprior_dec_out = nn.Linear(n, NUM_JOINTS * 6)

    def _posterior(self, x):
        h = self.bodyprior_enc_bn1(x)
        h = F.leaky_relu(self.bodyprior_enc_fc1(h), self.slope)
        h = self.dropout(self.bodyprior_enc_bn2(h))
        h = F.leaky_relu(self.bodyprior_enc_fc2(h), self.slope)
        return self.bodyprior_enc_mu(h), F.softplus(self.bodyprior_enc_logvar(h))

    def _decode_6d(self, z):
        h = self.dropout(F.leaky_relu(self.bodyprior_dec_fc1(z), self.slope))
        h = F.leaky_relu(self.bodyprior_dec_fc2(h), self.slope)
        return self.bodyprior_dec_out(h)


class VPoserV2(VPoser):
    """VPoser version 2 (``V02_05`` parameter names, without the ``vp_model.`` prefix)."""

    version = 2

    def __init__(self, num_neurons: int = 512, latent_dim: int = 32):
        super().__init__(num_neurons, latent_dim)
        n, d = self.num_neurons, self.latent_dim
        self.encoder_net = nn.Sequential(
            nn.Flatten(), nn.BatchNorm1d(POSE_DIM), nn.Linear(POSE_DIM, n), nn.LeakyReLU(),
            nn.BatchNorm1d(n), nn.Dropout(0.1), nn.Linear(n, n), nn.Linear(n, n),
            _GaussianHead(n, d))
        self.decoder_net = nn.Sequential(
            nn.Linear(d, n), nn.LeakyReLU(), nn.Dropout(0.1), nn.Linear(n, n), nn.LeakyReLU(),
            nn.Linear(n, NUM_JOINTS * 6), _Rot6dToMatrix())

    def _posterior(self, x):
        h = x
        for layer in self.encoder_net[:-1]:
            h = layer(h)
        return self.encoder_net[-1](h)

    def _decode_6d(self, z):
        h = z
        for layer in self.decoder_net[:-1]:
            h = layer(h)
        return h


# ---------------------------------------------------------------------------------------
# State dicts and files


def _required_keys(cls: type[VPoser]) -> list[str]:
    """Parameter and buffer names a state dict of ``cls`` must hold (all but BN counters)."""
    return [k for k in cls(2, 1).state_dict() if not k.endswith("num_batches_tracked")]


def _layout_of(keys) -> int | None:
    keys = list(keys)
    if any(k.startswith(("encoder_net.", "decoder_net.")) for k in keys):
        return 2
    if any(k.startswith("bodyprior_") for k in keys):
        return 1
    return None


def vposer_from_state_dict(state_dict: Mapping[str, Any], source: str = "state dict") -> VPoser:
    """A VPoser (eval mode, float32) from a v1 or v2 state dict (``vp_model.`` prefix optional).

    The version is told by the key names (``bodyprior_*``: v1;
    ``encoder_net.*`` / ``decoder_net.*``: v2); N and L come from the weight
    shapes. Entries that are not tensors, and keys outside the network (e.g.
    a Lightning module's other submodules), are ignored.

    Raises:
        ModelFileError: neither layout, missing keys (all named), wrong
            shapes or non-finite values (naming ``source`` and the key).
    """
    if not isinstance(state_dict, Mapping):
        raise ModelFileError(f"{source}: expected a state dict (a mapping of names to tensors), "
                             f"found {type(state_dict).__name__}")
    tensors = {str(k): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    prefix = ""
    if any(k.startswith(V2_PREFIX) for k in tensors):
        prefix = V2_PREFIX
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    version = _layout_of(tensors)
    if version is None:
        found = sorted(tensors)[:8]
        raise ModelFileError(f"{source}: not a VPoser state dict: expected keys 'bodyprior_*' (v1) or "
                             f"'{V2_PREFIX}encoder_net.*' / 'encoder_net.*' (v2); found tensors "
                             f"{found}{' ...' if len(tensors) > 8 else ''}")
    cls: type[VPoser] = VPoserV1 if version == 1 else VPoserV2
    missing = [k for k in _required_keys(cls) if k not in tensors]
    if missing:
        raise ModelFileError(f"{source}: VPoser v{version} state dict is missing key(s) "
                             f"{[prefix + k for k in missing]}")
    first, mu = (("bodyprior_enc_fc1.weight", "bodyprior_enc_mu.weight") if version == 1
                 else ("encoder_net.2.weight", "encoder_net.8.mu.weight"))
    w1, wmu = tensors[first], tensors[mu]
    if w1.ndim != 2 or wmu.ndim != 2 or w1.shape[1] != POSE_DIM:
        raise ModelFileError(f"{source}: '{prefix + first}' has shape {tuple(w1.shape)} and "
                             f"'{prefix + mu}' {tuple(wmu.shape)}; expected (N, {POSE_DIM}) and (L, N)")
    model = cls(int(w1.shape[0]), int(wmu.shape[0]))
    full = model.state_dict()
    for key, ref in full.items():
        if key not in tensors:  # an optional BN counter
            continue
        value = tensors[key]
        if tuple(value.shape) != tuple(ref.shape):
            raise ModelFileError(f"{source}: '{prefix + key}' has shape {tuple(value.shape)}, expected "
                                 f"{tuple(ref.shape)} (N = {model.num_neurons}, L = {model.latent_dim})")
        if ref.dtype.is_floating_point:
            if not value.dtype.is_floating_point or not bool(torch.isfinite(value).all()):
                raise ModelFileError(f"{source}: '{prefix + key}' is not a finite floating-point tensor")
            full[key] = value.detach().to(device="cpu", dtype=ref.dtype).clone()
        else:
            full[key] = value.detach().to(device="cpu", dtype=ref.dtype).clone()
    model.load_state_dict(full)
    model.source = source
    return model.eval()


class _InertObject:
    """Stand-in for a class named in a checkpoint that fitkit does not trust (or cannot import).

    The restricted unpickler may create it and hand it constructor arguments
    and state; it ignores them all and has no other behaviour.
    """

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _InertMapping:
    """Like :class:`_InertObject` for pickled dict subclasses (``dotmap.DotMap``, ...): it
    becomes an empty ``collections.OrderedDict`` (the only non-dict type whose items the
    restricted unpickler will fill), keeping no behaviour of the original class."""

    def __new__(cls, *args, **kwargs):
        return collections.OrderedDict()


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+) was not an allowed global")
_MAX_STAND_INS = 64


def _unsafe_globals(path: Path, exc: BaseException | None) -> list[str]:
    names: list[str] = []
    try:
        names += [str(n) for n in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))]
    except Exception:  # noqa: BLE001 - not a zip checkpoint (legacy or corrupt): use the message
        pass
    if exc is not None:
        names += _UNSAFE_GLOBAL.findall(str(exc))
    return list(dict.fromkeys(n for n in names if "." in n))


def _torch_load(path: Path, stand_ins: list[str], kind: type | None):
    if not stand_ins:
        return torch.load(path, map_location="cpu", weights_only=True)
    with torch.serialization.safe_globals([(kind, name) for name in stand_ins]):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: PathLike) -> Any:
    """``torch.load(path, map_location='cpu', weights_only=True)``, tolerating pickled objects
    of untrusted classes (e.g. Lightning hyper-parameters as a ``dotmap.DotMap``).

    A plain weights-only load is tried first. If the file names globals that
    the weights-only unpickler refuses, they are listed (statically, with
    ``torch.serialization.get_unsafe_globals_in_checkpoint``, or from the
    refusal message for legacy files) and the load is retried with each of
    them mapped to an inert stand-in inside ``torch.serialization.safe_globals``:
    first :class:`_InertObject` (plain objects), then :class:`_InertMapping`
    (dict subclasses). The original classes are never imported or called;
    such objects come back as inert stand-ins (dict subclasses as plain
    ``OrderedDict`` s of their items). Globals from modules torch blocks
    outright (e.g. ``os``, ``sys``) are never admitted.

    Raises:
        ModelFileError: unreadable, corrupt or still refused (naming the file).
    """
    path = Path(path)
    stand_ins: list[str] = []
    last: BaseException | None = None
    for _ in range(_MAX_STAND_INS):
        for kind in ((None,) if not stand_ins else (_InertObject, _InertMapping)):
            try:
                return _torch_load(path, stand_ins, kind)
            except FileNotFoundError:
                raise PriorFileNotFoundError(f"{path}: VPoser weights not found") from None
            except Exception as exc:  # noqa: BLE001 - any failure is reported as a bad file
                last = exc
        new = [n for n in _unsafe_globals(path, last) if n not in stand_ins]
        if not new:
            break
        stand_ins += new
    extra = f"; objects of {stand_ins} were replaced by inert stand-ins" if stand_ins else ""
    raise ModelFileError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or not a "
                         f"torch.save file): {_reason(last)}{extra}")


def _reason(exc: BaseException | None) -> str:
    """The informative part of a torch.load error, on one line."""
    if exc is None:
        return "unknown error"
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # drop torch's generic advice around the cause
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def load_vposer(path: PathLike) -> VPoser:
    """Read VPoser weights: an official v1 ``.pt``, v2 ``.ckpt``, or a file from :func:`save_vposer`.

    ``path`` may contain ``~`` and environment variables; a relative path is
    looked for in the current folder, then in the fitkit checkout. Accepted
    contents: a state dict (v1: ``bodyprior_*`` keys), or a dict whose
    ``'state_dict'`` entry is one (v2: ``vp_model.encoder_net.*`` ...; the
    prefix is optional). Read with :func:`read_checkpoint` (never an
    unrestricted ``torch.load``).

    Returns:
        The network (v1 or v2 class), float32, on the CPU, in eval mode, with
        ``source`` = the resolved path and ``metadata`` = the file's
        ``'fitkit'`` entry (empty for official files).
    Raises:
        PriorFileNotFoundError: no such file.
        ModelFileError: corrupt file or wrong layout (naming the file and the missing keys).
    """
    resolved = resolve_weight_path(path, "VPoser weights", _HINT)
    loaded = read_checkpoint(resolved)
    if not isinstance(loaded, Mapping):
        raise ModelFileError(f"{resolved}: expected a dict (a state dict, or a checkpoint with a "
                             f"'state_dict' entry), found {type(loaded).__name__}")
    state = loaded
    if "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        state = loaded["state_dict"]
    model = vposer_from_state_dict(state, source=str(resolved))
    meta = loaded.get("fitkit") if state is not loaded else None
    model.metadata = dict(meta) if isinstance(meta, Mapping) else {}
    return model


def save_vposer(path: PathLike, model: VPoser, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` so that :func:`load_vposer` (and human_body_prior's v2 loader) reads it.

    Layout (the official v2 checkpoint's)::

        {'state_dict': {'vp_model.' + name: tensor, ...},
         'fitkit': {'format': 'vposer', 'version': 2, 'num_neurons': N, 'latent_dim': L,
                    'num_joints': 21, 'torch': torch.__version__, **extra}}

    A :class:`VPoserV1` network is written with its v1 names and no prefix
    (the v1 architecture has no v2 equivalent). The file is written
    atomically (parent folders created); tensors are saved on the CPU.

    Args:
        extra: provenance (data, command, seed, metrics, ...): str, int,
            float, bool, None, lists and dicts only, so the file loads with
            ``weights_only=True``.
    Returns:
        The path written.
    """
    if not isinstance(model, VPoser):
        raise ParameterError(f"save_vposer: expected a VPoser network, got {type(model).__name__}")
    prefix = V2_PREFIX if model.version == 2 else ""
    state = {prefix + k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "vposer", "version": model.version, "num_neurons": model.num_neurons,
            "latent_dim": model.latent_dim, "num_joints": NUM_JOINTS, "torch": str(torch.__version__)}
    meta.update(plain_metadata(dict(extra or {}), "extra"))
    path = expand(path)
    with atomic_write(path, "wb") as handle:
        torch.save({"state_dict": state, "fitkit": meta}, handle)
    return path


# ---------------------------------------------------------------------------------------
# The term


class VPoserLatent(PoseLatent):
    """``body_pose = [decode(z), initial hand joints]`` for the ``vposer`` term in latent mode.

    ``encode`` takes the posterior mean of the first 63 numbers; ``decode``
    appends, for rows ``index``, the initial values of the joints VPoser does
    not cover (SMPL's hands: body_pose numbers 63..68), which therefore stay
    fixed while the latent is optimized.
    """

    def __init__(self, prior: "VPoserPrior"):
        self.prior = prior
        self.dim = prior.net.latent_dim

    def encode(self, body_pose: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        net = self.prior._for(body_pose.device, body_pose.dtype)
        return in_row_blocks(net.encode_mean, body_pose[:, :POSE_DIM])

    def decode(self, z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        net = self.prior._for(z.device, z.dtype)
        pose = in_row_blocks(net.decode_axis_angle, z)
        rest = self.prior._rest
        if rest is None:
            raise ParameterError("vposer: setup(ctx) must run before the latent pose is decoded "
                                 "(it keeps the initial values of the joints VPoser does not cover)")
        if rest.shape[1] == 0:
            return pose
        return torch.cat([pose, rest.index_select(0, index).to(pose)], dim=1)

    def __repr__(self) -> str:
        return f"VPoserLatent(dim={self.dim})"


@register_term("vposer")
class VPoserPrior(Term):
    """VPoser pose prior on the first 63 numbers of ``body_pose`` (SMPL joints 1..21).

    Modes:

    - ``'latent'`` (SMPLify-X): :meth:`latent` returns a :class:`VPoserLatent`,
      so a stage that frees ``body_pose`` optimizes the code z (Adam or
      L-BFGS; Levenberg–Marquardt refuses latent stages). Residuals (B, L):
      the code z (``batch.params['pose_latent']``) while one is optimized,
      else the encoder mean of the current pose (e.g. in a stage that keeps
      the pose fixed). Energy ``||z||^2``.
    - ``'encoder'``: the pose stays axis-angle; residuals (B, L) = the
      encoder mean ``mu(body_pose[:, :63])``, energy ``||mu||^2``. Works
      with every solver (Levenberg–Marquardt differentiates it in forward mode).

    Joints after 21 (SMPL's hands) are not constrained; in latent mode they
    keep their initial values.

    The network is evaluated on the batch padded to whole blocks of 32 rows,
    its products multiplied block by block (:mod:`fitkit.priors.row_blocks`),
    so that a frame's result does not depend on the other frames of its batch.

    Args:
        path: weights file (see :func:`load_vposer`); default
            ``priors/open_vposer.pt``. Ignored when ``model`` is given.
        mode: ``'latent'`` (default) or ``'encoder'``.
        model: a :class:`VPoser` network instead of a file (not from recipes).
    """

    kind = "prior"

    def __init__(self, path: PathLike | None = None, mode: str = "latent", model: VPoser | None = None):
        if mode not in ("latent", "encoder"):
            raise ParameterError(f"vposer: mode must be 'latent' or 'encoder', got {mode!r}")
        if model is not None:
            if not isinstance(model, VPoser):
                raise ParameterError(f"vposer: 'model' must be a VPoser network, got {type(model).__name__}")
            self.path = None
            self.net = model
        else:
            self.net = load_vposer(path if path is not None else DEFAULT_VPOSER_PATH)
            self.path = Path(self.net.source)
        self.mode = mode
        self._cast: dict[tuple, VPoser] = {}
        self._rest: torch.Tensor | None = None
        self._latent = VPoserLatent(self) if mode == "latent" else None

    def needs(self) -> Needs:
        return Needs(params=("body_pose",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def setup(self, ctx) -> None:
        width = int(ctx.model.body_pose_dim)
        if width < POSE_DIM or width % 3:
            raise ParameterError(f"vposer: the body model's body_pose has {width} numbers; VPoser needs "
                                 f"at least {POSE_DIM} (axis-angle of SMPL joints 1..21) and a multiple of 3")
        init = ctx.init.get("body_pose") if ctx.init is not None else None
        device = torch.device(ctx.device)
        if init is not None:
            self._rest = init[:, POSE_DIM:width].detach().to(device=device, dtype=ctx.dtype)
        else:
            self._rest = None
        self._for(device, ctx.dtype)

    def _for(self, device: torch.device, dtype: torch.dtype) -> VPoser:
        """The network on ``device`` in ``dtype``, eval mode, frozen (cast once and cached), with
        aligned inputs (:func:`fitkit.priors.row_blocks.frozen_block_copy`)."""
        return frozen_block_copy(self._cast, self.net, device, dtype)

    def latent(self) -> PoseLatent | None:
        return self._latent

    def residuals(self, batch: Batch) -> torch.Tensor:
        if self.mode == "latent":
            z = batch.params.get(LATENT_KEY)
            if z is not None and z.shape[-1] == self.net.latent_dim:
                return z
        pose = batch.params["body_pose"]
        return in_row_blocks(self._for(pose.device, pose.dtype).encode_mean, pose[:, :POSE_DIM])

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path is not None else "model=<VPoser>"
        return (f"VPoserPrior({where}, mode={self.mode!r}, v{self.net.version}, "
                f"N={self.net.num_neurons}, L={self.net.latent_dim})")
