"""Overlays with side views of real-footage fits: the dev set's committed frames, through `fitkit fit`.

For each (participant, view) asked, the participant's main track in that view
(``reference.npz``'s ``tracks``) is fitted with a recipe through the command
line, exactly as a user would (``fitkit fit --recipe video --camera
calibration.json --view VIEW --overlays ... --side-views``), on the frames
that have a committed JPEG (``frames/VIEW_<frame>.jpg``, 1/4 size: the overlay
scales the full-resolution fit to it). The PNGs are copied to ``--out``
(default ``docs/real_footage``) as ``<participant>_<view>_<frame>.png``.

    python tools/devset_overlays.py                      # P0 and P1 in cam01 and cam03
    python tools/devset_overlays.py --pairs P0:cam02 --recipe demo

Reads only the committed dev set (``datasets/pose2sim_multiperson``); never
run it on pose2sim's held-out demos.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "datasets" / "pose2sim_multiperson"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="P0:cam01,P1:cam01,P0:cam03,P1:cam03",
                        help="participant:view pairs (default P0:cam01,P1:cam01,P0:cam03,P1:cam03)")
    parser.add_argument("--recipe", default="video")
    parser.add_argument("--out", default=str(ROOT / "docs" / "real_footage"))
    args = parser.parse_args()

    from fitkit.cli import main as fitkit
    from fitkit.io.observations import load_observations, save_observations

    ref = np.load(DEV / "reference.npz")
    participants = [str(p) for p in ref["participants"]]
    views = [str(v) for v in ref["views"]]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for pair in args.pairs.split(","):
        who, view = pair.split(":")
        track = str(ref["tracks"][participants.index(who), views.index(view)])
        obs = load_observations(DEV / f"{view}.npz")
        rows = [i for i, t in enumerate(obs.track_ids) if t == track]
        sub = obs.subset(np.asarray(rows))
        numbers = [int(n) for n in sub.frame_numbers]
        paths, chosen = [], []
        for i, n in enumerate(numbers):
            jpg = DEV / "frames" / f"{view}_{n:06d}.jpg"
            paths.append(str(jpg) if jpg.exists() else "")
            if jpg.exists():
                chosen.append(i)
        sub.image_paths = paths
        with tempfile.TemporaryDirectory() as tmp:
            obs_path = Path(tmp) / f"{who}_{view}.npz"
            save_observations(obs_path, sub)
            fit_dir = Path(tmp) / "fit"
            code = fitkit(["fit", "-q", "--recipe", args.recipe, "--input", str(obs_path), "-o", str(fit_dir),
                           "--camera", str(DEV / "calibration.json"), "--view", view,
                           "--overlays", ",".join(str(i) for i in chosen), "--side-views"])
            if code != 0:
                return code
            for i in chosen:
                src = fit_dir / "overlays" / f"{sub.frame_ids[i]}.png"
                dst = out / f"{who}_{view}_{numbers[i]:06d}.png"
                shutil.copyfile(src, dst)
                written.append(dst)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
