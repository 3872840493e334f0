"""SMPL-format body model with sparse evaluation.

:class:`BodyModel` evaluates the SMPL forward pass (shape blend shapes, pose
correctives, forward kinematics, linear blend skinning) for only what a fitting
stage needs: joints alone cost no vertex work, and an :class:`EvalPlan` limits
the vertex work to the requested vertices plus those a keypoint set reads.
Results match ``smplx.SMPL`` (joints = its first J output joints).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import torch

from fitkit.body import lbs
from fitkit.body.keypoint_formats import get_format
from fitkit.body.keypoint_sets import KeypointSet
from fitkit.errors import ParameterError

__all__ = ["BodyModel", "BodyOutput", "EvalPlan"]

VertexSelection = Union[None, str, Sequence[int], np.ndarray, torch.Tensor]


@dataclass
class BodyOutput:
    """Result of :meth:`BodyModel.forward`, all in meters, translation included.

    Attributes:
        joints: (B, J, 3) posed joints.
        vertices: (B, S, 3) posed vertices in the requested order, or None.
        keypoints: (B, K, 3) keypoints of the requested set, or None.
        vertex_ids: (S,) long mesh indices of ``vertices`` (None without vertices).
        keypoint_set: name of the keypoint set evaluated, or None.
    """

    joints: torch.Tensor
    vertices: torch.Tensor | None = None
    keypoints: torch.Tensor | None = None
    vertex_ids: torch.Tensor | None = None
    keypoint_set: str | None = None


@dataclass(frozen=True, eq=False)
class EvalPlan:
    """Precomputed slices for evaluating a subset of a body model's vertices.

    Built by :meth:`BodyModel.plan`; tied to that model's device and dtype.
    U below is the number of distinct vertices evaluated (requested vertices
    and the keypoint set's vertices together).

    Attributes:
        eval_ids: (U,) long mesh indices evaluated, or None for the full mesh.
        v_template: (U, 3) template vertices.
        shapedirs: (num_betas, U*3) shape blend shapes, flattened for one matmul.
        posedirs: (P, U*3) pose correctives, or None when the model has none.
        weights: (U, J) skinning weights.
        vertex_ids: (S,) requested mesh indices in requested order, or None.
        vertex_slots: (S,) positions of ``vertex_ids`` among the U evaluated
            vertices, or None when the output is all U in order.
        keypoint_set: keypoint set name, or None.
        kp_slots: (M,) positions of the keypoint set's vertex_ids among the U.
        kp_vertex_weights: (K, M) or None when the set uses no vertices.
        kp_joint_weights: (K, J) or None when the set uses no joints.
    """

    owner: int
    device: torch.device
    dtype: torch.dtype
    eval_ids: torch.Tensor | None
    v_template: torch.Tensor | None
    shapedirs: torch.Tensor | None
    posedirs: torch.Tensor | None
    weights: torch.Tensor | None
    vertex_ids: torch.Tensor | None
    vertex_slots: torch.Tensor | None
    keypoint_set: str | None
    num_keypoints: int
    kp_slots: torch.Tensor | None
    kp_vertex_weights: torch.Tensor | None
    kp_joint_weights: torch.Tensor | None

    @property
    def num_eval_vertices(self) -> int:
        """U, the number of mesh vertices this plan evaluates."""
        return 0 if self.v_template is None else self.v_template.shape[0]


def _array(arrays: Mapping, key: str, ndim: int, expected: str, dtype=np.float64) -> np.ndarray:
    if key not in arrays or arrays[key] is None:
        raise ValueError(f"model arrays: missing {key!r}, expected shape {expected}")
    value = arrays[key]
    if hasattr(value, "toarray"):  # scipy.sparse, as J_regressor in SMPL pickles
        value = value.toarray()
    try:
        value = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model arrays: {key!r} is not numeric ({exc}), expected shape {expected}") from None
    if value.ndim != ndim:
        raise ValueError(f"model arrays: {key!r} has shape {value.shape}, expected {expected}")
    if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
        raise ValueError(f"model arrays: {key!r} contains NaN or inf")
    return value


def _check_dim(key: str, value: np.ndarray, axis: int, size: int, expected: str) -> None:
    if value.shape[axis] != size:
        raise ValueError(f"model arrays: {key!r} has shape {value.shape}, expected {expected}")


def _validated_arrays(arrays: Mapping) -> dict[str, np.ndarray]:
    """Check shapes and consistency of SMPL-format arrays; error names the key."""
    v_template = _array(arrays, "v_template", 2, "(V, 3)")
    V = v_template.shape[0]
    _check_dim("v_template", v_template, 1, 3, "(V, 3)")
    kintree = _array(arrays, "kintree_table", 2, "(2, J)", dtype=np.int64)
    _check_dim("kintree_table", kintree, 0, 2, "(2, J)")
    J = kintree.shape[1]
    parents = kintree[0].copy()
    parents[0] = -1
    bad = [j for j in range(1, J) if not 0 <= parents[j] < j]
    if bad:
        raise ValueError(
            f"model arrays: 'kintree_table' row 0 (parents) is not a tree with parents before "
            f"children: joint {bad[0]} has parent {parents[bad[0]]}"
        )
    shapedirs = _array(arrays, "shapedirs", 3, f"(V={V}, 3, K)")
    _check_dim("shapedirs", shapedirs, 0, V, f"(V={V}, 3, K)")
    _check_dim("shapedirs", shapedirs, 1, 3, f"(V={V}, 3, K)")
    sizes = "(V from 'v_template', J from 'kintree_table')"
    J_regressor = _array(arrays, "J_regressor", 2, f"(J={J}, V={V})")
    if J_regressor.shape != (J, V):
        raise ValueError(f"model arrays: 'J_regressor' has shape {J_regressor.shape}, "
                         f"expected (J={J}, V={V}) {sizes}")
    weights = _array(arrays, "weights", 2, f"(V={V}, J={J})")
    if weights.shape != (V, J):
        raise ValueError(f"model arrays: 'weights' has shape {weights.shape}, expected (V={V}, J={J}) {sizes}")
    faces = _array(arrays, "f", 2, "(F, 3)", dtype=np.int64)
    _check_dim("f", faces, 1, 3, "(F, 3)")
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise ValueError(f"model arrays: 'f' indexes vertices outside [0, {V})")
    out = dict(v_template=v_template, shapedirs=shapedirs, J_regressor=J_regressor,
               weights=weights, parents=parents, f=faces, posedirs=None)
    if arrays.get("posedirs") is not None:
        P = 9 * (J - 1)
        posedirs = _array(arrays, "posedirs", 3, f"(V={V}, 3, {P})")
        if posedirs.shape != (V, 3, P):
            raise ValueError(f"model arrays: 'posedirs' has shape {posedirs.shape}, "
                             f"expected (V={V}, 3, 9 (J-1) = {P}) {sizes}")
        if np.any(posedirs):
            out["posedirs"] = posedirs
    return out


def _flat_blend(dirs: np.ndarray) -> np.ndarray:
    """(V, 3, K) blend shapes -> (K, V*3), so that coeffs (B, K) @ it is (B, V*3)."""
    return np.ascontiguousarray(dirs.reshape(-1, dirs.shape[-1]).T)


class BodyModel(torch.nn.Module):
    """SMPL-format body model evaluated sparsely and in batches.

    Args:
        arrays: smplx-named numpy arrays: ``v_template`` (V, 3), ``shapedirs``
            (V, 3, K), ``posedirs`` (V, 3, 9 (J-1)) or absent/None, ``J_regressor``
            (J, V) (dense or scipy.sparse), ``weights`` (V, J), ``kintree_table``
            (2, J) (row 0 parents; the root's entry is ignored), ``f`` (F, 3).
        num_betas: shape coefficients to use; clamped to K like smplx does.
        keypoint_sets: named keypoint sets defined on this mesh.
        name, gender: descriptive, e.g. ``'smpl'``, ``'neutral'``.
        dtype: floating dtype of all buffers (float32 or float64).

    All-zero or absent ``posedirs`` are dropped and the pose-corrective work is
    skipped. Raises ValueError naming the offending key when arrays are
    inconsistent.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        num_betas: int = 10,
        keypoint_sets: Mapping[str, KeypointSet] | None = None,
        name: str = "smpl",
        gender: str = "neutral",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        a = _validated_arrays(arrays)
        if num_betas < 0:
            raise ValueError(f"num_betas must be >= 0, got {num_betas}")
        self.name = name
        self.gender = gender
        self._num_betas = min(int(num_betas), a["shapedirs"].shape[-1])
        shapedirs = a["shapedirs"][:, :, : self._num_betas]
        J_regressor = a["J_regressor"]

        def buf(key, value, dt=dtype):
            # np.array copies: the caller's arrays may be read-only (np.load, open body)
            tensor = None if value is None else torch.from_numpy(np.array(value)).to(dt)
            self.register_buffer(key, tensor)

        buf("v_template", a["v_template"])
        buf("shapedirs_flat", _flat_blend(shapedirs))
        buf("posedirs_flat", None if a["posedirs"] is None else _flat_blend(a["posedirs"]))
        buf("J_regressor", J_regressor)
        buf("lbs_weights", a["weights"])
        buf("J_template", J_regressor @ a["v_template"])
        buf("J_shapedirs_flat", _flat_blend(np.einsum("jv,vck->jck", J_regressor, shapedirs)))
        buf("parents", a["parents"], torch.long)
        buf("faces", a["f"], torch.long)
        self._tree = lbs.KinematicTree(a["parents"].tolist())
        self._keypoint_sets = dict(keypoint_sets or {})
        for key, kps in self._keypoint_sets.items():
            self._check_keypoint_set(key, kps)
        self._plan_cache: dict = {}

    def _check_keypoint_set(self, key: str, kps: KeypointSet) -> None:
        if kps.joint_weights.shape[1] != self.num_joints:
            raise ValueError(
                f"keypoint set {key!r}: joint_weights has shape {kps.joint_weights.shape}, "
                f"expected ({kps.num_keypoints}, J={self.num_joints})"
            )
        ids = np.asarray(kps.vertex_ids)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_vertices):
            raise ValueError(f"keypoint set {key!r}: vertex_ids outside [0, {self.num_vertices})")

    # ------------------------------------------------------------------ properties
    @property
    def num_joints(self) -> int:
        return self.J_template.shape[0]

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    @property
    def num_betas(self) -> int:
        return self._num_betas

    @property
    def body_pose_dim(self) -> int:
        return 3 * (self.num_joints - 1)

    @property
    def has_pose_correctives(self) -> bool:
        return self.posedirs_flat is not None

    @property
    def keypoint_sets(self) -> dict[str, KeypointSet]:
        return dict(self._keypoint_sets)

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    @property
    def shapedirs(self) -> torch.Tensor:
        """(V, 3, num_betas) shape blend shapes (a view)."""
        return self.shapedirs_flat.T.reshape(self.num_vertices, 3, self.num_betas)

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, gender={self.gender!r}, V={self.num_vertices}, "
                f"J={self.num_joints}, num_betas={self.num_betas}, "
                f"pose_correctives={self.has_pose_correctives}, "
                f"keypoint_sets={sorted(self._keypoint_sets)}")

    # ------------------------------------------------------------------ planning
    def _vertex_ids(self, vertices: VertexSelection) -> np.ndarray | None:
        if vertices is None:
            return None
        if isinstance(vertices, str):
            if vertices != "all":
                raise ParameterError(f"vertices: expected None, 'all' or a sequence of indices, got {vertices!r}")
            return np.arange(self.num_vertices)
        if isinstance(vertices, torch.Tensor):
            vertices = vertices.detach().cpu().numpy()
        ids = np.asarray(vertices)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise ParameterError(f"vertices: expected a 1-D sequence of integer indices, got shape {ids.shape} "
                                 f"dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_vertices):
            raise ParameterError(f"vertices: indices must lie in [0, {self.num_vertices})")
        return ids

    def plan(self, vertices: VertexSelection = None, keypoints: str | None = None) -> EvalPlan:
        """Precompute what :meth:`forward` needs for a vertex subset and/or keypoints.

        Args:
            vertices: None (no vertices), ``'all'`` (full mesh) or (S,) mesh
                indices in any order, duplicates allowed.
            keypoints: name of one of :attr:`keypoint_sets`, or None.
        Returns:
            An :class:`EvalPlan` on the model's current device and dtype. Build it
            once per fitting stage and pass it to every forward call.
        """
        req = self._vertex_ids(vertices)
        kps = None
        if keypoints is not None:
            if keypoints not in self._keypoint_sets:  # maybe an alias such as 'openpose'
                keypoints = _format_name(keypoints) or keypoints
            if keypoints not in self._keypoint_sets:
                note = getattr(self, "keypoints_note", None)  # why a model has none, when its loader knows
                raise ParameterError(f"keypoints: unknown keypoint set {keypoints!r}; "
                                     f"this model has {sorted(self._keypoint_sets)}" + (f" ({note})" if note else ""))
            kps = self._keypoint_sets[keypoints]
        kp_ids = None if kps is None else np.asarray(kps.vertex_ids, dtype=np.int64)

        wanted = [x for x in (req, kp_ids) if x is not None and x.size]
        union = np.unique(np.concatenate(wanted)) if wanted else np.zeros(0, np.int64)
        full = union.size == self.num_vertices
        dev, dt = self.device, self.dtype

        def slots(ids):
            if ids is None:
                return None
            return torch.as_tensor(np.searchsorted(union, ids), dtype=torch.long, device=dev)

        v_template = shapedirs = posedirs = weights = eval_ids = None
        if union.size:
            if full:  # the buffers themselves, no copy
                v_template, shapedirs = self.v_template, self.shapedirs_flat
                posedirs, weights = self.posedirs_flat, self.lbs_weights
            else:
                eval_ids = torch.as_tensor(union, device=dev)
                v_template = self.v_template[eval_ids]
                shapedirs = _slice_flat(self.shapedirs_flat, eval_ids)
                posedirs = None if self.posedirs_flat is None else _slice_flat(self.posedirs_flat, eval_ids)
                weights = self.lbs_weights[eval_ids]

        vertex_ids = vertex_slots = None
        if req is not None:
            vertex_ids = torch.as_tensor(req, device=dev)
            if not (req.size == union.size and np.array_equal(req, union)):
                vertex_slots = slots(req)

        kp_slots = kp_vw = kp_jw = None
        if kps is not None:
            if kp_ids.size and np.any(kps.vertex_weights):
                kp_slots = slots(kp_ids)
                kp_vw = torch.as_tensor(np.asarray(kps.vertex_weights), device=dev, dtype=dt)
            if np.any(kps.joint_weights):
                kp_jw = torch.as_tensor(np.asarray(kps.joint_weights), device=dev, dtype=dt)

        return EvalPlan(
            owner=id(self), device=dev, dtype=dt, eval_ids=eval_ids,
            v_template=v_template, shapedirs=shapedirs, posedirs=posedirs, weights=weights,
            vertex_ids=vertex_ids, vertex_slots=vertex_slots,
            keypoint_set=keypoints, num_keypoints=0 if kps is None else kps.num_keypoints,
            kp_slots=kp_slots, kp_vertex_weights=kp_vw, kp_joint_weights=kp_jw,
        )

    def _cached_plan(self, vertices: VertexSelection, keypoints: str | None) -> EvalPlan:
        # Only hashable selections ('all', None, set names) are cached; explicit
        # index lists are re-planned per call -- pass plan= for those.
        if vertices is not None and not isinstance(vertices, str):
            return self.plan(vertices, keypoints)
        key = (vertices, keypoints, self.device, self.dtype)
        plan = self._plan_cache.get(key)
        if plan is None:
            plan = self._plan_cache[key] = self.plan(vertices, keypoints)
        return plan

    def _apply(self, fn, *args, **kwargs):
        self._plan_cache = {}
        return super()._apply(fn, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        global_orient: torch.Tensor,
        body_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
        *,
        plan: EvalPlan | None = None,
        vertices: VertexSelection = None,
        keypoints: str | None = None,
        validate: bool = True,
    ) -> BodyOutput:
        """Pose and shape the body.

        Args:
            global_orient: (B, 3) root rotation, axis-angle, radians.
            body_pose: (B, 3 (J-1)) local joint rotations, axis-angle, radians.
            betas: (B, k) or (1, k) shape coefficients, k <= num_betas (missing
                ones are zero; a batch of 1 is shared by all samples).
            transl: (B, 3) translation in meters, or None for zero.
            plan: from :meth:`plan`; takes precedence over ``vertices``/``keypoints``.
            vertices, keypoints: as in :meth:`plan`, for one-off calls.
            validate: check shapes, dtype, device and finiteness. The finiteness
                check synchronizes a CUDA device; a solver that already guards
                its parameters may pass ``validate=False`` (shapes are still
                checked, as that is free).
        Returns:
            :class:`BodyOutput`. With no plan, vertices or keypoints, only joints
            are computed.
        Raises:
            ParameterError naming the argument and its expected shape.
        """
        B = self._check_params(global_orient, body_pose, betas, transl, validate)
        if plan is None and (vertices is not None or keypoints is not None):
            plan = self._cached_plan(vertices, keypoints)
        if plan is not None:
            self._check_plan(plan)

        if betas.shape[1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[1]))
        if betas.shape[0] != B:
            betas = betas.expand(B, -1)

        J = self.num_joints
        rotmats = lbs.axis_angle_to_matrix(torch.cat([global_orient, body_pose], dim=1).reshape(B, J, 3))
        rest_joints = self.J_template + (betas @ self.J_shapedirs_flat).reshape(B, J, 3)
        joints, transforms = lbs.forward_kinematics(rotmats, rest_joints, self._tree)

        verts = None
        if plan is not None and plan.v_template is not None:
            verts = self._posed_vertices(plan, betas, rotmats, transforms)
        if transl is not None:
            joints = joints + transl[:, None]
            if verts is not None:
                verts = verts + transl[:, None]
        out = BodyOutput(joints=joints)
        if plan is None:
            return out
        if plan.vertex_ids is not None:
            if verts is None:  # an empty selection
                out.vertices = joints.new_zeros(B, 0, 3)
            else:
                out.vertices = verts if plan.vertex_slots is None else verts.index_select(1, plan.vertex_slots)
            out.vertex_ids = plan.vertex_ids
        if plan.keypoint_set is not None:
            out.keypoints = self._keypoints(plan, joints, verts, B)
            out.keypoint_set = plan.keypoint_set
        return out

    def _posed_vertices(self, plan: EvalPlan, betas, rotmats, transforms) -> torch.Tensor:
        """(B, U, 3) skinned vertices of the plan, without translation."""
        B, U = betas.shape[0], plan.v_template.shape[0]
        v = plan.v_template + (betas @ plan.shapedirs).reshape(B, U, 3)
        if plan.posedirs is not None:
            v = v + (lbs.pose_feature(rotmats) @ plan.posedirs).reshape(B, U, 3)
        return lbs.skin_vertices(v, plan.weights, transforms)

    @staticmethod
    def _keypoints(plan: EvalPlan, joints, verts, B) -> torch.Tensor:
        kp = None
        if plan.kp_joint_weights is not None:
            kp = plan.kp_joint_weights @ joints
        if plan.kp_vertex_weights is not None:
            part = plan.kp_vertex_weights @ verts.index_select(1, plan.kp_slots)
            kp = part if kp is None else kp + part
        if kp is None:
            kp = joints.new_zeros(B, plan.num_keypoints, 3)
        return kp

    def _check_plan(self, plan: EvalPlan) -> None:
        if not isinstance(plan, EvalPlan):
            raise ParameterError(f"plan: expected an EvalPlan from BodyModel.plan, got {type(plan).__name__}")
        if plan.owner != id(self):
            raise ParameterError("plan: was built by a different BodyModel")
        if plan.device != self.device or plan.dtype != self.dtype:
            raise ParameterError(
                f"plan: built for {plan.device}/{plan.dtype} but the model is now on "
                f"{self.device}/{self.dtype}; call plan() again after .to()"
            )

    def _check_params(self, global_orient, body_pose, betas, transl, validate: bool) -> int:
        """Shapes always; dtype, device and finiteness when ``validate``. Returns B."""
        named = [("global_orient", global_orient, "(B, 3)"),
                 ("body_pose", body_pose, f"(B, {self.body_pose_dim})"),
                 ("betas", betas, f"(B, k<={self.num_betas})")]
        if transl is not None:
            named.append(("transl", transl, "(B, 3)"))
        for arg, t, expected in named:
            if not isinstance(t, torch.Tensor):
                raise ParameterError(f"{arg}: expected a tensor of shape {expected}, got {type(t).__name__}")
            if t.ndim != 2:
                raise ParameterError(f"{arg}: expected shape {expected}, got {tuple(t.shape)}")
        B = global_orient.shape[0]
        widths = {"global_orient": 3, "body_pose": self.body_pose_dim, "transl": 3}
        for arg, t, expected in named:
            bad_width = t.shape[1] > self.num_betas if arg == "betas" else t.shape[1] != widths[arg]
            bad_batch = t.shape[0] != B and not (arg == "betas" and t.shape[0] == 1)
            if bad_width or bad_batch:
                raise ParameterError(f"{arg}: expected shape {expected} with B={B} (global_orient's batch), "
                                     f"got {tuple(t.shape)}")
        if not validate:
            return B
        for arg, t, expected in named:
            if t.dtype != self.dtype:
                raise ParameterError(f"{arg}: expected dtype {self.dtype} (the model's), got {t.dtype}")
            if t.device != self.device:
                raise ParameterError(f"{arg}: expected device {self.device} (the model's), got {t.device}")
        finite = torch.stack([torch.isfinite(t).all() for _, t, _ in named])
        if not bool(finite.all()):
            first = next(arg for (arg, _, _), ok in zip(named, finite.tolist()) if not ok)
            raise ParameterError(f"{first}: contains NaN or inf (expected finite values, shape "
                                 f"{dict((a, e) for a, _, e in named)[first]})")
        return B


def _format_name(name: str) -> str | None:
    """Canonical keypoint-format name for an alias such as 'openpose', else None."""
    try:
        return get_format(name).name
    except ValueError:
        return None


def _slice_flat(flat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(K, V*3) flattened blend shapes restricted to vertices ``ids`` -> (K, U*3)."""
    K = flat.shape[0]
    return flat.reshape(K, -1, 3)[:, ids].reshape(K, -1).contiguous()
