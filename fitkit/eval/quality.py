"""Pseudo-ground-truth quality flags: which fits to keep.

Fits used as pseudo-ground-truth are filtered per sample, as SPIN does with
its SMPLify fits (a fit is used for training only when its keypoint
reprojection loss is below a threshold) and as fitters that reject fits with
implausible poses do with the pose prior's energy. A good 2D fit can still be
a bad 3D body (turned round, left and right swapped, depth wrong), so fitkit
also checks the fit against the detector's 3D cue, its motion along the track
and the hypotheses' choices. ``fitkit fit`` writes, per frame (``result.npz``),
the raw numbers and one boolean flag per check:

- ``reproj_err_crop_px`` (N,): the mean 2D distance between the fitted and the
  observed keypoints (confidence > 0), measured as if the person's box (1.2 x
  the longest side of the box around the confident keypoints, SPIN's crop)
  were a 224-pixel crop, so one threshold suits people of every size;
  ``quality_reprojection_ok``: ``reproj_err_crop_px <= max_reproj_crop_px``;
- ``quality_prior_ok``: every term named in ``max_energy`` has a final
  weighted energy (``energy_<key>``) at most its threshold (True when none
  is set);
- ``quality_keypoints3d_err_mm`` (N,): the mean distance (mm, confidence-weighted)
  between the fitted body's keypoints and the observations' ``keypoints3d``
  (e.g. MediaPipe's world landmarks) after the alignment of the
  ``keypoints3d`` term with ``scale: free`` (:mod:`fitkit.terms.keypoints3d`):
  both made root-relative (hip mid-point) and the observed skeleton scaled
  onto the fitted one by the least-squares scale; rotated first as the
  recipe's ``keypoints3d`` term does (``keypoints3d_rotation``, default: that
  term's ``rotation``): with ``camera`` no rotation, so a body facing another
  way than the cue counts; with ``kabsch`` only the pose's shape. NaN without
  ``keypoints3d``. ``quality_3d_ok``: ``<= max_keypoints3d_mm``;
- ``quality_joint_speed_mm`` and ``quality_joint_accel_mm`` (N,): the fitted body's
  root-relative keypoints, mean over keypoints of the speed (mm/frame, the
  larger of the steps to the previous and to the next frame of the track) and
  of the acceleration (mm/frame^2, ``|x[t+1] - 2 x[t] + x[t-1]|``, NaN at a
  track's ends). ``quality_motion_ok``: speed ``<= max_joint_speed_mm`` and
  acceleration ``<= max_joint_accel_mm``;
- ``quality_facing_change_deg`` (N,): the largest angle (degrees) between the fitted
  torso's normal (``(left_hip - right_hip) x (shoulder mid - hip mid)``) and
  the normals of the previous and next frames of the track.
  ``quality_facing_ok``: ``<= max_facing_change_deg``;
- ``quality_swap_margin`` (N,): with a ``hypotheses:`` section that tries left/right
  label swaps, ``log E2 - log E1`` of the best and second-best labellings'
  short-fit energies (``swap_energies``; inf when fewer than two were tried).
  A small margin means the labelling is unresolved. ``quality_swap_ok``:
  ``>= min_swap_margin``;
- ``quality_ok`` (N,): all of these, and the sample had evidence and no NaN
  rollback.

Neighbours along a track are the rows of the same ``track_ids`` whose
``frame_numbers`` differ by one (``fitkit.fitting.sequence.split_segments``;
observations with neither are independent images, without neighbours);
a frame without a neighbour has NaN motion and facing numbers and passes
those checks. A check whose threshold is null is off (its flag is all True).
When a fit is run in batches that cut tracks, recompute the track checks on
the assembled arrays with :func:`track_quality`.

Thresholds come from the recipe's optional ``quality:`` section::

    quality: {max_reproj_crop_px: 10, max_energy: {pose: 300}, max_keypoints3d_mm: 43,
              max_joint_speed_mm: null, max_joint_accel_mm: 43, max_facing_change_deg: 24,
              min_swap_margin: null, keypoints3d_rotation: null}

Defaults: :data:`QUALITY_DEFAULTS` (docs/quality.md: how they were set on the
real development set, and the precision / recall measured there). Energies
depend on the recipe's weights, so energy thresholds belong to a recipe, not
to fitkit; the motion thresholds are per frame and assume about 30-60 fps.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from fitkit.errors import FitkitError

__all__ = ["QUALITY_DEFAULTS", "quality_settings", "quality_flags", "keypoints3d_error_mm", "motion_numbers",
           "facing_numbers", "swap_margin", "track_neighbours", "track_quality", "combine_flags",
           "CROP_SIZE", "BOX_SCALE"]

#: Defaults of the ``quality:`` section; the numeric thresholds of the new checks
#: were set on the real development set (docs/quality.md). null turns a check off.
QUALITY_DEFAULTS: dict[str, Any] = {"max_reproj_crop_px": 10.0, "max_energy": {}, "max_keypoints3d_mm": 43.0,
                                    "max_joint_speed_mm": None, "max_joint_accel_mm": 43.0,
                                    "max_facing_change_deg": 24.0, "min_swap_margin": None,
                                    "keypoints3d_rotation": None}
CROP_SIZE = 224.0
BOX_SCALE = 1.2
_TORSO = ("left_hip", "right_hip", "left_shoulder", "right_shoulder")
#: per-frame check -> the raw numbers it thresholds
_FLAG_NAMES = ("quality_reprojection_ok", "quality_prior_ok", "quality_3d_ok", "quality_motion_ok",
               "quality_facing_ok", "quality_swap_ok")


def quality_settings(spec: Mapping[str, Any] | None, source: str = "<recipe>",
                     terms: Mapping[str, Any] | None = None) -> dict:
    """The recipe's ``quality`` section checked (``recipe_schema.check_quality``) and completed
    with :data:`QUALITY_DEFAULTS`; errors name the file and the key.

    ``terms``: the recipe's ``terms:`` section. When ``keypoints3d_rotation`` is null (the
    default) it becomes the ``rotation`` of the recipe's first ``keypoints3d`` term
    (``camera`` without one), so the 3D-cue check aligns the cue as the fit did.
    """
    from fitkit.fitting.recipe_schema import check_quality

    out = {**QUALITY_DEFAULTS, **check_quality(spec, f"{source}: quality")}
    if out["keypoints3d_rotation"] is None:
        out["keypoints3d_rotation"] = "camera"
        for term in (terms or {}).values():
            if isinstance(term, Mapping) and term.get("type") == "keypoints3d":
                out["keypoints3d_rotation"] = str(term.get("rotation", "camera"))
                break
    return out


# ---------------------------------------------------------------- raw per-frame numbers

def keypoints3d_error_mm(fitted: np.ndarray, keypoints3d: np.ndarray | None, hips: tuple[int, int],
                         rotation: str = "camera") -> np.ndarray:
    """(N,) mean distance in mm between the fitted keypoints and the observed 3D keypoints.

    Args:
        fitted: (N, K, 3) the fitted body's keypoints (meters, camera axes).
        keypoints3d: (N, K, 4) observed x, y, z (meters, camera-aligned axes) and
            confidence, or None.
        hips: indices of ``left_hip`` and ``right_hip`` (the root).
        rotation: ``camera`` (no rotation), ``yaw`` or ``kabsch``: the observed
            root-relative skeleton is first rotated as the ``keypoints3d`` term's
            ``rotation`` option does (:func:`fitkit.terms.keypoints3d.optimal_yaw`,
            :func:`~fitkit.terms.keypoints3d.optimal_rotation`).
    Returns:
        (N,) the confidence-weighted mean of ``|m_k - s o_k|`` over the keypoints
        with confidence > 0, in mm, where ``m``/``o`` are the root-relative fitted
        and observed points and ``s`` the weighted least-squares scale of ``o``
        onto ``m`` (the ``keypoints3d`` term's ``scale: free``); NaN where a hip
        or every keypoint is missing.
    """
    n = fitted.shape[0]
    if keypoints3d is None:
        return np.full(n, np.nan)
    k3 = np.asarray(keypoints3d, dtype=np.float64)
    conf = np.where(np.isfinite(k3).all(-1), k3[..., 3], 0.0).clip(min=0)
    usable = conf > 0
    usable &= usable[:, hips[0], None] & usable[:, hips[1], None]
    w = np.where(usable, conf, 0.0)
    obs = np.where(usable[..., None], k3[..., :3], 0.0)
    rel_o = obs - 0.5 * (obs[:, hips[0]] + obs[:, hips[1]])[:, None]
    fit = np.asarray(fitted, dtype=np.float64)
    rel_m = fit - 0.5 * (fit[:, hips[0]] + fit[:, hips[1]])[:, None]
    if rotation != "camera":
        import torch

        from fitkit.terms.keypoints3d import optimal_rotation, optimal_yaw

        tm, to, tw = (torch.as_tensor(x, dtype=torch.float64) for x in (rel_m, rel_o, w))
        if rotation == "yaw":
            rel_o = optimal_yaw(tm, to, tw).numpy()
        elif rotation == "kabsch":
            rel_o = (to @ optimal_rotation(tm, to, tw).transpose(-1, -2)).numpy()
        else:
            raise ValueError(f"keypoints3d_error_mm: rotation must be camera, yaw or kabsch, got {rotation!r}")
    num = (w * (rel_m * rel_o).sum(-1)).sum(-1)
    den = (w * (rel_o * rel_o).sum(-1)).sum(-1)
    s = np.where(den > 1e-12, num / np.where(den > 1e-12, den, 1.0), 1.0)
    dist = np.linalg.norm(rel_m - s[:, None, None] * rel_o, axis=-1)
    total = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = 1000.0 * (w * dist).sum(-1) / total
    return np.where(total > 0, err, np.nan)


def track_neighbours(track_ids: Sequence[str] | None, frame_numbers: Sequence[int] | None,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) row of the previous and of the next frame of each row's track (-1: none).

    Rows are neighbours when they share a track id and their frame numbers differ by
    one (without frame numbers, a track's rows in order are consecutive frames, as in
    :meth:`fitkit.io.observations.Observations.time_indices`). Without track ids *and*
    frame numbers the rows are taken as independent images: no neighbours.
    """
    if track_ids is None and frame_numbers is None:
        return np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    tracks = list(track_ids) if track_ids is not None else [""] * n
    if frame_numbers is None:
        seen: dict[str, int] = {}
        times = []
        for t in tracks:
            times.append(seen.get(t, 0))
            seen[t] = times[-1] + 1
    else:
        times = [int(f) for f in frame_numbers]
    where = {(t, f): row for row, (t, f) in enumerate(zip(tracks, times))}
    prev = np.array([where.get((t, f - 1), -1) for t, f in zip(tracks, times)], dtype=np.int64)
    nxt = np.array([where.get((t, f + 1), -1) for t, f in zip(tracks, times)], dtype=np.int64)
    return prev, nxt


def motion_numbers(fitted: np.ndarray, hips: tuple[int, int], prev: np.ndarray,
                   nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) joint speed (mm/frame) and acceleration (mm/frame^2) of the root-relative keypoints.

    Args:
        fitted: (N, K, 3) keypoints in meters; hips: the root's two indices;
        prev, nxt: (N,) neighbour rows from :func:`track_neighbours` (-1: none).
    Returns:
        speed: mean over keypoints of the larger step to a neighbour (NaN without one);
        accel: mean over keypoints of ``|x[next] - 2 x + x[prev]|`` (NaN without both).
    """
    fit = np.asarray(fitted, dtype=np.float64)
    rel = fit - 0.5 * (fit[:, hips[0]] + fit[:, hips[1]])[:, None]
    n = rel.shape[0]
    step = lambda other: np.where(other >= 0, 1000.0 * np.linalg.norm(
        rel[np.maximum(other, 0)] - rel, axis=-1).mean(-1), np.nan)
    back, fwd = step(prev), step(nxt)
    with np.errstate(invalid="ignore"):
        speed = np.fmax(back, fwd)
    both = (prev >= 0) & (nxt >= 0)
    acc = rel[np.maximum(nxt, 0)] - 2 * rel + rel[np.maximum(prev, 0)]
    accel = np.where(both, 1000.0 * np.linalg.norm(acc, axis=-1).mean(-1), np.nan)
    return speed.reshape(n), accel


def torso_normals(points: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(N, 3) unit torso normals of (N, K, 3) points (NaN where the format lacks a torso
    point or the points are degenerate)."""
    if not all(n in names for n in _TORSO):
        return np.full((points.shape[0], 3), np.nan)
    p = {n: np.asarray(points[:, list(names).index(n)], dtype=np.float64) for n in _TORSO}
    hips = 0.5 * (p["left_hip"] + p["right_hip"])
    up = 0.5 * (p["left_shoulder"] + p["right_shoulder"]) - hips
    normal = np.cross(p["left_hip"] - p["right_hip"], up)
    length = np.linalg.norm(normal, axis=-1, keepdims=True)
    return np.where(length > 1e-9, normal / np.where(length > 1e-9, length, 1.0), np.nan)


def facing_numbers(fitted: np.ndarray, names: Sequence[str], prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """(N,) the largest angle in degrees between a frame's torso normal and its neighbours'
    (NaN without a neighbour)."""
    normal = torso_normals(fitted, names)

    def angle(other):
        cos = (normal * normal[np.maximum(other, 0)]).sum(-1).clip(-1, 1)
        return np.where(other >= 0, np.degrees(np.arccos(cos)), np.nan)

    with np.errstate(invalid="ignore"):
        return np.fmax(angle(prev), angle(nxt))


def swap_margin(swap_energies: np.ndarray | None, n: int) -> np.ndarray:
    """(N,) ``log E2 - log E1`` of the two lowest finite labelling energies (inf: fewer than two).

    ``swap_energies``: (N, L) short-fit total energies of the left/right labellings
    (``hypotheses_arrays``; inf = not tried), or None (no hypotheses: all inf).
    """
    if swap_energies is None:
        return np.full(n, np.inf)
    e = np.asarray(swap_energies, dtype=np.float64)
    e = np.where(np.isfinite(e), np.log(np.maximum(e, 1e-12)), np.inf)
    e = np.sort(e, axis=1)
    if e.shape[1] < 2:
        return np.full(n, np.inf)
    with np.errstate(invalid="ignore"):
        margin = e[:, 1] - e[:, 0]
    return np.where(np.isfinite(e[:, 1]), margin, np.inf)


# ---------------------------------------------------------------- flags

def _at_most(value: np.ndarray, limit: float | None) -> np.ndarray:
    """value <= limit, True where the value is NaN (nothing to judge) or the check is off."""
    if limit is None:
        return np.ones(len(value), dtype=bool)
    return ~(np.asarray(value) > limit)


def combine_flags(arrays: Mapping[str, np.ndarray], no_evidence: np.ndarray, nan: np.ndarray) -> np.ndarray:
    """(N,) ``quality_ok``: every ``quality_*_ok`` flag present in ``arrays``, evidence, no NaN rollback."""
    ok = ~np.asarray(no_evidence, bool) & ~np.asarray(nan, bool)
    for name in _FLAG_NAMES:
        if name in arrays:
            ok = ok & np.asarray(arrays[name], bool)
    return ok


def _track_checks(fitted, names, track_ids, frame_numbers, settings) -> dict[str, np.ndarray]:
    hips = (list(names).index("left_hip"), list(names).index("right_hip"))
    prev, nxt = track_neighbours(track_ids, frame_numbers, fitted.shape[0])
    speed, accel = motion_numbers(fitted, hips, prev, nxt)
    facing = facing_numbers(fitted, names, prev, nxt)
    return {"quality_joint_speed_mm": speed, "quality_joint_accel_mm": accel, "quality_facing_change_deg": facing,
            "quality_motion_ok": _at_most(speed, settings["max_joint_speed_mm"])
            & _at_most(accel, settings["max_joint_accel_mm"]),
            "quality_facing_ok": _at_most(facing, settings["max_facing_change_deg"])}


def quality_flags(observed: np.ndarray, fitted_2d: np.ndarray, energies: Mapping[str, np.ndarray],
                  no_evidence: np.ndarray, nan: np.ndarray, settings: Mapping[str, Any], *,
                  fitted_3d: np.ndarray | None = None, keypoint_names: Sequence[str] | None = None,
                  keypoints3d: np.ndarray | None = None, track_ids: Sequence[str] | None = None,
                  frame_numbers: Sequence[int] | None = None,
                  swap_energies: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-sample flags (see the module docstring).

    Args:
        observed: (N, K, 3) observed keypoints (pixels, confidence).
        fitted_2d: (N, K, 2) the fitted body's projected keypoints (pixels).
        energies: term key -> (N,) final weighted energy (``FitResult.energies``).
        no_evidence, nan: (N,) bool flags of the fit.
        settings: :func:`quality_settings` output.
        fitted_3d: (N, K, 3) the fitted body's keypoints (meters, camera frame) in the
            observations' format, named ``keypoint_names``; without them the 3D,
            motion and facing checks are skipped (not written).
        keypoints3d: (N, K, 4) the observations' 3D keypoints or None.
        track_ids, frame_numbers: the observations' (None: one track, rows in order).
        swap_energies: (N, L) the labellings' energies (``hypotheses_arrays``) or None.
    Returns:
        the raw numbers (N,) float (``reproj_err_crop_px``, ``quality_keypoints3d_err_mm``,
        ``quality_joint_speed_mm``, ``quality_joint_accel_mm``, ``quality_facing_change_deg``, ``quality_swap_margin``)
        and the bool flags ``quality_*_ok`` and ``quality_ok``.
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
    out = {"reproj_err_crop_px": err_crop, "quality_reprojection_ok": reproj_ok, "quality_prior_ok": prior_ok}
    names = list(keypoint_names or [])
    if fitted_3d is not None and "left_hip" in names and "right_hip" in names:
        hips = (names.index("left_hip"), names.index("right_hip"))
        e3d = keypoints3d_error_mm(fitted_3d, keypoints3d, hips, settings.get("keypoints3d_rotation") or "camera")
        out["quality_keypoints3d_err_mm"] = e3d
        out["quality_3d_ok"] = _at_most(e3d, settings["max_keypoints3d_mm"])
        out.update(_track_checks(fitted_3d, names, track_ids, frame_numbers, settings))
    margin = swap_margin(swap_energies, len(err))
    out["quality_swap_margin"] = margin
    limit = settings["min_swap_margin"]
    out["quality_swap_ok"] = np.ones(len(err), bool) if limit is None else ~(margin < limit)
    out["quality_ok"] = combine_flags(out, no_evidence, nan)
    return out


def track_quality(model, observations, arrays: Mapping[str, np.ndarray],
                  settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The track checks (motion, facing) and ``quality_ok`` recomputed on the assembled arrays
    of all N frames, for fits run in batches that cut tracks (per-frame recipes).

    Args:
        model: the fitted body model.
        observations: the N observations (their ``track_ids`` and ``frame_numbers``).
        arrays: the assembled per-frame arrays (``global_orient``, ``body_pose``,
            ``betas``, ``transl``, ``no_evidence``, ``nan`` and the flags of
            :func:`quality_flags`).
        settings: :func:`quality_settings` output.
    Returns:
        ``quality_joint_speed_mm``, ``quality_joint_accel_mm``, ``quality_facing_change_deg``,
        ``quality_motion_ok``, ``quality_facing_ok`` and ``quality_ok`` to update
        ``arrays`` with (empty when the format has no hips).
    """
    import torch

    from fitkit.body.keypoint_formats import get_format

    names = list(get_format(observations.keypoint_format).names)
    if "left_hip" not in names or "right_hip" not in names:
        return {}
    p = {k: torch.as_tensor(np.asarray(arrays[k]), dtype=model.dtype, device=model.device)
         for k in ("global_orient", "body_pose", "betas", "transl")}
    with torch.no_grad():
        kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"],
                   keypoints=observations.keypoint_format).keypoints
    out = _track_checks(kp.double().cpu().numpy(), names, observations.track_ids,
                        observations.frame_numbers, settings)
    merged = {**dict(arrays), **out}
    out["quality_ok"] = combine_flags(merged, arrays["no_evidence"], arrays["nan"])
    return out
