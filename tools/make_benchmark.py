"""Build a seeded synthetic benchmark folder (see fitkit.eval.benchmark) and summarise it.

    python tools/make_benchmark.py --frames 32 --difficulty medium --seed 0 --out benchmarks/small

Writes observations.npz, gt.npz, init.npz and settings.json into --out and
prints the initialisation's errors against the ground truth (pelvis-aligned
MPJPE and PVE, pelvis depth error) and the cue statistics.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from fitkit.body import load_body_model  # noqa: E402
from fitkit.eval.benchmark import BENCHMARK_VERSION, CUES, DIFFICULTY, init_errors, make_benchmark  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32, help="number of frames (default 32)")
    ap.add_argument("--difficulty", choices=sorted(DIFFICULTY), default="medium")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"),
                    help="image size in pixels (default 256 256)")
    ap.add_argument("--cues", nargs="+", choices=CUES, default=list(CUES))
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args(argv)
    if args.frames < 1:
        ap.error("--frames must be >= 1")

    torch.set_grad_enabled(False)
    model = load_body_model("open")
    t0 = time.perf_counter()
    bench = make_benchmark(model, args.frames, difficulty=args.difficulty, seed=args.seed,
                           image_size=tuple(args.size), cues=args.cues)
    built = time.perf_counter() - t0
    out = bench.save(args.out)

    err = init_errors(model, bench)
    mm = lambda t: 1000.0 * float(t.mean())  # noqa: E731
    obs = bench.observations
    print(f"benchmark v{BENCHMARK_VERSION}: {len(bench)} frames, {args.difficulty}, seed {args.seed}, "
          f"{args.size[0]}x{args.size[1]} px, cues {', '.join(args.cues)}; built in {built:.1f} s -> {out}")
    print(f"init vs gt: MPJPE {mm(err['mpjpe']):.1f} mm, PVE {mm(err['pve']):.1f} mm (pelvis-aligned), "
          f"pelvis depth error {mm(err['depth_err']):.1f} mm")
    if "keypoints" in args.cues:
        dropped = float((obs.keypoints[..., 2] == 0).float().mean())
        swaps = int((bench.truth["swapped_pair"] >= 0).sum())
        print(f"keypoints: {100 * dropped:.1f}% dropped, {swaps} frame(s) with a left/right swap, "
              f"person size {float(bench.truth['person_size'].mean()):.0f} px on average")
    if "iuv" in args.cues:
        fg = float((obs.dense["iuv"][..., 0] > 0).float().mean())
        b = int(bench.truth["iuv_boundary"].sum())
        f = int(bench.truth["iuv_flipped"].sum())
        print(f"iuv: {100 * fg:.1f}% foreground, {f} of {b} boundary pixels given a neighbouring part")
    if "displacements" in args.cues:
        d = obs.dense["displacements"]
        ok = torch.isfinite(d[..., 0])
        print(f"displacements: {100 * float(ok.float().mean()):.1f}% of pixels on the initial body, "
              f"mean |d| {float(d[ok].norm(dim=-1).mean()) if ok.any() else float('nan'):.1f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
