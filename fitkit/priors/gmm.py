"""SMPLify's Gaussian-mixture pose prior (Bogo et al., ECCV 2016, Eq. 1 and Sec. 3).

The prior is a mixture of M Gaussians over the D = 69 numbers of ``body_pose``
(axis-angle of SMPL joints 1..23, global orientation excluded), fitted by the
SMPLify authors to CMU mocap poses and shipped as ``gmm_08.pkl`` (M = 8). As in
SMPLify and SPIN, the sum over components of the mixture density is replaced
by its largest term (the "max-mixture" approximation), which is what makes a
least-squares residual form possible. With

    w~_m = w_m / ((2 pi)^(D/2) sqrt(det Sigma_m))           c_m = -log w~_m

the energy computed here is

    E(x) = min_m [ 0.5 (x - mu_m)^T Sigma_m^-1 (x - mu_m) + c_m ]
         = -log max_m  w_m N(x; mu_m, Sigma_m)

i.e. exactly the negative log of the largest weighted component density (in
nats; x in radians).

Difference from SPIN: SPIN (and the original SMPLify code) divides every
``sqrt(det Sigma_m)`` by the smallest of them before forming the weights. That
adds ``-0.5 * min_m log det Sigma_m`` to every c_m, the same number for every
component and every pose, so SPIN's energy is ``E(x) - 0.5 min_m log det
Sigma_m``: the minimiser, the selected component and all gradients are the same.
fitkit keeps the exact normalisation above (:meth:`GaussianMixture.energy`).

Residual form. Let ``Sigma_m^-1 = L_m L_m^T`` (L_m the lower Cholesky factor of
the precision, as in SMPLify) and m* the component that attains the minimum.
:meth:`GaussianMixture.residuals` returns the D + 1 numbers

    r(x) = [ sqrt(0.5) L_m*^T (x - mu_m*),  sqrt(c_m* - min_m c_m) ]

so that ``sum(r**2) = E(x) - min_m c_m``. The offset ``min_m c_m``
(:attr:`GaussianMixture.residual_offset`) is a constant, so least squares on r
minimises E. The last entry depends on x only through the (piecewise constant)
choice of m*, so its derivative is zero, as in SMPLify's chumpy implementation.

The official ``gmm_08.pkl`` is licensed with SMPLify: download it yourself and
point fitkit at it (a recipe's ``path:``, or the folder in ``FITKIT_PRIORS``);
it is never part of fitkit. :func:`fit_gmm` and :func:`save_gmm_pickle` build a
mixture of the same layout from your own pose samples (and stand-ins in tests).
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch

from fitkit.body.safe_pickle import load_pickle
from fitkit.errors import ModelFileError, ParameterError
from fitkit.io.atomic import atomic_write
from fitkit.priors.files import PriorFileNotFoundError, expand, resolve_weight_path
from fitkit.terms.base import Batch, Needs, Term, register_term

__all__ = ["GaussianMixture", "GMMPosePrior", "PriorFileNotFoundError", "fit_gmm", "fit_gmm_sklearn",
           "save_gmm_pickle", "load_gmm_file", "mixture_log_likelihood", "DEFAULT_GMM_PATH"]

PathLike = Union[str, os.PathLike]

#: Where the ``gmm`` prior looks when a recipe gives no ``path``.
DEFAULT_GMM_PATH = "${FITKIT_PRIORS}/gmm_08.pkl"

_GMM_KEYS = ("means", "covars", "weights")


class GaussianMixture:
    """A Gaussian mixture in max-mixture form (see the module docstring).

    Args:
        means: (M, D) component means.
        covars: (M, D, D) symmetric positive-definite covariances.
        weights: (M,) positive mixture weights (used as given; the official
            file's sum to 1).

    Derived quantities are computed once in float64 and then cast to the
    dtype of ``means`` (float64 when numpy arrays are given):

    Attributes:
        prec_chol: (M, D, D) lower-triangular L_m with ``Sigma_m^-1 = L_m L_m^T``.
        log_norm: (M,) ``c_m = -log w_m + D/2 log(2 pi) + 1/2 log det Sigma_m``.
        residual_offset: (0-dim) ``min_m c_m``; ``sum(residuals**2) = energy - offset``.
        extra: (M,) ``sqrt(c_m - min_m c_m)``, the residual's last entry.
    """

    def __init__(self, means: Any, covars: Any, weights: Any, *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None, source: str = "gmm"):
        means64 = _as_float64(means, "means", source)
        covars64 = _as_float64(covars, "covars", source)
        weights64 = _as_float64(weights, "weights", source)
        if means64.ndim != 2 or means64.shape[0] < 1 or means64.shape[1] < 1:
            raise ParameterError(f"{source}: 'means' must be (M, D), got {tuple(means64.shape)}")
        m, d = means64.shape
        if covars64.shape != (m, d, d):
            raise ParameterError(f"{source}: 'covars' must be (M, D, D) = ({m}, {d}, {d}) to "
                                 f"match 'means', got {tuple(covars64.shape)}")
        if weights64.shape != (m,):
            raise ParameterError(f"{source}: 'weights' must be (M,) = ({m},), got "
                                 f"{tuple(weights64.shape)}")
        for key, value in (("means", means64), ("covars", covars64), ("weights", weights64)):
            if not bool(torch.isfinite(value).all()):
                raise ParameterError(f"{source}: '{key}' holds non-finite values")
        if not bool((weights64 > 0).all()):
            raise ParameterError(f"{source}: 'weights' must all be > 0")
        scale = float(covars64.abs().max())
        if not torch.allclose(covars64, covars64.transpose(-1, -2), rtol=1e-5, atol=1e-9 * scale):
            raise ParameterError(f"{source}: 'covars' are not symmetric")
        covars64 = 0.5 * (covars64 + covars64.transpose(-1, -2))
        cov_chol, info = torch.linalg.cholesky_ex(covars64)
        if bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise ParameterError(f"{source}: 'covars'[{bad}] is not positive definite")
        precision = torch.cholesky_inverse(cov_chol)
        precision = 0.5 * (precision + precision.transpose(-1, -2))
        prec_chol = torch.linalg.cholesky(precision)
        log_det = 2.0 * torch.log(torch.diagonal(cov_chol, dim1=-2, dim2=-1)).sum(-1)
        log_norm = -torch.log(weights64) + 0.5 * d * math.log(2.0 * math.pi) + 0.5 * log_det
        offset = log_norm.min()
        extra = torch.sqrt(log_norm - offset)

        out_dtype = dtype or (means.dtype if isinstance(means, torch.Tensor)
                              and means.dtype.is_floating_point else torch.float64)
        out_device = device if device is not None else (
            means.device if isinstance(means, torch.Tensor) else None)
        cast = dict(dtype=out_dtype, device=out_device)
        self.means = means64.to(**cast)
        self.covars = covars64.to(**cast)
        self.weights = weights64.to(**cast)
        self.prec_chol = prec_chol.to(**cast)
        self.log_norm = log_norm.to(**cast)
        self.residual_offset = offset.to(**cast)
        self.extra = extra.to(**cast)
        self.source = source
        # float64 originals, so .to() never compounds rounding.
        self._master = (means64, covars64, weights64)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    @classmethod
    def from_dict(cls, gmm: Mapping[str, Any], **kwargs) -> "GaussianMixture":
        """From a mapping with ``'means'``, ``'covars'``, ``'weights'``."""
        source = kwargs.pop("source", "gmm")
        if not isinstance(gmm, Mapping):
            raise ParameterError(f"{source}: expected a dict with keys {list(_GMM_KEYS)}, "
                                 f"got {type(gmm).__name__}")
        missing = [key for key in _GMM_KEYS if key not in gmm]
        if missing:
            raise ParameterError(f"{source}: missing key '{missing[0]}' (expected "
                                 f"{list(_GMM_KEYS)})")
        return cls(gmm["means"], gmm["covars"], gmm["weights"], source=source, **kwargs)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> "GaussianMixture":
        """A copy on ``device`` / in ``dtype`` (derived terms recomputed in float64)."""
        means64, covars64, weights64 = self._master
        return GaussianMixture(means64, covars64, weights64, source=self.source,
                               dtype=dtype or self.dtype,
                               device=device if device is not None else self.device)

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{'means', 'covars', 'weights'}`` as float64 numpy arrays (official layout)."""
        return {key: value.detach().cpu().numpy().copy()
                for key, value in zip(_GMM_KEYS, self._master)}

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) draws from the mixture (a component by weight, then its Gaussian), float64 on the CPU."""
        means64, covars64, weights64 = self._master
        comp = torch.multinomial(weights64 / weights64.sum(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        chol = torch.linalg.cholesky(covars64)
        return means64[comp] + torch.einsum("nij,nj->ni", chol[comp], eps)

    def _whitened(self, x: torch.Tensor) -> torch.Tensor:
        """(..., M, D): ``sqrt(0.5) L_m^T (x - mu_m)`` for every component."""
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ParameterError(f"{self.source}: expected poses of shape (B, {self.dim}), "
                                 f"got {tuple(x.shape)}")
        diff = x.unsqueeze(-2) - self.means                         # (..., M, D)
        # (L^T d)_i = sum_j L_ji d_j
        return math.sqrt(0.5) * torch.einsum("mji,...mj->...mi", self.prec_chol, diff)

    def component_energies(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M): ``0.5 (x - mu_m)^T Sigma_m^-1 (x - mu_m) + c_m`` (= -log w_m N_m(x))."""
        return self._whitened(x).square().sum(-1) + self.log_norm

    def best_component(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) long: m*, the component of smallest energy (first one on ties)."""
        return torch.argmin(self.component_energies(x), dim=-1)

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) exact max-mixture energy ``min_m [0.5 q_m(x) + c_m]`` in nats."""
        return self.component_energies(x).min(dim=-1).values

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D + 1) residuals with ``sum(r**2, -1) = energy(x) - residual_offset``.

        Differentiable with autograd and :mod:`torch.func` (forward mode, vmap):
        the component choice is an argmin on the values; the selected whitened
        difference is gathered, so derivatives flow through it only. Leading
        dimensions other than B are allowed too: (..., D) -> (..., D + 1).
        """
        with torch.no_grad():
            best = self.best_component(x)                           # (...,)
        # The chosen component's whitening is redone per sample, as an
        # elementwise product summed over j: a sample's residual must not change
        # in the last bit with the batch it is evaluated in (solvers drop
        # converged samples), which no matrix product guarantees (MKL's batched
        # GEMM rounds a (1, D) x (D, D) block differently for another batch size).
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.dim)
        b = best.reshape(-1)
        diff = flat - self.means[b]                                 # (n, D)
        chosen = (diff[:, :, None] * self.prec_chol[b]).sum(1)      # (n, D): L^T (x - mu)
        if chosen.requires_grad:  # reduce a contiguous gradient in the backward (its layout sets the loop order)
            chosen.register_hook(torch.Tensor.contiguous)
        chosen = math.sqrt(0.5) * chosen
        extra = self.extra[b][:, None].to(chosen.dtype)             # (n, 1)
        return torch.cat([chosen, extra], dim=-1).reshape(*lead, self.dim + 1)

    def __repr__(self) -> str:
        return (f"GaussianMixture(M={self.num_components}, D={self.dim}, dtype={self.dtype}, "
                f"source={self.source!r})")


def _as_float64(value: Any, key: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything unconvertible is a bad value
        raise ParameterError(f"{source}: key '{key}' is not an array: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise ParameterError(f"{source}: key '{key}' is not numeric (dtype {array.dtype})")
    return torch.from_numpy(np.array(array, dtype=np.float64))


# ---------------------------------------------------------------------------------------
# Files


def load_gmm_file(path: PathLike) -> dict[str, np.ndarray]:
    """Read an official-layout GMM pickle (``gmm_08.pkl``) without running code.

    ``path`` may contain ``~`` and environment variables (``${FITKIT_PRIORS}``).
    The file must be a pickle of a dict with ``'means'`` (M, D), ``'covars'``
    (M, D, D), ``'weights'`` (M,), as numpy arrays or chumpy values (Python 2,
    latin1); it is read with :func:`fitkit.body.safe_pickle.load_pickle`.

    Raises:
        PriorFileNotFoundError: no such file (one line: path and where to get it).
        ModelFileError: unreadable/unsafe pickle, or a wrong layout (naming the
            file and the key).
    """
    resolved = resolve_weight_path(
        path, "GMM pose prior file",
        "SMPLify's licensed gmm_08.pkl is downloaded from the SMPLify website (fitkit never "
        "ships or commits it): point to it with the recipe's 'path:' or put it in the folder "
        "named by the FITKIT_PRIORS environment variable; fitkit's open mixture is "
        "priors/open_gmm_08.pkl")
    loaded = load_pickle(resolved)
    if not isinstance(loaded, dict):
        raise ModelFileError(f"{resolved}: expected a pickled dict with keys "
                             f"{list(_GMM_KEYS)}, found {type(loaded).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for key in _GMM_KEYS:
        if key not in loaded:
            raise ModelFileError(f"{resolved}: key '{key}' is missing (expected "
                                 f"{list(_GMM_KEYS)}; found {sorted(map(str, loaded))})")
        array = np.asarray(loaded[key])
        if array.dtype.kind not in "biuf":
            raise ModelFileError(f"{resolved}: key '{key}' is not a numeric array "
                                 f"(dtype {array.dtype})")
        arrays[key] = array.astype(np.float64)
    m = arrays["means"].shape[0] if arrays["means"].ndim == 2 else None
    d = arrays["means"].shape[1] if arrays["means"].ndim == 2 else None
    expected = {"means": (m, d), "covars": (m, d, d), "weights": (m,)}
    for key in _GMM_KEYS:
        if m is None or arrays[key].shape != expected[key]:
            want = "(M, D)" if key == "means" else ("(M, D, D)" if key == "covars" else "(M,)")
            raise ModelFileError(f"{resolved}: key '{key}' has shape {arrays[key].shape}, "
                                 f"expected {want} consistent with 'means'")
    return arrays


def save_gmm_pickle(path: PathLike, gmm: Mapping[str, Any]) -> Path:
    """Write ``gmm`` in the official ``gmm_08.pkl`` layout: a pickled dict of numpy arrays.

    Args:
        path: output file (``~`` and environment variables expanded); written
            atomically, parent folders created.
        gmm: mapping with ``'means'`` (M, D), ``'covars'`` (M, D, D),
            ``'weights'`` (M,) (numpy arrays or tensors); validated first.

    Returns:
        The path written. Protocol 2 is used, as readable as the official file.
    """
    arrays = GaussianMixture.from_dict(gmm, source=os.fspath(path)).to_dict()
    path = expand(path)
    with atomic_write(path, "wb") as handle:
        pickle.dump(arrays, handle, protocol=2)
    return path


# ---------------------------------------------------------------------------------------
# Fitting


def _component_log_densities(x: torch.Tensor, means: torch.Tensor,
                             cov_chol: torch.Tensor) -> torch.Tensor:
    """(N, M) ``log N(x_n; mu_m, C_m C_m^T)`` in float64."""
    d = x.shape[1]
    diff = (x.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)          # (M, D, N)
    z = torch.linalg.solve_triangular(cov_chol, diff, upper=False)        # (M, D, N)
    log_det = 2.0 * torch.log(torch.diagonal(cov_chol, dim1=-2, dim2=-1)).sum(-1)  # (M,)
    quad = z.square().sum(1)                                              # (M, N)
    return (-0.5 * quad - 0.5 * log_det.unsqueeze(1)
            - 0.5 * d * math.log(2.0 * math.pi)).transpose(0, 1)


def _as_samples(samples: Any) -> torch.Tensor:
    x = samples.detach() if isinstance(samples, torch.Tensor) else torch.from_numpy(
        np.asarray(samples))
    x = x.to(device="cpu", dtype=torch.float64)
    if x.ndim != 2:
        raise ParameterError(f"samples must be (N, D), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ParameterError("samples hold non-finite values")
    return x


def mixture_log_likelihood(samples: Any, gmm: Mapping[str, Any], chunk: int = 16384) -> float:
    """Mean over samples of ``log sum_m w_m N(x; mu_m, Sigma_m)`` (the full mixture, nats)."""
    x = _as_samples(samples)
    means = torch.as_tensor(np.asarray(gmm["means"]), dtype=torch.float64)
    covars = torch.as_tensor(np.asarray(gmm["covars"]), dtype=torch.float64)
    log_w = torch.log(torch.as_tensor(np.asarray(gmm["weights"]), dtype=torch.float64))
    cov_chol = torch.linalg.cholesky(0.5 * (covars + covars.transpose(-1, -2)))
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        logp = _component_log_densities(x[start:start + chunk], means, cov_chol) + log_w
        total += float(torch.logsumexp(logp, dim=1).sum())
    return total / x.shape[0]


def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability ~ squared distance."""
    n = x.shape[0]
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    dist = torch.full((n,), float("inf"), dtype=x.dtype)
    for _ in range(1, k):
        dist = torch.minimum(dist, (x - centres[-1]).square().sum(-1))
        total = dist.sum()
        if float(total) <= 0.0:  # fewer distinct points than components
            probs = torch.full_like(dist, 1.0 / n)
        else:
            probs = dist / total
        centres.append(x[int(torch.multinomial(probs, 1, generator=gen))])
    return torch.stack(centres)


