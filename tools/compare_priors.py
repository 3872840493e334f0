"""Compare pose priors on equal terms: the demo's problem, one recipe line swapped.

    python tools/compare_priors.py                 # the README table (4 seeds x 128 held-out frames)
    python tools/compare_priors.py --tune          # choose each prior's mode and weight on validation clips

Every variant fits the same synthetic frames (poses from the held-out test
clips of the open pose data, BODY_25 keypoints with 2 px noise and 10%
dropped, an initialization off by 0.3 rad per pose component) with
``fitting_configs/demo.yaml`` (L-BFGS body stage), whose ``pose`` line is
replaced by the preset of :mod:`fitkit.priors.presets` (``none`` removes
it). A variant is ``NAME`` (the preset) or ``NAME:MODE:WEIGHT``. Rows are
means over the seeds (one synthetic example per seed).

``--tune`` searches every prior's mode and weight over a grid on frames from
the *validation* clips (never the test clips; no prior is trained on them)
and prints the best, which is how :data:`~fitkit.priors.presets.PRIOR_PRESETS`
was chosen.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.commands.demo import demo_example, fit_and_evaluate
from fitkit.fitting.recipe import load_recipe
from fitkit.priors.presets import PRIOR_PRESETS

GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
MODES = {"gmm": (None,), "vposer": ("latent", "encoder"), "cnf": ("latent", "nll")}
#: The README's rows: no prior, the presets, and the latent modes with their validation-tuned weights.
DEFAULT_VARIANTS = ("none", "gmm", "vposer", "cnf", "vposer:latent:30", "cnf:latent:0.1")
METRICS = ("mpjpe", "pa_mpjpe", "err2d_px")


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME[:MODE[:WEIGHT]]`` -> (preset name, recipe overrides)."""
    name, *rest = text.split(":")
    if name != "none" and name not in PRIOR_PRESETS:
        raise SystemExit(f"unknown prior {name!r} in {text!r}")
    overrides = []
    if len(rest) >= 1 and rest[0]:
        overrides.append(f"terms.pose.mode={rest[0]}")
    if len(rest) >= 2:
        overrides.append(f"terms.pose.weight={float(rest[1])}")
    return name, overrides


def compare(variants, frames: int, seeds, split: str = "test", recipe: str = "demo",
            init_noise: float = 0.3, quiet: bool = False) -> list[dict]:
    """One row per variant: metrics before/after and fit seconds, averaged over ``seeds``."""
    model = load_body_model("open", num_betas=10)
    runs = {v: [] for v in variants}
    for seed in seeds:
        ex = demo_example(model, frames, split=split, seed=seed, init_noise=init_noise)
        for v in variants:
            name, overrides = parse_variant(v)
            summary, _ = fit_and_evaluate(model, ex, load_recipe(recipe, overrides, prior=name))
            runs[v].append(summary)
    rows = []
    for v, summaries in runs.items():
        mean = lambda part, k: float(np.mean([s[part][k] for s in summaries]))  # noqa: E731
        row = {"variant": v, "prior": summaries[0]["prior"], "frames": frames, "seeds": list(seeds),
               "before": {k: mean("before", k) for k in METRICS}, "after": {k: mean("after", k) for k in METRICS},
               "seconds": float(np.mean([s["seconds"] for s in summaries]))}
        rows.append(row)
        if not quiet:
            a = row["after"]
            print(f"  {v:18s} MPJPE {a['mpjpe']:6.1f}  PA-MPJPE {a['pa_mpjpe']:6.1f}  2D {a['err2d_px']:5.2f} px  "
                  f"{row['seconds']:5.2f} s", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    b = rows[0]["before"]
    lines = ["| pose prior (the recipe's `pose` line) | MPJPE mm | PA-MPJPE mm | 2D err px | fit s |",
             "|---|---:|---:|---:|---:|",
             f"| initialization | {b['mpjpe']:.1f} | {b['pa_mpjpe']:.1f} | {b['err2d_px']:.2f} | |"]
    for r in rows:
        a = r["after"]
        line = "none" if r["prior"] == "none" else f"`{{{r['prior']}}}`"
        lines.append(f"| {line} | {a['mpjpe']:.1f} | {a['pa_mpjpe']:.1f} | {a['err2d_px']:.2f} | {r['seconds']:.2f} |")
    return "\n".join(lines)


def tune(priors, frames: int, seed: int) -> dict:
    best = {}
    for name in priors:
        scores = {}
        for mode in MODES[name]:
            variants = [f"{name}:{mode or ''}:{w}" for w in GRID]
            print(f"{name} {mode or ''}: weights {GRID} on {frames} frames of the validation clips")
            for v, row in zip(variants, compare(variants, frames, [seed], split="val")):
                scores[(mode, float(v.split(":")[2]))] = row["after"]["pa_mpjpe"]
        best[name] = min(scores, key=scores.get)
        print(f"  -> {name}: mode {best[name][0]}, weight {best[name][1]} (PA-MPJPE {scores[best[name]]:.1f} mm)")
    compare(["none"], frames, [seed], split="val")
    return {k: {"mode": m, "weight": w} for k, (m, w) in best.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="NAME or NAME:MODE:WEIGHT")
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--tune", action="store_true", help="choose each prior's mode and weight on validation clips")
    ap.add_argument("--json", type=Path, help="write the rows as JSON")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.tune:
        print(json.dumps(tune(list(PRIOR_PRESETS), args.frames, args.seeds[0] + 1)))
        return 0
    print(f"{args.frames} frames from the held-out clips per seed, seeds {args.seeds}")
    rows = compare(args.variants, args.frames, args.seeds)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
