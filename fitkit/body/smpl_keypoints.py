"""Keypoint sets for SMPL's own mesh (6,890 vertices): COCO-17 + feet and BODY_25.

Limb keypoints are SMPL joints; face and foot keypoints are the mesh vertices
smplx ships for them (``smplx.vertex_ids``), as SMPLify-X and SPIN do. SMPL's
joints sit inside the body while detectors mark the skin, so the limb points
are approximations (listed in each set's ``approximate``). BlazePose-33 needs
eye corners, mouth corners and knuckles that SMPL has no agreed vertices for:
it is not defined for SMPL.
"""
from __future__ import annotations

import numpy as np
from smplx.vertex_ids import vertex_ids

from fitkit.body.keypoint_formats import BODY25, COCO25
from fitkit.body.keypoint_sets import KeypointSet
from fitkit.body.skeleton import SMPL_JOINT_NAMES

SMPL_NUM_VERTICES = 6890

# keypoint name -> ("joint", [SMPL joint names]) averaged, or ("vertex", smplx vertex-id key)
_SOURCES = {
    "nose": ("vertex", "nose"), "left_eye": ("vertex", "leye"), "right_eye": ("vertex", "reye"),
    "left_ear": ("vertex", "lear"), "right_ear": ("vertex", "rear"),
    "left_big_toe": ("vertex", "LBigToe"), "left_small_toe": ("vertex", "LSmallToe"),
    "left_heel": ("vertex", "LHeel"), "right_big_toe": ("vertex", "RBigToe"),
    "right_small_toe": ("vertex", "RSmallToe"), "right_heel": ("vertex", "RHeel"),
    "neck": ("joint", ["left_shoulder", "right_shoulder"]),
    "mid_hip": ("joint", ["left_hip", "right_hip"]),
}
for _side in ("left", "right"):
    for _name in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"):
        _SOURCES[f"{_side}_{_name}"] = ("joint", [f"{_side}_{_name}"])


def smpl_keypoint_sets() -> dict[str, KeypointSet]:
    """``coco25`` and ``body25`` keypoint sets on SMPL's 6,890-vertex mesh."""
    ids = vertex_ids["smplh"]  # SMPL and SMPL-H share the body mesh
    sets = {}
    for fmt in (COCO25, BODY25):
        dense_v = np.zeros((fmt.num_keypoints, SMPL_NUM_VERTICES), np.float32)
        dense_j = np.zeros((fmt.num_keypoints, len(SMPL_JOINT_NAMES)), np.float32)
        approximate = []
        for k, name in enumerate(fmt.names):
            kind, source = _SOURCES[name]
            if kind == "vertex":
                dense_v[k, ids[source]] = 1.0
            else:
                for joint in source:
                    dense_j[k, SMPL_JOINT_NAMES.index(joint)] = 1.0 / len(source)
                approximate.append(name)
        sets[fmt.name] = KeypointSet.from_dense(fmt.name, fmt.names, dense_v, dense_j, approximate)
    return sets
