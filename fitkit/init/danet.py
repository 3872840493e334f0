"""DaNet-style initializer: a small regressor from a DensePose-style IUV map to SMPL
parameters (seed 004, "Learning 3D Human Shape and Pose from Dense Body Parts",
Sec. 4.1-4.2), trained on IUV maps rendered from fitkit's open body. In fitkit it
only gives an optimization its starting point (``init: {type: danet}``).

Pipeline (:meth:`DaNetInit.predict_full`):

1. Crop: the square box around the IUV foreground, scaled by 1.2, resampled
   (nearest) to R x R = 64 x 64 (:func:`fitkit.init.danet_data.foreground_boxes`,
   :func:`~fitkit.init.danet_data.crop_iuv`), in DaNet's per-part layout of
   73 channels (background, 24 part indicators, 24 U, 24 V;
   :func:`~fitkit.init.danet_data.iuv_to_parts`).
2. Global stream (:class:`DaNet`): a 5-layer CNN over the crop (BatchNorm, ReLU). A 1x1
   convolution at 16 x 16 gives 24 joint heatmaps whose soft-argmax are the
   joints' 2D positions in the crop; a fully connected layer gives the
   weak-perspective crop camera (s, tx, ty) (``s = exp(.)``), 10 betas and the
   global orientation (6D, Zhou et al.; Gram-Schmidt to a rotation matrix).
3. Local streams: for each body joint k = 1..23 an STN crop of the per-part
   input (an axis-aligned ``affine_grid``-style sampling grid, built directly,
   and ``grid_sample``, bilinear), centred on the joint's 2D position, side
   ``s_k = alpha_k * max(w_bbox, h_bbox) + delta`` (Eq. 2; fixed alpha_k per
   joint, :data:`ROI_ALPHA`; in the crop max(w_bbox, h_bbox) is 2 / 1.2
   normalized units), resampled to r x r = 16 x 16. The crop is taken after a
   1x1 bias-free stem (73 -> 16 channels), which commutes with the sampling.
   One small CNN shared by the 23 crops (batched together), then a per-joint
   two-layer head (einsum over per-joint weights) -> 6D rotation of each joint
   relative to its parent (SMPL's body_pose). In place of the paper's
   aggregated refinement (Sec. 4.3, not implemented) each joint's head also
   sees a 32-d projection of the global stream's feature (the body's
   orientation, which a joint's crop alone cannot tell).
4. The crop camera becomes a full-image translation with
   :func:`fitkit.camera.crop_cam_to_full_translation` (box centre and side in
   full-image pixels, focal (fx + fy) / 2 and principal point of K).

At training time the joint crops are centred on ground-truth 2D joints with
random jitter (:mod:`fitkit.init.danet_train`); at inference on the predicted
ones. Weight files: ``{'format': 'fitkit.danet/1', 'config', 'state_dict',
'fitkit': provenance}``, read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Mapping, Optional, Union

import roma
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fitkit.camera import check_intrinsics, crop_cam_to_full_translation, facing_camera_orient
from fitkit.errors import ModelFileError, ParameterError
from fitkit.fitting.rotations import interleaved_rot6d_to_matrix, matrix_to_interleaved_rot6d
from fitkit.init.danet_data import (CROP_SCALE, DEFAULT_RES, NUM_CHANNELS, check_iuv, crop_iuv,
                                    foreground_boxes, iuv_to_parts)
from fitkit.priors.files import expand, plain_metadata, resolve_weight_path
from fitkit.io.atomic import atomic_write
from fitkit.shipped import weight_path

__all__ = ["DaNet", "DaNetInit", "load_danet", "save_danet", "rot6d_to_rotmat", "rotmat_to_rot6d",
           "DEFAULT_WEIGHTS", "FORMAT", "ROI_ALPHA", "ROI_DELTA"]

PathLike = Union[str, os.PathLike]

FORMAT = "fitkit.danet/1"
#: The committed weights, relative to the fitkit checkout (found via resolve_weight_path).
DEFAULT_WEIGHTS = "initializers/open_danet.pt"
_HINT = "train them with `python tools/train_danet.py` (see initializers/open_danet.md)"
_PAYLOAD_KEYS = ("format", "config", "state_dict")

#: Eq. 2's alpha_k for SMPL joints 1..23 (fraction of max(w_bbox, h_bbox)): large enough that the
#: crop of a joint holds the segment it rotates (thigh, shin, upper arm, ...).
ROI_ALPHA = (0.5, 0.5, 0.35, 0.5, 0.5, 0.35, 0.25, 0.25, 0.35, 0.2, 0.2, 0.3,
             0.3, 0.3, 0.25, 0.4, 0.4, 0.35, 0.35, 0.2, 0.2, 0.2, 0.2)
#: Eq. 2's delta, normalized crop units (the crop is 2 wide).
ROI_DELTA = 0.05
NUM_BODY_JOINTS = 23


#: the heads' 6D layout (row-major (3, 2)); the names are kept for this module's callers
rot6d_to_rotmat = interleaved_rot6d_to_matrix
rotmat_to_rot6d = matrix_to_interleaved_rot6d


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DaNet(nn.Module):
    """The network: global stream (camera, betas, global orientation, 2D joints) and
    23 local streams (joint rotations). See the module docstring.

    Args:
        res: side R of the input crop (pixels, divisible by 16).
        local_res: side r of each joint's crop (pixels, divisible by 4).
        stem: channels of the local streams' 1x1 stem over the 73 input channels.
        width: channels of the first global 3x3 convolution (the next are 2, 2, 3, 3 times it).
        local_width: channels of the local 3x3 convolutions (1 and 2 times it).
        feat: width of the global feature.
        local_feat: width of each joint's local feature.
        context: width of the global context given to each joint's head (0: none).
        hidden: hidden width of the per-joint heads.
        crop_scale: crop side / max(w_bbox, h_bbox) (Eq. 2 in normalized crop units).
        alpha, delta: Eq. 2's constants (23 alphas for joints 1..23).

    The local crops are taken from the output of the local streams' stem, a 1x1
    convolution without bias over the 73 channels: bilinear sampling commutes with it, so
    this is the STN crop of the 73-channel input followed by the stem, at a fraction of
    the cost (the 16 stem channels are sampled instead of 73). Convolutions run on
    channels-last tensors (faster on CPUs).
    """

    def __init__(self, res: int = DEFAULT_RES, local_res: int = 16, stem: int = 16, width: int = 32,
                 local_width: int = 24, feat: int = 128, local_feat: int = 96, context: int = 32,
                 hidden: int = 48, crop_scale: float = CROP_SCALE, alpha=ROI_ALPHA, delta: float = ROI_DELTA):
        super().__init__()
        if res % 16 or local_res % 4:
            raise ParameterError(f"res must be divisible by 16 and local_res by 4, got {res}, {local_res}")
        if len(alpha) != NUM_BODY_JOINTS:
            raise ParameterError(f"alpha must have {NUM_BODY_JOINTS} values (joints 1..23), got {len(alpha)}")
        self.config = dict(res=res, local_res=local_res, stem=stem, width=width, local_width=local_width,
                           feat=feat, local_feat=local_feat, context=context, hidden=hidden,
                           crop_scale=float(crop_scale), alpha=[float(a) for a in alpha], delta=float(delta))
        w, lw, J = width, local_width, NUM_BODY_JOINTS
        self.g1 = _conv(NUM_CHANNELS, w, 3, 2)  # R/2
        self.g2 = _conv(w, 2 * w, 3, 2)         # R/4
        self.g3 = _conv(2 * w, 2 * w, 3, 1)     # R/4
        self.heat = nn.Conv2d(2 * w, 24, 1)     # joint heatmaps at R/4
        self.g4 = _conv(2 * w, 3 * w, 3, 2)     # R/8
        self.g5 = _conv(3 * w, 3 * w, 3, 2)     # R/16
        self.gfc = nn.Sequential(nn.Linear(3 * w * (res // 16) ** 2, feat), nn.ReLU(inplace=True))
        self.ghead = nn.Linear(feat, 3 + 10 + 6)
        self.stem = nn.Conv2d(NUM_CHANNELS, stem, 1, bias=False)
        self.lbn = nn.Sequential(nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        self.l1 = _conv(stem, lw, 3, 2)         # r/2
        self.l2 = _conv(lw, 2 * lw, 3, 2)       # r/4
        self.lfc = nn.Sequential(nn.Linear(2 * lw * (local_res // 4) ** 2, local_feat), nn.ReLU(inplace=True))
        self.ctx = nn.Sequential(nn.Linear(feat, context), nn.ReLU(inplace=True)) if context else None
        din = local_feat + context
        self.w1 = nn.Parameter(torch.randn(J, din, hidden) * (2.0 / din) ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(J, hidden))
        self.w2 = nn.Parameter(torch.randn(J, hidden, 6) * 1e-3)
        self.b2 = nn.Parameter(rotmat_to_rot6d(torch.eye(3)).repeat(J, 1))
        side = torch.tensor(alpha, dtype=torch.float32) * (2.0 / crop_scale) + delta
        self.register_buffer("roi_side", side, persistent=False)  # (23,) normalized units
        g = (torch.arange(res // 4, dtype=torch.float32) * 2 + 1) / (res // 4) - 1  # cell centres
        self.register_buffer("heat_grid", g, persistent=False)
        with torch.no_grad():  # start from s = 1, zero betas, the facing-camera orientation
            self.ghead.weight.mul_(1e-2)
            self.ghead.bias.zero_()
            face = roma.rotvec_to_rotmat(facing_camera_orient(1))[0]
            self.ghead.bias[13:] = rotmat_to_rot6d(face)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_mean_pose(self, body_pose: Tensor) -> None:
        """Start the per-joint heads at a (69,) axis-angle pose (their bias)."""
        with torch.no_grad():
            R = roma.rotvec_to_rotmat(body_pose.reshape(NUM_BODY_JOINTS, 3).to(self.b2))
            self.b2.copy_(rotmat_to_rot6d(R))

    def joint_crops(self, x: Tensor, centers: Tensor) -> Tensor:
        """STN crops around the body joints (Eq. 2).

        Args:
            x: (B, C, R, R) maps aligned with the input crop.
            centers: (B, 23, 2) crop centres (joints 1..23) in normalized crop coordinates.
        Returns:
            (B * 23, C, r, r), sample-major; bilinear, zero outside the crop.
        """
        B, J, r = x.shape[0], NUM_BODY_JOINTS, self.config["local_res"]
        lin = (torch.arange(r, device=x.device, dtype=x.dtype) * 2 + 1) / r - 1  # output cell centres
        half = (self.roi_side.to(x.dtype) / 2)[None, :, None]  # (1, 23, 1)
        gx = centers[..., :1].to(x.dtype) + half * lin  # (B, 23, r)
        gy = centers[..., 1:].to(x.dtype) + half * lin
        grid = torch.stack([gx[:, :, None, :].expand(B, J, r, r), gy[:, :, :, None].expand(B, J, r, r)], -1)
        # one grid per sample with the 23 crops stacked vertically: x is not copied 23 times
        out = F.grid_sample(x, grid.reshape(B, J * r, r, 2), mode="bilinear", padding_mode="zeros",
                            align_corners=False)  # (B, C, 23 r, r)
        return out.reshape(B, -1, J, r, r).transpose(1, 2).reshape(B * J, -1, r, r)

    def forward(self, x: Tensor, roi_centers: Optional[Tensor] = None) -> dict[str, Tensor]:
        """Args:
            x: (B, 73, R, R) per-part input (:func:`fitkit.init.danet_data.iuv_to_parts`).
            roi_centers: (B, 23, 2) centres of the joint crops (normalized crop coordinates,
                joints 1..23), e.g. ground-truth joints with jitter in training; default the
                predicted 2D joints (detached).
        Returns:
            dict: cam (B, 3) (s, tx, ty); betas (B, 10); global_rotmat (B, 3, 3);
            pose_rotmat (B, 23, 3, 3); joints2d (B, 24, 2) normalized crop coordinates.
        """
        if x.dim() != 4 or x.shape[1] != NUM_CHANNELS:
            raise ParameterError(f"x must have shape (B, {NUM_CHANNELS}, R, R), got {tuple(x.shape)}")
        x = x.contiguous(memory_format=torch.channels_last)
        B = x.shape[0]
        h = self.g3(self.g2(self.g1(x)))
        heat = self.heat(h).flatten(2).softmax(-1).reshape(B, 24, *h.shape[-2:])
        grid = self.heat_grid.to(h.dtype)
        joints2d = torch.stack([(heat.sum(2) * grid).sum(-1), (heat.sum(3) * grid).sum(-1)], -1)
        gfeat = self.gfc(self.g5(self.g4(h)).flatten(1))
        out = self.ghead(gfeat)
        cam = torch.cat([out[:, :1].clamp(-4, 4).exp(), out[:, 1:3]], dim=1)
        centers = joints2d[:, 1:].detach() if roi_centers is None else roi_centers
        crops = self.joint_crops(self.stem(x), centers).contiguous(memory_format=torch.channels_last)
        lf = self.lfc(self.l2(self.l1(self.lbn(crops))).flatten(1)).reshape(B, NUM_BODY_JOINTS, -1)
        if self.ctx is not None:
            lf = torch.cat([lf, self.ctx(gfeat)[:, None].expand(-1, NUM_BODY_JOINTS, -1)], dim=-1)
        hid = torch.relu(torch.einsum("bjd,jdh->bjh", lf, self.w1) + self.b1)
        rot6d = torch.einsum("bjh,jhk->bjk", hid, self.w2) + self.b2
        return {"cam": cam, "betas": out[:, 3:13], "global_rotmat": rot6d_to_rotmat(out[:, 13:]),
                "pose_rotmat": rot6d_to_rotmat(rot6d), "joints2d": joints2d}


class DaNetInit(nn.Module):
    """The initializer: a trained :class:`DaNet` and the fallback for empty IUV maps.

    Args:
        net: the network.
        mean_pose: (69,) axis-angle body pose given to samples without foreground
            (default :func:`fitkit.init.mean.mean_body_pose`).
    """

    def __init__(self, net: DaNet, mean_pose: Optional[Tensor] = None):
        super().__init__()
        self.net = net
        if mean_pose is None:
            from fitkit.init.mean import mean_body_pose

            mean_pose = mean_body_pose(1)[0]
        self.register_buffer("mean_pose", mean_pose.reshape(69).float().clone(), persistent=False)

    @property
    def res(self) -> int:
        return self.net.config["res"]

    def _ref(self) -> Tensor:
        return self.net.ghead.weight

    def prepare(self, iuv: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Validated full-image IUV maps -> network input and crop boxes.

        Args:
            iuv: (N, H, W, 3) full-image IUV maps (I 0..24, U, V in [0, 1]).
        Returns:
            x (N, 73, R, R) per-part crops, center (N, 2) and size (N,) of the crop boxes
            (full-image pixels), valid (N,) bool (False: no foreground).
        Raises:
            ParameterError naming ``iuv`` for a wrong shape, dtype or values.
        """
        iuv = check_iuv(iuv, "iuv")
        ref = self._ref()
        iuv = iuv.to(device=ref.device, dtype=ref.dtype)
        center, size, valid = foreground_boxes(iuv, self.net.config["crop_scale"])
        x = iuv_to_parts(crop_iuv(iuv, center, size, self.res))
        return x, center, size, valid

    @torch.no_grad()
    def predict_crop(self, x: Tensor) -> dict[str, Tensor]:
        """Network outputs for per-part crops (eval mode), as axis-angle parameters.

        Args:
            x: (N, 73, R, R).
        Returns:
            dict: global_orient (N, 3), body_pose (N, 69), betas (N, 10), cam (N, 3),
            joints2d (N, 24, 2) (normalized crop coordinates).
        """
        was = self.net.training
        self.net.eval()
        try:
            out = self.net(x)
        finally:
            self.net.train(was)
        n = x.shape[0]
        return {"global_orient": roma.rotmat_to_rotvec(out["global_rotmat"]),
                "body_pose": roma.rotmat_to_rotvec(out["pose_rotmat"]).reshape(n, 69),
                "betas": out["betas"], "cam": out["cam"], "joints2d": out["joints2d"]}

    @staticmethod
    def crop_cam_to_transl(cam: Tensor, center: Tensor, size: Tensor, K: Tensor) -> Tensor:
        """Weak-perspective crop camera -> full-image translation (CLIFF's conversion,
        :func:`fitkit.camera.crop_cam_to_full_translation`).

        Args:
            cam: (N, 3) (s, tx, ty) of the crop (s clamped to >= 1e-3).
            center: (N, 2) crop box centres, full-image pixels.
            size: (N,) crop box sides, pixels.
            K: (N, 3, 3) full-image intrinsics; focal (fx + fy) / 2, principal point K[:, :2, 2]
                (skew ignored).
        Returns:
            (N, 3) transl, meters, camera frame of K.
        """
        K = K.to(cam)
        focal = (K[:, 0, 0] + K[:, 1, 1]) / 2
        cam = torch.cat([cam[:, :1].clamp(min=1e-3), cam[:, 1:]], dim=1)
        return crop_cam_to_full_translation(cam, center.to(cam), size.to(cam), None, focal,
                                            principal_point=K[:, :2, 2])

    @torch.no_grad()
    def predict_parts(self, x: Tensor, center: Tensor, size: Tensor, valid: Tensor, K: Tensor) -> dict[str, Tensor]:
        """:meth:`predict_full` from the outputs of :meth:`prepare` (e.g. after PartDrop)."""
        ref = self._ref()
        n = x.shape[0]
        K = K.to(device=ref.device, dtype=ref.dtype)
        p = self.predict_crop(x)
        transl = self.crop_cam_to_transl(p["cam"], center, size, K)
        v = valid[:, None]
        fallback = {"global_orient": facing_camera_orient(n, dtype=ref.dtype, device=ref.device),
                    "body_pose": self.mean_pose.to(ref)[None].expand(n, -1),
                    "betas": torch.zeros(n, 10, dtype=ref.dtype, device=ref.device),
                    "transl": torch.zeros(n, 3, dtype=ref.dtype, device=ref.device)}
        out = {"global_orient": p["global_orient"], "body_pose": p["body_pose"], "betas": p["betas"],
               "transl": transl}
        out = {k: torch.where(v, out[k], fallback[k]) for k in out}
        out["valid"] = valid
        return out

    @torch.no_grad()
    def predict_full(self, iuv: Tensor, K: Tensor) -> dict[str, Tensor]:
        """SMPL parameters of the body in each full-image IUV map.

        Args:
            iuv: (N, H, W, 3) full-image IUV (I 0..24, U, V in [0, 1]; 0 = background).
            K: (N, 3, 3) full-image intrinsics, pixels (a (3, 3) K is shared by all N).
        Returns:
            smplx-named parameters on the network's device and dtype: global_orient (N, 3),
            body_pose (N, 69) (axis-angle, radians), betas (N, 10), transl (N, 3) (meters) in
            the camera frame of K (OpenCV axes), and valid (N,) bool: False where the IUV map
            has no foreground; those rows get the mean pose, facing the camera, zero betas
            and transl 0.
        Raises:
            ParameterError naming ``iuv`` or ``K`` (shape, dtype, NaN, I outside 0..24, U/V
            outside [0, 1], non-positive focal length).
        """
        if isinstance(K, Tensor) and K.dim() == 2 and isinstance(iuv, Tensor) and iuv.dim() == 4:
            K = K.expand(iuv.shape[0], 3, 3)
        check_intrinsics(K, "K")
        x, center, size, valid = self.prepare(iuv)
        if K.shape[0] != x.shape[0]:
            raise ParameterError(f"K must have shape (N, 3, 3) with N={x.shape[0]} (iuv's), got {tuple(K.shape)}")
        return self.predict_parts(x, center, size, valid, K)