def fit_gmm(samples: Any, num_components: int = 8, iterations: int = 100, seed: int = 0,
            reg: float = 1e-4, tol: float = 1e-9, chunk: int = 16384) -> dict[str, np.ndarray]:
    """Fit a full-covariance Gaussian mixture by expectation–maximisation.

    Initialisation: k-means++ seeding, hard assignment of each sample to its
    nearest seed, then one M-step. Each iteration is one E-step (responsibilities
    from the component log-densities, in float64, ``chunk`` samples at a time)
    and one M-step (weights, means, covariances from responsibility-weighted
    sums). ``reg`` is added to every covariance's diagonal (in squared data
    units) so components stay positive definite.

    Args:
        samples: (N, D) array or tensor, e.g. body poses in radians.
        num_components: M (<= N).
        iterations: maximum number of EM iterations.
        seed: seed of the k-means++ draws (results are deterministic given it).
        reg: diagonal covariance regulariser (> 0).
        tol: stop when the mean log-likelihood improves by less than this.
        chunk: samples per vectorised block (memory ~ M * D * chunk doubles).

    Returns:
        ``{'means': (M, D), 'covars': (M, D, D), 'weights': (M,)}`` float64 numpy
        arrays, the layout of SMPLify's ``gmm_08.pkl`` (see :func:`save_gmm_pickle`).
    """
    x = _as_samples(samples)
    n, d = x.shape
    if num_components < 1 or num_components > n:
        raise ParameterError(f"num_components must be in [1, N={n}], got {num_components}")
    if not reg > 0:
        raise ParameterError(f"reg must be > 0, got {reg}")
    gen = torch.Generator().manual_seed(int(seed))
    # Work around the data mean so the second-moment sums lose little precision.
    centre = x.mean(0)
    xc = x - centre
    eye = torch.eye(d, dtype=torch.float64)

    def m_step(stats):
        nk, s1, s2 = stats
        nk = nk.clamp_min(1e-10 * n)
        means = s1 / nk.unsqueeze(1)
        covars = s2 / nk.view(-1, 1, 1) - means.unsqueeze(2) * means.unsqueeze(1)
        covars = 0.5 * (covars + covars.transpose(-1, -2)) + reg * eye
        return nk / nk.sum(), means, covars

    def accumulate(resp_of_chunk):
        nk = torch.zeros(num_components, dtype=torch.float64)
        s1 = torch.zeros(num_components, d, dtype=torch.float64)
        s2 = torch.zeros(num_components, d, d, dtype=torch.float64)
        loglik = 0.0
        for start in range(0, n, chunk):
            xb = xc[start:start + chunk]
            resp, ll = resp_of_chunk(xb)                       # (n_b, M)
            nk += resp.sum(0)
            s1 += resp.transpose(0, 1) @ xb
            s2 += torch.einsum("nm,nd,ne->mde", resp, xb, xb)
            loglik += ll
        return (nk, s1, s2), loglik / n

    seeds = _kmeans_pp(xc, num_components, gen)

    def hard(xb):
        nearest = torch.cdist(xb, seeds).argmin(1)
        return torch.nn.functional.one_hot(nearest, num_components).to(torch.float64), 0.0

    weights, means, covars = m_step(accumulate(hard)[0])
    previous = -math.inf
    for _ in range(int(iterations)):
        cov_chol = torch.linalg.cholesky(covars)
        log_w = torch.log(weights)

        def soft(xb):
            logp = _component_log_densities(xb, means, cov_chol) + log_w
            norm = torch.logsumexp(logp, dim=1, keepdim=True)
            return torch.exp(logp - norm), float(norm.sum())

        stats, loglik = accumulate(soft)
        weights, means, covars = m_step(stats)
        if loglik - previous < tol:
            break
        previous = loglik
    return {"means": (means + centre).numpy(), "covars": covars.numpy(),
            "weights": weights.numpy()}


