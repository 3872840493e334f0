"""Linear blend skinning for SMPL-format body models, as pure batched functions.

Conventions match SMPL / smplx: every joint rotates about its own rest location,
joint 0's rotation (``global_orient``) is about the rest pelvis joint, and a
global translation is added by the caller after skinning. Everything is batch
first; nothing loops over samples.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

__all__ = [
    "axis_angle_to_matrix",
    "pose_feature",
    "KinematicTree",
    "forward_kinematics",
    "skin_vertices",
    "rowwise_matmul",
]

# Below this squared angle the Rodrigues coefficients use their Taylor series.
# With terms up to theta^6 the truncation error (~theta^8 / 9!) is far below
# float64 resolution, and the exact branch never sees a tiny angle, so neither
# branch loses precision to cancellation and gradients stay finite at zero.
_SMALL_ANGLE_SQ = 1e-4


def _rodrigues_coefficients(theta_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients a = sin(t)/t and b = (1 - cos t)/t^2 of R = I + a K + b K^2.

    Args:
        theta_sq: (...,) squared rotation angles, rad^2.
    Returns:
        a, b: (...,) each.
    """
    small = theta_sq < _SMALL_ANGLE_SQ
    # Feed the exact branch a harmless value where the series is used, so that
    # its (discarded) gradient is finite and torch.where does not produce NaN.
    safe_sq = torch.where(small, torch.ones_like(theta_sq), theta_sq)
    theta = torch.sqrt(safe_sq)
    half_sin = torch.sin(0.5 * theta)
    a_exact = torch.sin(theta) / theta
    b_exact = 2.0 * half_sin * half_sin / safe_sq  # 1 - cos t without cancellation

    t = theta_sq
    a_series = 1.0 - t / 6.0 * (1.0 - t / 20.0 * (1.0 - t / 42.0))
    b_series = 0.5 - t / 24.0 * (1.0 - t / 30.0 * (1.0 - t / 56.0))
    return torch.where(small, a_series, a_exact), torch.where(small, b_series, b_exact)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors to rotation matrices (Rodrigues), safe at zero angle.

    Args:
        rotvec: (..., 3) axis * angle, radians. Typically (B, N, 3).
    Returns:
        (..., 3, 3) rotation matrices, R @ x rotates column vectors x.
    """
    if rotvec.shape[-1] != 3:
        raise ValueError(f"rotvec must have shape (..., 3), got {tuple(rotvec.shape)}")
    x, y, z = rotvec.unbind(-1)
    theta_sq = x * x + y * y + z * z
    a, b = _rodrigues_coefficients(theta_sq)
    # I + a K + b K^2 written out, with K the cross-product matrix of rotvec.
    xx, yy, zz = b * x * x, b * y * y, b * z * z
    xy, xz, yz = b * x * y, b * x * z, b * y * z
    ax, ay, az = a * x, a * y, a * z
    one = torch.ones_like(theta_sq)
    rows = (
        one - yy - zz, xy - az, xz + ay,
        xy + az, one - xx - zz, yz - ax,
        xz - ay, yz + ax, one - xx - yy,
    )
    return torch.stack(rows, dim=-1).reshape(*rotvec.shape[:-1], 3, 3)


def pose_feature(rotmats: torch.Tensor) -> torch.Tensor:
    """SMPL pose-corrective feature: flattened (R_j - I) of every non-root joint.

    Args:
        rotmats: (B, J, 3, 3) local joint rotations.
    Returns:
        (B, 9 (J - 1)), ordered like smplx (joint-major, then row-major 3x3).
    """
    eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
    return (rotmats[:, 1:] - eye).flatten(1)


class KinematicTree:
    """A joint hierarchy grouped into depth levels for level-parallel kinematics.

    ``parents[0]`` is the root (its stored value is ignored: SMPL pickles use -1
    or 2**32 - 1); every other joint must have a parent with a smaller index.
    Level ``d`` holds the joints at depth ``d``; the parent of each joint in a
    level lies in the previous level, so a level is one batched matmul.
    """

    def __init__(self, parents: Sequence[int]):
        parents = [int(p) for p in parents]
        if not parents:
            raise ValueError("parents must name at least the root joint")
        num_joints = len(parents)
        for j in range(1, num_joints):
            if not 0 <= parents[j] < j:
                raise ValueError(
                    f"parents[{j}] = {parents[j]}: each non-root joint needs a parent "
                    f"with a smaller index (0 <= parent < {j})"
                )
        self.parents = (-1,) + tuple(parents[1:])
        self.num_joints = num_joints

        depth = [0] * num_joints
        for j in range(1, num_joints):
            depth[j] = depth[parents[j]] + 1
        order = sorted(range(num_joints), key=lambda j: (depth[j], j))
        self.levels: list[list[int]] = [[] for _ in range(max(depth) + 1)]
        for j in order:
            self.levels[depth[j]].append(j)
        # Position of each joint's parent inside the previous level.
        self.parent_slots: list[list[int]] = [[]]
        for d in range(1, len(self.levels)):
            slot = {j: i for i, j in enumerate(self.levels[d - 1])}
            self.parent_slots.append([slot[parents[j]] for j in self.levels[d]])
        self.order = order
        self.is_identity_order = order == list(range(num_joints))
        inverse = [0] * num_joints
        for i, j in enumerate(order):
            inverse[j] = i
        self.inverse_order = inverse
        self._index_cache: dict[torch.device, tuple] = {}

    def indices(self, device: torch.device) -> tuple:
        """Index tensors on ``device`` (cached).

        Returns ``(slots, parent_pos, order, inverse)``: per-level parent slots,
        (J-1,) parent positions of joints 1.. in level order, the level order
        and its inverse.

        A level's slot tensor is None when its parents are the whole previous
        level in order (a slice suffices) -- notably every child of the root.
        """
        device = torch.device(device)
        cached = self._index_cache.get(device)
        if cached is None:
            slots: list[torch.Tensor | None] = [None]
            for d in range(1, len(self.levels)):
                s = self.parent_slots[d]
                if s == list(range(len(self.levels[d - 1]))):
                    slots.append(None)
                else:
                    slots.append(torch.tensor(s, dtype=torch.long, device=device))
            parent_pos = [self.inverse_order[self.parents[j]] for j in self.order[1:]]
            parent_pos = torch.tensor(parent_pos, dtype=torch.long, device=device)
            order = torch.tensor(self.order, dtype=torch.long, device=device)
            inverse = torch.tensor(self.inverse_order, dtype=torch.long, device=device)
            cached = (slots, parent_pos, order, inverse)
            self._index_cache[device] = cached
        return cached


@lru_cache(maxsize=32)
def _tree_from_tuple(parents: tuple[int, ...]) -> KinematicTree:
    return KinematicTree(parents)


def _as_tree(parents: KinematicTree | Sequence[int] | torch.Tensor) -> KinematicTree:
    if isinstance(parents, KinematicTree):
        return parents
    if isinstance(parents, torch.Tensor):
        parents = parents.tolist()
    return _tree_from_tuple(tuple(int(p) for p in parents))


def forward_kinematics(
    rotmats: torch.Tensor,
    rest_joints: torch.Tensor,
    parents: KinematicTree | Sequence[int] | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose a skeleton: local joint rotations about rest joint locations.

    Args:
        rotmats: (B, J, 3, 3) local rotations; joint 0's is the global orientation.
        rest_joints: (B, J, 3) rest-pose (shaped) joint locations, meters.
        parents: the hierarchy, a :class:`KinematicTree` (reused, fastest) or a
            (J,) parent list with the root first.
    Returns:
        posed_joints: (B, J, 3) joint locations after posing, meters, no translation.
        transforms: (B, J, 3, 4) rigid transforms [R | t] of each joint that map a
            rest-pose point x to its posed location R x + t (before translation).
    """
    tree = _as_tree(parents)
    B, J = rotmats.shape[:2]
    if J != tree.num_joints or rest_joints.shape[1] != J:
        raise ValueError(
            f"rotmats {tuple(rotmats.shape)} and rest_joints {tuple(rest_joints.shape)} "
            f"must both have J = {tree.num_joints} joints"
        )
    slots, parent_pos, order, inverse = tree.indices(rotmats.device)
    if not tree.is_identity_order:
        rotmats = rotmats.index_select(1, order)
        rest_joints = rest_joints.index_select(1, order)

    # Offsets from the parent in rest pose; the root keeps its absolute location.
    parent_rest = rest_joints.index_select(1, parent_pos)
    offsets = torch.cat([rest_joints[:, :1], rest_joints[:, 1:] - parent_rest], dim=1)

    glob_rot = [rotmats[:, :1]]
    glob_pos = [offsets[:, :1]]
    start = 1
    for d in range(1, len(tree.levels)):
        stop = start + len(tree.levels[d])
        prev_rot, prev_pos = glob_rot[-1], glob_pos[-1]
        if slots[d] is not None:
            prev_rot = prev_rot.index_select(1, slots[d])
            prev_pos = prev_pos.index_select(1, slots[d])
        elif prev_rot.shape[1] != stop - start:  # a single parent shared by the level
            prev_rot = prev_rot.expand(-1, stop - start, -1, -1)
            prev_pos = prev_pos.expand(-1, stop - start, -1)
        glob_rot.append(prev_rot @ rotmats[:, start:stop])
        glob_pos.append(prev_pos + (prev_rot @ offsets[:, start:stop, :, None])[..., 0])
        start = stop

    rot = torch.cat(glob_rot, dim=1)
    pos = torch.cat(glob_pos, dim=1)
    if not tree.is_identity_order:
        rot = rot.index_select(1, inverse)
        pos = pos.index_select(1, inverse)
        rest_joints = rest_joints.index_select(1, inverse)
    # x -> G (x - j_rest) + j_posed, i.e. translation j_posed - G j_rest.
    trans = pos - (rot @ rest_joints[..., None])[..., 0]
    return pos, torch.cat([rot, trans[..., None]], dim=-1)


