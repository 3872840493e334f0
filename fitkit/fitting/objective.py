"""One stage's objective: weighted residuals of all its terms, per sample.

The per-sample energy is ``E_b = sum_r r[b, r]**2`` with ``r`` the
concatenation of ``sqrt(weight_t) * term_t.residuals(...)``, plus
``weight_t * term_t.energy(...)`` for terms that are not least squares
(``Term.least_squares = False``; such stages have no residual vector and
cannot run Levenberg–Marquardt). Samples never
interact, so every quantity here can be evaluated for any subset of rows
(``index``): solvers only spend work on the samples still running.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from fitkit.body.points import PointRig
from fitkit.fitting.camera_setup import FitCamera
from fitkit.fitting.params import ParamLayout
from fitkit.terms.base import Batch, Term

__all__ = ["WeightedTerm", "Objective"]


@dataclass
class WeightedTerm:
    """A term instance with its recipe key and its weight in the current stage."""

    key: str
    term: Term
    weight: float


class Objective:
    """Residuals of a stage as a function of the packed free parameters.

    Args:
        model: the body model.
        terms: the stage's weighted terms (already ``setup``).
        layout: packing of the free parameters.
        fixed: smplx-named (N, ...) values of all parameters; non-free ones stay
            at these values.
        init: smplx-named (N, ...) initial parameters (for priors that use them).
        camera: the fit's camera.
    """

    def __init__(self, model, terms: Sequence[WeightedTerm], layout: ParamLayout,
                 fixed: Mapping[str, torch.Tensor], init: Mapping[str, torch.Tensor], camera: FitCamera):
        if not terms:
            raise ValueError("a stage needs at least one term with a nonzero weight")
        self.model = model
        self.terms = list(terms)
        self.layout = layout
        self.fixed = dict(fixed)
        self.init = dict(init)
        self.camera = camera
        self._sqrt_w = [math.sqrt(t.weight) for t in self.terms]
        self.least_squares = all(t.term.least_squares for t in self.terms)
        self._needs = [t.term.needs() for t in self.terms]
        kp_sets = {n.keypoints for n in self._needs if n.keypoints is not None}
        if len(kp_sets) > 1:
            raise ValueError(f"terms of one stage need different keypoint sets {sorted(kp_sets)}; "
                             "fit them in separate stages or convert the observations")
        joints = any(n.joints for n in self._needs)
        vsel = [n.vertices for n in self._needs if n.vertices is not None]
        self._vertex_rows: list[torch.Tensor | None] = [None] * len(self.terms)
        vertices = None
        if vsel:
            if len(set(vsel)) == 1:
                vertices = vsel[0]
            else:  # evaluate the whole mesh; each term reads its own rows
                vertices = "all"
                for i, n in enumerate(self._needs):
                    if n.vertices is not None and n.vertices != "all":
                        self._vertex_rows[i] = torch.as_tensor(n.vertices, dtype=torch.long,
                                                               device=model.device)
        self.rig = None
        if kp_sets or joints or vertices is not None:
            self.rig = PointRig(model, keypoints=next(iter(kp_sets), None), joints=joints, vertices=vertices)

    @property
    def num_samples(self) -> int:
        return self.camera.K.shape[0]

    # ------------------------------------------------------------ evaluation
    def params(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """smplx-named parameters (B, ...) of rows ``index`` for packed ``x`` (B, D)."""
        fixed = {k: v.index_select(0, index) for k, v in self.fixed.items()}
        return self.layout.decode(x, fixed, index)

    def _shared_rows(self, index: torch.Tensor) -> dict:
        """The per-sample data every term's batch shares, for rows ``index`` (selected once)."""
        return {"init": {k: v.index_select(0, index) for k, v in self.init.items()},
                "K": self.camera.K.index_select(0, index),
                "pixel_scale": self.camera.pixel_scale.index_select(0, index)}

    def _batch(self, params, index, shared: dict, points, i) -> Batch:
        b = Batch(index=index, params=params, **shared)
        if points is not None:
            self._attach_points(b, points, i)
        return b

    def _attach_points(self, b: Batch, points: torch.Tensor, i: int) -> None:
        """Give term ``i``'s batch the model outputs it declared, sliced from the rig's points."""
        need = self._needs[i]
        sl = self.rig.slices
        if need.keypoints is not None:
            b.keypoints = points[:, sl["keypoints"]]
        if need.joints:
            b.joints = points[:, sl["joints"]]
        if need.vertices is not None:
            v = points[:, sl["vertices"]]
            rows = self._vertex_rows[i]
            b.vertices = v if rows is None else v.index_select(1, rows)

    def _points(self, params):
        if self.rig is None:
            return None
        return self.rig.forward(params["global_orient"], params["body_pose"], params["betas"], params["transl"])

    def _batches(self, x: torch.Tensor, index: torch.Tensor) -> list[Batch]:
        params = self.params(x, index)
        points = self._points(params)
        shared = self._shared_rows(index)
        return [self._batch(params, index, shared, points, i) for i in range(len(self.terms))]

    def term_residuals(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        """Weighted residuals of each term, [(B, R_t)], differentiable in ``x``."""
        if not self.least_squares:
            raise ValueError(f"terms {self.energy_only_terms()} define an energy, not residuals; "
                             "use the adam or lbfgs solver for this stage")
        return [s * wt.term.residuals(b) for b, wt, s in zip(self._batches(x, index), self.terms, self._sqrt_w)]

    def energy_only_terms(self) -> list[str]:
        """Recipe keys of the stage's terms that are not least squares."""
        return [wt.key for wt in self.terms if not wt.term.least_squares]

    def residuals(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, R) weighted residuals of rows ``index`` at packed parameters ``x`` (B, D)."""
        return torch.cat(self.term_residuals(x, index), dim=1)

    def _term_energies(self, x: torch.Tensor, index: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for b, wt in zip(self._batches(x, index), self.terms):
            if wt.term.least_squares:
                r = wt.term.residuals(b)
                out.append(wt.weight * (r * r).sum(dim=1))
            else:
                out.append(wt.weight * wt.term.energy(b))
        return out

    def energy(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample energy."""
        if self.least_squares:
            r = self.residuals(x, index)
            return (r * r).sum(dim=1)
        return torch.stack(self._term_energies(x, index)).sum(dim=0)

    def term_energies(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Recipe key -> (B,) weighted energy of that term."""
        with torch.no_grad():
            return {wt.key: e for wt, e in zip(self.terms, self._term_energies(x, index))}

    def residuals_and_jacobian(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals (B, R) and their Jacobian (B, R, D) with respect to ``x``.

        The body's points come with analytic Jacobians (:class:`PointRig`).
        Each term is pushed forward with forward-mode AD (``torch.func.jvp``
        under ``vmap``) along as few directions as its declaration allows:

        - a ``pointwise`` term (each residual depends on one point): 3 tangents
          moving every point along x, y, z at once, then the chain rule with
          the body Jacobian rows of each residual's point;
        - a term reading only parameters (``Needs.params``): one tangent per
          column of those parameters;
        - otherwise: one tangent per column of ``x``, the point tangents being
          the body Jacobian's columns.

        Needs the axis-angle layout (``x`` holds the free parameters as they are).
        """
        layout = self.layout
        params = self.params(x, index)
        B, D = x.shape
        points = jac_pts = None
        if self.rig is not None:
            cols = torch.as_tensor(layout.body_columns(), device=x.device)
            points, jac_full = self.rig.forward_with_jacobian(
                params["global_orient"], params["body_pose"], params["betas"], params["transl"])
            jac_pts = jac_full.index_select(3, cols)  # (B, P, 3, D)
        free = {name: params[name] for name in layout.free}
        eye = torch.eye(D, dtype=x.dtype, device=x.device)
        shared = self._shared_rows(index)

        rs, js = [], []
        for i, (wt, s) in enumerate(zip(self.terms, self._sqrt_w)):
            need = self._needs[i]

            def f(pts, fp, i=i, wt=wt, s=s):
                p = dict(params)
                p.update(fp)
                return s * wt.term.residuals(self._batch(p, index, shared, pts, i))

            def push(tp, tf, f=f):  # residuals and their derivative along one direction
                return torch.func.jvp(f, (points, free), (tp, tf))

            def free_tangent(cols_idx):  # (n, B, width) one-hot tangents for the columns cols_idx of x
                e = eye[cols_idx]
                return {name: e[:, None, layout.slices[name]].expand(len(cols_idx), B, -1) for name in layout.free}

            named = layout.free if need.params is None else [n for n in layout.free if n in need.params]
            pcols = [c for n in named for c in range(layout.slices[n].start, layout.slices[n].stop)]
            pointwise = wt.term.pointwise if need.uses_points else None
            if need.uses_points and pointwise is None:
                tf = free_tangent(list(range(D)))
                r, jt = torch.func.vmap(push, out_dims=(None, 0))(jac_pts.permute(3, 0, 1, 2), tf)
                J_t = jt.permute(1, 2, 0)
            else:
                J_t = None
                r = None
                if need.uses_points:
                    tp = points.new_zeros(3, *points.shape)
                    for c in range(3):
                        tp[c, ..., c] = 1.0
                    zero_f = {name: v.new_zeros(3, *v.shape) for name, v in free.items()}
                    r, dr = torch.func.vmap(push, out_dims=(None, 0))(tp, zero_f)  # (3, B, R_t)
                    rows = self._point_rows(i, pointwise, wt.term.residual_points())
                    J_t = torch.einsum("cbr,brcd->brd", dr, jac_pts.index_select(1, rows))
                if pcols:
                    zero_p = None if points is None else points.new_zeros(len(pcols), *points.shape)
                    if zero_p is None:
                        r, jt = torch.func.vmap(lambda tf: torch.func.jvp(lambda fp: f(None, fp), (free,), (tf,)),
                                                out_dims=(None, 0))(free_tangent(pcols))
                    else:
                        r, jt = torch.func.vmap(push, out_dims=(None, 0))(zero_p, free_tangent(pcols))
                    if J_t is None:
                        J_t = r.new_zeros(B, r.shape[1], D)
                    J_t[:, :, pcols] += jt.permute(1, 2, 0)
                if r is None:  # reads neither points nor free parameters: constant in this stage
                    r = f(points, free)
                    J_t = r.new_zeros(B, r.shape[1], D)
            rs.append(r)
            js.append(J_t)
        return torch.cat(rs, dim=1), torch.cat(js, dim=1)

    def _point_rows(self, i: int, output: str, residual_points: torch.Tensor) -> torch.Tensor:
        """Rig rows of the points that term ``i``'s residual rows depend on."""
        if output not in ("keypoints", "joints", "vertices"):
            raise ValueError(f"term {self.terms[i].key!r}: pointwise must be keypoints, joints or vertices")
        rows = residual_points.long()
        if output == "vertices" and self._vertex_rows[i] is not None:
            rows = self._vertex_rows[i].index_select(0, rows)
        return rows + self.rig.slices[output].start
