"""Does a frame's fit depend on the other frames of its batch?

Two measurements, printed as tables (largest absolute parameter difference
over global_orient, body_pose, betas and transl, radians / betas / meters
mixed; 0 means bit-identical):

1. Corrupted neighbour: 8 synthetic frames fitted with the demo recipe, both
   stages set to one solver (10 + 30 iterations), once clean and once with
   frame 3 corrupted (NaN keypoints, 1e6 pixel coordinates, all confidences
   zero); the difference is taken over the 7 untouched frames.
2. Batch size: the same frames fitted in batches of 8 and of 16 (the demo
   recipe as it is: LM camera stage, L-BFGS body stage).

Also prints how the corrupted frame was flagged and its 2D error.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python tools/check_independence.py [--frames 80] [--dtype float32] [--recipe demo] [--prior vposer] [--mode latent]

``--mode`` sets the pose prior's mode (vposer: encoder | latent; cnf: nll | latent).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.errors import FitkitError
from fitkit.eval.metrics import err2d
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe, recipe_from_dict

NAMES = ("global_orient", "body_pose", "betas", "transl")


def corrupt(obs, row: int, kind: str):
    """A copy of ``obs`` whose frame ``row`` is broken the way ``kind`` says."""
    kps = obs.keypoints.clone()
    if kind == "nan":
        kps[row, :, :2] = float("nan")
    elif kind == "1e6":
        kps[row, :, :2] = 1e6
    elif kind == "zero_conf":
        kps[row, :, 2] = 0.0
    else:
        raise ValueError(kind)
    out = copy.copy(obs)
    out.keypoints = kps
    return out


def max_diff(a: dict, b: dict, rows) -> float:
    return max(float((a[n][rows] - b[n][rows]).abs().max()) for n in NAMES)


def solver_recipe(base, solver: str):
    data = copy.deepcopy(base.data)
    for st, iters in zip(data["stages"], (10, 30)):
        st["solver"] = {"type": solver, "iterations": iters}
    return recipe_from_dict(data, source=f"demo with {solver}")


def fit_in_batches(model, obs, init, recipe, batch: int) -> dict:
    parts = []
    for s in range(0, len(obs), batch):
        idx = torch.arange(s, min(len(obs), s + batch))
        res = fit(model, obs.subset(idx), recipe, {k: v[idx] for k, v in init.items()})
        parts.append(res.params)
    return {n: torch.cat([p[n] for p in parts]) for n in NAMES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=80, help="frames of the batch-size comparison")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--solvers", nargs="+", default=["adam", "lbfgs", "lm"])
    ap.add_argument("--recipe", default="demo", help="recipe name or file (default demo)")
    ap.add_argument("--prior", default=None, help="swap the demo's pose prior (gmm, vposer, cnf, none)")
    ap.add_argument("--mode", default=None, help="the pose prior's mode (vposer: encoder|latent, cnf: nll|latent)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    model = load_body_model("open", num_betas=10, dtype=dtype)
    base = load_recipe(args.recipe, prior=args.prior)
    if args.mode is not None:
        data = copy.deepcopy(base.data)
        data["terms"]["pose"]["mode"] = args.mode
        base = recipe_from_dict(data, source=f"{args.recipe} with pose mode {args.mode}")
    print(f"pose prior: {base.data['terms'].get('pose')}")
    ex = make_keypoint_example(model, 8, noise_px=2.0, seed=0)
    others = [r for r in range(8) if r != 3]
    print(f"corrupted frame 3 of 8, recipe {args.recipe!r}, 10 + 30 iterations, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s); max |param difference| over the 7 other frames")
    print(f"{'solver':8s} {'nan':>10s} {'1e6':>10s} {'zero_conf':>10s}   flags of frame 3 (conv/nan/no_ev, err px)")
    for solver in args.solvers:
        recipe = solver_recipe(base, solver)
        clean = fit(model, ex.observations, recipe, ex.init)
        cells, flags = [], []
        for kind in ("nan", "1e6", "zero_conf"):
            obs = corrupt(ex.observations, 3, kind)
            try:
                res = fit(model, obs, recipe, ex.init)
            except FitkitError as exc:  # e.g. a crop camera cannot be built around NaN keypoints
                cells.append(float("nan"))
                flags.append(f"refused: {str(exc)[:40]}")
                continue
            cells.append(max_diff(res.params, clean.params, others))
            p = res.params
            kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"],
                       keypoints=obs.keypoint_format).keypoints
            e = err2d(project(kp, res.K), obs.keypoints.to(kp))[3]
            flags.append(f"{int(res.converged[3])}/{int(res.nan[3])}/{int(res.no_evidence[3])},{float(e):.3g}")
        print(f"{solver:8s} " + " ".join(f"{c:10.2g}" for c in cells) + "   " + "  ".join(flags)
              + f"   (clean run: {int(clean.converged.sum())}/8 converged)")

    ex = make_keypoint_example(model, args.frames, noise_px=2.0, seed=1)
    t0 = time.perf_counter()
    by8 = fit_in_batches(model, ex.observations, ex.init, base, 8)
    by16 = fit_in_batches(model, ex.observations, ex.init, base, 16)
    print(f"recipe {args.recipe!r} as it is, {args.frames} frames, --batch-size 8 vs 16: max |param difference| "
          f"{max_diff(by8, by16, slice(None)):.3g} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