# ---------------------------------------------------------------- files

def save_danet(path: PathLike, net: DaNet, extra: Optional[Mapping[str, Any]] = None) -> "os.PathLike":
    """Write ``net`` as a ``fitkit.danet/1`` file (atomically; parent folders created).

    Layout: ``{'format', 'config', 'state_dict', 'fitkit': {'version', 'torch', 'created', **extra}}``,
    nothing but tensors, strings, numbers, lists and dicts (``torch.load(weights_only=True)``).
    Returns the path written.
    """
    import fitkit

    if not isinstance(net, DaNet):
        raise ParameterError(f"save_danet: expected a DaNet, got {type(net).__name__}")
    provenance = {"version": getattr(fitkit, "__version__", "?"), "torch": torch.__version__,
                  "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    provenance.update(dict(extra or {}))
    payload = {"format": FORMAT, "config": plain_metadata(net.config, "config"),
               "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()},
               "fitkit": plain_metadata(provenance, "extra")}
    path = expand(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def load_danet(path: Optional[PathLike] = None, *, device=None, dtype: torch.dtype = torch.float32,
               with_info: bool = False):
    """Load a DaNet initializer (default: the shipped ``initializers/open_danet.pt``).

    Args:
        path: weight file (``~``/``$VARS`` expanded; relative paths also looked up among the
            shipped weights, :func:`fitkit.priors.files.resolve_weight_path`).
        device, dtype: of the returned module (default CPU, float32).
        with_info: also return the file's provenance dict (training command, metrics, ...).
    Returns:
        :class:`DaNetInit` in eval mode with frozen parameters (and the provenance).
    Raises:
        PriorFileNotFoundError: no such file (naming every place tried).
        ModelFileError: unreadable file, wrong format, missing keys, or weights that do not
            fit the stored configuration (naming the file).
    """
    if path is None:
        resolved = weight_path(DEFAULT_WEIGHTS)
    else:
        resolved = resolve_weight_path(path, "DaNet initializer weights", hint=_HINT)
    try:
        payload = torch.load(resolved, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle, zip and torch errors alike)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelFileError(f"{resolved}: not a readable DaNet weight file ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, Mapping):
        raise ModelFileError(f"{resolved}: expected a dict with keys {list(_PAYLOAD_KEYS)}, "
                             f"found {type(payload).__name__}")
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    if missing:
        raise ModelFileError(f"{resolved}: missing key(s) {missing} (a {FORMAT} file has {list(_PAYLOAD_KEYS)})")
    if payload["format"] != FORMAT:
        raise ModelFileError(f"{resolved}: format {payload['format']!r} is not {FORMAT!r}")
    config, state = payload["config"], payload["state_dict"]
    if not isinstance(config, Mapping) or not isinstance(state, Mapping):
        raise ModelFileError(f"{resolved}: 'config' and 'state_dict' must be dicts")
    try:
        net = DaNet(**dict(config))
    except (ParameterError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{resolved}: invalid config ({exc})") from None
    try:
        net.load_state_dict(dict(state), strict=True)
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        first = " ".join(s.strip() for s in str(exc).splitlines()[:3])
        raise ModelFileError(f"{resolved}: the weights do not match the stored configuration ({first})") from None
    init = DaNetInit(net).to(device=device, dtype=dtype).eval().requires_grad_(False)
    if with_info:
        return init, dict(payload.get("fitkit") or {})
    return init