def fit_gmm_sklearn(samples: Any, num_components: int = 8, *, reg_covar: float = 0.03, seed: int = 0,
                    max_iter: int = 500, n_init: int = 2) -> dict[str, np.ndarray]:
    """Fit a full-covariance mixture with scikit-learn's ``GaussianMixture``.

    This is how fitkit's shipped ``priors/open_gmm_08.pkl`` is trained
    (``tools/train_gmm.py`` picks ``reg_covar`` by leave-clips-out validation);
    :func:`fit_gmm` is an independent implementation of the same EM.

    Args:
        samples: (N, D) poses in radians.
        num_components: M (8 in SMPLify).
        reg_covar: added to every covariance's diagonal (squared radians).
        seed, max_iter, n_init: passed to scikit-learn (``random_state``, ...).
    Returns:
        ``{'means', 'covars', 'weights'}`` float64 arrays in ``gmm_08.pkl`` layout.
    """
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x = _as_samples(samples).numpy()
    if num_components < 1 or num_components > len(x):
        raise ParameterError(f"num_components must be in [1, N={len(x)}], got {num_components}")
    sk = SkGaussianMixture(num_components, covariance_type="full", reg_covar=reg_covar,
                           random_state=seed, max_iter=max_iter, n_init=n_init).fit(x)
    return {"means": sk.means_.astype(np.float64), "covars": sk.covariances_.astype(np.float64),
            "weights": sk.weights_.astype(np.float64)}


