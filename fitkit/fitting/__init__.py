"""The fitting engine: parameter layouts, the batched objective, stages and recipes.

Terms live in :mod:`fitkit.terms`, priors in :mod:`fitkit.priors`, solvers in
:mod:`fitkit.solvers`; this package only wires them together.
"""
