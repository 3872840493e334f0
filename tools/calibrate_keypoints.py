#!/usr/bin/env python
"""Calibrate the open body's BlazePose-33 keypoints against real detections.

    .venv/bin/python tools/calibrate_keypoints.py            # measure, derive, validate, write the asset
    .venv/bin/python tools/calibrate_keypoints.py --no-write # measure and validate only

Data: the triangulated MediaPipe reference of the pose2sim dev set
(``datasets/pose2sim_multiperson/reference.npz``, docs/devset.md), clean
frames only. Method (docs/open_body.md, "Keypoints against real detections"):

1. Fit the open body directly to the reference 3D points: one shape per
   participant, pose and translation per frame (Levenberg-Marquardt with the
   analytic Jacobian of ``fitkit.body.points.PointRig``, a Cauchy kernel on
   the point distances, an L2 pose prior and an L2 shape prior).
2. Express each keypoint's residual (reference minus model) in the frame of
   the joint that carries the keypoint (the joint with the largest skinning
   weight over the keypoint's vertices), and average it over the frames.
3. Derived on P0 only: the systematic offsets (mean longer than the spread
   over frames) are added to the definitions as joint-attached vertex
   combinations (``fitkit.body.keypoint_sets.with_local_offsets``); refit and
   repeat (``--rounds``), as the fit absorbs part of each correction.
4. Validated on P1: the direct fit's 3D keypoint error and shoulder width
   with the old and the new definitions.

Output: ``fitkit/assets/open_body/blazepose33_real.npz`` (the corrected set
``blazepose33_real`` and the offsets, with provenance).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fitkit.body.keypoint_sets import KeypointSet, with_local_offsets  # noqa: E402
from fitkit.body.model import BodyModel  # noqa: E402
from fitkit.body.open_body import (REAL_BLAZEPOSE_PATH, open_body_arrays,  # noqa: E402
                                   open_body_keypoint_sets)
from fitkit.body.points import PointRig  # noqa: E402
from fitkit.body import lbs  # noqa: E402

REFERENCE = ROOT / "datasets" / "pose2sim_multiperson" / "reference.npz"
NUM_BETAS = 10
# prior residuals: meters per radian of joint angle, meters per unit beta
POSE_PRIOR = 0.02
SHAPE_PRIOR = 0.01
CAUCHY_M = 0.05


def load_reference(path: Path = REFERENCE) -> dict:
    """Clean frames of each participant: {name: (F, 33, 3) float64 meters, NaN = missing}."""
    try:
        with np.load(path, allow_pickle=False) as r:
            pts, clean, names = r["points3d"], r["clean"], r["participants"]
            kp_names = tuple(str(n) for n in r["keypoint_names"])
    except (OSError, KeyError) as exc:
        raise SystemExit(f"{path}: cannot read points3d/clean/participants/keypoint_names ({exc})")
    return {"names": kp_names,
            "participants": {str(n): pts[p][clean[p]].astype(np.float64) for p, n in enumerate(names)},
            "frames": {str(n): np.flatnonzero(clean[p]) for p, n in enumerate(names)}}


def make_model(kps: KeypointSet, arrays: dict | None = None) -> BodyModel:
    """The open body (float64, NUM_BETAS betas) carrying ``kps`` under its own name."""
    arrays = open_body_arrays() if arrays is None else arrays
    return BodyModel(arrays, num_betas=NUM_BETAS, keypoint_sets={kps.name: kps}, name="open",
                     dtype=torch.float64)


def _rotvec(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.from_matrix(R).as_rotvec()


def initial_params(model: BodyModel, kp_name: str, targets: np.ndarray, names) -> dict:
    """Global rotation and translation from the torso, arms lowered, zero betas."""
    ix = {n: i for i, n in enumerate(names)}
    F = targets.shape[0]
    go = np.zeros((F, 3))
    bp = np.zeros((F, 69))
    # arms down: shoulders turned about the forward (z) axis
    bp[:, 3 * 15 + 2] = -1.2   # left_shoulder (joint 16) -> body_pose slot 15
    bp[:, 3 * 16 + 2] = 1.2
    rest = model(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 69, dtype=torch.float64),
                 torch.zeros(1, NUM_BETAS, dtype=torch.float64), keypoints=kp_name).keypoints[0].numpy()
    mid_rest = 0.5 * (rest[ix["left_hip"]] + rest[ix["right_hip"]])
    transl = np.zeros((F, 3))
    for f in range(F):
        t = targets[f]
        left = (t[ix["left_hip"]] - t[ix["right_hip"]]) + (t[ix["left_shoulder"]] - t[ix["right_shoulder"]])
        mid_hip = 0.5 * (t[ix["left_hip"]] + t[ix["right_hip"]])
        up = 0.5 * (t[ix["left_shoulder"]] + t[ix["right_shoulder"]]) - mid_hip
        up = up / np.linalg.norm(up)
        left = left - up * (left @ up)
        left = left / np.linalg.norm(left)
        R = np.stack([left, up, np.cross(left, up)], axis=1)   # body x, y, z -> world
        go[f] = _rotvec(R)
        transl[f] = mid_hip - R @ mid_rest
    return {"global_orient": go, "body_pose": bp, "betas": np.zeros(NUM_BETAS), "transl": transl}


def fit_direct(model: BodyModel, kp_name: str, targets: np.ndarray, *, iterations: int = 40,
               init: dict | None = None, names=None) -> dict:
    """Fit one shape and per-frame poses to (F, K, 3) world points (NaN = missing).

    Levenberg-Marquardt on the robust (Cauchy, CAUCHY_M) point distances plus
    L2 priors on body_pose and betas; the betas are shared by all frames
    (their step is solved by the Schur complement of the per-frame blocks).

    Returns:
        dict with global_orient (F, 3), body_pose (F, 69), betas (NUM_BETAS,),
        transl (F, 3), keypoints (F, K, 3) meters, rotations (F, 24, 3, 3) the
        joints' world rotations, cost.
    """
    rig = PointRig(model, keypoints=kp_name)
    F, K = targets.shape[:2]
    valid = np.isfinite(targets).all(-1)
    y = torch.as_tensor(np.where(valid[..., None], targets, 0.0))
    m = torch.as_tensor(valid, dtype=torch.float64)
    p = init or initial_params(model, kp_name, targets, names or model.keypoint_sets[kp_name].names)
    x_frame = torch.as_tensor(np.concatenate([p["global_orient"], p["body_pose"], p["transl"]], 1))  # (F, 75)
    beta = torch.as_tensor(np.asarray(p["betas"], dtype=np.float64)).clone()
    nb = NUM_BETAS
    cols_f = list(range(0, 72)) + list(range(72 + nb, 75 + nb))
    cols_b = list(range(72, 72 + nb))
    prior_f = torch.zeros(75, dtype=torch.float64)
    prior_f[3:72] = POSE_PRIOR ** 2

    def split(xf, b):
        return xf[:, :3], xf[:, 3:72], b[None].expand(F, nb), xf[:, 72:75]

    def cost_of(xf, b):
        pts = rig(*split(xf, b), validate=False)
        d2 = ((pts - y) ** 2).sum(-1) * m
        data = 0.5 * CAUCHY_M ** 2 * torch.log1p(d2 / CAUCHY_M ** 2).sum()
        return float(data + 0.5 * POSE_PRIOR ** 2 * (xf[:, 3:72] ** 2).sum()
                     + 0.5 * SHAPE_PRIOR ** 2 * (b ** 2).sum())

    lam = 1e-3
    cost = cost_of(x_frame, beta)
    for _ in range(iterations):
        pts, jac = rig.forward_with_jacobian(*split(x_frame, beta), validate=False)
        e = pts - y                                                       # (F, K, 3)
        w = m / (1.0 + (e ** 2).sum(-1) / CAUCHY_M ** 2)                 # IRLS weights
        Jf = jac[..., cols_f].reshape(F, K * 3, 75)
        Jb = jac[..., cols_b].reshape(F, K * 3, nb)
        wr = w.repeat_interleave(3, dim=1)                                # (F, 3K)
        er = e.reshape(F, K * 3)
        Hff = torch.einsum("fri,fr,frj->fij", Jf, wr, Jf) + torch.diag_embed(prior_f.expand(F, 75))
        Hfb = torch.einsum("fri,fr,frj->fij", Jf, wr, Jb)
        Hbb = torch.einsum("fri,fr,frj->ij", Jb, wr, Jb) + SHAPE_PRIOR ** 2 * torch.eye(nb, dtype=torch.float64)
        gf = torch.einsum("fri,fr->fi", Jf, wr * er) + prior_f * x_frame
        gb = torch.einsum("fri,fr->i", Jb, wr * er) + SHAPE_PRIOR ** 2 * beta
        improved = False
        for _try in range(8):
            Af = Hff + lam * torch.diag_embed(torch.diagonal(Hff, dim1=1, dim2=2) + 1e-9)
            Ab = Hbb + lam * torch.diag(torch.diagonal(Hbb) + 1e-9)
            Ainv_Hfb = torch.linalg.solve(Af, Hfb)                        # (F, 75, nb)
            Ainv_gf = torch.linalg.solve(Af, gf[..., None])[..., 0]       # (F, 75)
            S = Ab - torch.einsum("fij,fik->jk", Hfb, Ainv_Hfb)
            rhs = gb - torch.einsum("fij,fi->j", Hfb, Ainv_gf)
            db = -torch.linalg.solve(S, rhs)
            dx = -(Ainv_gf + torch.einsum("fij,j->fi", Ainv_Hfb, db))
            new_cost = cost_of(x_frame + dx, beta + db)
            if new_cost < cost:
                x_frame, beta, cost = x_frame + dx, beta + db, new_cost
                lam = max(lam / 3.0, 1e-7)
                improved = True
                break
            lam *= 4.0
        if not improved or float(dx.abs().max()) < 1e-7:
            break
    go, bp, bexp, tr = split(x_frame, beta)
    with torch.no_grad():
        pts = rig(go, bp, bexp, tr)
        rotmats = lbs.axis_angle_to_matrix(torch.cat([go, bp], 1).reshape(F, 24, 3))
        rest = model.J_template + (bexp @ model.J_shapedirs_flat).reshape(F, 24, 3)
        _, transforms = lbs.forward_kinematics(rotmats, rest, model._tree)
    return {"global_orient": go.numpy(), "body_pose": bp.numpy(), "betas": beta.numpy(), "transl": tr.numpy(),
            "keypoints": pts.numpy(), "rotations": transforms[..., :3].numpy(), "cost": cost}


# The shoulder points sit where the arm meets the torso: their gap to the
# detector (a width) belongs to the chest's frame, not the upper arm's, whose
# axes turn with the arm (its skin carries half of their weight).
CARRIER_OVERRIDES = {"left_shoulder": 9, "right_shoulder": 9}   # spine3


def carrier_joints(kps: KeypointSet, skin_weights: np.ndarray) -> np.ndarray:
    """(K,) per keypoint the joint with the largest total skinning weight over its
    vertices (CARRIER_OVERRIDES aside)."""
    per_joint = np.asarray(kps.vertex_weights, np.float64) @ np.asarray(skin_weights)[kps.vertex_ids]
    per_joint = per_joint + np.asarray(kps.joint_weights, np.float64)
    joints = np.argmax(per_joint, axis=1)
    for k, n in enumerate(kps.names):
        joints[k] = CARRIER_OVERRIDES.get(n, joints[k])
    return joints


def local_residuals(fit: dict, targets: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(F, K, 3) reference minus model keypoint, in the zero-pose axes of each keypoint's joint (meters)."""
    R = fit["rotations"][:, joints]                                       # (F, K, 3, 3)
    d = targets - fit["keypoints"]
    return np.einsum("fkji,fkj->fki", R, d)                               # R^T d


