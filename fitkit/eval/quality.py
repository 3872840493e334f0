"""Pseudo-ground-truth quality flags: which fits to keep.

Fits used as pseudo-ground-truth are filtered per sample, as SPIN does with
its SMPLify fits (a fit is used for training only when its keypoint
reprojection loss is below a threshold) and as fitters that reject fits with
implausible poses do with the pose prior's energy. fitkit writes these flags
with every ``fitkit fit`` result (``result.npz``):

- ``reproj_err_crop_px`` (N,): the mean 2D distance between the fitted and the
  observed keypoints (confidence > 0), measured as if the person's box (1.2 x
  the longest side of the box around the confident keypoints, SPIN's crop)
  were a 224-pixel crop, so one threshold suits people of every size;
- ``quality_reprojection_ok`` (N,): ``reproj_err_crop_px <= max_reproj_crop_px``;
- ``quality_prior_ok`` (N,): every term named in ``max_energy`` has a final
  weighted energy (``energy_<key>``) at most its threshold (True when none
  is set);
- ``quality_ok`` (N,): both, and the sample had evidence and no NaN rollback.

Thresholds come from the recipe's optional ``quality:`` section::

    quality: {max_reproj_crop_px: 10, max_energy: {pose: 300}}

Defaults (:data:`QUALITY_DEFAULTS`): 10 crop pixels (4.5% of the person's
size), no energy threshold. Energies depend on the recipe's weights, so
energy thresholds belong to a recipe, not to fitkit.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from fitkit.errors import FitkitError

__all__ = ["QUALITY_DEFAULTS", "quality_settings", "quality_flags", "CROP_SIZE", "BOX_SCALE"]

QUALITY_DEFAULTS = {"max_reproj_crop_px": 10.0, "max_energy": {}}
CROP_SIZE = 224.0
BOX_SCALE = 1.2


def quality_settings(spec: Mapping[str, Any] | None, source: str = "<recipe>") -> dict:
    """The recipe's ``quality`` section completed with the defaults; errors name the key."""
    spec = dict(spec or {})
    unknown = set(spec) - set(QUALITY_DEFAULTS)
    if unknown:
        raise FitkitError(f"{source}: quality: unknown key(s) {sorted(unknown)}; known: {sorted(QUALITY_DEFAULTS)}")
    out = {**QUALITY_DEFAULTS, **spec}
    if not (isinstance(out["max_reproj_crop_px"], (int, float)) and out["max_reproj_crop_px"] > 0):
        raise FitkitError(f"{source}: quality.max_reproj_crop_px must be a positive number, "
                          f"got {out['max_reproj_crop_px']!r}")
    if not isinstance(out["max_energy"], Mapping):
        raise FitkitError(f"{source}: quality.max_energy must map term keys to thresholds")
    out["max_energy"] = {str(k): float(v) for k, v in out["max_energy"].items()}
    return out


def quality_flags(observed: np.ndarray, fitted_2d: np.ndarray, energies: Mapping[str, np.ndarray],
                  no_evidence: np.ndarray, nan: np.ndarray, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-sample flags (see the module docstring).

    Args:
        observed: (N, K, 3) observed keypoints (pixels, confidence).
        fitted_2d: (N, K, 2) the fitted body's projected keypoints (pixels).
        energies: term key -> (N,) final weighted energy (``FitResult.energies``).
        no_evidence, nan: (N,) bool flags of the fit.
        settings: :func:`quality_settings` output.
    Returns:
        ``reproj_err_crop_px`` (N,) float (NaN without confident keypoints) and the
        bool arrays ``quality_reprojection_ok``, ``quality_prior_ok``, ``quality_ok``.
    """
    conf = observed[..., 2] > 0
    dist = np.linalg.norm(fitted_2d - observed[..., :2], axis=-1)
    count = conf.sum(axis=1)
    err = (dist * conf).sum(axis=1) / np.maximum(count, 1)
    err = np.where(count > 0, err, np.nan)
    lo = np.where(conf[..., None], observed[..., :2], np.inf).min(axis=1)
    hi = np.where(conf[..., None], observed[..., :2], -np.inf).max(axis=1)
    side = np.where(count > 0, (hi - lo).max(axis=1), 0.0)
    box = np.maximum(BOX_SCALE * side, 1.0)
    err_crop = err * CROP_SIZE / box
    reproj_ok = np.nan_to_num(err_crop, nan=np.inf) <= settings["max_reproj_crop_px"]
    prior_ok = np.ones(len(err), dtype=bool)
    for key, limit in settings["max_energy"].items():
        if key not in energies:
            raise FitkitError(f"quality.max_energy names {key!r}, which is not a term of the last stage "
                              f"(terms: {sorted(k for k in energies if k != 'total')})")
        prior_ok &= np.asarray(energies[key]) <= limit
    ok = reproj_ok & prior_ok & ~np.asarray(no_evidence, bool) & ~np.asarray(nan, bool)
    return {"reproj_err_crop_px": err_crop, "quality_reprojection_ok": reproj_ok,
            "quality_prior_ok": prior_ok, "quality_ok": ok}
