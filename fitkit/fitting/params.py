"""Which parameters a stage optimizes, and how they are packed into one vector.

Solvers see a flat (B, D) tensor ``x`` per stage. :class:`ParamLayout` maps
between ``x`` and the smplx-named parameters, in smplx order
(``global_orient``, ``body_pose``, ``betas``, ``transl``), keeping the
parameters a stage does not free at their current values.

Rotations (``global_orient``, ``body_pose``) are packed as axis-angle (3 per
joint, the body model's native form) or as the continuous 6D form (6 per
joint). The Levenberg–Marquardt solver needs axis-angle: its Jacobians come
from the body model's analytic derivatives, which are axis-angle.

With a :class:`~fitkit.terms.base.PoseLatent` (a learned pose prior in latent
mode), ``body_pose`` is packed as its latent code z (Dz columns) and decoded
on every evaluation; the decoded parameters then also carry
``'pose_latent'`` (B, Dz).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fitkit.fitting.rotations import axis_angle_to_rot6d, rot6d_to_axis_angle
from fitkit.terms.base import LATENT_KEY, PoseLatent

__all__ = ["PARAM_NAMES", "ROTATION_PARAMS", "ParamLayout"]

PARAM_NAMES = ("global_orient", "body_pose", "betas", "transl")
ROTATION_PARAMS = ("global_orient", "body_pose")
ROTATIONS = ("axis_angle", "rot6d")


class ParamLayout:
    """Packing of a stage's free parameters into ``x`` (B, D).

    Args:
        free: names of the free parameters (any order; packed in smplx order).
        widths: width of every smplx parameter in its native (axis-angle) form,
            e.g. ``{'global_orient': 3, 'body_pose': 69, 'betas': 10, 'transl': 3}``.
        rotation: ``'axis_angle'`` or ``'rot6d'``.
        latent: optional pose reparameterization; used only when ``body_pose`` is free.
    """

    def __init__(self, free: Sequence[str], widths: Mapping[str, int], rotation: str = "axis_angle",
                 latent: PoseLatent | None = None):
        unknown = [n for n in free if n not in PARAM_NAMES]
        if unknown:
            raise ValueError(f"free: unknown parameter(s) {unknown}; choose from {list(PARAM_NAMES)}")
        if not free:
            raise ValueError("free: a stage must free at least one parameter")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation: expected one of {ROTATIONS}, got {rotation!r}")
        self.free = tuple(n for n in PARAM_NAMES if n in free)
        self.rotation = rotation
        self.latent = latent if "body_pose" in self.free else None
        self.widths = dict(widths)
        self.slices: dict[str, slice] = {}
        start = 0
        for name in self.free:
            w = self.packed_width(name)
            self.slices[name] = slice(start, start + w)
            start += w
        self.dim = start

    def packed_width(self, name: str) -> int:
        if name == "body_pose" and self.latent is not None:
            return int(self.latent.dim)
        w = self.widths[name]
        return w * 2 if (self.rotation == "rot6d" and name in ROTATION_PARAMS) else w

    def encode(self, params: Mapping[str, torch.Tensor], index: torch.Tensor | None = None) -> torch.Tensor:
        """smplx-named (B, ...) parameters of rows ``index`` (default: all) -> (B, D) ``x``.

        With a latent, ``params['pose_latent']`` is packed when present (a code
        carried over from an earlier stage), else ``body_pose`` is encoded.
        """
        parts = []
        for name in self.free:
            p = params[name]
            if name == "body_pose" and self.latent is not None:
                if index is None:
                    index = torch.arange(p.shape[0], device=p.device)
                z = params.get(LATENT_KEY)
                if z is None or z.shape[1] != self.latent.dim:
                    with torch.no_grad():
                        z = self.latent.encode(p, index)
                p = z
            elif self.rotation == "rot6d" and name in ROTATION_PARAMS:
                B = p.shape[0]
                p = axis_angle_to_rot6d(p.reshape(B, -1, 3)).reshape(B, -1)
            parts.append(p)
        return torch.cat(parts, dim=1)

    def decode(self, x: torch.Tensor, fixed: Mapping[str, torch.Tensor],
               index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, D) ``x`` of rows ``index`` (default: all) -> smplx-named parameters;
        non-free ones are taken from ``fixed`` (B, ...)."""
        out = {}
        for name in PARAM_NAMES:
            if name not in self.slices:
                out[name] = fixed[name]
                continue
            p = x[:, self.slices[name]]
            if name == "body_pose" and self.latent is not None:
                if index is None:
                    index = torch.arange(x.shape[0], device=x.device)
                out[LATENT_KEY] = p
                p = self.latent.decode(p, index)
            elif self.rotation == "rot6d" and name in ROTATION_PARAMS:
                B = p.shape[0]
                p = rot6d_to_axis_angle(p.reshape(B, -1, 6)).reshape(B, -1)
            out[name] = p
        return out

    def body_columns(self) -> list[int]:
        """Columns of the body model's parameter Jacobian (ordered global_orient,
        body_pose, betas, transl) that ``x`` holds, in ``x``'s order (axis-angle only)."""
        if self.rotation != "axis_angle":
            raise ValueError("analytic Jacobians need rotation: axis_angle")
        if self.latent is not None:
            raise ValueError("analytic Jacobians cannot go through a latent pose")
        cols, start = [], 0
        for name in PARAM_NAMES:
            w = self.widths[name]
            if name in self.slices:
                cols.extend(range(start, start + w))
            start += w
        return cols

    def __repr__(self) -> str:
        lat = "" if self.latent is None else f", latent={type(self.latent).__name__}"
        return f"ParamLayout(free={list(self.free)}, rotation={self.rotation!r}{lat}, D={self.dim})"
