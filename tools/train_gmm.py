"""Train fitkit's open GMM pose prior (SMPLify's layout) on the open pose data.

    python tools/train_gmm.py                       # writes priors/open_gmm_08.pkl

scikit-learn's ``GaussianMixture`` (8 components, full covariances) on the
69 body-pose numbers of the training clips. The covariance regulariser
``reg_covar`` is chosen from a small grid by 3-fold leave-clips-out
validation inside the training split (the test clips are never looked at),
then the mixture is refitted on all training clips. Prints the held-out
negative log-likelihood (exact mixture density, nats per pose) on the test
clips and on poses with uniformly random joint rotations.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fitkit.priors.gmm import fit_gmm_sklearn, mixture_log_likelihood, save_gmm_pickle
from fitkit.priors.pose_data import load_pose_data, random_rotation_poses

#: the checkout's priors/ folder: rebuilt weights go there (and ship from there)
PRIORS_DIR = Path(__file__).resolve().parents[1] / "priors"

GRID = (0.003, 0.01, 0.03, 0.1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=PRIORS_DIR / "open_gmm_08.pkl")
    ap.add_argument("--components", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    train, test = load_pose_data("train"), load_pose_data("test")
    x = train.body_pose.astype(np.float64)
    clips = np.unique(train.clip)
    folds = [clips[i::3] for i in range(3)]
    scores = {}
    for reg in GRID:
        nll = []
        for fold in folds:
            held = np.isin(train.clip, fold)
            gmm = fit_gmm_sklearn(x[~held], args.components, reg_covar=reg, seed=args.seed)
            nll.append(-mixture_log_likelihood(x[held], gmm))
        scores[reg] = float(np.mean(nll))
        print(f"  reg_covar {reg:<6g} leave-clips-out NLL {scores[reg]:8.2f} nats/pose")
    reg = min(scores, key=scores.get)
    gmm = fit_gmm_sklearn(x, args.components, reg_covar=reg, seed=args.seed)
    nll_test = -mixture_log_likelihood(test.body_pose.astype(np.float64), gmm)
    nll_train = -mixture_log_likelihood(x, gmm)
    nll_rand = -mixture_log_likelihood(random_rotation_poses(1000, args.seed), gmm)
    save_gmm_pickle(args.out, gmm)
    print(f"reg_covar {reg}: NLL train {nll_train:.2f}, test {nll_test:.2f}, random rotations {nll_rand:.1f} "
          f"nats/pose ({len(x)} train / {len(test)} test poses)")
    print(f"wrote {args.out}  (command: python tools/train_gmm.py {' '.join(sys.argv[1:])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
