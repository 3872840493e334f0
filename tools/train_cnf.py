"""Train fitkit's conditional normalizing-flow pose prior on the open pose set.

    python tools/train_cnf.py                                  # keypoint context -> priors/open_cnf.pt
    python tools/train_cnf.py --context none --out /tmp/open_cnf_uncond.pt
    python tools/train_cnf.py --epochs 5 --out /tmp/smoke.pt   # a quick smoke run

Steps: load the train, validation and test splits of the open pose set
(:func:`fitkit.priors.pose_data.load_pose_data`, split by clip; validation
clips choose the epoch); render every pose from ``--views`` random cameras into 2D keypoint
contexts (:func:`fitkit.priors.cnf.make_keypoint_contexts`, open body, random
betas; validation and test contexts with the fixed seeds ``--test-seed`` + 1
and ``--test-seed``, no blank contexts); fit the flow by maximum likelihood
(:func:`fitkit.priors.cnf.train_cnf`), keeping the weights of the epoch with
the best validation NLL; report the held-out negative log-likelihood in nats
per pose on the test split (never used for any choice), and save the weights
with their provenance (data file and its SHA-256, command, seed, settings,
metrics, training curve) as a ``fitkit.cnf/1`` file.

On the open pose set (a few thousand frames of ~20 motion clips) the flow
fits the training clips quickly and then overfits them: the validation NLL
is usually best after one or two epochs at lr 1e-3, hence the early stopping
and the small default learning rate (1e-4: a flat validation curve). With a
large pose set (e.g. AMASS) raise ``--lr`` and ``--epochs``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fitkit.priors.files import file_sha256  # noqa: E402
from fitkit.body import load_body_model  # noqa: E402
from fitkit.priors.cnf import (make_keypoint_contexts, mean_nll, save_flow,  # noqa: E402
                               train_cnf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", choices=("keypoints", "none"), default="keypoints")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "priors" / "open_cnf.pt"))
    ap.add_argument("--data", default=None, help="pose data .npz (default: the shipped open pose set)")
    ap.add_argument("--views", type=int, default=4, help="random cameras per training pose")
    ap.add_argument("--test-views", type=int, default=4, help="random cameras per test pose")
    ap.add_argument("--test-seed", type=int, default=12345, help="seed of the test cameras (fixed)")
    ap.add_argument("--keypoint-format", default="body25")
    ap.add_argument("--noise-px", type=float, default=2.0)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--blank", type=float, default=0.05, help="fraction of all-zero (nothing seen) contexts")
    ap.add_argument("--transforms", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 64])
    ap.add_argument("--bins", type=int, default=8)
    ap.add_argument("--embed-dim", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--pose-noise", type=float, default=0.02, help="radians of training-time pose noise")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: the model is small, and extra threads slow it on a busy machine)")
    args = ap.parse_args(argv)

    from fitkit.priors.pose_data import OPEN_POSE_DATA, load_pose_data

    if args.threads:
        torch.set_num_threads(args.threads)
    data_path = Path(args.data) if args.data else OPEN_POSE_DATA
    t0 = time.perf_counter()
    train = load_pose_data("train", data_path)
    val = load_pose_data("val", data_path)
    test = load_pose_data("test", data_path)
    if train.global_orient is None or test.global_orient is None:
        raise SystemExit(f"{data_path}: the data has no global_orient; keypoint contexts need it")
    print(f"pose data {data_path}: {len(train)} train / {len(val)} validation / {len(test)} test poses")

    model = load_body_model("open", num_betas=10)
    keypoints = args.context == "keypoints"

    def pairs(data, views, seed, blank):
        if not keypoints:
            return torch.from_numpy(data.body_pose), None
        return make_keypoint_contexts(model, data.body_pose, data.global_orient, views_per_pose=views,
                                      generator=torch.Generator().manual_seed(seed),
                                      keypoint_format=args.keypoint_format, noise_px=args.noise_px,
                                      dropout=args.dropout, blank=blank)

    x, c = pairs(train, args.views, args.seed, args.blank)
    vx, vc = pairs(val, args.test_views, args.test_seed + 1, 0.0) if len(val) else (None, None)
    tx, tc = pairs(test, args.test_views, args.test_seed, 0.0)
    print(f"training pairs: {tuple(x.shape)}; test pairs: {tuple(tx.shape)} "
          f"({time.perf_counter() - t0:.1f} s to prepare)")

    t1 = time.perf_counter()
    flow, history = train_cnf(x, c, transforms=args.transforms, hidden=args.hidden, bins=args.bins,
                              embed_dim=args.embed_dim, epochs=args.epochs, batch_size=args.batch_size,
                              lr=args.lr, weight_decay=args.weight_decay, pose_noise=args.pose_noise,
                              seed=args.seed, val=None if vx is None else (vx, vc), keep_best=True)
    train_seconds = time.perf_counter() - t1
    best_epoch = next(h["epoch"] for h in history if h["best"])

    metrics = {"test_nll": mean_nll(flow, tx, tc), "train_nll": mean_nll(flow, x, c),
               "val_nll": None if vx is None else mean_nll(flow, vx, vc), "best_epoch": best_epoch,
               "train_seconds": train_seconds, "num_parameters": flow.num_parameters(),
               "unit": "nats per pose (-log p(body_pose | context), radians)"}
    if keypoints:  # the same test poses with the "nothing seen" context: what the context buys
        metrics["test_nll_blank_context"] = mean_nll(flow, tx, torch.zeros_like(tc))
    print(f"kept the weights of epoch {best_epoch}" + ("" if vx is None else f" (validation NLL {metrics['val_nll']:.3f})"))
    print("held-out (test split) NLL: {test_nll:.3f} nats per pose; train NLL {train_nll:.3f}".format(**metrics))
    if keypoints:
        print(f"  with the all-zero context instead: {metrics['test_nll_blank_context']:.3f}")

    extra = {
        "data": {"file": str(data_path), "sha256": file_sha256(data_path), "train_poses": len(train),
                 "validation_poses": len(val),
                 "test_poses": len(test), "provenance": train.provenance},
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "seed": args.seed,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "threads")},
        "metrics": metrics,
        "history": [{k: v for k, v in h.items() if v is not None} for h in history],
    }
    out = save_flow(args.out, flow, extra)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {flow.num_parameters()} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
