"""Tune the weights of fitting_configs/video_flow.yaml on a validation clip.

Never on the held-out clips the README reports: the synthetic video is made
from the pose data's validation split (default: 'kick', 47 frames at 30 fps).
Two passes, each scored by the mean MPJPE (ties: acceleration error):

1. the smoothness weights (``accel``, ``pose_rate``) with the flow terms off;
2. the flow weights (``vertex_flow``, ``photometric``) with the best of (1).

Usage::

    python tools/tune_video.py [--clip kick] [--frames 47] [--seed 1] [--json out.json]

Prints one line per setting and the best overrides; edit the recipe by hand.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from fitkit.body import load_body_model
from fitkit.commands.demo_video import _without_flow, video_metrics
from fitkit.eval.video import make_synthetic_video
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe

SMOOTH_GRID = {"accel": [1000.0, 3000.0, 10000.0, 30000.0], "pose_rate": [0.0, 10.0, 100.0]}
FLOW_GRID = {"vertex_flow": [0.0, 0.01, 0.03, 0.1], "photometric": [0.0, 1e4, 1e5]}


def _score(m: dict) -> tuple:
    return (round(m["mpjpe"], 1), m["accel"])


def _run(model, video, recipe) -> dict:
    t = time.perf_counter()
    res = fit(model, video.observations, recipe, video.init)
    m = video_metrics(model, res.params, video.gt, video.observations, res.K)
    m["seconds"] = time.perf_counter() - t
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="kick")
    ap.add_argument("--frames", type=int, default=47)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--recipe", default="video_flow")
    ap.add_argument("--json")
    args = ap.parse_args()
    model = load_body_model("open", num_betas=10)
    video = make_synthetic_video(model, clip=args.clip, frames=args.frames, seed=args.seed, split="val")
    rows = []
    base = _run(model, video, load_recipe("demo"))
    print(f"per-frame (demo.yaml): MPJPE {base['mpjpe']:.1f} accel {base['accel']:.1f}")

    best_smooth, best = [], None
    for values in itertools.product(*SMOOTH_GRID.values()):
        sets = [f"terms.{k}.weight={v}" for k, v in zip(SMOOTH_GRID, values)]
        m = _run(model, video, _without_flow(args.recipe, sets))
        rows.append({"pass": "smooth", "set": sets, **m})
        print(f"  {' '.join(sets):60s} MPJPE {m['mpjpe']:.1f} PVE {m['pve']:.1f} accel {m['accel']:.1f}")
        if best is None or _score(m) < _score(best):
            best, best_smooth = m, sets
    best_flow = []
    for values in itertools.product(*FLOW_GRID.values()):
        sets = best_smooth + [f"terms.{k}.weight={v}" for k, v in zip(FLOW_GRID, values)]
        m = _run(model, video, load_recipe(args.recipe, sets))
        rows.append({"pass": "flow", "set": sets, **m})
        print(f"  {' '.join(sets[len(best_smooth):]):60s} MPJPE {m['mpjpe']:.1f} PVE {m['pve']:.1f} "
              f"accel {m['accel']:.1f} ({m['seconds']:.0f} s)")
        if _score(m) < _score(best):
            best, best_flow = m, sets
    print("best:", " ".join(best_flow or best_smooth), f"MPJPE {best['mpjpe']:.1f} accel {best['accel']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clip": args.clip, "frames": args.frames, "seed": args.seed, "per_frame": base,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
