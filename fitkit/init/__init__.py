"""Initializers: where a fit starts.

A recipe picks one in its ``init`` section (``docs/init.md``)::

    init: {type: file}                      # the init file / arrays given to fit (default)
    init: {type: mean}                      # mean pose, facing the camera, camera from keypoints
    init: {type: smplr, procrustes: false}  # SMPLR from 3D keypoints, or 2D ones lifted
    init: {type: danet}                     # DaNet-style regressor from the IUV map

Every type returns smplx-named arrays (N, ...) that the engine completes
(:func:`fitkit.fitting.engine.prepare_init`); a type that gives no
``transl`` leaves it to ``init.transl`` (``auto``: from the torso
keypoints). Neural initializers fall back to the mean pose for frames they
cannot read (no hips observed, no IUV foreground) and list those frames in
``FitResult.info['init']['fallback_rows']``.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional

import torch

from fitkit.errors import FitkitError

__all__ = ["INIT_TYPES", "INIT_KEYS", "InitError", "initial_params", "mean_params"]

INIT_TYPES = ("file", "mean", "smplr", "danet")
#: keys of a recipe's ``init`` section, by type ('transl' applies to all)
INIT_KEYS = {"file": set(), "mean": set(), "smplr": {"path", "procrustes", "gender"}, "danet": {"path"}}


class InitError(FitkitError, ValueError):
    """Initial parameters that do not fit the observations or the model, or an
    initializer that cannot run on these inputs; the message names the field."""


def mean_params(model, N: int, dtype, device) -> dict[str, torch.Tensor]:
    """``init: {type: mean}``'s parameters (N, ...): mean pose, facing the camera, zero betas."""
    from fitkit.camera import facing_camera_orient
    from fitkit.init.mean import mean_body_pose

    return {"global_orient": facing_camera_orient(N, dtype=dtype, device=device),
            "body_pose": mean_body_pose(N, dtype=dtype, device=device),
            "betas": torch.zeros(N, model.num_betas, dtype=dtype, device=device)}


def initial_params(spec: Mapping[str, Any], model, observations, camera, init=None, *,
                   source: str = "recipe") -> tuple[Optional[Mapping[str, Any]], dict[str, Any]]:
    """The initial parameters a recipe's ``init`` section asks for.

    Args:
        spec: the recipe's ``init`` mapping (``type`` and its options; ``transl``
            is the engine's).
        model: body model; observations: N frames (on the fit's device/dtype);
        camera: the fit's :class:`~fitkit.fitting.camera_setup.FitCamera`.
        init: arrays from an init file, only for ``type: file``.
        source: named in errors (the recipe file).
    Returns:
        (params or None, info): smplx-named arrays (N, ...) for
        :func:`~fitkit.fitting.engine.prepare_init` (None: the defaults), and
        ``{'type': ..., 'fallback_rows': [...]}``.
    """
    kind = spec.get("type", "file")
    if kind not in INIT_TYPES:
        raise InitError(f"{source}: init.type must be one of {', '.join(INIT_TYPES)}, got {kind!r}")
    unknown = set(spec) - {"type", "transl"} - INIT_KEYS[kind]
    if unknown:
        raise InitError(f"{source}: init: unknown key(s) {sorted(unknown)} for type {kind!r}; "
                        f"known: {sorted({'type', 'transl'} | INIT_KEYS[kind])}")
    if kind != "file" and init is not None:
        raise InitError(f"{source}: init.type is {kind!r} but initial parameters (an init file) were given too; "
                        "set init.type: file to start from them, or drop the file")
    info: dict[str, Any] = {"type": kind, "fallback_rows": []}
    if kind == "file":
        return init, info
    N = len(observations)
    dtype, device = observations.keypoints.dtype, observations.keypoints.device
    params = mean_params(model, N, dtype, device)
    if kind == "mean":
        return params, info
    if kind == "smplr":
        from fitkit.init.smplr_init import smplr_params
        out, ok = smplr_params(model, observations, camera, path=spec.get("path"),
                               procrustes=bool(spec.get("procrustes", False)), gender=spec.get("gender"),
                               source=source)
    else:
        from fitkit.init.danet import load_danet

        iuv = (observations.dense or {}).get("iuv")
        if iuv is None:
            raise InitError(f"{observations.source}: init.type danet needs the dense cue 'iuv' "
                            "(field dense_iuv of the observations file; docs/iuv.md)")
        if camera.mode != "full":
            raise InitError(f"{source}: init.type danet needs camera.mode full (its translation is a full-image one)")
        net = load_danet(spec.get("path"), device=device, dtype=dtype)
        with torch.no_grad():
            out = net.predict_full(iuv, camera.K)
        ok = out.pop("valid").to(device)
    for name, value in out.items():
        if name in params:
            value = value.to(device=device, dtype=dtype)
            params[name] = torch.where(ok.reshape(-1, *[1] * (value.dim() - 1)), value, params[name])
    if "transl" in out:
        from fitkit.fitting.engine import torso_translation

        placed = dict(params, transl=torch.zeros(N, 3, dtype=dtype, device=device))
        transl, _ = torso_translation(placed, model, observations, camera)
        params["transl"] = torch.where(ok[:, None], out["transl"].to(transl), transl)
    bad = torch.nonzero(~ok).flatten().tolist()
    info["fallback_rows"] = bad
    if bad:
        ids = [observations.frame_ids[i] for i in bad[:5]]
        warnings.warn(f"{observations.source}: init.type {kind}: {len(bad)} of {N} frame(s) could not be read "
                      f"({', '.join(ids)}{'...' if len(bad) > 5 else ''}); they start from the mean pose",
                      stacklevel=2)
    return params, info
