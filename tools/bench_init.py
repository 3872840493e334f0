"""Mean pose vs SMPLR vs DaNet as the start of a fit, on held-out synthetic bodies.

    python tools/bench_init.py                  # the README table (64 bodies, demo.yaml)
    python tools/bench_init.py --variants mean "smplr (3D keypoints)" --n 16

See fitkit/eval/init_bench.py for the data and the metrics.
"""
from __future__ import annotations

import argparse
import json

import torch

from fitkit.body import load_body_model
from fitkit.eval.init_bench import INIT_VARIANTS, run_init_benchmark
from fitkit.io.atomic import atomic_write


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default="fitting_configs/demo.yaml")
    p.add_argument("--variants", nargs="+", default=list(INIT_VARIANTS), choices=list(INIT_VARIANTS))
    p.add_argument("--part-drop", type=float, default=0.0, help="PartDrop rate on the IUV maps DaNet reads")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_body_model("open", num_betas=10)
    rows = run_init_benchmark(model, n=args.n, seed=args.seed, recipe=args.recipe, variants=args.variants,
                              part_drop=args.part_drop)
    print()
    print("| init | start MPJPE | start PVE | fit MPJPE | fit PA-MPJPE | fit PVE | time s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['init_mpjpe_mm']:.1f} | {r['init_pve_mm']:.1f} | {r['fit_mpjpe_mm']:.1f} | "
              f"{r['fit_pa_mpjpe_mm']:.1f} | {r['fit_pve_mm']:.1f} | {r['seconds']:.1f} |")
    if args.json:
        with atomic_write(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