def skin_vertices(
    vertices: torch.Tensor,
    weights: torch.Tensor,
    transforms: torch.Tensor,
) -> torch.Tensor:
    """Linear blend skinning of any subset of vertices.

    Args:
        vertices: (B, S, 3) rest-pose vertices (shape and pose blend shapes
            applied), meters.
        weights: (S, J) skinning weights of those vertices.
        transforms: (B, J, 3, 4) per-joint rigid transforms from
            :func:`forward_kinematics`.
    Returns:
        (B, S, 3) posed vertices, meters, without the global translation.
    """
    B, J = transforms.shape[:2]
    blended = (weights @ transforms.reshape(B, J, 12)).reshape(B, -1, 3, 4)
    # Homogeneous coordinates avoid slicing `blended`, whose backward would
    # zero-fill two (B, S, 3, 4) gradients; einsum beats broadcasting on CPU.
    homogeneous = torch.cat([vertices, torch.ones_like(vertices[..., :1])], dim=-1)
    return torch.einsum("bsik,bsk->bsi", blended, homogeneous)


def rowwise_matmul(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``x @ W`` for (B, k) rows and a shared (k, n) matrix, row by row.

    A matrix product lets the BLAS block over rows, so a sample's result can
    change in the last bit with the batch it is evaluated in. Solvers drop
    converged samples from the batch, and a sample must not move because
    another one stopped. A batched product of (1, k) x (k, n) blocks is not
    enough (MKL's batched GEMM still rounds a row differently for another
    batch size), so the product is an elementwise multiply and a sum over k,
    which does the same arithmetic for every row whatever the batch; rows are
    taken in pieces of at most ~4M products to bound the work array.

    Args:
        x: (B, k).
        W: (k, n).
    Returns:
        (B, n).
    """
    B, k = x.shape
    step = max(1, (1 << 22) // max(k * W.shape[1], 1))
    if step >= B:
        out = (x[:, :, None] * W).sum(1)
    else:
        out = torch.cat([(x[s:s + step, :, None] * W).sum(1) for s in range(0, B, step)])
    if out.requires_grad:
        # The backward reduces the incoming gradient over n; its memory layout
        # (e.g. transposed by the caller) picks the reduction's loop order, and
        # a layout that differs with B (any layout is contiguous at B = 1) would
        # round differently: reduce a contiguous copy.
        out.register_hook(torch.Tensor.contiguous)
    return out
