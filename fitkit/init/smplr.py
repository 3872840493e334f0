"""SMPLR (seed 003): SMPL pose and shape from 3D joints and surface landmarks.

Three small networks, all MLPs:

* a **denoising autoencoder** (DAE, Sec. 3.3) per input keypoint set: noisy,
  possibly incomplete 3D keypoints (or 2D ones with depth set to 0, Sec.
  4.4.2) -> the 42 points ``JL`` (24 joints + 18 landmarks,
  :mod:`fitkit.init.landmarks`), centred on the midpoint of the hips;
* the **pose network** Omega: the normalized relative vectors N of ``JL``
  along its tree (Eq. 1) -> the 24 joint rotations (global orientation
  included), as 6D rotations (Zhou et al.) turned into matrices;
* the **shape network** Psi: the bone-length deltas B against the template
  (Eq. 2-3) and a gender value (-1 male, +1 female, 0 unknown; the open
  body's gender is a direction in shape space) -> betas.

Training (:mod:`fitkit.init.smplr_train`): L1 on rotations and betas first,
then fine-tuning through the body model with L1 on ``JL`` (L_SMPL). At
inference the optional Procrustes step (ALL_Proc, Sec. 4.5) rotates the
result so that its ``JL`` best matches the DAE's.

Input conventions: camera-aligned axes (x right, y down, z forward), meters,
any origin (the input is centred on the hips, or on the observed points
when a hip is missing; the output on its own hips). Keypoints with
confidence 0 are missing; the DAE sees a 0/1 mask beside the coordinates.
"""
from __future__ import annotations

from typing import Optional

import roma
import torch
from torch import nn

from fitkit.body.keypoint_formats import get_format
from fitkit.errors import ModelFileError, ParameterError
from fitkit.fitting.rotations import interleaved_rot6d_to_matrix
from fitkit.init.landmarks import JL_NAMES, JL_PARENTS, NUM_JL, joints_and_landmarks
from fitkit.priors.files import resolve_weight_path
from fitkit.shipped import weight_path

__all__ = ["SMPLR", "load_smplr", "DEFAULT_SMPLR_PATH", "JL_FORMAT", "hip_indices", "hip_centre", "input_centre",
           "relative_vectors", "pose_features", "shape_features", "rot6d_to_matrix"]

DEFAULT_SMPLR_PATH = "initializers/open_smplr.pt"
#: the DAE input name for SMPLR's own 42 points
JL_FORMAT = "jl42"

_PARENTS = torch.tensor(JL_PARENTS[1:])


def hip_indices(fmt: str) -> tuple[int, int]:
    """(left, right) hip indices of a keypoint set (``'jl42'`` or a registered format)."""
    names = JL_NAMES if fmt == JL_FORMAT else get_format(fmt).names
    try:
        return names.index("left_hip"), names.index("right_hip")
    except ValueError:
        raise ParameterError(f"keypoint set {fmt!r} has no left_hip/right_hip; SMPLR centres on the hips") from None


def hip_centre(points: torch.Tensor, fmt: str) -> torch.Tensor:
    """(B, 1, 3) midpoint of the hips of (B, K, 3) points."""
    lh, rh = hip_indices(fmt)
    return 0.5 * (points[:, lh] + points[:, rh])[:, None]


def input_centre(points: torch.Tensor, conf: torch.Tensor, fmt: str) -> torch.Tensor:
    """(B, 1, 3) where a DAE input is centred: the hip midpoint when both hips
    are observed, else the mean of the observed points (the DAE's output is
    re-centred on its own hips, so this only normalizes the input)."""
    lh, rh = hip_indices(fmt)
    seen = (conf > 0).to(points.dtype)
    mean = (points * seen[..., None]).sum(1, keepdim=True) / seen.sum(1).clamp(min=1)[:, None, None]
    both = (seen[:, lh] * seen[:, rh] > 0)[:, None, None]
    return torch.where(both, hip_centre(points, fmt), mean)


def relative_vectors(jl: torch.Tensor) -> torch.Tensor:
    """(B, 41, 3) JL_i - JL_parent(i) for the 41 non-root points of (B, 42, 3)."""
    return jl[:, 1:] - jl[:, _PARENTS.to(jl.device)]


def pose_features(jl: torch.Tensor) -> torch.Tensor:
    """(B, 123) Eq. 1: unit relative vectors N."""
    d = relative_vectors(jl)
    return (d / d.norm(dim=-1, keepdim=True).clamp(min=1e-6)).flatten(1)


def shape_features(jl: torch.Tensor, template_lengths: torch.Tensor) -> torch.Tensor:
    """(B, 41) Eq. 2-3: bone lengths minus the template's."""
    return relative_vectors(jl).norm(dim=-1) - template_lengths


