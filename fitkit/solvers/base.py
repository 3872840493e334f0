"""What every solver guarantees, and the per-sample bookkeeping they share.

Contract (all solvers):

- **Independence.** Sample b's result depends only on sample b's data: no
  batch-wide line search, step size or damping.
- **Keep-best.** The returned parameters are the lowest-energy iterate each
  sample visited, not the last one.
- **NaN isolation.** A sample whose energy or gradient becomes non-finite
  (at its iterate or at a trial step) is rolled back to its best iterate,
  flagged (``nan``) and stops; the others continue as if it were absent, bit
  for bit (see batch invariance).
- **Per-sample convergence and early exit.** A sample stops when its own
  convergence test passes; the solver returns when none is left running, at
  ``iterations`` or after ``max_seconds``. It is flagged ``converged`` only
  when its best energy is finite and lower than its starting energy (a test
  that passes on a sample that never improved, e.g. a line search that fails
  from the start, stops it without the flag).
- **Batch invariance.** Solver arithmetic is elementwise or reduces within a
  sample; the problem must evaluate a sample the same way whatever rows
  ``index`` holds. Then a sample's result is bit-identical whatever batch it
  runs in, in what order, and next to whatever other samples (NaN, huge,
  stopped early), on a given device, dtype and thread count (docs/fitting.md).
  The exception is ``max_seconds``: a time limit depends on the whole batch.

The problem a solver sees is an object with ``energy(x, index) -> (B,)``,
``residuals(x, index) -> (B, R)`` and, for Levenberg–Marquardt,
``residuals_and_jacobian(x, index) -> ((B, R), (B, R, D))``; ``x`` holds the
rows ``index`` of the (N, D) packed parameters
(:class:`fitkit.fitting.objective.Objective`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch

__all__ = ["SolveResult", "Solver", "Tracker", "SOLVERS", "register_solver", "make_solver"]

#: ``callback(iteration, num_running, num_samples)`` after every iteration. A callback
#: that also has a ``best`` attribute (a callable) gets ``callback.best(iteration, best_x)``
#: with the (N, D) best iterate of every sample so far (the engine's ``trace``).
ProgressCallback = Callable[[int, int, int], None]


@dataclass
class SolveResult:
    """Outcome of one solver run over N samples.

    Attributes:
        x: (N, D) best parameters per sample.
        energy: (N,) energy at ``x``.
        iterations: (N,) long, iterations each sample ran.
        converged: (N,) bool, its convergence test passed.
        nan: (N,) bool, it became non-finite and was rolled back.
        seconds: wall time of the run.
        stopped_by: ``'converged'``, ``'iterations'`` or ``'time'``.
    """

    x: torch.Tensor
    energy: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor
    nan: torch.Tensor
    seconds: float
    stopped_by: str


class Tracker:
    """Per-sample best iterate, NaN rollback, stall counting and the run's limits.

    Args:
        x0: (N, D) starting parameters.
        running: (N,) bool, samples to optimize (others pass through unchanged).
        ftol: relative decrease of the best energy that counts as progress.
        patience: iterations without progress after which a sample has converged.
        max_iters, max_seconds: limits of the run.
    """

    def __init__(self, x0: torch.Tensor, running: torch.Tensor, *, ftol: float, patience: int,
                 max_iters: int, max_seconds: float | None):
        N = x0.shape[0]
        dev = x0.device
        self.best_x = x0.detach().clone()
        self.best_E = torch.full((N,), float("inf"), dtype=x0.dtype, device=dev)
        self.start_E = self.best_E.clone()  # energy at the first evaluation (NaN stays NaN)
        self.started = torch.zeros(N, dtype=torch.bool, device=dev)
        self.ref_E = self.best_E.clone()  # best energy when progress was last made
        self.stall = torch.zeros(N, dtype=torch.long, device=dev)
        self.iterations = torch.zeros(N, dtype=torch.long, device=dev)
        self.converged = torch.zeros(N, dtype=torch.bool, device=dev)
        self.nan = torch.zeros(N, dtype=torch.bool, device=dev)
        self.running = running.clone().to(dev)
        self.ftol, self.patience = float(ftol), int(patience)
        self.max_iters = int(max_iters)
        self.max_seconds = max_seconds
        self._t0 = time.perf_counter()
        self.stopped_by = "converged"

    def rows(self) -> torch.Tensor:
        """(B,) long indices of the samples still running."""
        return torch.nonzero(self.running).flatten()

    def observe(self, index: torch.Tensor, x: torch.Tensor, E: torch.Tensor,
                finite: torch.Tensor | None = None) -> torch.Tensor:
        """Record energies ``E`` (B,) at ``x`` (B, D) for rows ``index``.

        Rows whose energy (or ``finite`` flag) is not finite are rolled back to
        their best iterate, flagged ``nan`` and stopped.
        Returns: (B,) bool, rows that are finite and still running.
        """
        ok = torch.isfinite(E) & torch.isfinite(x).all(dim=1)
        if finite is not None:
            ok = ok & finite
        fresh = ~self.started[index]
        if bool(fresh.any()):
            first = index[fresh]
            self.start_E[first] = torch.where(ok[fresh], E[fresh].detach(),
                                              torch.full_like(E[fresh], float("nan")))
            self.started[first] = True
        better = ok & (E < self.best_E[index])
        upd = index[better]
        self.best_x[upd] = x[better].detach()
        self.best_E[upd] = E[better].detach()
        bad = index[~ok]
        if bad.numel():
            self.nan[bad] = True
            self.running[bad] = False
        return ok

    def flag_nan(self, index: torch.Tensor) -> None:
        """Stop rows ``index`` whose trial step turned non-finite; they keep their best iterate."""
        if index.numel():
            self.nan[index] = True
            self.running[index] = False

    def count_progress(self, index: torch.Tensor) -> None:
        """Stall-based convergence: call once per iteration for the rows that ran it."""
        best, ref = self.best_E[index], self.ref_E[index]
        progress = (ref - best) > self.ftol * best.abs().clamp(min=1e-12)
        progress = progress | ~torch.isfinite(ref)
        self.ref_E[index] = torch.where(progress, best, ref)
        self.stall[index] = torch.where(progress, torch.zeros_like(self.stall[index]), self.stall[index] + 1)
        done = index[(self.stall[index] >= self.patience) & self.running[index]]
        self.mark_converged(done)

    def mark_converged(self, index: torch.Tensor) -> None:
        """Stop rows ``index`` whose convergence test passed; flag those that improved.

        ``converged`` is set only where the best energy is finite and below the
        energy the sample started from: a test passing on a sample that never
        got better (or never had a finite energy) is not convergence.
        """
        if index.numel():
            best = self.best_E[index]
            improved = torch.isfinite(best) & (best < self.start_E[index])
            self.converged[index] = improved
            self.running[index] = False

    def step_done(self, index: torch.Tensor, iteration: int, callback: "ProgressCallback | None" = None) -> bool:
        """Count an iteration for ``index``, report it to ``callback``; True when the run must stop."""
        self.iterations[index] += 1
        if callback is not None:
            callback(iteration, int(self.running.sum()), self.running.shape[0])
            best = getattr(callback, "best", None)
            if best is not None:
                best(iteration, self.best_x)
        if not bool(self.running.any()):
            self.stopped_by = "converged"
            return True
        if iteration + 1 >= self.max_iters:
            self.stopped_by = "iterations"
            return True
        if self.max_seconds is not None and time.perf_counter() - self._t0 > self.max_seconds:
            self.stopped_by = "time"
            return True
        return False

    def result(self) -> SolveResult:
        return SolveResult(x=self.best_x, energy=self.best_E, iterations=self.iterations,
                           converged=self.converged, nan=self.nan,
                           seconds=time.perf_counter() - self._t0, stopped_by=self.stopped_by)


class Solver:
    """Base class: options from the recipe's ``solver:`` mapping.

    Options shared by all solvers:
        iterations: maximum iterations (default 100).
        max_seconds: wall-time limit of one run, or None.
        ftol: relative energy decrease that counts as progress (default 1e-6;
            with 0 any decrease counts).
        patience: iterations without progress before a sample has converged
            (``patience >= iterations`` disables early exit: a fixed schedule).
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Any]] = {}
    common = {"iterations": 100, "max_seconds": None, "ftol": 1e-6, "patience": 5}
    needs_jacobian: ClassVar[bool] = False

    def __init__(self, **options):
        opts = dict(self.common)
        opts.update(self.defaults)
        unknown = set(options) - set(opts)
        if unknown:
            raise ValueError(f"solver {self.name!r}: unknown option(s) {sorted(unknown)}; "
                             f"known: {sorted(opts)}")
        opts.update(options)
        self.options = opts

    def tracker(self, x0: torch.Tensor, running: torch.Tensor) -> Tracker:
        o = self.options
        return Tracker(x0, running, ftol=o["ftol"], patience=o["patience"],
                       max_iters=o["iterations"], max_seconds=o["max_seconds"])

    def run(self, problem, x0: torch.Tensor, running: torch.Tensor,
            callback: ProgressCallback | None = None) -> SolveResult:
        """Minimise from ``x0`` (N, D) for the samples with ``running`` (N,) True."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"


SOLVERS: dict[str, type[Solver]] = {}


def register_solver(name: str):
    def deco(cls):
        cls.name = name
        SOLVERS[name] = cls
        return cls
    return deco


def make_solver(spec: Mapping[str, Any]) -> Solver:
    """Build a solver from ``{'type': name, **options}``."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in SOLVERS:
        raise ValueError(f"solver.type: unknown solver {kind!r}; choose from {sorted(SOLVERS)}")
    return SOLVERS[kind](**spec)
