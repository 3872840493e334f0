"""Solvers on problems with known answers, checked against scipy, and their per-sample contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from fitkit.solvers import make_solver


class Rosenbrock:
    """Per-sample residuals r = (a_b - x0, 10 (x1 - x0^2)), a different valley for every sample."""

    def __init__(self, a):
        self.a = a

    def residuals(self, x, index):
        a = self.a.index_select(0, index)
        return torch.stack([a - x[:, 0], 10 * (x[:, 1] - x[:, 0] ** 2)], dim=1)

    def energy(self, x, index):
        r = self.residuals(x, index)
        return (r * r).sum(1)

    def residuals_and_jacobian(self, x, index):
        r = self.residuals(x, index)
        J = torch.zeros(x.shape[0], 2, 2, dtype=x.dtype)
        J[:, 0, 0] = -1
        J[:, 1, 0] = -20 * x[:, 0]
        J[:, 1, 1] = 10
        return r, J


class Exponential:
    """Fit y = c0 exp(c1 t) to per-sample data: a small curve-fitting problem with a unique minimum."""

    def __init__(self, t, y):
        self.t, self.y = t, y

    def residuals(self, x, index):
        y = self.y.index_select(0, index)
        return x[:, :1] * torch.exp(x[:, 1:2] * self.t) - y

    def energy(self, x, index):
        r = self.residuals(x, index)
        return (r * r).sum(1)

    def residuals_and_jacobian(self, x, index):
        e = torch.exp(x[:, 1:2] * self.t)
        J = torch.stack([e, x[:, :1] * self.t * e], dim=2)
        return x[:, :1] * e - self.y.index_select(0, index), J


def _scipy(problem, x0):
    out = []
    for b in range(x0.shape[0]):
        idx = torch.tensor([b])
        fun = lambda v: problem.residuals(torch.tensor(v[None]), idx)[0].numpy()  # noqa: E731
        out.append(least_squares(fun, x0[b].numpy(), xtol=1e-15, ftol=1e-15, gtol=1e-15).x)
    return np.stack(out)


def _exp_problem():
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(0, 1, 12, dtype=torch.float64)
    c = torch.stack([torch.rand(5, generator=g, dtype=torch.float64) + 0.5,
                     torch.rand(5, generator=g, dtype=torch.float64) * 2 - 1], 1)
    y = c[:, :1] * torch.exp(c[:, 1:] * t) + 0.01 * torch.randn(5, 12, generator=g, dtype=torch.float64)
    return Exponential(t, y), torch.tensor([[1.0, 0.0]] * 5, dtype=torch.float64)


SOLVERS = [
    {"type": "lm", "iterations": 100, "ftol": 1e-14, "xtol": 1e-14},
    {"type": "lbfgs", "iterations": 500, "ftol": 1e-14, "gtol": 1e-12},
    {"type": "adam", "lr": 0.01, "iterations": 4000, "ftol": 1e-12, "patience": 50},
]


@pytest.mark.parametrize("spec", SOLVERS, ids=lambda s: s["type"])
def test_matches_scipy_least_squares(spec):
    problem, x0 = _exp_problem()
    ref = _scipy(problem, x0)
    res = make_solver(spec).run(problem, x0, torch.ones(5, dtype=torch.bool))
    tol = 1e-6 if spec["type"] != "adam" else 2e-3
    np.testing.assert_allclose(res.x.numpy(), ref, atol=tol)
    assert not res.nan.any()


@pytest.mark.parametrize("spec", SOLVERS[:2], ids=lambda s: s["type"])
def test_rosenbrock_valleys_per_sample(spec):
    a = torch.tensor([1.0, -0.5, 2.0, 0.3], dtype=torch.float64)
    problem = Rosenbrock(a)
    x0 = torch.tensor([[-1.2, 1.0]] * 4, dtype=torch.float64)
    res = make_solver(dict(spec, iterations=2000)).run(problem, x0, torch.ones(4, dtype=torch.bool))
    np.testing.assert_allclose(res.x.numpy(), torch.stack([a, a * a], 1).numpy(), atol=1e-5)
    assert res.converged.all()


@pytest.mark.parametrize("spec", SOLVERS, ids=lambda s: s["type"])
def test_samples_not_running_are_untouched_and_counted(spec):
    problem, x0 = _exp_problem()
    running = torch.tensor([True, False, True, True, False])
    res = make_solver(spec).run(problem, x0, running)
    assert torch.equal(res.x[~running], x0[~running])
    assert (res.iterations[~running] == 0).all() and (res.iterations[running] > 0).all()


@pytest.mark.parametrize("spec", SOLVERS, ids=lambda s: s["type"])
def test_keep_best_and_iteration_limit(spec):
    problem, x0 = _exp_problem()
    res = make_solver(dict(spec, iterations=3)).run(problem, x0, torch.ones(5, dtype=torch.bool))
    assert (res.iterations <= 3).all() and res.stopped_by in ("iterations", "converged")
    E = problem.energy(res.x, torch.arange(5))
    assert torch.allclose(E, res.energy)
    assert (res.energy <= problem.energy(x0, torch.arange(5))).all()


def test_time_limit_stops_the_run():
    problem, x0 = _exp_problem()
    res = make_solver({"type": "adam", "iterations": 10**7, "max_seconds": 0.2, "ftol": 0, "patience": 10**9}
                      ).run(problem, x0, torch.ones(5, dtype=torch.bool))
    assert res.stopped_by == "time" and res.seconds < 5


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match=r"solver 'lm': unknown option\(s\) \['lr'\]"):
        make_solver({"type": "lm", "lr": 0.1})


@pytest.mark.parametrize("spec", SOLVERS, ids=lambda s: s["type"])
def test_progress_callback_reports_every_iteration(spec):
    problem, x0 = _exp_problem()
    calls = []
    res = make_solver(dict(spec, iterations=6)).run(problem, x0, torch.ones(5, dtype=torch.bool),
                                                    callback=lambda it, running, n: calls.append((it, running, n)))
    assert [c[0] for c in calls] == list(range(len(calls))) and len(calls) == int(res.iterations.max())
    assert all(n == 5 for _, _, n in calls)
    assert [c[1] for c in calls] == sorted((c[1] for c in calls), reverse=True)


# ---------------------------------------------------------------- batch independence and flags

def test_rowwise_cholesky_solve_matches_lapack_and_ignores_the_batch():
    from fitkit.solvers.lm import cholesky_solve_rowwise

    g = torch.Generator().manual_seed(3)
    a = torch.randn(9, 40, 30, generator=g, dtype=torch.float64)
    M = a.transpose(1, 2) @ a + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(9, 30, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(M)
    x = cholesky_solve_rowwise(L, b)
    ref = torch.cholesky_solve(b[..., None], L)[..., 0]
    torch.testing.assert_close(x, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close((M @ x[..., None])[..., 0], b, rtol=1e-10, atol=1e-10)
    for i in range(9):  # each sample alone: the same bits
        assert torch.equal(cholesky_solve_rowwise(L[i:i + 1], b[i:i + 1])[0], x[i])
    assert torch.equal(cholesky_solve_rowwise(L[[7, 2, 5]], b[[7, 2, 5]]), x[[7, 2, 5]])


def test_adam_follows_torch_optim_adam():
    problem, x0 = _exp_problem()
    spec = {"type": "adam", "lr": 0.01, "iterations": 6, "ftol": 0, "patience": 100}
    res = make_solver(spec).run(problem, x0, torch.ones(5, dtype=torch.bool))
    for b in range(5):
        p = x0[b:b + 1].clone().requires_grad_(True)
        opt = torch.optim.Adam([p], lr=0.01)
        for _ in range(6):
            opt.zero_grad()
            problem.energy(p, torch.tensor([b])).sum().backward()
            opt.step()
        # the energy falls at every one of these steps, so the best iterate is the last
        torch.testing.assert_close(res.x[b], p.detach()[0], rtol=0, atol=1e-12)


class WithNaN:
    """The exponential problem, with NaN energies for the samples in ``bad``."""

    def __init__(self, inner, bad):
        self.inner, self.bad = inner, torch.as_tensor(bad)

    def residuals(self, x, index):
        r = self.inner.residuals(x, index)
        hit = torch.isin(index, self.bad)[:, None]
        return torch.where(hit, torch.full_like(r, float("nan")), r)

    def energy(self, x, index):
        r = self.residuals(x, index)
        return (r * r).sum(1)

    def residuals_and_jacobian(self, x, index):
        _, J = self.inner.residuals_and_jacobian(x, index)
        return self.residuals(x, index), J


@pytest.mark.parametrize("spec", SOLVERS, ids=lambda s: s["type"])
def test_a_sample_is_solved_the_same_alone_or_in_any_batch(spec):
    problem, x0 = _exp_problem()
    spec = dict(spec, iterations=40)
    full = make_solver(spec).run(WithNaN(problem, [1]), x0, torch.ones(5, dtype=torch.bool))
    assert full.nan.tolist() == [False, True, False, False, False]
    assert not bool(full.converged[1])
    for b in (0, 2, 3, 4):
        alone = Exponential(problem.t, problem.y[b:b + 1])
        one = make_solver(spec).run(alone, x0[b:b + 1], torch.ones(1, dtype=torch.bool))
        assert torch.equal(one.x[0], full.x[b]) and torch.equal(one.energy[0], full.energy[b])
        assert int(one.iterations[0]) == int(full.iterations[b])
        assert bool(one.converged[0]) == bool(full.converged[b])


@pytest.mark.parametrize("spec", SOLVERS[:2], ids=lambda s: s["type"])
def test_a_sample_that_cannot_improve_stops_without_the_converged_flag(spec):
    a = torch.tensor([1.0, -0.5], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 1.0], [-1.2, 1.0]], dtype=torch.float64)  # sample 0 starts at its minimum
    res = make_solver(dict(spec, iterations=2000)).run(Rosenbrock(a), x0, torch.ones(2, dtype=torch.bool))
    assert torch.equal(res.x[0], x0[0]) and float(res.energy[0]) == 0.0
    assert res.converged.tolist() == [False, True]
    assert int(res.iterations[0]) < 2000
