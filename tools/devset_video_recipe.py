"""Monocular fits of the pose2sim dev set (datasets/pose2sim_multiperson), one view at a time, against
the multi-view reference.

For each participant and view, the participant's main track in that view
(``summary.json``) is fitted alone with each recipe, with the view's
calibrated intrinsics (keypoints not undistorted: the views' distortion is
small). Scores over the frames where the reference has all 12 limb points
(shoulders, elbows, wrists, hips, knees, ankles), on those 12 points, the
reference moved into the view's camera frame:

- PA-MPJPE (mm, Procrustes with scale per frame),
- hip-aligned MPJPE (mm, both skeletons moved so their hip mid-points meet;
  camera axes, so the facing counts),
- acceleration error (mm/frame^2, consecutive frames only),
- torso facing error (degrees: the normal of hips x (shoulders - hips); frames where
  the detector misses a torso point are left out of it),
- mean 2D error to the detections (px, confidence > 0.3).

``mediapipe`` is the detector's own world landmarks (``keypoints3d``; no 2D
error). Never run this on the held-out demos (``Demo_SinglePerson``,
``Demo_Batch``): this tool reads only the committed dev set.

Usage::

    python tools/devset_video_recipe.py [--recipes mediapipe,video,video:nohyp,demo] [--set k=v ...]
        [--views cam01,cam02,cam03,cam04] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import procrustes_align
from fitkit.fitting.hypotheses import fit_with_hypotheses
from fitkit.fitting.recipe import load_recipe, recipe_from_dict
from fitkit.io.cameras import read_cameras
from fitkit.io.observations import load_observations

ROOT = Path(__file__).resolve().parents[1] / "datasets" / "pose2sim_multiperson"
PARAMS = ("global_orient", "body_pose", "betas", "transl")


def facing(points: np.ndarray, names: list) -> np.ndarray:
    """(F, 3) unit torso normals of (F, K, 3) points named ``names``."""
    p = {n: points[:, names.index(n)] for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")}
    hips = 0.5 * (p["left_hip"] + p["right_hip"])
    up = 0.5 * (p["left_shoulder"] + p["right_shoulder"]) - hips
    n = np.cross(p["left_hip"] - p["right_hip"], up)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)  # nan where the points coincide


def scores(pred: np.ndarray, ref: np.ndarray, frames: np.ndarray, limbs: list) -> dict:
    """pred, ref: (F, 12, 3) meters in camera axes, frames (F,) frame numbers."""
    pa = procrustes_align(torch.as_tensor(pred), torch.as_tensor(ref)).numpy()
    hip = lambda x: 0.5 * (x[:, limbs.index("left_hip")] + x[:, limbs.index("right_hip")])[:, None]
    rel_p, rel_r = pred - hip(pred), ref - hip(ref)
    acc = []
    for i in range(len(frames) - 2):
        if frames[i + 2] - frames[i] == 2:
            a_p = pred[i + 2] - 2 * pred[i + 1] + pred[i]
            a_r = ref[i + 2] - 2 * ref[i + 1] + ref[i]
            acc.append(np.linalg.norm(a_p - a_r, axis=-1).mean())
    with np.errstate(invalid="ignore", divide="ignore"):  # a detector's missing points (zeros): no normal
        cos = (facing(pred, limbs) * facing(ref, limbs)).sum(-1).clip(-1, 1)
    deg = np.degrees(np.arccos(cos))
    deg = deg[np.isfinite(deg)]
    return {"pa_mpjpe": float(1000 * np.linalg.norm(pa - ref, axis=-1).mean()),
            "mpjpe_hip": float(1000 * np.linalg.norm(rel_p - rel_r, axis=-1).mean()),
            "accel": float(1000 * np.mean(acc)) if acc else float("nan"),
            "facing_deg": float(deg.mean()) if deg.size else float("nan"),
            "facing_max_deg": float(deg.max()) if deg.size else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="mediapipe,video,video:nohyp,demo")
    ap.add_argument("--views", default="cam01,cam02,cam03,cam04")
    ap.add_argument("--set", action="append", default=[], help="override for the video recipe")
    ap.add_argument("--clean", action="store_true", help="score only the reference's clean frames")
    ap.add_argument("--json")
    args = ap.parse_args()

    ref = np.load(ROOT / "reference.npz", allow_pickle=False)
    summary = json.loads((ROOT / "summary.json").read_text())
    cams = read_cameras(ROOT / "calibration.json")
    names = [str(n) for n in ref["keypoint_names"]]
    limbs = [str(n) for n in ref["limb_names"]]
    limb_idx = [names.index(n) for n in limbs]
    model = load_body_model("open", num_betas=10)
    rows = []
    for p, person in enumerate(str(n) for n in ref["participants"]):
        for view in args.views.split(","):
            track = summary["participants"][person]["main_track"][view]
            obs_all = load_observations(ROOT / f"{view}.npz")
            sel = [i for i, t in enumerate(obs_all.track_ids) if t == track]
            obs = obs_all.subset(sel)
            cam = cams[view]
            K = torch.as_tensor(cam.K, dtype=obs.keypoints.dtype).expand(len(obs), 3, 3).clone()
            obs = dataclasses.replace(obs, intrinsics=K)
            frames = np.asarray(obs.frame_numbers)
            world = ref["points3d"][p, frames][:, limb_idx].astype(np.float64)  # (F, 12, 3)
            ok = np.isfinite(world).all(axis=(1, 2))
            if args.clean:
                ok &= ref["clean"][p, frames]
            ref_cam = world @ cam.R.T + cam.t
            for spec in args.recipes.split(","):
                name, _, variant = spec.partition(":")
                t = time.perf_counter()
                if name == "mediapipe":
                    pred = obs.keypoints3d[..., :3].double().numpy()[:, limb_idx]
                    e2d = float("nan")
                    secs = 0.0
                else:
                    recipe = load_recipe(name, args.set if name == "video" else [])
                    if variant == "nohyp":
                        data = copy.deepcopy(recipe.data)
                        data.pop("hypotheses", None)
                        recipe = recipe_from_dict(data, recipe.source)
                    res = fit_with_hypotheses(model, obs, recipe)
                    secs = time.perf_counter() - t
                    with torch.no_grad():
                        out = model(*(res.params[k] for k in PARAMS), keypoints="blazepose33", validate=False)
                    pred = out.keypoints.double().numpy()[:, limb_idx]
                    uv = project(out.keypoints, res.K).double().numpy()
                    kp = obs.keypoints.double().numpy()
                    used = kp[..., 2] > 0.3
                    e2d = float(np.linalg.norm(uv - kp[..., :2], axis=-1)[used].mean())
                m = scores(pred[ok], ref_cam[ok], frames[ok], limbs)
                m.update(person=person, view=view, recipe=spec, frames=int(ok.sum()), err2d_px=e2d, seconds=secs)
                h = None if name == "mediapipe" else res.info.get("hypotheses")
                if h is not None:  # which starts won, and how many frames got swapped labels
                    m.update(starts=sorted({h["names"][i] for i in np.asarray(h["yaw_index"])}),
                             swapped_upper=int(np.sum(h["swap_upper"])), swapped_lower=int(np.sum(h["swap_lower"])))
                rows.append(m)
                print(f"{person} {view} {spec:12s} n={m['frames']:3d}  PA {m['pa_mpjpe']:6.1f}  hip-MPJPE "
                      f"{m['mpjpe_hip']:6.1f}  accel {m['accel']:5.1f}  facing {m['facing_deg']:5.1f}/"
                      f"{m['facing_max_deg']:5.1f}  2D {e2d:6.2f} px  {secs:5.1f} s", flush=True)
    print("means over participants x views:")
    for spec in args.recipes.split(","):
        r = [x for x in rows if x["recipe"] == spec]
        print(f"  {spec:12s} PA {np.mean([x['pa_mpjpe'] for x in r]):6.1f}  hip-MPJPE "
              f"{np.mean([x['mpjpe_hip'] for x in r]):6.1f}  accel {np.nanmean([x['accel'] for x in r]):5.1f}  "
              f"facing {np.nanmean([x['facing_deg'] for x in r]):5.1f}  2D {np.nanmean([x['err2d_px'] for x in r]):6.2f}"
              f"  worst view PA {max(x['pa_mpjpe'] for x in r):6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
