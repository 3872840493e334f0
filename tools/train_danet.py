"""Train fitkit's DaNet-style IUV -> SMPL initializer on IUV maps rendered from the open body.

    python tools/train_danet.py                          # -> initializers/open_danet.pt (+ .json metrics)
    python tools/train_danet.py --steps 50 --samples 500 --eval-n 100 --out /tmp/smoke.pt   # a quick smoke run

Steps (the logic is in :mod:`fitkit.init.danet_train`): render ``--samples`` random
bodies (open pose data *train* split + ``sample_body_poses``, any yaw, betas ~ N(0, 1),
random camera) once into memory; train ``--steps`` Adam steps with PartDrop (rate
``--drop-rate``) and jittered joint crops; evaluate on ``--eval-n`` held-out bodies (pose
data *test* split + a ``sample_body_poses`` seed never used in training) the mean-pose
init and DaNet at PartDrop rates 0, 0.1, 0.3, 0.5; write the weights atomically with
their provenance (command, seed, settings, metrics, data file SHA-256) and the metrics
as JSON (``--metrics``, default ``out/danet/<name>.metrics.json``). Everything is seeded by
``--seed``: a rerun on the same machine and library versions reproduces the numbers.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fitkit.body import load_body_model  # noqa: E402
from fitkit.init.danet import save_danet  # noqa: E402
from fitkit.init.danet_train import TrainConfig, evaluate_danet, format_table, train_danet  # noqa: E402
from fitkit.io.atomic import atomic_write  # noqa: E402
from fitkit.priors.files import file_sha256  # noqa: E402
from fitkit.render.iuv import open_body_charts  # noqa: E402


def main(argv=None) -> int:
    defaults = TrainConfig()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(REPO / "initializers" / "open_danet.pt"))
    ap.add_argument("--metrics", default=None,
                    help="metrics JSON (default: out/danet/<name of --out>.metrics.json in the checkout)")
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--steps", type=int, default=defaults.steps)
    ap.add_argument("--samples", type=int, default=defaults.samples, help="bodies rendered for training")
    ap.add_argument("--batch-size", type=int, default=defaults.batch_size)
    ap.add_argument("--lr", type=float, default=defaults.lr)
    ap.add_argument("--drop-rate", type=float, default=defaults.drop_rate, help="PartDrop rate gamma (Eq. 5)")
    ap.add_argument("--jitter", type=float, default=defaults.jitter,
                    help="std of the joint-crop centre jitter, normalized crop units")
    ap.add_argument("--eval-n", type=int, default=400, help="held-out bodies for the evaluation")
    ap.add_argument("--eval-seed", type=int, default=20240, help="seed of the held-out bodies (fixed)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1; the committed weights were trained with 1)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_seed == args.seed:
        raise SystemExit("--eval-seed must differ from --seed (the held-out bodies must be unseen)")
    t0 = time.perf_counter()
    cfg = TrainConfig(steps=args.steps, samples=args.samples, batch_size=args.batch_size, lr=args.lr,
                      drop_rate=args.drop_rate, jitter=args.jitter, seed=args.seed)
    model = load_body_model("open", num_betas=10)
    charts = open_body_charts(model)
    net, history = train_danet(model, charts, cfg)

    t1 = time.perf_counter()
    result = evaluate_danet(net, n=args.eval_n, seed=args.eval_seed, model=model, charts=charts,
                            remove_rates=(0.1, 0.3))
    eval_seconds = time.perf_counter() - t1
    total = time.perf_counter() - t0
    print(f"held-out evaluation ({args.eval_n} bodies, seed {args.eval_seed}; {eval_seconds:.1f} s):")
    print(format_table(result))
    rows = result["rows"]
    ok = rows["danet_drop_0"]["pve"] < rows["mean_init"]["pve"]
    print(f"DaNet (GT IUV) PVE {rows['danet_drop_0']['pve']:.1f} mm vs mean init {rows['mean_init']['pve']:.1f} mm"
          + ("" if ok else "  ** NOT BETTER **"))

    from fitkit.priors.pose_data import OPEN_POSE_DATA

    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + list(
        sys.argv[1:] if argv is None else argv))
    timing = {"data_seconds": history["data_seconds"], "train_seconds": history["train_seconds"],
              "eval_seconds": eval_seconds, "total_seconds": total, "threads": torch.get_num_threads()}
    extra = {"command": command, "seed": args.seed, "config": history["config"], "evaluation": result,
             "timing": timing, "num_parameters": net.num_parameters(),
             "training_data": {"pose_data": OPEN_POSE_DATA.name, "pose_data_sha256": file_sha256(OPEN_POSE_DATA),
                               "split": "train", "body": "open"},
             "loss_curve": {"step": history["step"], "loss": history["loss"]}}
    out = save_danet(args.out, net, extra)
    metrics_path = Path(args.metrics) if args.metrics else REPO / "out" / "danet" / f"{out.stem}.metrics.json"
    report = {"weights": str(out), "weights_sha256": file_sha256(out), "weights_bytes": out.stat().st_size,
              **{k: v for k, v in extra.items() if k != "loss_curve"}}
    with atomic_write(metrics_path) as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, sha256 {report['weights_sha256']}) and {metrics_path}")
    print(f"total {total:.1f} s (data {timing['data_seconds']:.1f} s, training {timing['train_seconds']:.1f} s, "
          f"evaluation {eval_seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
