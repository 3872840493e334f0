"""Time and score fitting_configs/video.yaml on a synthetic video with noisy 3D keypoints.

The video is :func:`fitkit.eval.video.make_synthetic_video` (BlazePose-33
keypoints, 2 px noise, 10% dropouts, no flow) of a validation clip by default
(tune on ``--split val`` only; report on ``--split test``). MediaPipe-like
``keypoints3d`` are added: the true keypoints, hip-centred, shrunk by
``--k3-scale`` (BlazePose's skeleton is short), with white noise N(0,
``--k3-noise``^2) per coordinate on x and y and twice that on z (depth), plus
a slow sinusoidal drift of the same size per keypoint and coordinate
(errors that persist over seconds); confidence = the 2D one. ``--back`` turns the person round (180 degrees about their vertical axis)
and observes them again; ``--swap A:B`` swaps the left/right labels of the
upper body on frames A..B-1 (2D and 3D). Every fit starts without an init
file, as on real footage.

Usage::

    python tools/bench_video_recipe.py [--clip dance_a --split val --frames 98] [--back] [--swap 30:45]
        [--recipes video,video:nohyp,video:no3d,demo] [--set key=value ...] [--json out.json]

``video:nohyp`` is the recipe without its hypotheses section, ``video:no3d``
the observations without keypoints3d. Prints one line per recipe: seconds
(wall, and the process's CPU time; torch threads as set by OMP_NUM_THREADS), PA-MPJPE,
MPJPE (pelvis-aligned), acceleration error (mm), mean 2D error (px), torso
facing error (degrees, median / max), swapped frames found.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import accel_error, err2d, mpjpe, pa_mpjpe
from fitkit.eval.video import make_synthetic_video
from fitkit.fitting.hypotheses import fit_with_hypotheses, swap_labels, yaw_orient
from fitkit.fitting.recipe import load_recipe, recipe_from_dict

PARAMS = ("global_orient", "body_pose", "betas", "transl")


def torso_facing(model, params) -> torch.Tensor:
    """(N, 3) unit forward direction of the torso: (left hip - right hip) x (spine3 - pelvis)."""
    j = model(*(params[k] for k in PARAMS), validate=False).joints
    fwd = torch.linalg.cross(j[:, 1] - j[:, 2], j[:, 9] - j[:, 0])
    return fwd / fwd.norm(dim=-1, keepdim=True)


def add_keypoints3d(model, obs, gt, scale: float, noise: float, seed: int):
    """Observations with MediaPipe-like keypoints3d of the true body (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pts = model(*(gt[k] for k in PARAMS), keypoints=obs.keypoint_format, validate=False).keypoints
    names = obs.format.names
    hips = 0.5 * (pts[:, names.index("left_hip")] + pts[:, names.index("right_hip")])
    rel = (pts - hips[:, None]) * scale
    sd = torch.tensor([noise, noise, 2 * noise], dtype=rel.dtype)
    # white noise plus as much slow drift (period 1-3 s at 30 fps), as a detector's errors persist
    T, K = rel.shape[:2]
    period = 30.0 + 60.0 * torch.rand(1, K, 3, generator=g, dtype=rel.dtype)
    phase = 2 * torch.pi * torch.rand(1, K, 3, generator=g, dtype=rel.dtype)
    t = torch.arange(T, dtype=rel.dtype)[:, None, None]
    drift = torch.sin(2 * torch.pi * t / period + phase) * (2 ** 0.5)
    rel = rel + sd * (torch.randn(rel.shape, generator=g, dtype=rel.dtype) + drift)
    conf = obs.keypoints[..., 2:3].to(rel)
    k3 = torch.where(conf > 0, torch.cat([rel, conf], -1), torch.zeros(rel.shape[:2] + (4,), dtype=rel.dtype))
    return dataclasses.replace(obs, keypoints3d=k3.to(obs.keypoints.dtype))


def turned_round(model, video, seed: int):
    """(observations, gt) of the same motion with the person's back to the camera."""
    gt = {k: video.gt[k] for k in PARAMS}
    gt["global_orient"] = yaw_orient(gt["global_orient"], 180.0)
    obs = video.observations
    with torch.no_grad():
        pts = model(*(gt[k] for k in PARAMS), keypoints=obs.keypoint_format, validate=False).keypoints
    uv = project(pts, obs.intrinsics.to(pts))
    g = torch.Generator().manual_seed(seed + 1)
    uv = uv + float(video.settings.get("noise_px", 2.0)) * torch.randn(uv.shape, generator=g, dtype=uv.dtype)
    conf = obs.keypoints[..., 2:3].to(uv)
    kps = torch.where(conf > 0, torch.cat([uv, conf], -1), torch.zeros_like(torch.cat([uv, conf], -1)))
    return dataclasses.replace(obs, keypoints=kps.to(obs.keypoints.dtype)), gt


def metrics(model, params, gt, obs, K) -> dict:
    with torch.no_grad():
        out = model(*(params[k] for k in PARAMS), keypoints=obs.keypoint_format, validate=False)
        ref = model(*(gt[k] for k in PARAMS), validate=False)
        e2d = err2d(project(out.keypoints, K), obs.keypoints.to(out.keypoints))
        face = torch.rad2deg(torch.arccos((torso_facing(model, params) * torso_facing(model, gt)).sum(-1)
                                          .clamp(-1, 1)))
    return {"pa_mpjpe": float(1000 * pa_mpjpe(out.joints, ref.joints).mean()),
            "mpjpe": float(1000 * mpjpe(out.joints, ref.joints).mean()),
            "accel": float(1000 * accel_error(out.joints, ref.joints)),
            "err2d_px": float(e2d[torch.isfinite(e2d)].mean()),
            "facing_median_deg": float(face.median()), "facing_max_deg": float(face.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="dance_a")
    ap.add_argument("--split", default="val", choices=["val", "test"])
    ap.add_argument("--frames", type=int, default=98)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--k3-scale", type=float, default=0.9)
    ap.add_argument("--k3-noise", type=float, default=0.015, help="meters (x, y; twice on z), white + drift")
    ap.add_argument("--back", action="store_true")
    ap.add_argument("--swap", default=None, help="A:B, frames with the upper body's labels swapped")
    ap.add_argument("--recipes", default="video,video:nohyp,video:no3d,demo")
    ap.add_argument("--set", action="append", default=[], help="override for the video recipe")
    ap.add_argument("--json")
    args = ap.parse_args()

    model = load_body_model("open", num_betas=10)
    t = time.perf_counter()
    video = make_synthetic_video(model, clip=args.clip, frames=args.frames, seed=args.seed, split=args.split,
                                 keypoint_format="blazepose33", flow=None)
    print(f"synthetic video: {args.clip} ({args.split}), {len(video)} frames, made in {time.perf_counter() - t:.1f} s;"
          f" torch threads {torch.get_num_threads()}")
    obs, gt = (video.observations, {k: video.gt[k] for k in PARAMS})
    if args.back:
        obs, gt = turned_round(model, video, args.seed)
    obs = add_keypoints3d(model, obs, gt, args.k3_scale, args.k3_noise, args.seed)
    clean = obs  # the right labels, for the 2D error
    truth_swap = np.zeros(len(obs), dtype=bool)
    if args.swap:
        a, b = (int(v) for v in args.swap.split(":"))
        truth_swap[a:b] = True
        obs = swap_labels(obs, truth_swap, np.zeros(len(obs), dtype=bool))

    rows = []
    for spec in args.recipes.split(","):
        name, _, variant = spec.partition(":")
        recipe = load_recipe(name, args.set if name == "video" else [])
        o = obs
        if variant == "nohyp":
            data = copy.deepcopy(recipe.data)
            data.pop("hypotheses", None)
            recipe = recipe_from_dict(data, recipe.source)
        elif variant == "no3d":
            o = dataclasses.replace(obs, keypoints3d=None)
        t, c = time.perf_counter(), time.process_time()
        res = fit_with_hypotheses(model, o, recipe)
        secs, cpu = time.perf_counter() - t, time.process_time() - c
        m = metrics(model, res.params, gt, clean, res.K)
        h = res.info.get("hypotheses")
        found = None if h is None else np.asarray(h["swap_upper"])
        m.update(recipe=spec, seconds=secs, cpu_seconds=cpu,
                 swap_found=None if found is None else int(found.sum()),
                 swap_right=None if found is None else int((found == truth_swap).sum()),
                 yaw=None if h is None else sorted({h["names"][i] for i in np.asarray(h["yaw_index"])}))
        rows.append(m)
        print(f"{spec:12s} {secs:5.1f} s (cpu {cpu:5.1f})  PA-MPJPE {m['pa_mpjpe']:6.1f}  MPJPE {m['mpjpe']:6.1f}  "
              f"accel {m['accel']:5.1f}  2D {m['err2d_px']:5.2f} px  facing {m['facing_median_deg']:5.1f}/"
              f"{m['facing_max_deg']:5.1f} deg  swap found {m['swap_found']} (right {m['swap_right']}/{len(o)})"
              f"  starts {m['yaw']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
