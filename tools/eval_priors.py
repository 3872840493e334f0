"""What each pose prior believes: held-out likelihoods and a picture of samples.

    python tools/eval_priors.py                     # table + docs/prior_samples.png

For the held-out clips of the open pose data and for poses whose 23 joint
rotations are uniformly random, prints per prior (fitkit's open weights in
``priors/``, or files given with --gmm/--vposer/--cnf):

- gmm: negative log-likelihood of the mixture (exact sum over components,
  nats per pose, 69-D axis-angle) and the max-mixture energy the term uses;
- vposer: the squared encoder mean ||mu(x)||^2 (the ``encoder``-mode energy)
  and the negative ELBO under the Gaussian observation model of
  :mod:`fitkit.priors.vposer_train` (nats; a density over rotation-matrix
  entries, not comparable with the other two);
- cnf: -log p(x | c) (nats per pose, 69-D axis-angle, comparable with the
  GMM's), each pose conditioned on its own keypoints seen by a random camera,
  and unconditioned (the all-zero "nothing seen" context).

The fraction of test poses rated more likely than the median random pose is
printed too. The PNG draws skeletons of samples from every prior (the cnf's
conditioned on held-out frames' keypoints, their true pose in grey).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.body.skeleton import SMPL_PARENTS
from fitkit.priors.cnf import load_flow, make_keypoint_contexts
from fitkit.priors.gmm import GaussianMixture, load_gmm_file
from fitkit.priors.pose_data import load_pose_data, random_rotation_poses
from fitkit.priors.vposer import load_vposer
from fitkit.priors.vposer_train import evaluate_vposer

#: the checkout (rebuilt weights and figures are written there)
REPO_DIR = Path(__file__).resolve().parents[1]
PRIORS_DIR = REPO_DIR / "priors"
LEFT = {1, 4, 7, 10, 13, 16, 18, 20, 22}


def per_pose_gmm_nll(gmm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    return -torch.logsumexp(-gmm.component_energies(x), dim=1)


def contexts_for(model, body_pose: np.ndarray, global_orient: np.ndarray, seed: int):
    g = torch.Generator().manual_seed(seed)
    x, c = make_keypoint_contexts(model, torch.as_tensor(body_pose), torch.as_tensor(global_orient),
                                  views_per_pose=1, generator=g, blank=0.0)
    return x.float(), c.float()


def evaluate(args) -> tuple[list[tuple], dict]:
    model = load_body_model("open", num_betas=10)
    test = load_pose_data("test")
    rand = random_rotation_poses(len(test), seed=args.seed)
    rand_orient = test.global_orient
    rows, samples = [], {}
    gen = torch.Generator().manual_seed(args.seed)

    gmm = GaussianMixture.from_dict(load_gmm_file(args.gmm), source=str(args.gmm))
    xt, xr = torch.as_tensor(test.body_pose, dtype=torch.float64), torch.as_tensor(rand)
    nt, nr = per_pose_gmm_nll(gmm, xt), per_pose_gmm_nll(gmm, xr)
    rows.append(("gmm", "-log p(x), nats", nt.mean().item(), nr.mean().item(),
                 (nt < nr.median()).double().mean().item()))
    samples["gmm"] = gmm.sample(args.samples, generator=gen).float()

    vp = load_vposer(args.vposer)
    with torch.no_grad():
        et = vp.encode_mean(torch.as_tensor(test.body_pose[:, :63])).square().sum(1)
        er = vp.encode_mean(torch.as_tensor(rand[:, :63], dtype=torch.float32)).square().sum(1)
    rows.append(("vposer", "||mu(x)||^2", et.mean().item(), er.mean().item(), (et < er.median()).double().mean().item()))
    elbo_t = evaluate_vposer(vp, test.body_pose, seed=args.seed)["nelbo_nats"]
    elbo_r = evaluate_vposer(vp, rand.astype(np.float32), seed=args.seed)["nelbo_nats"]
    rows.append(("vposer", "-ELBO, nats (matrix entries)", elbo_t, elbo_r, None))
    with torch.no_grad():
        bp = vp.sample(args.samples, generator=gen)
    samples["vposer"] = torch.cat([bp, torch.zeros(args.samples, 6)], dim=1)

    flow = load_flow(args.cnf)
    xt_c, ct = contexts_for(model, test.body_pose, test.global_orient, args.seed)
    xr_c, cr = contexts_for(model, rand.astype(np.float32), rand_orient, args.seed)
    with torch.no_grad():
        ft, fr = -flow.log_prob(xt_c, ct), -flow.log_prob(xr_c, cr)
        zero = torch.zeros_like(ct)
        ut, ur = -flow.log_prob(xt_c, zero), -flow.log_prob(xr_c, zero)
    rows.append(("cnf", "-log p(x | own keypoints), nats", ft.mean().item(), fr.mean().item(),
                 (ft < fr.median()).double().mean().item()))
    rows.append(("cnf", "-log p(x | nothing seen), nats", ut.mean().item(), ur.mean().item(),
                 (ut < ur.median()).double().mean().item()))
    pick = torch.randperm(len(test), generator=gen)[:args.samples]
    with torch.no_grad():
        samples["cnf"] = flow.sample(args.samples, ct[pick], generator=gen)
    samples["cnf_truth"] = xt_c[pick]
    samples["random"] = torch.as_tensor(rand[:args.samples], dtype=torch.float32)
    return rows, samples


def plot(samples: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = load_body_model("open", num_betas=10)
    names = [("gmm", "GMM"), ("vposer", "VPoser"), ("cnf", "cNF (given a held-out frame's keypoints; grey: that frame)"),
             ("random", "uniformly random joint rotations")]
    n = samples["gmm"].shape[0]
    fig, axes = plt.subplots(len(names), n, figsize=(1.5 * n, 1.9 * len(names) + 0.4),
                             gridspec_kw={"wspace": 0.0, "hspace": 0.25})

    def joints(bp):
        zeros = torch.zeros(bp.shape[0], 3)
        with torch.no_grad():
            return model(zeros, bp.float(), torch.zeros(bp.shape[0], 10), zeros).joints.numpy()

    truth = joints(samples["cnf_truth"])
    for r, (key, title) in enumerate(names):
        J = joints(samples[key])
        for k in range(n):
            ax = axes[r, k]
            if key == "cnf":
                for j, p in enumerate(SMPL_PARENTS):
                    if p >= 0:
                        ax.plot([truth[k, j, 0], truth[k, p, 0]], [truth[k, j, 1], truth[k, p, 1]], color="0.8", lw=3)
            for j, p in enumerate(SMPL_PARENTS):
                if p >= 0:
                    c = "tab:red" if j in LEFT else ("k" if j in (3, 6, 9, 12, 15) else "tab:blue")
                    ax.plot([J[k, j, 0], J[k, p, 0]], [J[k, j, 1], J[k, p, 1]], color=c, lw=1.5)
            ax.set_xlim(-0.9, 0.9)
            ax.set_ylim(-1.3, 0.8)
            ax.set_aspect("equal")
            ax.axis("off")
        axes[r, 0].set_title(title, loc="left", fontsize=9)
    fig.suptitle("Samples of each open prior (front view, body's left in red)", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.93, bottom=0.01)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gmm", type=Path, default=PRIORS_DIR / "open_gmm_08.pkl")
    ap.add_argument("--vposer", type=Path, default=PRIORS_DIR / "open_vposer.pt")
    ap.add_argument("--cnf", type=Path, default=PRIORS_DIR / "open_cnf.pt")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, default=REPO_DIR / "docs" / "prior_samples.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small networks: one thread is fastest
    rows, samples = evaluate(args)
    print("| prior | measure (lower = more likely) | held-out clips | random rotations | "
          "test poses below the random median |")
    print("|---|---|---:|---:|---:|")
    for name, what, t, r, frac in rows:
        f = "" if frac is None else f"{100 * frac:.1f}%"
        print(f"| {name} | {what} | {t:.1f} | {r:.1f} | {f} |")
    plot(samples, args.png)
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
