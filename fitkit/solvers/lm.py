"""Batched Levenberg–Marquardt with per-sample damping.

For every sample b: with residuals r (R,) and Jacobian J (R, D) at x,

    (J^T J + lambda_b * diag(J^T J)) delta = -J^T r

is solved (a D x D system per sample: batched Cholesky factorization, then
:func:`cholesky_solve_rowwise`, whose result does not depend on the batch); the
step is accepted when it lowers that sample's energy. lambda_b follows
Nielsen's gain-ratio rule: shrink it after a good step (towards Gauss–Newton),
double it (and keep doubling) after a rejected one (towards short gradient
steps). Samples with an accepted step get a new Jacobian; rejected ones reuse
theirs. A sample has converged when an accepted step lowers its energy by less
than ``ftol`` (relative), when its step is below ``xtol``, or when its damping
exceeds ``max_damping`` (no step lowers the energy any more).

Jacobians come from :meth:`Objective.residuals_and_jacobian`: analytic body
derivatives chained with forward-mode derivatives of the terms.
"""
from __future__ import annotations

import torch

from fitkit.solvers.base import Solver, SolveResult, register_solver


def cholesky_solve_rowwise(L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve ``L L^T x = b`` for every sample by forward and back substitution.

    Written with elementwise operations only (one column of ``L`` at a time),
    so that a sample's solution is the same to the last bit whatever batch it
    is solved in; LAPACK's batched triangular solves (``torch.cholesky_solve``,
    ``torch.linalg.solve_triangular``) round a sample differently for another
    batch size. D steps of (B, D) work each way.

    Args:
        L: (B, D, D) lower-triangular Cholesky factors (positive diagonal).
        b: (B, D) right-hand sides.
    Returns:
        (B, D) solutions.
    """
    D = b.shape[1]
    r = b.clone()
    y = torch.empty_like(b)
    for j in range(D):  # L y = b
        y[:, j] = r[:, j] / L[:, j, j]
        if j + 1 < D:
            r[:, j + 1:] -= L[:, j + 1:, j] * y[:, j, None]
    x = torch.empty_like(b)
    for i in range(D - 1, -1, -1):  # L^T x = y; row i of L is column i of L^T
        x[:, i] = y[:, i] / L[:, i, i]
        if i > 0:
            y[:, :i] -= L[:, i, :i] * x[:, i, None]
    return x


@register_solver("lm")
class LevenbergMarquardt(Solver):
    """Options: ``damping`` (1e-3, initial lambda), ``min_diag`` (1e-6, floor of
    diag(J^T J) so that parameters no residual sees stay put), ``xtol`` (1e-8,
    max-norm step), ``max_damping`` (1e10)."""

    defaults = {"damping": 1e-3, "min_diag": 1e-6, "xtol": 1e-8, "max_damping": 1e10,
                "iterations": 30}
    needs_jacobian = True

    def run(self, problem, x0, running, callback=None) -> SolveResult:
        o = self.options
        tr = self.tracker(x0, running)
        N, D = x0.shape
        x = x0.detach().clone()
        lam = x.new_full((N,), float(o["damping"]))
        nu = x.new_full((N,), 2.0)
        E = x.new_full((N,), float("inf"))
        A = x.new_zeros(N, D, D)  # J^T J
        g = x.new_zeros(N, D)     # J^T r
        eye = torch.eye(D, dtype=x.dtype, device=x.device)

        def linearize(rows):
            with torch.no_grad():
                r, J = problem.residuals_and_jacobian(x[rows], rows)
            Jt = J.transpose(1, 2)
            Er = (r * r).sum(-1)
            fin = torch.isfinite(Er) & torch.isfinite(J).flatten(1).all(dim=1)
            ok = tr.observe(rows, x[rows], Er, fin)
            A[rows] = torch.where(ok[:, None, None], Jt @ J, A[rows])
            g[rows] = torch.where(ok[:, None], (Jt @ r[..., None])[..., 0], g[rows])
            E[rows] = torch.where(ok, Er, E[rows])

        idx = tr.rows()
        if idx.numel():
            linearize(idx)
        it = 0
        while True:
            idx = tr.rows()
            if idx.numel() == 0:
                break
            Ai, gi, li = A[idx], g[idx], lam[idx]
            diag = torch.diagonal(Ai, dim1=1, dim2=2).clamp(min=float(o["min_diag"]))
            M = Ai + (li[:, None] * diag)[:, :, None] * eye
            L, info = torch.linalg.cholesky_ex(M)
            solvable = info == 0
            L = torch.where(solvable[:, None, None], L, eye)
            delta = -cholesky_solve_rowwise(L, gi)
            delta = torch.where(solvable[:, None], delta, torch.zeros_like(delta))
            cand = x[idx] + delta
            with torch.no_grad():
                r_new = problem.residuals(cand, idx)
            E_new = (r_new * r_new).sum(-1)
            # predicted decrease of the damped quadratic model: delta^T (lam*diag*delta - g)
            pred = (delta * (li[:, None] * diag * delta - gi)).sum(-1)
            gain = (E[idx] - E_new) / pred.clamp(min=1e-30)
            accept = solvable & torch.isfinite(E_new) & (E_new < E[idx])
            tr.flag_nan(idx[solvable & ~torch.isfinite(E_new)])

            # damping update (Nielsen): good steps shrink lambda, bad steps double it repeatedly
            shrink = torch.clamp(1 - (2 * gain - 1) ** 3, min=1.0 / 3.0)
            lam[idx] = torch.where(accept, li * shrink, li * nu[idx])
            nu[idx] = torch.where(accept, torch.full_like(li, 2.0), nu[idx] * 2)

            rel = (E[idx] - E_new) / E[idx].abs().clamp(min=1e-30)
            small_step = delta.abs().amax(dim=1) <= float(o["xtol"])
            done = (accept & (rel < float(o["ftol"]))) | small_step | (lam[idx] > float(o["max_damping"]))
            accept = accept & tr.running[idx]
            done = done & tr.running[idx]
            rows = idx[accept]
            if rows.numel():
                x[rows] = cand[accept]
                linearize(rows)
            tr.mark_converged(idx[done])
            if tr.step_done(idx, it, callback):
                break
            it += 1
        return tr.result()
