"""Train fitkit's open VPoser (v2 architecture) on the open pose set.

    python tools/train_vposer.py                                 # -> priors/open_vposer.pt
    python tools/train_vposer.py --epochs 5 --out /tmp/smoke.pt  # a quick smoke run

Steps: load the train, validation and test splits of the open pose set
(:func:`fitkit.priors.pose_data.load_pose_data`, split by clip), train the
VAE on the first 63 numbers of ``body_pose`` (SMPL joints 1..21) with
:func:`fitkit.priors.vposer_train.train_vposer`, report on the held-out test
split the reconstruction error (geodesic angle per joint between a pose and
its decoded posterior mean, degrees) and the negative ELBO in nats per pose,
and save the weights with :func:`fitkit.priors.vposer.save_vposer` (the
official VPoser v2 checkpoint layout) with their provenance: data file and
its SHA-256, command, seed, epochs, settings, metrics.

Observation model of the ELBO: a Gaussian with standard deviation
s = sqrt(kl_weight / 2) (0.05 for the default 0.005) on each of the 21 x 9
rotation-matrix entries, for which the training loss is kl_weight times the
negative ELBO plus a constant (see :mod:`fitkit.priors.vposer_train`). It is
a density on matrix entries: compare it only between models evaluated with
the same s.
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
from fitkit.priors.vposer import save_vposer  # noqa: E402
from fitkit.priors.vposer_train import evaluate_vposer, observation_sigma, train_vposer  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="priors/open_vposer.pt")
    ap.add_argument("--data", default=None, help="pose data .npz (default: the shipped open pose set)")
    ap.add_argument("--num-neurons", type=int, default=256)
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=5e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--input-noise", type=float, default=0.05,
                    help="std (radians) of the noise added to the encoder's input while training")
    ap.add_argument("--eval-samples", type=int, default=16, help="draws of z per pose for the ELBO")
    ap.add_argument("--val-every", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)

    from fitkit.priors.pose_data import OPEN_POSE_DATA, load_pose_data

    if args.threads:
        torch.set_num_threads(args.threads)
    data_path = Path(args.data) if args.data else OPEN_POSE_DATA
    train = load_pose_data("train", data_path)
    val = load_pose_data("val", data_path)
    test = load_pose_data("test", data_path)
    print(f"pose data {data_path}: {len(train)} train / {len(val)} validation / {len(test)} test poses")

    t0 = time.perf_counter()
    model, history = train_vposer(train.body_pose, num_neurons=args.num_neurons, latent_dim=args.latent_dim,
                                  epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  kl_weight=args.kl_weight, weight_decay=args.weight_decay,
                                  input_noise=args.input_noise, seed=args.seed,
                                  val_poses=val.body_pose, val_every=args.val_every)
    train_seconds = time.perf_counter() - t0

    sigma = observation_sigma(args.kl_weight) if args.kl_weight > 0 else observation_sigma(5e-3)
    test_m = evaluate_vposer(model, test.body_pose, sigma=sigma, samples=args.eval_samples, seed=0)
    train_m = evaluate_vposer(model, train.body_pose, sigma=sigma, samples=args.eval_samples, seed=0)
    metrics = {
        "test": test_m, "train": train_m, "train_seconds": train_seconds,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "units": {"angle_deg": "mean geodesic angle per joint (SMPL joints 1..21) between a pose and "
                               "decode(encoder mean), degrees",
                  "nelbo_nats": "negative ELBO per pose, nats",
                  "observation_model": f"Gaussian, std {sigma:g}, on the 21 x 9 rotation-matrix entries"},
    }
    print(f"held-out (test split, {test_m['num_poses']} poses): reconstruction {test_m['angle_deg']:.2f} deg "
          f"(median {test_m['angle_deg_median']:.2f}, p95 {test_m['angle_deg_p95']:.2f}); "
          f"-ELBO {test_m['nelbo_nats']:.1f} nats/pose (NLL {test_m['nll_nats']:.1f} + KL {test_m['kl_nats']:.1f}); "
          f"observation model: Gaussian with std {sigma:g} on the 189 rotation-matrix entries")
    print(f"train split: reconstruction {train_m['angle_deg']:.2f} deg; -ELBO {train_m['nelbo_nats']:.1f} nats/pose")

    extra = {
        "data": {"file": str(data_path), "sha256": file_sha256(data_path), "train_poses": len(train),
                 "test_poses": len(test), "provenance": train.provenance},
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "seed": args.seed,
        "epochs": args.epochs,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "threads")},
        "metrics": metrics,
        "history": {k: history[k] for k in ("epoch", "loss", "recon", "kl")}
                   | {"val": [{"epoch": e, **m} for e, m in history["val"]]},
    }
    out = save_vposer(args.out, model, extra)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {metrics['num_parameters']} parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
