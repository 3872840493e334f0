"""SMPLify's joint-bending term on elbows and knees, in SPIN's form.

Bogo et al. ("Keep it SMPL", ECCV 2016, Eq. 4 of seed 001's summary) add
``sum_{i in elbows, knees} exp(theta_i)``: a soft barrier that is small when the
joint bends the natural way and grows exponentially when it bends backwards
(hyper-extension). SPIN (Kolotouros et al., ICCV 2019) implements it as
``exp(s_k theta_k) ** 2`` on four axis-angle components of SMPL's 72-D pose:

    ============  =======  ====  =====  ===================  ===============
    joint         SMPL id  axis  sign   72-D pose index      body_pose index
    ============  =======  ====  =====  ===================  ===============
    left_elbow    18       y     +1     3*18 + 1 = 55        52
    right_elbow   19       y     -1     3*19 + 1 = 58        55
    left_knee     4        x     -1     3*4 + 0 = 12         9
    right_knee    5        x     -1     3*5 + 0 = 15         12
    ============  =======  ====  =====  ===================  ===============

Why those signs. SMPL bodies are y-up, face +z, and their left side is +x
(``docs/conventions.md``); rotations act in the parent's frame, right-handed.

* Knees bend about the lateral x axis and the shank must swing backwards (-z).
  A rotation by theta about +x maps the downward shank (0, -1, 0) to
  (0, -cos theta, -sin theta): backwards for theta > 0. The natural bend is
  theta > 0, so the residual is ``exp(-theta)`` (< 1 when bent, > 1 when
  hyper-extended), for both knees.
* Elbows in SMPL's T-pose bend about the vertical y axis and the forearm must
  swing forwards (+z). The left forearm points along +x; a rotation by theta
  about +y maps (1, 0, 0) to (cos theta, 0, -sin theta): forwards for
  theta < 0, so the residual is ``exp(+theta)``. The right forearm points
  along -x and goes to (-cos theta, 0, sin theta): forwards for theta > 0, so
  the residual is ``exp(-theta)``.

Only the one component along the hinge axis is penalised; the other two
components of those joints are left to the pose prior, as in SPIN.
"""
from __future__ import annotations

import torch

from fitkit.body.skeleton import SMPL_JOINT_NAMES
from fitkit.errors import ParameterError
from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["BendingPrior", "BENDING_JOINTS"]

#: (joint name, axis index (0 = x, 1 = y), sign s_k) of each residual, in order.
BENDING_JOINTS = (
    ("left_elbow", 1, 1.0),
    ("right_elbow", 1, -1.0),
    ("left_knee", 0, -1.0),
    ("right_knee", 0, -1.0),
)


def _body_pose_indices() -> tuple[int, ...]:
    """body_pose columns of the BENDING_JOINTS, from the skeleton's joint order."""
    # body_pose holds joints 1..23, so joint j's axis a is column 3 (j - 1) + a.
    return tuple(3 * (SMPL_JOINT_NAMES.index(name) - 1) + axis
                 for name, axis, _ in BENDING_JOINTS)


@register_term("bending")
class BendingPrior(Term):
    """Penalty on elbows and knees bending the unnatural way (SMPLify / SPIN).

    Residuals (B, 4), dimensionless, in the order left elbow, right elbow,
    left knee, right knee::

        r_k = exp(s_k * body_pose[:, i_k])      i = (52, 55, 9, 12), s = (+1, -1, -1, -1)

    so the energy is ``sum_k exp(2 s_k theta_k)`` (SPIN's ``angle_prior``; the
    SMPLify paper writes ``sum exp(theta)``, i.e. the same barrier with a
    different slope). ``theta`` in radians. SPIN uses
    ``angle_prior_weight = 15.2`` (recipe weight 15.2**2). See the module
    docstring for the joint, axis and sign of each entry.
    """

    kind = "prior"
    #: body_pose columns (52, 55, 9, 12).
    INDICES = _body_pose_indices()
    #: signs (+1, -1, -1, -1).
    SIGNS = tuple(sign for _, _, sign in BENDING_JOINTS)

    def needs(self) -> Needs:
        return Needs(params=("body_pose",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def residuals(self, batch: Batch) -> torch.Tensor:
        pose = batch.params["body_pose"]
        if pose.ndim < 1 or pose.shape[-1] != 69:
            raise ParameterError(f"bending: body_pose must be (B, 69), got {tuple(pose.shape)}")
        index = torch.tensor(self.INDICES, device=pose.device)
        signs = torch.tensor(self.SIGNS, device=pose.device, dtype=pose.dtype)
        return torch.exp(pose.index_select(-1, index) * signs)

    def __repr__(self) -> str:
        return "BendingPrior()"
