"""L-BFGS with a separate curvature history and line search for every sample.

``torch.optim.LBFGS`` over a batch minimises the *sum* of the energies: one
history, one step length, one line search for all samples, so one hard sample
slows or derails the rest. Here each sample keeps its own (s, y) pairs and its
own backtracking (Armijo) line search; the two-loop recursion runs for all
samples at once with masks for histories of different lengths.
"""
from __future__ import annotations

import torch

from fitkit.solvers.base import Solver, SolveResult, register_solver


def _energy_and_grad(problem, x, idx):
    xa = x.detach().requires_grad_(True)
    E = problem.energy(xa, idx)
    (g,) = torch.autograd.grad(E.sum(), xa)
    return E.detach(), g.detach()


def two_loop(g: torch.Tensor, S: torch.Tensor, Y: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Apply each sample's inverse-Hessian estimate to its gradient.

    Args:
        g: (B, D) gradients.
        S, Y: (B, m, D) steps and gradient changes, newest last.
        count: (B,) number of valid pairs (the last ``count`` of the m slots).
    Returns:
        (B, D) ``H g``; plain ``g`` for samples without history.
    """
    B, m, D = S.shape
    slot = torch.arange(m, device=g.device)
    valid = slot[None, :] >= (m - count)[:, None]  # (B, m)
    sy = (S * Y).sum(-1)
    rho = torch.where(valid, 1.0 / torch.where(valid, sy, torch.ones_like(sy)), torch.zeros_like(sy))
    q = g.clone()
    alpha = torch.zeros(B, m, dtype=g.dtype, device=g.device)
    for i in range(m - 1, -1, -1):
        a = rho[:, i] * (S[:, i] * q).sum(-1)
        alpha[:, i] = a
        q = q - a[:, None] * Y[:, i]
    yy = (Y[:, -1] * Y[:, -1]).sum(-1)
    gamma = torch.where(count > 0, sy[:, -1] / torch.where(count > 0, yy, torch.ones_like(yy)),
                        torch.ones_like(yy))
    r = gamma[:, None] * q
    for i in range(m):
        b = rho[:, i] * (Y[:, i] * r).sum(-1)
        r = r + (alpha[:, i] - b)[:, None] * S[:, i]
    return r


@register_solver("lbfgs")
class LBFGS(Solver):
    """Options: ``history`` (10), ``lr`` (1.0, first trial step length),
    ``max_line_search`` (12 halvings), ``c1`` (1e-4, Armijo constant),
    ``gtol`` (1e-9, max-norm gradient at which a sample has converged)."""

    defaults = {"history": 10, "lr": 1.0, "max_line_search": 12, "c1": 1e-4, "gtol": 1e-9,
                "patience": 2}

    def run(self, problem, x0, running, callback=None) -> SolveResult:
        o = self.options
        m, c1 = int(o["history"]), float(o["c1"])
        tr = self.tracker(x0, running)
        N, D = x0.shape
        x = x0.detach().clone()
        S = x.new_zeros(N, m, D)
        Y = x.new_zeros(N, m, D)
        count = torch.zeros(N, dtype=torch.long, device=x.device)
        E = x.new_full((N,), float("inf"))
        g = x.new_zeros(N, D)

        idx = tr.rows()
        if idx.numel():
            E0, g0 = _energy_and_grad(problem, x[idx], idx)
            ok = tr.observe(idx, x[idx], E0, torch.isfinite(g0).all(dim=1))
            E[idx], g[idx] = E0, g0
            tr.mark_converged(idx[ok & (g0.abs().amax(dim=1) <= o["gtol"])])
        it = 0
        while True:
            idx = tr.rows()
            if idx.numel() == 0:
                break
            gi = g[idx]
            d = -two_loop(gi, S[idx], Y[idx], count[idx])
            slope = (d * gi).sum(-1)
            bad_dir = ~(slope < 0)
            if bool(bad_dir.any()):  # not a descent direction: forget the history
                d[bad_dir] = -gi[bad_dir]
                slope = torch.where(bad_dir, -(gi * gi).sum(-1), slope)
                count[idx[bad_dir]] = 0
            first = count[idx] == 0
            step = torch.where(first, float(o["lr"]) / gi.abs().sum(-1).clamp(min=1.0), torch.ones_like(slope))
            step = torch.where(first, torch.minimum(step, torch.full_like(step, float(o["lr"]))), step)

            # per-sample backtracking: only samples still searching are evaluated
            searching = torch.ones_like(slope, dtype=torch.bool)
            new_x = x[idx].clone()
            new_E = E[idx].clone()
            new_g = gi.clone()
            for _ in range(int(o["max_line_search"])):
                s_rows = torch.nonzero(searching).flatten()
                if s_rows.numel() == 0:
                    break
                cand = x[idx[s_rows]] + step[s_rows, None] * d[s_rows]
                Ec, gc = _energy_and_grad(problem, cand, idx[s_rows])
                fin = torch.isfinite(Ec) & torch.isfinite(gc).all(dim=1)
                tr.flag_nan(idx[s_rows[~fin]])  # stays at its best iterate, stops
                searching[s_rows[~fin]] = False
                accept = fin & (Ec <= E[idx[s_rows]] + c1 * step[s_rows] * slope[s_rows])
                a_rows = s_rows[accept]
                new_x[a_rows], new_E[a_rows], new_g[a_rows] = cand[accept], Ec[accept], gc[accept]
                searching[a_rows] = False
                step[s_rows[~accept]] *= 0.5
            moved = ~searching & tr.running[idx]
            # samples whose line search failed cannot decrease further along any direction we can find
            tr.mark_converged(idx[~moved & (count[idx] == 0) & tr.running[idx]])
            count[idx[~moved]] = 0  # retry once from steepest descent

            rows = idx[moved]
            if rows.numel():
                s = new_x[moved] - x[rows]
                y = new_g[moved] - g[rows]
                good = (s * y).sum(-1) > 1e-10 * (y * y).sum(-1).clamp(min=1e-30)
                upd = rows[good]
                S[upd] = torch.cat([S[upd, 1:], s[good, None]], dim=1)
                Y[upd] = torch.cat([Y[upd, 1:], y[good, None]], dim=1)
                count[upd] = (count[upd] + 1).clamp(max=m)
                x[rows], E[rows], g[rows] = new_x[moved], new_E[moved], new_g[moved]
                tr.observe(rows, x[rows], E[rows])
                tr.mark_converged(rows[g[rows].abs().amax(dim=1) <= o["gtol"]])
            tr.count_progress(idx[tr.running[idx]])
            if tr.step_done(idx, it, callback):
                break
            it += 1
        return tr.result()
