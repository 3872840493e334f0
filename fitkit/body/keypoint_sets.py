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
