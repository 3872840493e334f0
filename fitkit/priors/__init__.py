"""Priors: terms that regularise the parameters. Each registers itself by name
(see :mod:`fitkit.terms.base`)."""
from fitkit.priors import bending  # noqa: F401  (registers 'bending')
from fitkit.priors import camera_depth  # noqa: F401  (registers 'camera_depth')
from fitkit.priors import cnf  # noqa: F401  (registers 'cnf')
from fitkit.priors import gmm  # noqa: F401  (registers 'gmm')
from fitkit.priors import init_l2  # noqa: F401  (registers 'init_l2')
from fitkit.priors import shape  # noqa: F401  (registers 'shape_l2')
from fitkit.priors import vposer  # noqa: F401  (registers 'vposer')
