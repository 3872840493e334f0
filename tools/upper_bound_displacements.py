"""Seed 001's upper-bound experiment (Table 2) on synthetic open-body data.

    python tools/upper_bound_displacements.py            # README table: 64 held-out frames

From the same perturbed initializations of held-out poses, fit
(a) the 25 ground-truth BODY_25 keypoints (noise-free, every point visible,
occluded ones included, as in the paper) with ``smplify_modified``, and
(b) the ground-truth displacement field (Eq. 1-2 between the initial and the
true body, on the initial rendering) with ``smplify_displacements``. Both use
fitkit's open GMM (``priors/open_gmm_08.pkl``) at SPIN's weight and the same
solver, so only the data term differs: by default Levenberg–Marquardt (10 +
30 iterations), which converges from these inits; ``--solver adam`` keeps the
recipes' SPIN schedule (Adam, 100 + 100 steps at lr 0.01), which stops short
of convergence for both. Prints MPJPE, PA-MPJPE and PVE (mm; MPJPE and PVE
after aligning the pelvis) before and after.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.eval.metrics import mpjpe, pa_mpjpe
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe
from fitkit.io.observations import Observations
from fitkit.priors.pose_data import load_pose_data
from fitkit.terms.displacements import gt_displacement_field

OPEN_GMM = "terms.pose.path=priors/open_gmm_08.pkl"
LM = ["stages.0.solver={type: lm, iterations: 10}", "stages.1.solver={type: lm, iterations: 30}"]


def metrics(model, params, gt) -> dict:
    with torch.no_grad():
        out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"], vertices="all")
        ref = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all")
    pelvis = lambda o: o.joints[:, :1]  # noqa: E731
    pve = (out.vertices - pelvis(out) - (ref.vertices - pelvis(ref))).norm(dim=-1).mean(dim=1)
    return {"mpjpe": 1000 * float(mpjpe(out.joints, ref.joints).mean()),
            "pa_mpjpe": 1000 * float(pa_mpjpe(out.joints, ref.joints).mean()),
            "pve": 1000 * float(pve.mean())}


def run(frames: int, seed: int, size: int, init_noise: float, overrides=()) -> list[dict]:
    model = load_body_model("open", num_betas=10)
    pool = load_pose_data("test").body_pose
    pick = np.random.default_rng(seed).choice(len(pool), frames, replace=False)
    ex = make_keypoint_example(model, frames, image_size=(size, size), noise_px=0.0, dropout=0.0,
                               pose_noise=init_noise, seed=seed, body_pose=pool[pick])
    obs = ex.observations
    K, image_size = obs.intrinsics, obs.image_size
    clean = torch.cat([ex.gt["keypoints_2d_clean"].float(), torch.ones(frames, 25, 1)], dim=-1)
    keypoints = Observations.from_arrays(clean, "body25", image_size, intrinsics=K, source="<gt keypoints>")
    field, _ = gt_displacement_field(model, ex.gt, ex.init, K, (size, size))
    dense = Observations.from_arrays(clean, "body25", image_size, intrinsics=K, source="<gt displacements>",
                                     dense={"displacements": field})
    rows = [{"cue": "initialization", **metrics(model, ex.init, ex.gt), "seconds": 0.0}]
    for cue, recipe, observations in (("25 GT keypoints (smplify_modified)", "smplify_modified", keypoints),
                                      ("GT displacements (smplify_displacements)", "smplify_displacements", dense)):
        t0 = time.perf_counter()
        res = fit(model, observations, load_recipe(recipe, [OPEN_GMM, *overrides]), ex.init)
        rows.append({"cue": cue, **metrics(model, res.params, ex.gt), "seconds": time.perf_counter() - t0})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image width = height, pixels")
    ap.add_argument("--init-noise", type=float, default=0.3, help="std (rad) of the initial pose error")
    ap.add_argument("--solver", choices=["lm", "adam"], default="lm")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an entry of both recipes (e.g. stages.1.solver.iterations=300)")
    args = ap.parse_args(argv)
    solver = LM if args.solver == "lm" else []
    rows = run(args.frames, args.seed, args.size, args.init_noise, [*solver, *args.set])
    print(f"{args.frames} held-out frames, {args.size}x{args.size} images, init error {args.init_noise} rad, "
          f"solver {args.solver}")
    print("| data term | MPJPE mm | PA-MPJPE mm | PVE mm | fit s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cue']} | {r['mpjpe']:.1f} | {r['pa_mpjpe']:.1f} | {r['pve']:.1f} | "
              f"{r['seconds']:.1f} |" if r["seconds"] else
              f"| {r['cue']} | {r['mpjpe']:.1f} | {r['pa_mpjpe']:.1f} | {r['pve']:.1f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
