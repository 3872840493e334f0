"""Training and evaluating a VPoser (v2 architecture) on body poses.

The model is a variational autoencoder (see :mod:`fitkit.priors.vposer`).
For a pose x (SMPL joints 1..21) with rotation matrices R(x) (21 x 3 x 3 =
189 numbers), the training loss per pose is

    loss(x) = E_{z ~ q(z|x)} ||R_hat(z) - R(x)||^2  +  beta * KL(q(z|x) || N(0, I))

(squared Frobenius distance summed over the 21 joints; one reparameterized
sample z = mu + sigma * eps per pose and step; the KL in closed form), averaged
over a minibatch and minimised with Adam under a cosine learning-rate decay.
beta is ``kl_weight`` (default 0.005, as in VPoser v1's training).

Input noise. By default the *encoder's input* is the pose plus Gaussian noise
of ``input_noise`` = 0.05 rad per axis-angle number, drawn afresh every step
(the reconstruction target stays the clean pose). Pose sets often hold
numbers that never vary (the open set's knees and elbows rotate about one
axis only); without noise, the encoder's first batch normalisation divides
them by sqrt(1e-5), so any pose outside the training set's exact subspace
(a regressor's estimate, an initialisation) maps to a code far from the
prior's support. The noise keeps those variances >= input_noise^2 and
regularises the encoder. The ELBO bound is unaffected (any encoder gives a
valid bound); evaluation uses clean inputs. ``input_noise=0`` trains as VPoser.

Observation model. With a Gaussian observation model on the 189 matrix
entries, ``p(R | z) = N(R; R_hat(z), s^2 I)``, the negative ELBO of a pose is

    -ELBO(x) = E_q[ ||R_hat(z) - R(x)||^2 ] / (2 s^2) + (189 / 2) log(2 pi s^2) + KL(q || N(0, I))

so for ``s = sqrt(beta / 2)`` (0.05 for beta = 0.005) the training loss is
``beta * (-ELBO) + const``: training maximises this ELBO. :func:`evaluate_vposer`
reports the negative ELBO in nats per pose with that s (Monte-Carlo over
``samples`` draws of z per pose). Rotation matrices have 3 degrees of freedom
per joint, not 9, so this is a density on the 189-dimensional matrix space
(it is only comparable between models evaluated with the same s), not a
density over poses.

Reconstruction error: the geodesic angle between each joint's rotation and
its reconstruction ``decode(mu(x))`` (the posterior mean), in degrees,
averaged over the 21 joints and the poses.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import roma
import torch

from fitkit.errors import ParameterError
from fitkit.priors.vposer import NUM_JOINTS, POSE_DIM, VPoser, VPoserV2

__all__ = ["train_vposer", "evaluate_vposer", "as_pose_tensor", "observation_sigma"]

#: Numbers of the observation model (21 rotation matrices).
_OBS_DIM = NUM_JOINTS * 9


def observation_sigma(kl_weight: float) -> float:
    """The observation standard deviation s for which the training loss is kl_weight * (-ELBO)."""
    return math.sqrt(float(kl_weight) / 2.0)


def as_pose_tensor(poses: Any) -> torch.Tensor:
    """(N, 63) float32 CPU tensor from (N, 63) or (N, 69) (or wider) axis-angle poses."""
    x = poses.detach() if isinstance(poses, torch.Tensor) else torch.from_numpy(np.asarray(poses))
    if x.ndim != 2 or x.shape[1] < POSE_DIM or x.shape[1] % 3:
        raise ParameterError(f"poses must be (N, 63) or (N, 69) axis-angle, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ParameterError(f"need at least 2 poses, got {x.shape[0]}")
    x = x[:, :POSE_DIM].to(device="cpu", dtype=torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ParameterError("poses hold non-finite values")
    return x


def _geodesic_deg(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) x 2 -> (...) rotation angle of A^T B in degrees."""
    cos = ((A * B).sum((-1, -2)) - 1.0) / 2.0
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def _kl(mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B,) KL(N(mu, diag scale^2) || N(0, I)) in nats."""
    var = scale * scale
    return 0.5 * (mu * mu + var - 1.0 - torch.log(var.clamp_min(1e-30))).sum(-1)


@torch.no_grad()
def evaluate_vposer(model: VPoser, poses: Any, *, sigma: float = observation_sigma(5e-3),
                    samples: int = 8, seed: int = 0, chunk: int = 4096) -> dict[str, float]:
    """Held-out metrics of ``model`` (put in eval mode) on (N, 63 or 69) ``poses``.

    Returns (floats):
        angle_deg: mean geodesic error of decode(mu(x)) per joint, degrees.
        angle_deg_median, angle_deg_p95: over all joints of all poses.
        recon_sq: mean over poses of ||decode(mu(x)) - R(x)||^2 (189 entries).
        nll_nats, kl_nats, nelbo_nats: per pose, the negative ELBO and its two
            parts under the Gaussian observation model with std ``sigma`` on the
            189 matrix entries (module docstring), ``samples`` draws of z per pose.
        sigma, samples, num_poses: the settings.
    """
    if int(samples) < 1 or not sigma > 0:
        raise ParameterError(f"samples must be >= 1 and sigma > 0, got {samples}, {sigma}")
    model.eval()
    x = as_pose_tensor(poses)
    ref = next(model.parameters())
    gen = torch.Generator().manual_seed(int(seed))
    const = 0.5 * _OBS_DIM * math.log(2.0 * math.pi * sigma * sigma)
    angles, sq, nll, kl = [], [], [], []
    for start in range(0, x.shape[0], chunk):
        xb = x[start:start + chunk]
        R = roma.rotvec_to_rotmat(xb.reshape(-1, NUM_JOINTS, 3)).to(ref)
        mu, scale = model.encode(xb.to(ref))
        R_mean = model.decode(mu)
        angles.append(_geodesic_deg(R_mean, R).reshape(-1))
        sq.append((R_mean - R).square().sum((1, 2, 3)))
        err = torch.zeros(xb.shape[0], dtype=ref.dtype, device=ref.device)
        for _ in range(int(samples)):
            eps = torch.randn(mu.shape, generator=gen, dtype=torch.float32).to(ref)
            err += (model.decode(mu + scale * eps) - R).square().sum((1, 2, 3))
        nll.append(err / int(samples) / (2.0 * sigma * sigma) + const)
        kl.append(_kl(mu, scale))
    angles_all = torch.cat(angles).double().cpu().numpy()
    nll_t, kl_t = torch.cat(nll).double(), torch.cat(kl).double()
    return {"angle_deg": float(angles_all.mean()), "angle_deg_median": float(np.median(angles_all)),
            "angle_deg_p95": float(np.percentile(angles_all, 95)),
            "recon_sq": float(torch.cat(sq).double().mean()), "nll_nats": float(nll_t.mean()),
            "kl_nats": float(kl_t.mean()), "nelbo_nats": float((nll_t + kl_t).mean()),
            "sigma": float(sigma), "samples": int(samples), "num_poses": int(x.shape[0])}


def train_vposer(poses: Any, *, num_neurons: int = 256, latent_dim: int = 32, epochs: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, kl_weight: float = 5e-3, seed: int = 0,
                 weight_decay: float = 0.0, input_noise: float = 0.05, val_poses: Any = None,
                 val_every: int = 10,
                 log: Callable[[str], Any] | None = print) -> tuple[VPoserV2, dict[str, Any]]:
    """Train a VPoser (v2 architecture) as a VAE on ``poses`` (see the module docstring).

    Args:
        poses: (N, 69) or (N, 63) axis-angle body poses (numpy or tensor); only
            the first 63 numbers (joints 1..21) are used.
        num_neurons, latent_dim: N and L of the network.
        epochs, batch_size, lr, weight_decay: Adam with a cosine decay of the
            learning rate to lr / 20 over all steps.
        kl_weight: beta, the weight of the KL term.
        input_noise: std (radians) of the noise added to the encoder's input
            during training (module docstring); 0 for none.
        seed: seeds the initial weights, the shuffling, the dropout masks and
            the reparameterization noise; the global RNG state is restored on
            return. Results are deterministic for a given seed and thread count.
        val_poses: optional held-out poses, evaluated every ``val_every``
            epochs and after the last one (:func:`evaluate_vposer`).
        log: called with one line per evaluated epoch (None: silent).

    Returns:
        The network (float32, CPU, eval mode) and a history dict: per-epoch
        lists ``epoch``, ``loss``, ``recon``, ``kl`` (training means), ``val``
        (list of ``(epoch, metrics)``), plus ``settings`` and ``seconds``.
    """
    x = as_pose_tensor(poses)
    n = x.shape[0]
    if int(epochs) < 1 or int(batch_size) < 2:
        raise ParameterError(f"epochs must be >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
    if not (lr > 0 and kl_weight >= 0 and input_noise >= 0):
        raise ParameterError(f"lr must be > 0, kl_weight and input_noise >= 0, got {lr}, {kl_weight}, "
                             f"{input_noise}")
    val = as_pose_tensor(val_poses) if val_poses is not None else None
    target = roma.rotvec_to_rotmat(x.reshape(n, NUM_JOINTS, 3))
    batch_size = min(int(batch_size), n)
    steps_per_epoch = max(1, n // batch_size)  # the ragged remainder joins the last batch
    settings = {"num_neurons": int(num_neurons), "latent_dim": int(latent_dim), "epochs": int(epochs),
                "batch_size": batch_size, "lr": float(lr), "kl_weight": float(kl_weight),
                "weight_decay": float(weight_decay), "input_noise": float(input_noise), "seed": int(seed),
                "num_poses": int(n),
                "observation_sigma": observation_sigma(kl_weight) if kl_weight > 0 else None}
    history: dict[str, Any] = {"epoch": [], "loss": [], "recon": [], "kl": [], "val": [],
                               "settings": settings}
    sigma = observation_sigma(kl_weight) if kl_weight > 0 else observation_sigma(5e-3)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # initial weights and dropout masks
        gen = torch.Generator().manual_seed(int(seed) + 1)  # shuffling and z noise
        model = VPoserV2(num_neurons, latent_dim)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=int(epochs) * steps_per_epoch,
                                                           eta_min=lr / 20.0)
        for epoch in range(1, int(epochs) + 1):
            model.train()
            order = torch.randperm(n, generator=gen)
            sums = np.zeros(3)
            for k in range(steps_per_epoch):
                idx = order[k * batch_size:(k + 1) * batch_size if k + 1 < steps_per_epoch else n]
                xb = x[idx]
                if input_noise > 0:
                    xb = xb + input_noise * torch.randn(xb.shape, generator=gen)
                mu, scale = model.encode(xb)
                z = mu + scale * torch.randn(mu.shape, generator=gen)
                recon = (model.decode(z) - target[idx]).square().sum((1, 2, 3)).mean()
                kl = _kl(mu, scale).mean()
                loss = recon + kl_weight * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                sums += (float(loss.detach()), float(recon.detach()), float(kl.detach()))
            sums /= steps_per_epoch
            for key, value in zip(("loss", "recon", "kl"), sums):
                history[key].append(float(value))
            history["epoch"].append(epoch)
            last = epoch == int(epochs)
            if val is not None and (epoch % max(1, int(val_every)) == 0 or last):
                metrics = evaluate_vposer(model, val, sigma=sigma, samples=1, seed=0)
                history["val"].append((epoch, metrics))
                if log is not None:
                    log(f"epoch {epoch:4d}  loss {sums[0]:.4f}  recon {sums[1]:.4f}  kl {sums[2]:.2f}  "
                        f"val: {metrics['angle_deg']:.2f} deg, -ELBO {metrics['nelbo_nats']:.1f} nats")
            elif log is not None and (epoch % max(1, int(val_every)) == 0 or last):
                log(f"epoch {epoch:4d}  loss {sums[0]:.4f}  recon {sums[1]:.4f}  kl {sums[2]:.2f}")
    model.eval()
    model.source = "train_vposer"
    history["seconds"] = time.perf_counter() - t0
    return model, history