# ---------------------------------------------------------------------------------------
# The term


@register_term("gmm")
class GMMPosePrior(Term):
    """SMPLify's GMM pose prior on ``body_pose`` as a least-squares term.

    Energy per sample (before the recipe weight), nats, x = ``body_pose`` (B, 69)
    in radians::

        E(x) = min_m [ 0.5 (x - mu_m)^T Sigma_m^-1 (x - mu_m) - log w~_m ]

    with ``w~_m = w_m / ((2 pi)^(D/2) sqrt(det Sigma_m))``. Residuals (B, 70):
    ``[sqrt(0.5) L_m*^T (x - mu_m*), sqrt(c_m* - min_m c_m)]`` whose squares sum
    to ``E(x) - min_m c_m`` (a constant offset; SPIN's energy differs from E by
    another constant, ``-0.5 min_m log det Sigma_m``; see :mod:`fitkit.priors.gmm`).
    From Bogo et al., "Keep it SMPL", ECCV 2016; SPIN (Kolotouros et al., ICCV
    2019) uses it with ``pose_prior_weight = 4.78`` (recipe weight 4.78**2).

    Args:
        path: the official ``gmm_08.pkl`` (``~`` and ``${VARS}`` expanded);
            default ``${FITKIT_PRIORS}/gmm_08.pkl``. Ignored when ``gmm`` is given.
        gmm: ``dict(means, covars, weights)`` instead of a file.
    """

    kind = "prior"

    def __init__(self, path: PathLike | None = None, gmm: Mapping[str, Any] | None = None):
        if gmm is not None:
            self.path = None
            self.mixture = GaussianMixture.from_dict(gmm, source="gmm prior")
        else:
            raw = os.fspath(path) if path is not None else DEFAULT_GMM_PATH
            arrays = load_gmm_file(raw)
            self.path = resolve_weight_path(raw, "GMM pose prior file")
            try:
                self.mixture = GaussianMixture.from_dict(arrays, source=str(self.path))
            except ParameterError as exc:  # e.g. a covariance that is not positive definite
                raise ModelFileError(str(exc)) from None
        self._cast: dict[tuple, GaussianMixture] = {}

    def needs(self) -> Needs:
        return Needs(params=("body_pose",))

    def evidence(self) -> torch.Tensor | None:
        return None

    def setup(self, ctx) -> None:
        want = ctx.model.body_pose_dim
        if self.mixture.dim != want:
            raise ParameterError(f"{self.mixture.source}: this GMM pose prior is over D = {self.mixture.dim} "
                                 f"numbers but the body model's body_pose has {want} "
                                 f"({want // 3} joints); use a mixture trained for this model")
        self._for(torch.device(ctx.device), ctx.dtype)

    def _for(self, device: torch.device, dtype: torch.dtype) -> GaussianMixture:
        key = (str(device), dtype)
        if key not in self._cast:
            self._cast[key] = self.mixture.to(device=device, dtype=dtype)
        return self._cast[key]

    def residuals(self, batch: Batch) -> torch.Tensor:
        pose = batch.params["body_pose"]
        return self._for(pose.device, pose.dtype).residuals(pose)

    def exact_energy(self, body_pose: torch.Tensor) -> torch.Tensor:
        """(B,) the exact energy E(x) of poses (B, 69) (not offset), for reporting. (The
        term's :meth:`energy` of a batch is the residual form's, E(x) minus a constant.)"""
        return self._for(body_pose.device, body_pose.dtype).energy(body_pose)

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path is not None else "gmm=<dict>"
        return f"GMMPosePrior({where}, M={self.mixture.num_components})"
