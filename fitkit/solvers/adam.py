"""Adam, per sample (SPIN's SMPLify runs 100 + 100 steps of it at lr 0.01).

Adam's update is elementwise, so running it on the packed (N, D) parameters
with per-row moment estimates is the same optimizer SPIN uses, but a row can
stop (converged, NaN) without touching the others.
"""
from __future__ import annotations

import torch

from fitkit.solvers.base import Solver, SolveResult, register_solver


@register_solver("adam")
class Adam(Solver):
    """Options (besides the common ones): ``lr`` (0.01), ``betas`` ([0.9, 0.999]), ``eps`` (1e-8)."""

    defaults = {"lr": 0.01, "betas": (0.9, 0.999), "eps": 1e-8}

    def run(self, problem, x0, running, callback=None) -> SolveResult:
        o = self.options
        lr, (b1, b2), eps = float(o["lr"]), o["betas"], float(o["eps"])
        tr = self.tracker(x0, running)
        x = x0.detach().clone()
        m = torch.zeros_like(x)
        v = torch.zeros_like(x)
        it = 0
        while True:
            idx = tr.rows()
            if idx.numel() == 0:
                break
            xa = x.index_select(0, idx).requires_grad_(True)
            E = problem.energy(xa, idx)
            (g,) = torch.autograd.grad(E.sum(), xa)
            E, xa = E.detach(), xa.detach()
            ok = tr.observe(idx, xa, E, torch.isfinite(g).all(dim=1))
            tr.count_progress(idx[ok])
            rows, g = idx[ok], g[ok]
            # Every sample still running has taken a step at every iteration (one that
            # stops never resumes), so the bias corrections are the same Python numbers
            # for all of them, as in torch.optim.Adam. (A tensor power instead would
            # round differently in the vectorized body and the scalar tail of the
            # kernel, i.e. with the sample's position in the batch.)
            t = it + 1
            m[rows] = b1 * m[rows] + (1 - b1) * g
            v[rows] = b2 * v[rows] + (1 - b2) * g * g
            m_hat = m[rows] / (1 - b1 ** t)
            v_hat = v[rows] / (1 - b2 ** t)
            x[rows] = xa[ok] - lr * m_hat / (v_hat.sqrt() + eps)
            if tr.step_done(idx, it, callback):
                break
            it += 1
        # the last update was never evaluated: score it so keep-best sees it
        idx = tr.rows()
        if idx.numel():
            with torch.no_grad():
                xa = x.index_select(0, idx)
                tr.observe(idx, xa, problem.energy(xa, idx))
        return tr.result()
