"""Data terms. Each lives in its own module and registers itself by name
(see :mod:`fitkit.terms.base`)."""
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term  # noqa: F401
from fitkit.terms import keypoints2d  # noqa: F401  (registers 'keypoints2d')
from fitkit.terms import displacements  # noqa: F401
from fitkit.terms import densepose  # noqa: F401
from fitkit.terms import flow  # noqa: F401  (registers 'vertex_flow', 'photometric_flow')
from fitkit.terms import temporal  # noqa: F401  (registers joint_acceleration, joint_velocity, pose_rate)
from fitkit.terms import keypoints3d  # noqa: F401  (registers 'keypoints3d')
