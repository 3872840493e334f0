"""``fitkit demo``: fit a synthetic open-body example and report before/after metrics.

Everything comes from the repository: the open body posed with frames of the
held-out clips of the open pose data (:mod:`fitkit.priors.pose_data`; or
random joint-range poses), seen by a full-image camera, noisy keypoints with
dropouts and a perturbed initialization
(:func:`fitkit.eval.synthetic.make_keypoint_example`), fitted with
``fitting_configs/demo.yaml`` and its pose prior (``--prior`` swaps it).

Metrics (means over frames): MPJPE and PA-MPJPE in millimeters on the 24
skeleton joints (MPJPE aligned at the pelvis), and the mean 2D distance in
pixels between the model's projected keypoints and the *observed* (noisy)
keypoints with nonzero confidence.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import err2d, mpjpe, pa_mpjpe
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe
from fitkit.io.mesh import write_obj
from fitkit.priors.pose_data import load_pose_data


def evaluate(model, params: dict, gt: dict, observations, K) -> dict:
    """Mean MPJPE / PA-MPJPE (mm) against ``gt`` joints and mean 2D error (px) against the observations."""
    with torch.no_grad():
        out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                    keypoints=observations.keypoint_format)
        kp2d = project(out.keypoints, K)
        obs = observations.keypoints.to(kp2d)
        e2d = err2d(kp2d, obs)
        return {
            "mpjpe": float(1000 * mpjpe(out.joints, gt["joints"]).mean()),
            "pa_mpjpe": float(1000 * pa_mpjpe(out.joints, gt["joints"]).mean()),
            "err2d_px": float(e2d[torch.isfinite(e2d)].mean()),
        }


def demo_example(model, frames: int, *, poses: str = "heldout", split: str = "test", noise_px: float = 2.0,
                 dropout: float = 0.1, init_noise: float = 0.3, seed: int = 0):
    """The demo's synthetic problem: ``frames`` poses drawn (seeded) from the ``split`` clips
    of the open pose data (``poses='heldout'``) or random joint-range poses (``'random'``)."""
    body_pose = None
    if poses == "heldout":
        pool = load_pose_data(split).body_pose
        pick = np.random.default_rng(seed).choice(len(pool), frames, replace=frames > len(pool))
        body_pose = pool[pick]
    return make_keypoint_example(model, frames, keypoint_format="body25", noise_px=noise_px, dropout=dropout,
                                 seed=seed, pose_noise=init_noise, body_pose=body_pose)


def fit_and_evaluate(model, ex, recipe) -> tuple[dict, object]:
    """Fit ``ex`` with ``recipe``; metrics before and after, time and iterations (and the FitResult)."""
    obs = ex.observations
    before = evaluate(model, ex.init, ex.gt, obs, obs.intrinsics)
    t0 = time.perf_counter()
    res = fit(model, obs, recipe, ex.init)
    seconds = time.perf_counter() - t0
    after = evaluate(model, res.params, ex.gt, obs, res.K)
    return {
        "before": before,
        "after": after,
        "seconds": seconds,
        "recipe": recipe.name,
        "prior": _prior_line(recipe),
        "iterations_per_stage": {n: float(res.iterations[:, i].float().mean())
                                 for i, n in enumerate(res.stage_names)},
        "converged": int(res.converged.sum()),
    }, res


def run(args) -> dict:
    t_load = time.perf_counter()
    model = load_body_model("open", num_betas=10)
    recipe = load_recipe(args.recipe, args.set or [], prior=args.prior)
    ex = demo_example(model, args.frames, poses=args.poses, noise_px=args.noise_px, dropout=args.dropout,
                      init_noise=args.init_noise, seed=args.seed)
    load_s = time.perf_counter() - t_load
    summary, res = fit_and_evaluate(model, ex, recipe)
    summary.update(setup_seconds=load_s, frames=args.frames, poses=args.poses, init_noise=args.init_noise,
                   noise_px=args.noise_px, dropout=args.dropout, seed=args.seed)
    if args.output:
        out_dir = Path(args.output)
        with torch.no_grad():
            p = res.params
            verts = model(p["global_orient"][:1], p["body_pose"][:1], p["betas"][:1], p["transl"][:1],
                          vertices="all").vertices
            gt = ex.gt
            gverts = model(gt["global_orient"][:1], gt["body_pose"][:1], gt["betas"][:1], gt["transl"][:1],
                           vertices="all").vertices
        axes = getattr(args, "axes", "opencv")
        summary["files"] = [str(write_obj(out_dir / "fit_000.obj", verts[0], model.faces, axes=axes)),
                            str(write_obj(out_dir / "gt_000.obj", gverts[0], model.faces, axes=axes))]
    return summary


def _prior_line(recipe) -> str:
    spec = recipe.terms.get("pose")
    if spec is None:
        return "none"
    return ", ".join(f"{k}: {v}" for k, v in spec.items())


def print_summary(s: dict) -> None:
    poses = "held-out mocap poses" if s["poses"] == "heldout" else "random poses"
    print(f"fitkit demo: {s['frames']} synthetic open-body frames ({poses}), recipe '{s['recipe']}' "
          f"({s['noise_px']} px noise, {100 * s['dropout']:.0f}% dropped keypoints, "
          f"init error {s['init_noise']} rad per pose component)")
    print(f"  pose prior: {s['prior']}")
    print(f"  {'':10s} {'MPJPE mm':>10s} {'PA-MPJPE mm':>12s} {'2D err px':>10s}")
    for k in ("before", "after"):
        m = s[k]
        print(f"  {k:10s} {m['mpjpe']:10.1f} {m['pa_mpjpe']:12.1f} {m['err2d_px']:10.2f}")
    its = ", ".join(f"{n} {v:.1f}" for n, v in s["iterations_per_stage"].items())
    print(f"  fit time {s['seconds']:.2f} s (mean iterations: {its}; converged {s['converged']}/{s['frames']})")
    for f in s.get("files", []):
        print(f"  wrote {f}")