def offset_stats(local: np.ndarray) -> dict:
    """Per keypoint: mean offset (K, 3), its length (K,), the RMS spread about it (K,), frames used (K,)."""
    mean = np.nanmean(local, axis=0)
    spread = np.sqrt(np.nanmean(((local - mean) ** 2).sum(-1), axis=0))
    return {"mean": mean, "length": np.linalg.norm(mean, axis=1), "spread": spread,
            "count": np.isfinite(local).all(-1).sum(0)}


def mirror_pairs(names) -> np.ndarray:
    """(K,) index of each keypoint's left/right mirror image (itself for the nose)."""
    lookup = {n: i for i, n in enumerate(names)}
    swap = {"left": "right", "right": "left"}
    out = []
    for n in names:
        parts = n.split("_")
        mirrored = "_".join(swap.get(p, p) for p in parts)   # left_eye, mouth_left, ...
        out.append(lookup[mirrored])
    return np.array(out)


def symmetric(offsets: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """(K, 3) offsets averaged with their mirror images (x -> -x in the zero-pose axes).

    The body model is left/right symmetric (mirrored joints' zero-pose axes are
    mirror images under x -> -x), so a definition gap should be too; what is
    not symmetric is view or motion bias of one recording.
    """
    flip = np.array([-1.0, 1.0, 1.0])
    return 0.5 * (offsets + offsets[mirror] * flip)


def keypoint_error(fit: dict, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean 3D distance over all valid points (m) and per keypoint (K,)."""
    d = np.linalg.norm(fit["keypoints"] - targets, axis=-1)
    return float(np.nanmean(d)), np.nanmean(d, axis=0)


def shoulder_width(points: np.ndarray, names) -> float:
    """Median distance between the shoulder points over frames (m)."""
    i, j = names.index("left_shoulder"), names.index("right_shoulder")
    return float(np.nanmedian(np.linalg.norm(points[:, i] - points[:, j], axis=-1)))


def calibrate(base: KeypointSet, targets: np.ndarray, arrays: dict, *, rounds: int = 3, iterations: int = 40,
              min_ratio: float = 1.0, name: str = "blazepose33_real", log=print):
    """Derive local offsets on one participant's frames (alternating fit and correction).

    A keypoint is corrected when its first-round mean offset is longer than
    ``min_ratio`` times its spread over frames; later rounds refine only those.

    Offsets are made left/right symmetric (:func:`symmetric`) before use.

    Returns:
        (new set, offsets (K, 3) m, joints (K,), corrected mask (K,), first-round stats, last fit).
    """
    joints = carrier_joints(base, arrays["weights"])
    mirror = mirror_pairs(base.names)
    K = base.num_keypoints
    offsets = np.zeros((K, 3))
    selected = None
    kps, first, fit = base, None, None
    for r in range(rounds):
        model = make_model(kps, arrays)
        fit = fit_direct(model, kps.name, targets, iterations=iterations, names=list(base.names))
        stats = offset_stats(local_residuals(fit, targets, joints))
        mean = symmetric(stats["mean"], mirror)
        if first is None:
            first = stats
            pair_spread = 0.5 * (stats["spread"] + stats["spread"][mirror])
            selected = np.linalg.norm(mean, axis=1) > min_ratio * pair_spread
        err, _ = keypoint_error(fit, targets)
        log(f"  round {r}: mean 3D keypoint error {1000 * err:.1f} mm, "
            f"mean |offset| of the corrected points {1000 * stats['length'][selected].mean():.1f} mm")
        offsets[selected] += mean[selected]
        kps = with_local_offsets(base, offsets, joints, arrays["v_template"], arrays["weights"], name=name)
    return kps, offsets, joints, selected, first, fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, default=REFERENCE)
    ap.add_argument("--derive-on", default="P0")
    ap.add_argument("--validate-on", default="P1")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--min-ratio", type=float, default=1.0,
                    help="correct a keypoint when its mean offset exceeds this times its spread (P0)")
    ap.add_argument("--out", type=Path, default=REAL_BLAZEPOSE_PATH)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the measured numbers here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    ref = load_reference(args.reference)
    names = list(ref["names"])
    arrays = open_body_arrays()
    base = open_body_keypoint_sets()["blazepose33"]
    if tuple(base.names) != tuple(names):
        raise SystemExit(f"{args.reference}: keypoint_names differ from the open body's blazepose33 order")
    joints = carrier_joints(base, arrays["weights"])
    jn = [str(n) for n in arrays["joint_names"]]

    # 1. the gap per keypoint, both participants, old definitions
    table = {}
    fits_old = {}
    for pname, targets in ref["participants"].items():
        fit = fit_direct(make_model(base, arrays), base.name, targets, iterations=args.iterations, names=names)
        fits_old[pname] = fit
        table[pname] = offset_stats(local_residuals(fit, targets, joints))
        err, _ = keypoint_error(fit, targets)
        print(f"{pname}: {targets.shape[0]} clean frames, direct fit with blazepose33: mean 3D keypoint error "
              f"{1000 * err:.1f} mm, betas {np.round(fit['betas'][:3], 2)}")

    print("\nper keypoint (mm): mean local offset length / RMS spread over frames; "
          "P0 vs P1 mean offsets: distance between them")
    print(f"{'keypoint':18s} {'joint':15s} {'P0 |mean|':>9s} {'P0 spread':>9s} {'P1 |mean|':>9s} "
          f"{'P1 spread':>9s} {'|P0-P1|':>8s}  P0 mean (x left, y up, z fwd)")
    a0, a1 = table[args.derive_on], table[args.validate_on]
    for k, n in enumerate(names):
        print(f"{n:18s} {jn[joints[k]]:15s} {1000 * a0['length'][k]:9.1f} {1000 * a0['spread'][k]:9.1f} "
              f"{1000 * a1['length'][k]:9.1f} {1000 * a1['spread'][k]:9.1f} "
              f"{1000 * np.linalg.norm(a0['mean'][k] - a1['mean'][k]):8.1f}  {np.round(1000 * a0['mean'][k], 1)}")

    # 2. derive on P0
    print(f"\nderiving on {args.derive_on} ({args.rounds} rounds)")
    new, offsets, joints, selected, first, _ = calibrate(
        base, ref["participants"][args.derive_on], arrays, rounds=args.rounds, iterations=args.iterations,
        min_ratio=args.min_ratio)
    print(f"corrected {int(selected.sum())} of {len(names)} keypoints: "
          f"{[n for n, s in zip(names, selected) if s]}")

    # 3. validate on P1 (and P0 for reference)
    result = {"participants": {}}
    for pname in (args.validate_on, args.derive_on):
        targets = ref["participants"][pname]
        fit_new = fit_direct(make_model(new, arrays), new.name, targets, iterations=args.iterations, names=names)
        fo = fits_old[pname]
        e_old, k_old = keypoint_error(fo, targets)
        e_new, k_new = keypoint_error(fit_new, targets)
        sw_ref, sw_old, sw_new = (shoulder_width(p, names) for p in (targets, fo["keypoints"], fit_new["keypoints"]))
        print(f"{pname}: mean 3D keypoint error old {1000 * e_old:.1f} mm -> new {1000 * e_new:.1f} mm; "
              f"shoulder width reference {1000 * sw_ref:.0f}, old fit {1000 * sw_old:.0f}, new fit {1000 * sw_new:.0f} mm")
        result["participants"][pname] = {
            "frames": int(targets.shape[0]), "error_old_mm": 1000 * e_old, "error_new_mm": 1000 * e_new,
            "per_keypoint_old_mm": (1000 * k_old).round(1).tolist(), "per_keypoint_new_mm": (1000 * k_new).round(1).tolist(),
            "shoulder_ref_mm": 1000 * sw_ref, "shoulder_old_mm": 1000 * sw_old, "shoulder_new_mm": 1000 * sw_new}
    result["table_mm"] = {p: {"length": (1000 * t["length"]).round(1).tolist(),
                              "spread": (1000 * t["spread"]).round(1).tolist(),
                              "mean": (1000 * t["mean"]).round(1).tolist()} for p, t in table.items()}
    result["corrected"] = [n for n, s in zip(names, selected) if s]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))

    if not args.no_write:
        frames = ref["frames"][args.derive_on].tolist()
        provenance = (
            "blazepose33_real: the open body's blazepose33 keypoints moved by offsets measured against "
            "real MediaPipe BlazePose detections. Derived by tools/calibrate_keypoints.py "
            f"(rounds={args.rounds}, iterations={args.iterations}, min_ratio={args.min_ratio}) from "
            "datasets/pose2sim_multiperson/reference.npz, the multi-view triangulation of MediaPipe "
            "detections of pose2sim 0.10.49's Demo_MultiPerson (BSD-3-Clause, Copyright (c) 2022, perfanalytics; "
            f"licence in datasets/pose2sim_multiperson/LICENSE), participant {args.derive_on}, clean frames "
            f"{frames}.")
        np.savez_compressed(
            args.out, names=np.array(names), vertex_ids=new.vertex_ids, vertex_weights=new.vertex_weights,
            offsets=offsets.astype(np.float64), joints=joints.astype(np.int64), corrected=selected,
            provenance=np.array(provenance))
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(f"done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
