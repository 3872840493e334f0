"""Random SMPL-format models and keypoint sets for tests and benchmarks.

Not human shapes, but they exercise exactly the arrays and code paths of a real
SMPL file (pose correctives included), at any vertex count.
"""
from __future__ import annotations

import numpy as np

from fitkit.body.keypoint_sets import KeypointSet
from fitkit.body.skeleton import SMPL_PARENTS

# Approximate SMPL rest joint locations (meters, y up, x toward the body's left).
_STICK_JOINTS = np.array([
    [0.00, 0.00, 0.00], [0.06, -0.09, 0.00], [-0.06, -0.09, 0.00], [0.00, 0.11, -0.02],
    [0.10, -0.47, 0.00], [-0.10, -0.47, 0.00], [0.00, 0.24, 0.00], [0.09, -0.87, -0.04],
    [-0.09, -0.87, -0.04], [0.00, 0.30, 0.02], [0.12, -0.93, 0.08], [-0.12, -0.93, 0.08],
    [0.00, 0.51, -0.01], [0.08, 0.42, -0.01], [-0.08, 0.42, -0.01], [0.00, 0.61, 0.04],
    [0.18, 0.45, -0.02], [-0.18, 0.45, -0.02], [0.43, 0.44, -0.04], [-0.43, 0.44, -0.04],
    [0.68, 0.45, -0.04], [-0.68, 0.45, -0.04], [0.77, 0.44, -0.05], [-0.77, 0.44, -0.05],
])


def synthetic_smpl_arrays(num_vertices: int = 300, *, num_betas: int = 10,
                          pose_correctives: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """A random SMPL-format model (24 SMPL joints) for tests and benchmarks.

    Vertices scatter around the bones of a stick figure; skinning weights are
    random, nonnegative and normalized, mostly on each vertex's bone; each
    J_regressor row averages random vertices near its joint. Not a human shape,
    but it exercises exactly the arrays and code paths of a real SMPL file.

    Returns:
        smplx-named arrays: v_template (V, 3), shapedirs (V, 3, num_betas),
        posedirs (V, 3, 207) or None, J_regressor (24, V), weights (V, 24),
        kintree_table (2, 24), f (2V, 3).
    """
    rng = np.random.default_rng(seed)
    V, J = num_vertices, len(SMPL_PARENTS)
    parents = np.array(SMPL_PARENTS)
    bone = rng.integers(1, J, size=V)  # each vertex hangs on the bone parent(bone) -> bone
    t = rng.uniform(0.0, 1.0, size=(V, 1))
    head, tail = _STICK_JOINTS[parents[bone]], _STICK_JOINTS[bone]
    v_template = head + t * (tail - head) + rng.normal(scale=0.04, size=(V, 3))

    weights = 0.05 * rng.uniform(size=(V, J)) * (rng.uniform(size=(V, J)) < 0.1)
    weights[np.arange(V), bone] += t[:, 0] + 0.1
    weights[np.arange(V), parents[bone]] += 1.0 - t[:, 0] + 0.1
    weights /= weights.sum(axis=1, keepdims=True)

    dist = np.linalg.norm(v_template[None] - _STICK_JOINTS[:, None], axis=-1)  # (J, V)
    J_regressor = np.zeros((J, V))
    nearest = np.argsort(dist, axis=1)[:, : max(4, min(12, V))]
    for j in range(J):
        J_regressor[j, nearest[j]] = rng.uniform(0.2, 1.0, size=nearest.shape[1])
    J_regressor /= J_regressor.sum(axis=1, keepdims=True)

    return dict(
        v_template=v_template,
        shapedirs=rng.normal(scale=0.01, size=(V, 3, num_betas)),
        posedirs=rng.normal(scale=0.005, size=(V, 3, 9 * (J - 1))) if pose_correctives else None,
        J_regressor=J_regressor,
        weights=weights,
        kintree_table=np.stack([np.r_[2**32 - 1, parents[1:]], np.arange(J)]).astype(np.int64),
        f=rng.integers(0, V, size=(2 * V, 3)),
    )


def synthetic_keypoint_set(num_vertices: int, num_joints: int = 24, *, num_keypoints: int = 25,
                           vertices_per_keypoint: int = 4, name: str = "synthetic",
                           seed: int = 0) -> KeypointSet:
    """A random keypoint set mixing surface points and joints (tests, benchmarks).

    Even keypoints blend ``vertices_per_keypoint`` random vertices, odd ones a
    joint and a vertex, so both parts of :class:`KeypointSet` are exercised.
    """
    rng = np.random.default_rng(seed)
    dense = np.zeros((num_keypoints, num_vertices))
    joint_weights = np.zeros((num_keypoints, num_joints))
    for k in range(num_keypoints):
        if k % 2 == 0:
            ids = rng.choice(num_vertices, size=vertices_per_keypoint, replace=False)
            w = rng.uniform(0.1, 1.0, size=vertices_per_keypoint)
            dense[k, ids] = w / w.sum()
        else:
            joint_weights[k, rng.integers(num_joints)] = 0.7
            dense[k, rng.integers(num_vertices)] = 0.3
    return KeypointSet.from_dense(name, [f"kp{k}" for k in range(num_keypoints)], dense, joint_weights)
