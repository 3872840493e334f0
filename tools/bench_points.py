"""Benchmark PointRig (posed points with analytic Jacobians) against BodyModel.

    python tools/bench_points.py                          # open body, body25, float32, CPU
    python tools/bench_points.py --batch-sizes 64 1024 4096 --device cuda
    python tools/bench_points.py --model synthetic        # SMPL-sized, with pose correctives

Rows, per batch size (median ms over repeats after a warm-up; CUDA synchronized):

* ``BodyModel fwd``: ``BodyModel.forward`` with a keypoint plan, graph built.
* ``PointRig fwd``: ``PointRig.forward``, graph built.
* ``PointRig fwd+bwd``: the same plus autograd backward of a scalar loss into
  all four parameter tensors (a gradient, not a Jacobian).
* ``PointRig fwd+jac``: ``PointRig.forward_with_jacobian``, the full (B, P, 3, D)
  Jacobian in closed form.
* ``jacfwd-vmap BodyModel``: the same Jacobian from ``torch.func.vmap(jacfwd(...))``
  of ``BodyModel.forward`` (D forward-mode tangents per sample); skipped with
  ``--no-jacfwd`` and, after the first batch size where one call exceeds
  ``--jacfwd-limit`` seconds, for larger batches.

All calls skip the finiteness check (``validate=False``), as a solver would.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fitkit.body import load_body_model  # noqa: E402
from fitkit.body.model import BodyModel  # noqa: E402
from fitkit.body.points import PointRig  # noqa: E402
from fitkit.body.synthetic import synthetic_keypoint_set, synthetic_smpl_arrays  # noqa: E402
from bench_body import timed_median  # noqa: E402  (tools/ is on sys.path when run as a script)


def median_ms(fn, device, budget_s: float, max_reps: int) -> tuple[float, int]:
    """(median milliseconds per call, repeats) after one warm-up call."""
    seconds, reps = timed_median(fn, device, budget_s, max_reps, once_if_slower=True)
    return seconds * 1e3, reps


def load(args) -> tuple[BodyModel, str, str]:
    """(model, description, keypoint set name)."""
    if args.model == "open":
        model = load_body_model("open")
        return model, f"open body (V={model.num_vertices}, no pose correctives)", args.keypoints or "body25"
    V = args.synthetic_vertices
    model = BodyModel(synthetic_smpl_arrays(V, pose_correctives=True),
                      keypoint_sets={"kp25": synthetic_keypoint_set(V)})
    return model, f"synthetic SMPL-format (V={V}, with pose correctives)", "kp25"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("open", "synthetic"), default="open")
    ap.add_argument("--keypoints", help="keypoint set of the open body (default body25)")
    ap.add_argument("--synthetic-vertices", type=int, default=6890)
    ap.add_argument("--joints", action="store_true", help="also evaluate the 24 joints as points")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed repeats per measurement")
    ap.add_argument("--max-reps", type=int, default=50)
    ap.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    ap.add_argument("--no-jacfwd", action="store_true", help="skip the torch.func jacfwd-vmap baseline")
    ap.add_argument("--jacfwd-limit", type=float, default=3.0,
                    help="seconds per jacfwd call beyond which larger batches skip it")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    model, desc, kp = load(args)
    model = model.to(device=device, dtype=dtype)
    plan = model.plan(keypoints=kp)
    rig = PointRig(model, keypoints=kp, joints=args.joints)
    J, nb = model.num_joints, model.num_betas

    print(f"model: {desc}; points: {kp} ({rig.num_points} points{', joints included' if args.joints else ''}, "
          f"{rig.num_pairs} point-joint pairs); D={rig.num_params}; {args.dtype}; device {device}; "
          f"torch {torch.__version__}; CPU threads {torch.get_num_threads()} of {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| batch | method | ms | reps |")
    print("|---:|---|---:|---:|")
    jacfwd_ok = not args.no_jacfwd
    for B in args.batch_sizes:
        g = torch.Generator().manual_seed(0)

        def param(*shape, scale):
            return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

        p = dict(global_orient=param(B, 3, scale=1.0), body_pose=param(B, 3 * (J - 1), scale=0.3),
                 betas=param(B, nb, scale=1.0), transl=param(B, 3, scale=1.0))
        grad_p = {k: v.clone().requires_grad_() for k, v in p.items()}

        def body_fwd():
            return model(**grad_p, plan=plan, validate=False).keypoints

        def rig_fwd():
            return rig(**grad_p, validate=False)

        def rig_fwd_bwd():
            rig(**grad_p, validate=False).square().sum().backward()

        def rig_jac():
            return rig.forward_with_jacobian(**p, validate=False)

        flat = torch.cat([p["global_orient"], p["body_pose"], p["betas"], p["transl"]], dim=1)

        def one_sample(x):
            x = x[None]
            out = model(x[:, :3], x[:, 3:3 * J], x[:, 3 * J:3 * J + nb], x[:, 3 * J + nb:], plan=plan,
                        validate=False)
            return out.keypoints[0] if not args.joints else torch.cat([out.keypoints, out.joints], 1)[0]

        jacfwd = torch.func.vmap(torch.func.jacfwd(one_sample))

        cases = [("BodyModel fwd (keypoints)", body_fwd), ("PointRig fwd", rig_fwd),
                 ("PointRig fwd+bwd (autograd)", rig_fwd_bwd), ("PointRig fwd+jac (analytic)", rig_jac)]
        if jacfwd_ok:
            cases.append(("jacfwd-vmap BodyModel", lambda: jacfwd(flat)))
        for name, fn in cases:
            ms, reps = median_ms(fn, device, args.budget, args.max_reps)
            print(f"| {B} | {name} | {ms:.2f} | {reps} |", flush=True)
            if name.startswith("jacfwd") and ms > args.jacfwd_limit * 1e3:
                jacfwd_ok = False
        if not jacfwd_ok and not args.no_jacfwd and B != args.batch_sizes[-1]:
            print(f"| | jacfwd-vmap skipped for larger batches (over {args.jacfwd_limit} s) | | |")


if __name__ == "__main__":
    main()
