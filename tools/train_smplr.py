"""Train SMPLR (seed 003) on synthetic open-body data and write its weights.

    python tools/train_smplr.py                       # reproduces initializers/open_smplr.pt
    python tools/train_smplr.py --out /tmp/smplr.pt --steps-dae 500   # a quick try

Prints the evaluation table of initializers/open_smplr.md and writes it as
JSON beside the weights (``<out>.metrics.json``). Deterministic for a seed
and thread count.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fitkit.body import load_body_model
from fitkit.init.smplr import checkpoint
from fitkit.init.smplr_train import TrainSettings, standard_evaluation, train_smplr
from fitkit.io.atomic import atomic_write
from fitkit.priors.files import file_sha256


def main(argv=None) -> None:
    d = TrainSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="initializers/open_smplr.pt")
    p.add_argument("--input-formats", nargs="+", default=["jl42", "body25", "blazepose33"],
                   help="keypoint sets to train a denoiser for (jl42 = SMPLR's 42 points)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps-regress", type=int, default=d.steps_regress)
    p.add_argument("--steps-finetune", type=int, default=d.steps_finetune)
    p.add_argument("--steps-dae", type=int, default=d.steps_dae)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=1000)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = TrainSettings(steps_regress=args.steps_regress, steps_finetune=args.steps_finetune,
                             steps_dae=args.steps_dae, batch=args.batch, seed=args.seed)
    model = load_body_model("open", num_betas=10)
    t0 = time.time()
    net = train_smplr(model, args.input_formats, settings)
    train_s = time.time() - t0
    metrics = standard_evaluation(net, model, n=args.eval_n, seed=args.seed)
    print(f"trained in {train_s:.0f} s on {args.threads} thread(s)")
    print(f"{'input':34s} {'mean MPJPE':>10s} {'SMPLR MPJPE':>11s} {'SMPLR PA':>9s} {'landmarks':>9s} {'DAE JL':>7s}")
    for name, m in metrics.items():
        print(f"{name:34s} {m['mean_init_mpjpe']:10.1f} {m['smplr_mpjpe']:11.1f} {m['smplr_pa_mpjpe']:9.1f} "
              f"{m['smplr_landmark_error']:9.1f} {m['dae_jl_error']:7.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(net, settings=dataclasses.asdict(settings), threads=args.threads, metrics=metrics,
                      train_seconds=round(train_s, 1))
    with atomic_write(out, "wb") as handle:
        torch.save(ckpt, handle)
    report = {"weights": str(out), "sha256": file_sha256(out), "train_seconds": round(train_s, 1),
              "settings": dataclasses.asdict(settings), "metrics": metrics}
    with atomic_write(out.with_suffix(out.suffix + ".metrics.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"wrote {out} (sha256 {report['sha256'][:16]}...)")


if __name__ == "__main__":
    main()
