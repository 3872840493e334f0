"""Keypoint sets: named 3D points regressed from a posed body.

A keypoint is a fixed linear blend of posed joints and posed mesh vertices::

    keypoints = joint_weights @ joints + vertex_weights @ vertices[vertex_ids]

Vertex-based keypoints follow the skin (COCO's hips are on the surface of the
hip, not at SMPL's hip joint), joint-based ones follow the skeleton. Keeping the
vertex part sparse (``vertex_ids``) lets the body model evaluate only the few
vertices a keypoint set needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointSet:
    """One keypoint format on one body model.

    Attributes:
        name: format name, e.g. ``"coco25"``, ``"body25"``, ``"blazepose33"``.
        names: (K,) keypoint names in output order.
        vertex_ids: (M,) int64 mesh vertex indices the set reads.
        vertex_weights: (K, M) float weights over ``vertex_ids``.
        joint_weights: (K, J) float weights over the model's joints (zeros for
            purely surface-based keypoints).
        approximate: names of keypoints that only approximate their format's
            definition (documented per body model).
    """

    name: str
    names: tuple[str, ...]
    vertex_ids: np.ndarray
    vertex_weights: np.ndarray
    joint_weights: np.ndarray
    approximate: tuple[str, ...] = ()

    def __post_init__(self):
        k = len(self.names)
        if self.vertex_weights.shape != (k, len(self.vertex_ids)):
            raise ValueError(
                f"keypoint set {self.name!r}: vertex_weights has shape {self.vertex_weights.shape}, "
                f"expected ({k}, {len(self.vertex_ids)})"
            )
        if self.joint_weights.ndim != 2 or self.joint_weights.shape[0] != k:
            raise ValueError(
                f"keypoint set {self.name!r}: joint_weights has shape {self.joint_weights.shape}, "
                f"expected ({k}, J)"
            )

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @classmethod
    def from_dense(cls, name, names, dense_vertex_weights, joint_weights, approximate=()):
        """Build from a dense (K, V) vertex-weight matrix, keeping only used vertices."""
        dense = np.asarray(dense_vertex_weights)
        used = np.flatnonzero(np.abs(dense).sum(axis=0) > 0)
        return cls(
            name=name,
            names=tuple(names),
            vertex_ids=used.astype(np.int64),
            vertex_weights=dense[:, used].astype(np.float32),
            joint_weights=np.asarray(joint_weights, dtype=np.float32),
            approximate=tuple(approximate),
        )


def rigid_offset_weights(v_template: np.ndarray, skin_weights: np.ndarray, joint: int,
                         offset: np.ndarray, *, min_weight: float = 0.9,
                         max_vertices: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """A zero-sum vertex combination that equals ``offset`` at rest and turns with ``joint``.

    The vertices are those skinned to ``joint`` with weight >= ``min_weight``
    (the ``max_vertices`` heaviest). Weights ``a`` with ``sum a = 0`` and
    ``sum a_i v_i = offset`` (rest pose, zero betas; the minimum-norm
    solution) give, on a posed body, ``sum a_i x_i ~= G_joint @ offset``: the
    blend is free of translation, and each vertex moves (nearly) rigidly with
    the joint, so the offset keeps its direction in the joint's own frame.
    With other betas the offset changes with the part's shape (it is spanned
    by the part's own vertices).

    Args:
        v_template: (V, 3) rest vertices, meters.
        skin_weights: (V, J) linear blend skinning weights.
        joint: the joint index whose frame carries the offset.
        offset: (3,) meters, in the joint's frame at the zero pose (the model's axes).
    Returns:
        vertex_ids (M,) int64 and weights (M,) float64.
    """
    w = np.asarray(skin_weights)[:, joint]
    ids = np.flatnonzero(w >= min_weight)
    if ids.size < 4:
        raise ValueError(f"joint {joint}: only {ids.size} vertices have skinning weight >= {min_weight}; "
                         "cannot attach an offset to it")
    ids = ids[np.argsort(-w[ids], kind="stable")[:max_vertices]]
    ids.sort()
    v = np.asarray(v_template, dtype=np.float64)[ids]
    A = np.vstack([np.ones(ids.size), v.T])                                # (4, M)
    b = np.concatenate([[0.0], np.asarray(offset, dtype=np.float64)])
    a = A.T @ np.linalg.solve(A @ A.T, b)
    return ids.astype(np.int64), a


def with_local_offsets(kps: KeypointSet, offsets: np.ndarray, joints: np.ndarray, v_template: np.ndarray,
                       skin_weights: np.ndarray, *, name: str, min_weight: float = 0.9) -> KeypointSet:
    """A copy of ``kps`` whose point k is moved by ``offsets[k]`` in the frame of joint ``joints[k]``.

    Each offset becomes a zero-sum vertex combination (:func:`rigid_offset_weights`)
    added to the point's vertex weights, so the new set runs through the same
    machinery (BodyModel, PointRig) as any other. At the zero pose and zero
    betas, new point k = old point k + offsets[k] exactly.

    Args:
        kps: the set to correct.
        offsets: (K, 3) meters, in the zero-pose axes of each point's joint
            (a zero row leaves the point as it is).
        joints: (K,) joint index per point.
        v_template, skin_weights: the model's (V, 3) rest vertices and (V, J) weights.
        name: the new set's name.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    K = kps.num_keypoints
    if offsets.shape != (K, 3) or np.asarray(joints).shape != (K,):
        raise ValueError(f"keypoint set {kps.name!r}: offsets must be ({K}, 3) and joints ({K},), "
                         f"got {offsets.shape} and {np.asarray(joints).shape}")
    dense = {}
    for k in range(K):
        for i, wt in zip(kps.vertex_ids, kps.vertex_weights[k]):
            if wt != 0:
                dense[(k, int(i))] = dense.get((k, int(i)), 0.0) + float(wt)
        if np.any(offsets[k] != 0):
            ids, a = rigid_offset_weights(v_template, skin_weights, int(joints[k]), offsets[k],
                                          min_weight=min_weight)
            for i, wt in zip(ids, a):
                dense[(k, int(i))] = dense.get((k, int(i)), 0.0) + float(wt)
    used = np.array(sorted({i for _, i in dense}), dtype=np.int64)
    col = {int(i): c for c, i in enumerate(used)}
    weights = np.zeros((K, used.size))
    for (k, i), wt in dense.items():
        weights[k, col[i]] = wt
    return KeypointSet(name=name, names=kps.names, vertex_ids=used, vertex_weights=weights.astype(np.float32),
                       joint_weights=np.array(kps.joint_weights, dtype=np.float32), approximate=kps.approximate)
