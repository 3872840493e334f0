"""Posed points of a fixed set, with analytic Jacobians for Gauss-Newton solvers.

:class:`PointRig` evaluates a fixed set of posed points -- a keypoint set, the
skeleton joints and/or mesh vertices -- and, on request, the Jacobian of every
point coordinate with respect to the smplx parameters, in closed form and for a
whole batch at once (no autograd, no per-sample loop).

Precontraction
--------------
Every point is a fixed linear blend of skinned vertices and posed joints, so
linear blend skinning can be summed over the vertex dimension once, at
construction. What is left for point ``p`` is a short list of *pairs* ``(p, j)``
over the joints ``j`` that move it::

    x_p = sum_j  G_j q_pj + w_pj t_j  +  tau_p transl

where ``[G_j | t_j]`` is joint j's world transform from forward kinematics,
``w_pj`` the total skinning weight of the point on joint j and
``q_pj = qt_pj + qS_pj beta + qP_pj f(R)`` its weighted rest position, with
``f`` SMPL's pose-corrective feature (flattened ``R_j - I`` of joints 1..J-1).
A posed joint is the pair ``w = 1, q = J_j(beta)``, as ``G_j J_j + t_j`` is
exactly joint j's posed location. ``tau_p`` is the point's total blend weight
(1 for joints, vertices and keypoints whose weights sum to one), because
keypoints are blended from translated joints and vertices.

Jacobians
---------
* transl: ``tau_p`` times the identity.
* betas: ``q`` is linear in beta and so is ``t_j = sum over the chain of j of
  (G_parent(i) - G_i) J_i(beta)``. Collecting the factor of each ``G_k`` gives
  ``d x_p / d beta = sum_k G_k E_pk + c_p0 dJ_0/d beta`` with constant ``E``:
  one matrix product for all points and betas.
* pose: with ``R(theta + d theta) = R(theta) Exp(J_r(theta) d theta)`` (``J_r``
  the right Jacobian of SO(3)), a change of joint i's axis-angle turns every
  transform of i's subtree by the world rotation ``w = G_i J_r(theta_i) d theta``
  about i's posed location ``o_i``. Hence ``d x_p = w x z_pi`` with
  ``z_pi = sum over pairs (p, j), j in subtree(i) of (G_j q_pj + w_pj t_j)
  - c_pi o_i`` and ``c_pi`` the point's weight mass on that subtree (a
  subtree-indicator matrix product). Pose correctives add
  ``sum_j G_j qP_pj d f / d theta_i``, where only joint i's nine entries of
  ``f`` change, by ``d R_i / d theta_i,a = R_i [J_r(theta_i) e_a]_x``. That term
  is evaluated per source vertex ``m`` of a point (``sum_m A_m P_m df/dtheta``
  with ``A_m`` the vertex's blended rotation), which is fewer terms than pairs.

Layouts tried (open body, body25, B = 1024, float32, 2 CPU threads): keeping
only the 65 weighted (point, joint) pairs beat all 25 x 24 pairs by about 3.5x
for the forward pass and 1.35x with the Jacobian, so pairs are always sparse.

All columns are derivatives with respect to the parameters exactly as passed
(axis-angle in radians, betas, translation in meters).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fitkit.body import lbs
from fitkit.body.model import BodyModel, _format_name
from fitkit.errors import ParameterError

__all__ = ["PointRig", "right_jacobian_so3"]

# Below this squared angle the right-Jacobian coefficients use their Taylor
# series (terms to theta^8: truncation below 1e-18 at theta = 0.1 rad); above
# it the closed forms lose at most ~1e-13 (float64) to cancellation.
_SMALL_ANGLE_SQ = 1e-2


def _jr_coefficients(theta_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """b = (1 - cos t) / t^2 and c = (t - sin t) / t^3, stable at t -> 0.

    Args:
        theta_sq: (...,) squared rotation angles, rad^2.
    Returns:
        b, c: (...,) each.
    """
    small = theta_sq < _SMALL_ANGLE_SQ
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(safe_sq)
    half_sin = torch.sin(0.5 * theta)
    b_exact = 2.0 * half_sin * half_sin / safe_sq
    c_exact = (theta - torch.sin(theta)) / (safe_sq * theta)
    t = theta_sq
    b_series = 0.5 - t / 24.0 * (1.0 - t / 30.0 * (1.0 - t / 56.0 * (1.0 - t / 90.0)))
    c_series = (1.0 - t / 20.0 * (1.0 - t / 42.0 * (1.0 - t / 72.0 * (1.0 - t / 110.0)))) / 6.0
    return torch.where(small, b_series, b_exact), torch.where(small, c_series, c_exact)


def right_jacobian_so3(rotvec: torch.Tensor) -> torch.Tensor:
    """Right Jacobian of SO(3), ``Exp(r + d) ~= Exp(r) Exp(J_r(r) d)``.

    ``J_r(r) = I - b [r]_x + c [r]_x^2`` with b, c as in
    :func:`_jr_coefficients`; exact and finite at r = 0 (where it is I).

    Args:
        rotvec: (..., 3) axis-angle vectors, radians.
    Returns:
        (..., 3, 3) matrices (dimensionless).
    """
    x, y, z = rotvec.unbind(-1)
    theta_sq = x * x + y * y + z * z
    b, c = _jr_coefficients(theta_sq)
    # [r]_x^2 = r r^T - |r|^2 I
    one = torch.ones_like(theta_sq)
    ct = c * theta_sq
    bx, by, bz = b * x, b * y, b * z
    rows = (
        one + c * x * x - ct, bz + c * x * y, -by + c * x * z,
        -bz + c * y * x, one + c * y * y - ct, bx + c * y * z,
        by + c * z * x, -bx + c * z * y, one + c * z * z - ct,
    )
    return torch.stack(rows, dim=-1).reshape(*rotvec.shape[:-1], 3, 3)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices, ``skew(v) @ x = v x x``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=-1).reshape(*v.shape[:-1], 3, 3)


def _cpu_chunk(num_rows: int, row_size: int, device: torch.device, budget: int = 2 ** 19) -> int:
    """Batch rows per chunk so that a (rows, row_size) intermediate stays cache-sized on CPU."""
    if device.type != "cpu":
        return max(num_rows, 1)
    return max(1, min(num_rows, budget // max(row_size, 1)))


class PointRig(torch.nn.Module):
    """Posed points of a fixed set (a keypoint set, the skeleton joints and/or a
    vertex subset) with analytic Jacobians w.r.t. the smplx parameters.

    Args:
        model: the body model; its arrays are read once, at construction (later
            changes to the model are not seen; move the rig with ``.to()``).
        keypoints: name (or alias, e.g. ``'openpose'``) of one of
            ``model.keypoint_sets``, or None.
        joints: include the model's J posed skeleton joints.
        vertices: None, ``'all'`` (the full mesh) or (S,) mesh indices in any
            order, duplicates allowed.

    Output rows are the concatenation, in this order, of keypoints, joints and
    vertices (only those requested); :attr:`slices` maps each part to its rows.
    The rig is built on the model's device and dtype; parameters must match.

    Attributes:
        slices: ``{'keypoints' | 'joints' | 'vertices': slice}`` output rows.
        param_slices: ``{'global_orient' | 'body_pose' | 'betas' | 'transl': slice}``
            Jacobian columns.
        num_points: P, output rows.
        num_params: D = 3 + 3 (J-1) + num_betas + 3.
        num_pairs: (point, joint) pairs with a nonzero weight, the forward work.
        num_sources: (point, vertex) entries carrying pose correctives (0 without).

    Memory: the Jacobian is (B, P, 3, D); with ``vertices='all'`` that is
    B x V x 3 x D numbers (open body, 10 betas: 13718 x 3 x 85 = 3.5 M per
    sample, 14 MB in float32), plus work arrays of about the same size. The
    rig stores a shape-Jacobian table of P x J x 3 x num_betas numbers (open
    body full mesh: 9.9 M) and, with pose correctives, the 3 x 9 (J-1)
    corrective directions of every source vertex (SMPL full mesh: 4.3 M).
    """

    def __init__(
        self,
        model: BodyModel,
        *,
        keypoints: str | None = None,
        joints: bool = False,
        vertices: None | str | Sequence[int] = None,
    ):
        super().__init__()
        J, V, nb = model.num_joints, model.num_vertices, model.num_betas
        self.num_joints, self.num_betas = J, nb
        self.num_params = 3 * J + nb + 3
        self.param_slices = {"global_orient": slice(0, 3), "body_pose": slice(3, 3 * J),
                             "betas": slice(3 * J, 3 * J + nb), "transl": slice(3 * J + nb, 3 * J + nb + 3)}
        self.has_pose_correctives = model.has_pose_correctives

        # ---- the points as (point, vertex, weight) and (point, joint, weight) entries
        vp, vv, vw = [], [], []
        jp, jj, jw = [], [], []
        self.slices: dict[str, slice] = {}
        self.keypoint_set: str | None = None
        P = 0
        if keypoints is not None:
            sets = model.keypoint_sets
            name = keypoints if keypoints in sets else (_format_name(keypoints) or keypoints)
            if name not in sets:
                raise ParameterError(f"keypoints: unknown keypoint set {keypoints!r}; "
                                     f"this model has {sorted(sets)}")
            kps = sets[name]
            self.keypoint_set = name
            vwm = np.asarray(kps.vertex_weights, dtype=np.float64)
            k_idx, m_idx = np.nonzero(vwm)
            vp.append(k_idx)
            vv.append(np.asarray(kps.vertex_ids, dtype=np.int64)[m_idx])
            vw.append(vwm[k_idx, m_idx])
            jwm = np.asarray(kps.joint_weights, dtype=np.float64)
            k_idx, j_idx = np.nonzero(jwm)
            jp.append(k_idx)
            jj.append(j_idx)
            jw.append(jwm[k_idx, j_idx])
            self.slices["keypoints"] = slice(P, P + kps.num_keypoints)
            P += kps.num_keypoints
        if joints:
            jp.append(P + np.arange(J))
            jj.append(np.arange(J))
            jw.append(np.ones(J))
            self.slices["joints"] = slice(P, P + J)
            P += J
        ids = model._vertex_ids(vertices)  # validates; errors name `vertices`
        if ids is not None:
            vp.append(P + np.arange(ids.size))
            vv.append(ids)
            vw.append(np.ones(ids.size))
            self.slices["vertices"] = slice(P, P + ids.size)
            P += ids.size
        if P == 0:
            raise ParameterError("keypoints, joints, vertices: select at least one point "
                                 "(a keypoint set, joints=True or a non-empty vertex selection)")
        self.num_points = P

        def cat(parts, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        vp, vv, vw = cat(vp, np.int64), cat(vv, np.int64), cat(vw, np.float64)
        jp, jj, jw = cat(jp, np.int64), cat(jj, np.int64), cat(jw, np.float64)
        # BodyModel blends keypoints from translated joints and vertices, so a
        # point moves with transl times its total weight (1 for normalized sets).
        transl_weight = np.zeros(P)
        np.add.at(transl_weight, vp, vw)
        np.add.at(transl_weight, jp, jw)

        def host(t):
            return t.detach().to("cpu", torch.float64).numpy()

        # ---- pairs: expand vertex entries over their skinned joints (triplets)
        weights = host(model.lbs_weights)                                   # (V, J)
        w_rows = weights[vv]                                                # (E, J)
        t_src, t_joint = np.nonzero(w_rows)                                 # triplet -> entry, joint
        t_coef = vw[t_src] * w_rows[t_src, t_joint]
        keys_v = vp[t_src] * J + t_joint
        keys_j = jp * J + jj
        keys = np.unique(np.concatenate([keys_v, keys_j]))                  # pair = point * J + joint
        N = self.num_pairs = keys.size
        t_pair = np.searchsorted(keys, keys_v)
        j_pair = np.searchsorted(keys, keys_j)

        from scipy.sparse import csr_matrix

        tri = csr_matrix((t_coef, (t_pair, vv[t_src])), shape=(N, V))       # sums duplicates
        J_template = host(model.J_template)                                 # (J, 3)
        J_shapedirs = host(model.J_shapedirs_flat).T.reshape(J, 3, nb)
        pair_w = np.asarray(tri.sum(axis=1)).ravel()
        np.add.at(pair_w, j_pair, jw)
        pair_qt = tri @ host(model.v_template)
        np.add.at(pair_qt, j_pair, jw[:, None] * J_template[jj])
        pair_qS = (tri @ host(model.shapedirs).reshape(V, 3 * nb)).reshape(N, 3, nb)
        np.add.at(pair_qS, j_pair, jw[:, None, None] * J_shapedirs[jj])

        parents = model.parents.tolist()
        parents[0] = -1
        subtree = np.zeros((J, J))                                          # [j, i]: j in subtree(i)
        for j in range(J):
            i = j
            while i >= 0:
                subtree[j, i] = 1.0
                i = parents[i]
        mass = np.zeros(P * J)
        mass[keys] = pair_w
        mass = mass.reshape(P, J) @ subtree                                 # (P, J) c_pi

        # Shape Jacobian: the factor of each G_k in
        #   sum_n G_jn qS_n + sum_i c_pi (G_parent(i) - G_i) JS_i     (G_parent(root) = I)
        # is E_pk = qS_pk - c_pk JS_k + sum over children i of k of c_pi JS_i.
        E = np.zeros((P * J, 3, nb))
        E[keys] = pair_qS
        E = E.reshape(P, J, 3, nb) - mass[:, :, None, None] * J_shapedirs
        for i in range(1, J):
            E[:, parents[i]] += mass[:, i, None, None] * J_shapedirs[i]
        beta_const = mass[:, 0, None, None] * J_shapedirs[0]                # (P, 3, nb)

        dev, dt = model.device, model.dtype

        def buf(name, value, dtype=dt):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(value)).to(dev, dtype),
                                 persistent=False)

        buf("J_template", J_template)
        buf("J_shapedirs_flat", J_shapedirs.transpose(2, 0, 1).reshape(nb, J * 3))
        buf("pair_point", keys // J, torch.long)
        buf("pair_joint", keys % J, torch.long)
        buf("pair_w", pair_w)
        buf("pair_qt", pair_qt)
        buf("pair_qS", pair_qS.reshape(N * 3, nb))                         # (N*3, nb)
        # subtree indicator and masses with each joint column repeated for the
        # 3 axis-angle components, the inner layout of the pose columns
        buf("subtree_rep", np.repeat(subtree, 3, axis=1))                 # (J, 3J)
        buf("mass_rep", np.repeat(mass, 3, axis=1))                       # (P, 3J)
        buf("beta_E", E.transpose(1, 2, 0, 3).reshape(J * 3, P * nb))     # [(k, d), (p, e)]
        buf("beta_const", beta_const.transpose(1, 0, 2))                  # (3, P, nb)
        buf("transl_weight", transl_weight)
        self._unit_transl = bool(np.all(transl_weight == 1.0))

        # ---- pose correctives, per source (point, vertex) entry
        self.num_sources = 0
        for name in ("src_point", "src_mix", "src_posedirs", "tri_pair", "tri_src", "tri_coef"):
            self.register_buffer(name, None, persistent=False)
        if model.has_pose_correctives and vv.size:
            F = 9 * (J - 1)
            posedirs = host(model.posedirs_flat).T.reshape(V, 3, F)
            self.num_sources = vv.size
            buf("src_point", vp, torch.long)                                # (M,)
            buf("src_mix", vw[:, None] * weights[vv])                       # (M, J) blend of G_j
            buf("src_posedirs", posedirs[vv])                               # (M, 3, 9 (J-1))
            buf("tri_pair", t_pair, torch.long)                             # offsets into pairs
            buf("tri_src", t_src, torch.long)
            buf("tri_coef", t_coef)
        self._tree = lbs.KinematicTree(parents)

    # ------------------------------------------------------------------ helpers
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the rig's tables; parameters must have it."""
        return self.J_template.dtype

    @property
    def device(self) -> torch.device:
        """Device of the rig's tables; parameters must be on it."""
        return self.J_template.device

    def extra_repr(self) -> str:
        parts = ", ".join(f"{k}={s.stop - s.start}" for k, s in self.slices.items())
        return (f"points={self.num_points} ({parts}), params={self.num_params}, "
                f"pairs={self.num_pairs}, corrective_sources={self.num_sources}")

    def _check(self, global_orient, body_pose, betas, transl, validate: bool):
        """Validate shapes (always) and dtype/device/finiteness (when ``validate``).

        Returns:
            B and betas zero-padded and expanded to (B, num_betas).
        """
        J, nb = self.num_joints, self.num_betas
        named = [("global_orient", global_orient, "(B, 3)", 3),
                 ("body_pose", body_pose, f"(B, {3 * (J - 1)})", 3 * (J - 1)),
                 ("betas", betas, f"(B, k<={nb})", None)]
        if transl is not None:
            named.append(("transl", transl, "(B, 3)", 3))
        for arg, t, expected, _ in named:
            if not isinstance(t, torch.Tensor):
                raise ParameterError(f"{arg}: expected a tensor of shape {expected}, got {type(t).__name__}")
            if t.ndim != 2:
                raise ParameterError(f"{arg}: expected shape {expected}, got {tuple(t.shape)}")
        B = global_orient.shape[0]
        for arg, t, expected, width in named:
            bad_width = t.shape[1] > nb if width is None else t.shape[1] != width
            bad_batch = t.shape[0] != B and not (arg == "betas" and t.shape[0] == 1)
            if bad_width or bad_batch:
                raise ParameterError(f"{arg}: expected shape {expected} with B={B} (global_orient's batch), "
                                     f"got {tuple(t.shape)}")
        if validate:
            for arg, t, _, _ in named:
                if t.dtype != self.dtype:
                    raise ParameterError(f"{arg}: expected dtype {self.dtype} (the rig's), got {t.dtype}")
                if t.device != self.device:
                    raise ParameterError(f"{arg}: expected device {self.device} (the rig's), got {t.device}")
            finite = torch.stack([torch.isfinite(t).all() for _, t, _, _ in named])
            if not bool(finite.all()):
                first = next(n[0] for n, ok in zip(named, finite.tolist()) if not ok)
                raise ParameterError(f"{first}: contains NaN or inf")
        if betas.shape[1] < nb:
            betas = torch.nn.functional.pad(betas, (0, nb - betas.shape[1]))
        if betas.shape[0] != B:
            betas = betas.expand(B, -1)
        return B, betas

    def _pairs(self, rotvecs: torch.Tensor, betas: torch.Tensor):
        """Forward work shared by both entry points.

        The per-pair work runs with the batch as the innermost dimension, so
        that every elementwise step is a long contiguous vector operation.

        Args:
            rotvecs: (B, J, 3) axis-angle, radians; betas: (B, num_betas).
        Returns:
            rotmats (B, J, 3, 3) local rotations, posed joints (B, J, 3) and
            transforms (B, J, 3, 4) without translation, and the posed partial
            point of every pair, ``G_j q_pj + w_pj t_j``, as (N, 3, B), meters.
        """
        B, J, N = betas.shape[0], self.num_joints, self.num_pairs
        rotmats = lbs.axis_angle_to_matrix(rotvecs)
        # rowwise products: a sample's numbers must not depend on the rest of the batch
        rest = self.J_template + lbs.rowwise_matmul(betas, self.J_shapedirs_flat).reshape(B, J, 3)
        posed, transforms = lbs.forward_kinematics(rotmats, rest, self._tree)
        q = (self.pair_qt.view(N * 3, 1) + lbs.rowwise_matmul(betas, self.pair_qS.T).T).reshape(N, 3, B)
        if self.num_sources:
            feature = lbs.pose_feature(rotmats)                              # (B, 9 (J-1))
            offsets = lbs.rowwise_matmul(feature, self.src_posedirs.flatten(0, 1).T).T.reshape(-1, 3, B)  # (M, 3, B)
            offsets = offsets.index_select(0, self.tri_src) * self.tri_coef[:, None, None]
            q = q.index_add(0, self.tri_pair, offsets)
        tn = transforms.permute(1, 2, 3, 0).contiguous().index_select(0, self.pair_joint)  # (N, 3, 4, B)
        x = tn[:, :, 3] * self.pair_w[:, None, None]
        for k in range(3):
            x = x.addcmul(tn[:, :, k], q[:, k, None])
        return rotmats, posed, transforms, x

    def _translate(self, points: torch.Tensor, transl: torch.Tensor | None) -> torch.Tensor:
        if transl is None:
            return points
        if self._unit_transl:
            return points + transl[:, None]
        return points + self.transl_weight[:, None] * transl[:, None]

    # ------------------------------------------------------------------ API
    def forward(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor,
                transl: torch.Tensor | None = None, *, validate: bool = True) -> torch.Tensor:
        """Posed points, differentiable by autograd.

        Args:
            global_orient: (B, 3) root rotation, axis-angle, radians.
            body_pose: (B, 3 (J-1)) local joint rotations, axis-angle, radians.
            betas: (B, k) or (1, k) shape coefficients, k <= num_betas (missing
                ones are zero; a batch of 1 is shared by all samples).
            transl: (B, 3) translation in meters, or None for zero.
            validate: also check dtype, device and finiteness (shapes are
                always checked); the finiteness check synchronizes a CUDA device.
        Returns:
            (B, P, 3) points in meters, rows as in :attr:`slices`.
        Raises:
            ParameterError naming the argument at fault.
        """
        B, betas = self._check(global_orient, body_pose, betas, transl, validate)
        rotvecs = torch.cat([global_orient, body_pose], dim=1).reshape(B, self.num_joints, 3)
        x = self._pairs(rotvecs, betas)[3]                                 # (N, 3, B)
        points = x.new_zeros(self.num_points, 3, B).index_add(0, self.pair_point, x)
        return self._translate(points.permute(2, 0, 1), transl)

    @torch.no_grad()
    def forward_with_jacobian(self, global_orient: torch.Tensor, body_pose: torch.Tensor, betas: torch.Tensor,
                              transl: torch.Tensor | None = None, *,
                              validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Posed points and their analytic Jacobian; no autograd graph is built.

        Args:
            global_orient, body_pose, betas, transl, validate: as in :meth:`forward`.
        Returns:
            points: (B, P, 3) in meters, detached.
            jac: (B, P, 3, D), ``jac[b, p, c, d] = d points[b, p, c] / d param[b, d]``
                with the columns ``[global_orient (3), body_pose (3 (J-1)),
                betas (num_betas), transl (3)]`` (:attr:`param_slices`), in
                meters per radian, meters per unit beta and meters per meter.
                With (1, k) betas the beta columns are per sample (as if betas
                were expanded to (B, num_betas)); sum them over the batch for
                the derivative w.r.t. the shared row.
        Raises:
            ParameterError naming the argument at fault.
        """
        B, betas = self._check(global_orient, body_pose, betas, transl, validate)
        J, P, nb = self.num_joints, self.num_points, self.num_betas
        rotvecs = torch.cat([global_orient, body_pose], dim=1).reshape(B, J, 3)
        rotmats, posed, transforms, x = self._pairs(rotvecs, betas)
        rot = transforms[..., :3]                                           # (B, J, 3, 3) world G_j

        # Pair partials into a dense (B, 3, P, J), then subtree sums in one matmul,
        # each joint column repeated for the 3 axis-angle components.
        X = x.new_zeros(B, 3, P * J)
        X.index_copy_(2, self.pair_point * J + self.pair_joint, x.permute(2, 1, 0))
        z = torch.bmm(X.view(B, 3 * P, J), self.subtree_rep.expand(B, J, 3 * J)).view(B, 3, P, 3 * J)
        # the root's subtree holds every pair (a copy: z is updated in place below)
        points = self._translate(z[..., 0].transpose(1, 2).clone(memory_format=torch.contiguous_format), transl)
        # lever arms about each joint's posed location: z_pi -= c_pi o_i
        posed_rep = posed.transpose(1, 2).repeat_interleave(3, dim=-1)    # (B, 3, 3J)
        z.addcmul_(self.mass_rep, posed_rep[:, :, None], value=-1.0)

        jac = x.new_empty(B, P, 3, self.num_params)
        # column (i, a) is m x z_pi with m = G_i J_r(theta_i) e_a; M is (B, s, (i, a))
        jr = right_jacobian_so3(rotvecs)                                   # (B, J, 3, 3)
        M = (rot @ jr).permute(0, 2, 1, 3).reshape(B, 3, 3 * J)
        for r, s, t in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):                   # (m x z)_r = m_s z_t - m_t z_s
            out = jac[:, :, r, : 3 * J]                                      # (B, P, 3J) view
            torch.mul(z[:, t], M[:, s, None], out=out)
            out.addcmul_(z[:, s], M[:, t, None], value=-1.0)
        del z, X
        if self.num_sources:
            self._add_corrective_pose_columns(jac, rot, rotmats, jr)

        # a multiply-and-sum rather than a batched GEMM, which rounds a sample
        # differently for another batch size (float32, MKL); cache-sized pieces
        G = rot.permute(0, 2, 1, 3).reshape(B, 3, J * 3, 1)
        step = max(1, (1 << 22) // (3 * J * 3 * P * nb))
        dbeta = torch.cat([(G[s:s + step] * self.beta_E).sum(2) for s in range(0, B, step)])  # (B, 3, P*nb)
        jac[..., self.param_slices["betas"]] = (dbeta.view(B, 3, P, nb) + self.beta_const).transpose(1, 2)

        tr = jac[..., self.param_slices["transl"]]
        tr.zero_()
        tr.diagonal(dim1=-2, dim2=-1).copy_(self.transl_weight[:, None].expand(B, P, 3))
        return points, jac

    def _add_corrective_pose_columns(self, jac, rot, rotmats, jr) -> None:
        """Add the pose correctives' share to the body_pose columns of ``jac`` in place.

        For source m (a vertex of a point, blended rotation ``A_m = sum_j mix_mj G_j``)
        and body joint i: ``A_m P_m[:, block i] d vec(R_i) / d theta_i``.

        Args:
            jac: (B, P, 3, D) being filled; rot: (B, J, 3, 3) world rotations;
            rotmats: (B, J, 3, 3) local rotations; jr: (B, J, 3, 3) right Jacobians.
        """
        B, J = rot.shape[0], self.num_joints
        M = self.num_sources
        # d R_i / d theta_i,a = R_i [J_r e_a]_x, flattened row-major like pose_feature
        dR = rotmats[:, 1:, None] @ _skew(jr[:, 1:].transpose(-1, -2))       # (B, J-1, a, 3, 3)
        dR = dR.reshape(B, J - 1, 3, 9).transpose(-1, -2)                   # (B, J-1, 9, a)
        blend = torch.matmul(self.src_mix, rot.reshape(B, J, 9))            # (B, M, 9) A_m
        directions = self.src_posedirs.view(M, 3, J - 1, 9)
        body = jac[..., 3: 3 * J]                                           # (B, P, 3, 3 (J-1)) view
        step = _cpu_chunk(B, M * 9 * (J - 1), rot.device)                   # cache-sized pieces on CPU
        for s in range(0, B, step):
            e = min(B, s + step)
            u = torch.einsum("mdie,biea->bmdia", directions, dR[s:e])       # (b, M, 3, J-1, 3)
            u = torch.bmm(blend[s:e].reshape(-1, 3, 3), u.reshape(-1, 3, 3 * (J - 1)))
            body[s:e].index_add_(1, self.src_point, u.view(e - s, M, 3, 3 * (J - 1)))
