"""Data terms. Each lives in its own module and registers itself by name
(see :mod:`fitkit.terms.base`)."""
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term  # noqa: F401
from fitkit.terms import keypoints2d  # noqa: F401  (registers 'keypoints2d')
from fitkit.terms import displacements  # noqa: F401
from fitkit.terms import densepose  # noqa: F401
