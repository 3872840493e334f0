"""Score monocular fits of the real dev set (datasets/pose2sim_multiperson) against its multi-view reference.

A thin command over :mod:`fitkit.eval.real`: per participant and view, MediaPipe's
own world landmarks, the recipe's start (SMPLR on them) and each recipe, scored
on all frames and on the reference's clean frames; prints one line per fit, the
means, the acceptance checks of issue 17 for ``--check`` and the markdown tables.
Never run on pose2sim's held-out demos (Demo_SinglePerson, Demo_Batch).

Usage::

    OMP_NUM_THREADS=1 python tools/eval_real.py [--methods mediapipe,start,video,demo] [--set k=v ...]
        [--participants P0,P1] [--views cam01,...] [--frames N] [--undistort] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fitkit.body import load_body_model
from fitkit.fitting.recipe import load_recipe
from fitkit.eval.real import acceptance, evaluate, load_tracks, markdown_table, summarise


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", "--recipes", default="mediapipe,start,video,demo")
    ap.add_argument("--participants")
    ap.add_argument("--views")
    ap.add_argument("--frames", type=int, help="only N rows of each track")
    ap.add_argument("--first-row", type=int, default=0, help="the first row of each track to use")
    ap.add_argument("--undistort", action="store_true", help="undistort the 2D keypoints with the calibration")
    ap.add_argument("--set", action="append", default=[], help="override for the video recipe (and the start)")
    ap.add_argument("--model", help="body model (default: the video recipe's body.model)")
    ap.add_argument("--check", default="video", help="the method whose acceptance is printed")
    ap.add_argument("--json")
    ap.add_argument("--no-table", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    split = lambda s: None if not s else s.split(",")
    tracks = load_tracks(participants=split(args.participants), views=split(args.views), max_frames=args.frames, first_row=args.first_row,
                         undistort=args.undistort)
    model = load_body_model(args.model or load_recipe("video", args.set).body["model"], num_betas=10)

    def show(r):
        a, c = r["all"], r["clean"]
        print(f"{r['person']} {r['view']} {r['method']:14s} all n={r['frames_all']:3d} PA {a['pa_mpjpe']:6.1f} hip "
              f"{a['mpjpe_hip']:6.1f} acc {a['accel']:5.1f} face {a['facing_deg']:5.1f} 2D {a['err2d_px']:5.1f} | "
              f"clean n={r['frames_clean']:2d} PA {c['pa_mpjpe']:6.1f} hip {c['mpjpe_hip']:6.1f} | "
              f"{r['cpu_s']:5.1f} cpu-s {r['info'] or ''}", flush=True)

    rows = evaluate(model, tracks, args.methods.split(","), args.set, progress=show)
    for part in ("all", "clean"):
        print(f"means over tracks ({part} frames):")
        for m, s in summarise(rows, part).items():
            print(f"  {m:14s} PA {s['pa_mpjpe']:6.1f}  hip {s['mpjpe_hip']:6.1f}  accel {s['accel']:5.1f}  "
                  f"facing {s['facing_deg']:5.1f}  2D {s['err2d_px']:5.2f}  cpu-s {s['cpu_s']:5.1f}")
    if {args.check, "mediapipe", "start"} <= set(args.methods.split(",")):
        for part in ("clean", "all"):
            acc = acceptance(rows, args.check, part)
            fails = {f"{p} {v}": [k for k, ok in d.items() if not ok] for (p, v), d in acc.items()}
            fails = {k: v for k, v in fails.items() if v}
            print(f"acceptance of {args.check} ({part} frames): {len(acc) - len(fails)}/{len(acc)} tracks pass all; "
                  f"failing: {fails}")
    if not args.no_table:
        for part in ("all", "clean"):
            print(f"\n{part} frames:\n")
            print(markdown_table(rows, part))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