#: the pose head's 6D layout (row-major (3, 2), as DaNet's)
rot6d_to_matrix = interleaved_rot6d_to_matrix


class _MLP(nn.Module):
    """Linear -> ReLU blocks with residual connections between equal widths."""

    def __init__(self, d_in: int, width: int, depth: int, d_out: int, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, d_out)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        for block in self.blocks:
            h = h + torch.relu(block(self.drop(h)))
        return self.out(h)


class DenoisingAutoencoder(nn.Module):
    """Keypoints (B, K, 3) + mask (B, K) + 2D flag (B,) -> JL (B, 42, 3), hip-centred.

    Encoder 2 layers, decoder 2 layers with skip connections from the
    encoder (Sec. 3.3); dropout on the input and after the encoder. A linear
    map from the input points straight to the output, starting as "copy the
    keypoint of the same name", carries what needs no cleaning, so the MLP
    learns the correction (without it the DAE was worse
    than its input: 59 mm error on clean points after 2,000 steps).
    """

    def __init__(self, input_names: tuple[str, ...], width: int = 512, bottleneck: int = 256):
        super().__init__()
        input_names = tuple(input_names)
        num_inputs = len(input_names)
        self.num_inputs = num_inputs
        self.drop_in = nn.Dropout(0.2)
        self.enc1 = nn.Linear(num_inputs * 4 + 1, width)
        self.enc2 = nn.Linear(width, bottleneck)
        self.drop_mid = nn.Dropout(0.2)
        self.dec1 = nn.Linear(bottleneck, width)
        self.dec2 = nn.Linear(width, NUM_JL * 3)
        self.skip = nn.Linear(num_inputs * 3, NUM_JL * 3)
        with torch.no_grad():                       # start as "copy the point of the same name"
            self.skip.weight.zero_()
            self.skip.bias.zero_()
            for j, name in enumerate(JL_NAMES):
                if name in input_names:
                    i = input_names.index(name)
                    for c in range(3):
                        self.skip.weight[3 * j + c, 3 * i + c] = 1.0

    def forward(self, points: torch.Tensor, mask: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        seen = (points * mask[..., None]).flatten(1)
        x = torch.cat([seen, mask, flat[:, None]], dim=1)
        h1 = torch.relu(self.enc1(self.drop_in(x)))
        h2 = torch.relu(self.enc2(h1))
        d1 = torch.relu(self.dec1(self.drop_mid(h2))) + h1
        return (self.dec2(d1) + self.skip(seen)).reshape(-1, NUM_JL, 3)


class SMPLR(nn.Module):
    """The three SMPLR networks and the template bone lengths.

    Attributes:
        daes: input keypoint set name -> :class:`DenoisingAutoencoder`
            (``'jl42'`` = the 42 SMPLR points themselves).
        pose_net: N (B, 123) -> 24 6D rotations (B, 144).
        shape_net: [B (B, 41), gender (B, 1)] -> betas (B, num_betas).
        template_lengths: (41,) bone lengths of the rest-pose template (Eq. 2).
    """

    def __init__(self, input_formats=(JL_FORMAT,), num_betas: int = 10, template_lengths=None):
        super().__init__()
        names = {f: (JL_NAMES if f == JL_FORMAT else get_format(f).names) for f in input_formats}
        self.daes = nn.ModuleDict({f: DenoisingAutoencoder(n) for f, n in names.items()})
        self.pose_net = _MLP(123, 512, 3, 24 * 6)
        self.shape_net = _MLP(42, 256, 2, num_betas)
        self.num_betas = num_betas
        tl = torch.zeros(41) if template_lengths is None else torch.as_tensor(template_lengths, dtype=torch.float32)
        self.register_buffer("template_lengths", tl)

    @property
    def input_formats(self) -> list[str]:
        return list(self.daes.keys())

    def denoise(self, points: torch.Tensor, conf: torch.Tensor, fmt: str, flat: bool = False) -> torch.Tensor:
        """JL (B, 42, 3), centred on its hips, from keypoints of set ``fmt``.

        Args:
            points: (B, K, 3) meters, camera-aligned axes; for ``flat`` (2D
                input lifted to 3D) the third coordinate is ignored.
            conf: (B, K) confidences; > 0 means observed.
            fmt: a key of :attr:`daes`.
            flat: the input is 2D (x, y in meters at the body's depth).
        """
        if fmt not in self.daes:
            raise ParameterError(f"SMPLR has no denoiser for keypoint set {fmt!r}; it has {self.input_formats} "
                                 "(tools/train_smplr.py --input-formats trains more)")
        mask = (conf > 0).to(points.dtype)
        x = (points - input_centre(points, conf, fmt)) * mask[..., None]
        if flat:
            x = torch.cat([x[..., :2], torch.zeros_like(x[..., 2:])], dim=-1)
        flag = torch.full((points.shape[0],), float(flat), dtype=points.dtype, device=points.device)
        jl = self.daes[fmt](x, mask, flag)
        return jl - hip_centre(jl, JL_FORMAT)

    def regress(self, jl: torch.Tensor, gender: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Rotations and betas from JL (B, 42, 3).

        Returns ``rotmats`` (B, 24, 3, 3) (root first, then SMPL body joints)
        and ``betas`` (B, num_betas).
        """
        B = jl.shape[0]
        g = torch.zeros(B, 1, dtype=jl.dtype, device=jl.device) if gender is None else gender.reshape(B, 1).to(jl)
        rot = rot6d_to_matrix(self.pose_net(pose_features(jl)).reshape(B, 24, 6))
        betas = self.shape_net(torch.cat([shape_features(jl, self.template_lengths), g], dim=1))
        return {"rotmats": rot, "betas": betas}

    @staticmethod
    def to_smplx(rotmats: torch.Tensor, betas: torch.Tensor) -> dict[str, torch.Tensor]:
        """smplx-named axis-angle parameters from :meth:`regress`'s output."""
        aa = roma.rotmat_to_rotvec(rotmats)
        return {"global_orient": aa[:, 0], "body_pose": aa[:, 1:].flatten(1), "betas": betas}

    def predict(self, model, points: torch.Tensor, conf: torch.Tensor, fmt: str, *, flat: bool = False,
                gender: Optional[torch.Tensor] = None, procrustes: bool = False) -> dict[str, torch.Tensor]:
        """smplx parameters (no translation) of bodies seen as keypoints.

        Args:
            model: the body model (its rest pose must match the training one).
            points, conf, fmt, flat: as in :meth:`denoise`.
            gender: (B,) -1 male, +1 female, 0 unknown; None: unknown.
            procrustes: rotate the result so its JL best matches the
                denoised JL (ALL_Proc, Sec. 4.5; rotation only: scale belongs
                to the shape, translation to the camera).
        Returns:
            ``global_orient`` (B, 3), ``body_pose`` (B, 69), ``betas`` (B,
            num_betas), and ``jl`` (B, 42, 3) the denoised points.
        """
        with torch.no_grad():
            jl = self.denoise(points, conf, fmt, flat=flat)
            out = self.regress(jl, gender)
            rot = out["rotmats"]
            if procrustes:
                params = self.to_smplx(rot, out["betas"])
                fitted = joints_and_landmarks(model, params["global_orient"], params["body_pose"], params["betas"])
                fitted = fitted - hip_centre(fitted, JL_FORMAT)
                R, _ = roma.rigid_points_registration(fitted, jl)
                rot = torch.cat([(R @ rot[:, 0])[:, None], rot[:, 1:]], dim=1)
            params = self.to_smplx(rot, out["betas"])
        params["jl"] = jl
        return params


def load_smplr(path=None, *, device=None, dtype=torch.float32) -> SMPLR:
    """SMPLR from a weight file written by :mod:`fitkit.init.smplr_train`.

    Args:
        path: default :data:`DEFAULT_SMPLR_PATH` (the shipped open weights,
            :func:`fitkit.shipped.weight_path`); relative paths are looked up in
            the current folder, then among the shipped weights.
    Raises:
        ModelFileError naming the file when it is missing or not SMPLR weights.
    """
    if path is None:
        p = weight_path(DEFAULT_SMPLR_PATH)
    else:
        p = resolve_weight_path(path, "SMPLR weights", hint="tools/train_smplr.py writes them")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on corrupt files
        raise ModelFileError(f"{p}: cannot read SMPLR weights ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("kind", "input_formats", "num_betas", "state_dict") if k not in ckpt]
    if missing or ckpt.get("kind") != "fitkit.smplr/1":
        raise ModelFileError(f"{p}: not a fitkit SMPLR weight file (kind {ckpt.get('kind')!r}, missing {missing})")
    net = SMPLR(tuple(ckpt["input_formats"]), num_betas=int(ckpt["num_betas"]))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ModelFileError(f"{p}: SMPLR weights do not match the architecture ({exc})") from None
    net.source = str(p)
    net.metadata = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return net.eval().to(device=device, dtype=dtype)


def checkpoint(net: SMPLR, **metadata) -> dict:
    """The dict :func:`load_smplr` reads."""
    return {"kind": "fitkit.smplr/1", "input_formats": net.input_formats, "num_betas": net.num_betas,
            "state_dict": {k: v.detach().cpu().float() for k, v in net.state_dict().items()}, **metadata}
