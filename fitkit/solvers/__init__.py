"""Batched per-sample solvers: Adam, L-BFGS, Levenberg–Marquardt.

Each solver minimises ``E_b(x_b) = ||r_b(x_b)||^2`` independently for every
sample b of a batch (see :mod:`fitkit.solvers.base` for the shared contract:
per-sample convergence, keep-best, NaN isolation, iteration and time limits).
"""
from fitkit.solvers.base import SOLVERS, SolveResult, Solver, make_solver, register_solver  # noqa: F401
from fitkit.solvers import adam, lbfgs, lm  # noqa: F401  (register the built-in solvers)
