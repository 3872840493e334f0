"""SMPLR's point set: the 24 SMPL joints plus 18 surface landmarks (seed 003, Sec. 3.2).

SMPLR reads a body from 42 points ``JL``: the joints say how the skeleton is
posed, the landmarks say which way each limb is twisted and how much flesh
is on it ("without landmarks, the network converges to the average body
fatness", seed 003). Each landmark hangs from a joint of the SMPL tree, so the
42 points form one kinematic tree :data:`JL_PARENTS` rooted at the pelvis.

The landmarks on the open body are picked by a rule on the rest pose (zero
pose, zero betas; SMPL rest axes: y up, x to the body's left, z forward): a
ray starts at a point on the skeleton and goes in a fixed direction; the
landmark is the last vertex it passes (of the vertices within 2 cm of the
ray, the one farthest along it), i.e. where the ray leaves the body. "Last",
not "first": the open body's mesh has inner parts (eyes, mouth) that a ray
from the head joint meets before the skin. The table
:data:`LANDMARKS` lists them:

=================  ==============================  ===========  ===============
landmark           ray start                        direction    parent joint
=================  ==============================  ===========  ===============
head_top           head                             +y           head
face_front         head                             +z           head
chest_front        spine3                           +z           spine3
belly_front        spine1                           +z           spine1
*_shoulder_top     shoulder                         +y           shoulder
*_upper_arm_under  midpoint shoulder-elbow          -y           shoulder
*_elbow_back       elbow                            -z           elbow
*_hip_side         hip                              outwards x   hip
*_thigh_front      midpoint hip-knee                +z           hip
*_knee_front       knee                             +z           knee
*_heel             ankle                            -z           ankle
=================  ==============================  ===========  ===============

(* = left and right; "outwards" is +x on the left, -x on the right.) The
choice follows the paper's intent: the belly, chest, thighs and upper arms
measure girth; shoulder tops, elbows, knees and heels fix the twist of each
limb about its bone; head top and face give the head's height and facing.
:func:`landmark_vertex_ids` applies the rule to any SMPL-topology model's
rest pose (the open body or SMPL), so the ids are never hand-copied.
"""
from __future__ import annotations

import numpy as np
import torch

from fitkit.body.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS

__all__ = ["LANDMARKS", "LANDMARK_NAMES", "JL_NAMES", "JL_PARENTS", "NUM_JL", "find_landmark_vertices", "landmark_vertex_ids", "joints_and_landmarks"]

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}

# name, ray start (one joint or the midpoint of two), direction (rest axes), parent joint
LANDMARKS: tuple[tuple[str, tuple[str, ...], tuple[float, float, float], str], ...] = (
    ("head_top", ("head",), (0, 1, 0), "head"),
    ("face_front", ("head",), (0, 0, 1), "head"),
    ("chest_front", ("spine3",), (0, 0, 1), "spine3"),
    ("belly_front", ("spine1",), (0, 0, 1), "spine1"),
) + tuple(
    item
    for side, out in (("left", 1.0), ("right", -1.0))
    for item in (
        (f"{side}_shoulder_top", (f"{side}_shoulder",), (0, 1, 0), f"{side}_shoulder"),
        (f"{side}_upper_arm_under", (f"{side}_shoulder", f"{side}_elbow"), (0, -1, 0), f"{side}_shoulder"),
        (f"{side}_elbow_back", (f"{side}_elbow",), (0, 0, -1), f"{side}_elbow"),
        (f"{side}_hip_side", (f"{side}_hip",), (out, 0, 0), f"{side}_hip"),
        (f"{side}_thigh_front", (f"{side}_hip", f"{side}_knee"), (0, 0, 1), f"{side}_hip"),
        (f"{side}_knee_front", (f"{side}_knee",), (0, 0, 1), f"{side}_knee"),
        (f"{side}_heel", (f"{side}_ankle",), (0, 0, -1), f"{side}_ankle"),
    )
)
LANDMARK_NAMES = tuple(item[0] for item in LANDMARKS)
#: the 42 points: SMPL joints, then landmarks
JL_NAMES = tuple(SMPL_JOINT_NAMES) + LANDMARK_NAMES
NUM_JL = len(JL_NAMES)
#: parent of each of the 42 points (-1 for the pelvis): the SMPL tree, landmarks under their joint
JL_PARENTS = tuple(int(p) for p in SMPL_PARENTS) + tuple(_J[item[3]] for item in LANDMARKS)

def find_landmark_vertices(rest_vertices, rest_joints, radius: float = 0.02) -> np.ndarray:
    """(18,) vertex ids of :data:`LANDMARKS` on a mesh in its rest pose.

    Args:
        rest_vertices: (V, 3) rest-pose vertices (y up, x left, z forward).
        rest_joints: (24, 3) rest-pose joints, SMPL order.
        radius: how far (m) a vertex may lie from the ray.
    """
    V = np.asarray(rest_vertices, dtype=np.float64)
    J = np.asarray(rest_joints, dtype=np.float64)
    ids = []
    for name, start, direction, _ in LANDMARKS:
        p = np.mean([J[_J[s]] for s in start], axis=0)
        d = np.asarray(direction, dtype=np.float64)
        rel = V - p
        along = rel @ d
        perp = np.linalg.norm(rel - along[:, None] * d, axis=1)
        ok = (along > 0) & (perp < radius)
        if not ok.any():
            raise ValueError(f"landmark {name}: no vertex within {radius} m of the ray")
        ids.append(int(np.flatnonzero(ok)[np.argmax(along[ok])]))
    return np.asarray(ids, dtype=np.int64)


_OPEN_IDS: np.ndarray | None = None


def landmark_vertex_ids(model) -> np.ndarray:
    """(18,) landmark vertex ids for ``model`` (derived from its rest pose, cached for the open body)."""
    global _OPEN_IDS
    if getattr(model, "name", None) == "open" and _OPEN_IDS is not None:
        return _OPEN_IDS
    with torch.no_grad():
        dt, dev = model.dtype, model.device
        z = lambda k: torch.zeros(1, k, dtype=dt, device=dev)  # noqa: E731
        out = model(z(3), z(model.body_pose_dim), z(model.num_betas), vertices="all")
    ids = find_landmark_vertices(out.vertices[0].cpu().numpy(), out.joints[0].cpu().numpy())
    if getattr(model, "name", None) == "open":
        _OPEN_IDS = ids
    return ids


def joints_and_landmarks(model, global_orient, body_pose, betas, transl=None) -> torch.Tensor:
    """(B, 42, 3) the 24 joints and 18 landmarks of posed bodies (meters)."""
    out = model(global_orient, body_pose, betas, transl, vertices=landmark_vertex_ids(model), validate=False)
    return torch.cat([out.joints[:, :24], out.vertices], dim=1)
