"""Cost of each pose prior inside a fit: energy and gradient for a batch of poses.

    python tools/bench_priors.py                 # batches 64 and 1024, CPU (and CUDA when present)

Times, per prior and mode of the shipped open weights, one evaluation of the
term's energy plus its gradient with respect to what the solver moves (the
axis-angle pose, or the latent code in latent mode: decode + energy), as a
solver step does. Median of repeated calls after a warm-up (``timed_median``
of ``tools/bench_body.py``). The poses are held-out frames of the open pose
data; the cnf's contexts are those frames' keypoints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_body import timed_median  # noqa: E402  (tools/ is on sys.path when run as a script)

from fitkit.body import load_body_model  # noqa: E402
from fitkit.eval.synthetic import make_keypoint_example  # noqa: E402
from fitkit.priors.pose_data import load_pose_data  # noqa: E402
from fitkit.terms.base import LATENT_KEY, Batch, SetupContext, get_term_class  # noqa: E402

VARIANTS = (("gmm", {"path": "priors/open_gmm_08.pkl"}),
            ("vposer", {"path": "priors/open_vposer.pt", "mode": "encoder"}),
            ("vposer", {"path": "priors/open_vposer.pt", "mode": "latent"}),
            ("cnf", {"path": "priors/open_cnf.pt", "mode": "nll"}),
            ("cnf", {"path": "priors/open_cnf.pt", "mode": "latent"}))


def step(term, pose, index):
    """A closure doing what one solver step costs for this term."""
    latent = term.latent()
    if latent is not None:
        x0 = latent.encode(pose, index).detach()
    else:
        x0 = pose.detach()

    def run():
        x = x0.clone().requires_grad_(True)
        params = {"body_pose": latent.decode(x, index) if latent is not None else x}
        if latent is not None:
            params[LATENT_KEY] = x
        batch = Batch(index=index, params=params, init={}, K=None, pixel_scale=None)
        term.energy(batch).sum().backward()
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per measurement")
    args = ap.parse_args(argv)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    model = load_body_model("open", num_betas=10)
    poses = torch.as_tensor(load_pose_data("test").body_pose)
    print("| prior | mode | device | " + " | ".join(f"batch {b} ms" for b in args.batches) + " |")
    print("|---|---|---|" + "---:|" * len(args.batches))
    for device in devices:
        for kind, kwargs in VARIANTS:
            cells = []
            for B in args.batches:
                pick = torch.arange(B) % len(poses)
                ex = make_keypoint_example(model, B, seed=0, body_pose=poses[pick])
                obs = ex.observations.to(device=device, dtype=torch.float32)
                init = {k: v.to(device) for k, v in ex.init.items()}
                term = get_term_class(kind)(**kwargs)
                term.setup(SetupContext(observations=obs, model=model.to(device), camera=None, init=init,
                                        device=device, dtype=torch.float32))
                run = step(term, init["body_pose"], torch.arange(B, device=device))
                seconds, _ = timed_median(run, device, args.budget, 200)
                cells.append(f"{1e3 * seconds:.2f}")
            mode = kwargs.get('mode', '-')
            print(f"| {kind} | {mode} | {device.type} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
