#!/usr/bin/env python
"""Benchmark the solvers on identical synthetic keypoint-fitting problems.

For batches of frames (default 64 and 1024) made by
fitkit.eval.synthetic.make_keypoint_example (open body, BODY_25 keypoints
with noise and dropouts, a perturbed init), the same two-stage recipe
(camera stage on the torso keypoints, then the whole body against robust,
size-scaled keypoints with weak pulls to the initial pose, the mean shape and
SMPLify's bending term) is run with:

- adam-spin: Adam with SPIN's schedule (lr 0.01, 100 + 100 steps, no early exit);
- lbfgs:     per-sample L-BFGS (camera 20, body up to 100 iterations);
- lm:        per-sample Levenberg-Marquardt (camera 10, body up to 30 iterations).

Reported per solver: wall time, mean iterations per stage, mean 2D error
against the observed keypoints (px), mean PA-MPJPE against the true joints
(mm). Then the target: the shortest LM run (body-stage iteration cap 1, 2,
3, 5, 8, ...) whose mean 2D error is at most adam-spin's, and its time as a
fraction of adam-spin's.

    python tools/bench_fit.py                  # 64 and 1024 frames, CPU (CUDA if present)
    python tools/bench_fit.py --frames 64 --device cpu
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import err2d, pa_mpjpe
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import recipe_from_dict

TERMS = {
    "torso": {"type": "keypoints2d", "sigma": None, "confidence_power": 0, "scale_by_size": True,
              "only": ["right_shoulder", "left_shoulder", "right_hip", "left_hip"]},
    "keypoints": {"type": "keypoints2d", "sigma": 100, "confidence_power": 1, "scale_by_size": True},
    "near_init": {"type": "init_l2", "weight": 50.0, "params": {"body_pose": 1.0}},
    "shape": {"type": "shape_l2", "weight": 1.0},
    "bending": {"type": "bending", "weight": 0.1},
}

SOLVERS = {
    "adam-spin": ({"type": "adam", "lr": 0.01, "iterations": 100, "ftol": 0, "patience": 100},
                  {"type": "adam", "lr": 0.01, "iterations": 100, "ftol": 0, "patience": 100}),
    "lbfgs": ({"type": "lbfgs", "iterations": 20}, {"type": "lbfgs", "iterations": 100}),
    "lm": ({"type": "lm", "iterations": 10}, {"type": "lm", "iterations": 30}),
}


def recipe(camera_solver: dict, body_solver: dict):
    return recipe_from_dict({
        "name": "bench", "camera": {"mode": "full"}, "terms": copy.deepcopy(TERMS),
        "stages": [
            {"name": "camera", "free": ["global_orient", "transl"], "terms": ["torso"], "solver": camera_solver},
            {"name": "body", "free": ["global_orient", "body_pose", "betas", "transl"],
             "terms": ["keypoints", "near_init", "shape", "bending"], "solver": body_solver},
        ]}, "bench")


def run_one(model, ex, rec, device):
    obs = ex.observations
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = fit(model, obs, rec, ex.init, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        p = res.params
        out = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], keypoints=obs.keypoint_format)
        e2d = err2d(project(out.keypoints, res.K), obs.keypoints.to(device=device, dtype=out.keypoints.dtype))
        pa = pa_mpjpe(out.joints, ex.gt["joints"].to(out.joints))
    return {
        "seconds": seconds,
        "iterations": {n: float(res.iterations[:, i].float().mean()) for i, n in enumerate(res.stage_names)},
        "err2d_px": float(e2d[torch.isfinite(e2d)].mean()),
        "pa_mpjpe_mm": float(1000 * pa.mean()),
        "converged": float(res.converged.float().mean()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--noise-px", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    model = load_body_model("open", num_betas=10, device=device)
    print(f"device {device}, float32, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    report = {}
    for n in args.frames:
        ex = make_keypoint_example(model, n, keypoint_format="body25", noise_px=args.noise_px, seed=args.seed)
        rows = {}
        run_one(model, make_keypoint_example(model, 4, seed=99), recipe(*SOLVERS["lm"]), device)  # warm-up
        for name, (cam, body) in SOLVERS.items():
            rows[name] = run_one(model, ex, recipe(cam, body), device)
        target = rows["adam-spin"]["err2d_px"]
        reached = None
        for cap in (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30):
            r = run_one(model, ex, recipe(SOLVERS["lm"][0], dict(SOLVERS["lm"][1], iterations=cap)), device)
            if r["err2d_px"] <= target:
                reached = dict(r, body_iteration_cap=cap)
                break
        print(f"\n{n} frames")
        print(f"  {'solver':10s} {'time s':>8s} {'iters cam+body':>15s} {'2D err px':>10s} {'PA-MPJPE mm':>12s}")
        for name, r in rows.items():
            its = "+".join(f"{v:.0f}" for v in r["iterations"].values())
            print(f"  {name:10s} {r['seconds']:8.2f} {its:>15s} {r['err2d_px']:10.2f} {r['pa_mpjpe_mm']:12.1f}")
        if reached:
            frac = reached["seconds"] / rows["adam-spin"]["seconds"]
            print(f"  LM reaches adam-spin's 2D error ({target:.2f} px) with a body-stage cap of "
                  f"{reached['body_iteration_cap']} iterations in {reached['seconds']:.2f} s = "
                  f"1/{1 / frac:.0f} of adam-spin's time")
        else:
            print("  LM did not reach adam-spin's 2D error within 30 body iterations")
        report[n] = {"solvers": rows, "lm_to_adam_error": reached, "adam_err2d_px": target}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
