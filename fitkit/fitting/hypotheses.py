"""Facing and left/right hypotheses: a layer above :func:`fitkit.fitting.engine.fit`.

A monocular fit cannot tell from 2D keypoints alone whether a person faces
the camera or turns their back to it, and detectors sometimes swap the left
and right labels of a person's limbs for a run of frames. A local solver
started on the wrong side stays there. :func:`fit_with_hypotheses` tries the
alternatives before the full fit, when the recipe has a ``hypotheses:``
section (checked by :func:`fitkit.fitting.recipe_schema.check_hypotheses`)::

    hypotheses:
      yaw: [0, 90, 180, 270]   # degrees about the body's own vertical axis, applied to the start
      smplr: auto              # auto | true | false: the SMPLR start (from keypoints3d) as one more
      stages: 2                # the recipe's first stages make the short fit of each hypothesis
      iterations: 15           # at most this many solver iterations per stage there (null: as the recipe)
      start_margin: 0.05       # another start must lower the log energy by this much to replace the recipe's
      yaw_switch_cost: null    # null: one start per track; a number: Viterbi over frames on log(1 + energy),
                               # this cost per switch
      keep_start: null         # meters: frames whose fit disagrees more with keypoints3d than the start go back
      swap: {upper: true, lower: true, switch_cost: 0.5, swapped_cost: 0.1, facing_cost: 0.0,
             cue_facing_cost: 0.0}   # or false

1. **Starts.** The recipe's ``init`` gives the start (its ``global_orient``
   R). Yaw hypothesis j turns the body by angle a_j about its own vertical
   (y) axis: R_j = R R_y(a_j), the rest of the start unchanged. With
   ``smplr`` (``auto``: when the observations have ``keypoints3d`` and the
   recipe's own start is not SMPLR already) SMPLR's start is one more
   hypothesis. All H hypotheses of all N frames are stacked into one batch of
   H*N rows (each hypothesis a track of its own, so sequence stages see whole
   tracks) and fitted with the recipe's first ``stages`` stages, their
   iterations capped at ``iterations``. The per-frame total energy E[h, n]
   (the engine's ``energies['total']``, under the last short stage's
   weights) then picks one hypothesis per track: the smallest sum over the
   track's frames, where a hypothesis other than the recipe's own start (yaw
   0) must beat it by ``start_margin`` in log units (0.05, ~5%: near-ties keep
   the start); or, with ``yaw_switch_cost``, a Viterbi path over each run of
   consecutive frames (a person who turns around) on log(1 + E[h, n]) with
   that cost per change of hypothesis.
2. **Labels.** From the chosen starts, the labellings "upper body swapped",
   "lower body swapped" and "both" (left/right pairs of the keypoint format,
   :func:`swap_permutations`; ``keypoints3d`` are swapped with the 2D
   keypoints, as both come from the same detection) get the same short fit
   (stacked again). A Viterbi over each run of consecutive frames picks a
   labelling per frame, with cost log(1 + E[l, n]) + ``swapped_cost`` (a
   swapped labelling must lower the energy by a factor exp(swapped_cost) to
   win a frame), ``switch_cost`` per flag changed between consecutive
   frames and ``facing_cost`` * (1 - cos a) / 2 for the angle a between the
   forward directions of the two frames' short fits (a fit that turns round
   from one frame to the next: a swap of all labels and a body turned by 180
   degrees explain the same 2D keypoints, only continuity tells them apart);
   in log units, so the costs do not depend on the recipe's weights.
   ``cue_facing_cost`` * (1 - cos a') / 2 does the same with the angle a'
   between the torso normals of the two frames' relabelled ``keypoints3d``
   (:func:`cue_facings`): the detector's own 3D torso turning round from one
   frame to the next, which a full swap of its labels does and a person
   rarely does in 1/60 s; steadier than the short fits' facing.
3. **Full fit.** :func:`fitkit.fitting.engine.fit` runs the whole recipe once
   more, from the chosen start (the start, not its short fit) on the chosen
   labelling; a relabelled frame starts from the start made from its labels.
4. **Keep the start** (``keep_start: <meters>``, null: off). Per run of
   consecutive frames of a track, the fit's and the start's mean
   disagreement with the (relabelled) ``keypoints3d`` after a similarity
   alignment per frame (:func:`cue_disagreement`) are compared; where the
   fit's is larger by more than that margin, the run's ``global_orient`` and
   ``body_pose`` go back to the start's (``info['keep_start']``, (N,) bool;
   per frame this was measured on the dev set and made the fits worse: it
   broke their smoothness). Refining must not take the pose away from the cue it started
   from; the check reads only the observations.

What was chosen is in ``FitResult.info['hypotheses']`` and, as the arrays
meant for ``result.npz``, in :func:`hypotheses_arrays`. Without a
``hypotheses:`` section :func:`fit_with_hypotheses` is :func:`engine.fit`.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.fitting import engine
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.recipe import Recipe
from fitkit.fitting.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from fitkit.fitting.sequence import split_segments
from fitkit.init import InitError, initial_params

__all__ = ["fit_with_hypotheses", "hypotheses_arrays", "swap_permutations", "swap_labels", "yaw_orient",
           "viterbi", "cue_facings", "cue_disagreement", "LABELLINGS", "LOWER_BODY_WORDS"]

log = logging.getLogger(__name__)

#: (swap upper, swap lower) of the labellings, in the order of ``info['hypotheses']['swap_energies']``.
LABELLINGS = ((False, False), (True, False), (False, True), (True, True))
#: a keypoint whose name holds one of these words belongs to the lower body (the rest: upper body and face)
LOWER_BODY_WORDS = ("hip", "knee", "ankle", "heel", "foot", "toe")
#: the terms that read dense cues; other terms never need them, so the stacked short fits leave them out
_DENSE_TERMS = {"vertex_flow", "photometric_flow", "densepose", "displacements"}


def _mirror_name(name: str) -> str | None:
    parts = name.split("_")
    swapped = ["right" if p == "left" else "left" if p == "right" else p for p in parts]
    return "_".join(swapped) if swapped != parts else None


def swap_permutations(keypoint_format: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) long permutations that swap the left/right pairs of the upper and of the lower body.

    Pairs are the names that differ by ``left`` <-> ``right`` (``left_wrist`` /
    ``right_wrist``, BlazePose's ``mouth_left`` / ``mouth_right``); the lower body
    is the keypoints named with a word of :data:`LOWER_BODY_WORDS` (hips down),
    the upper body everything else (face included). Unpaired keypoints (nose,
    neck, mid_hip) map to themselves.
    """
    names = get_format(keypoint_format).names
    lookup = {n: i for i, n in enumerate(names)}
    upper, lower = list(range(len(names))), list(range(len(names)))
    for i, n in enumerate(names):
        other = _mirror_name(n)
        if other is None or other not in lookup:
            continue
        target = lower if any(w in n for w in LOWER_BODY_WORDS) else upper
        target[i] = lookup[other]
    return torch.tensor(upper), torch.tensor(lower)


def swap_labels(observations, swap_upper, swap_lower):
    """The observations with the left/right labels swapped on the flagged frames.

    Args:
        observations: N frames.
        swap_upper, swap_lower: (N,) bool (tensor, array or list).
    Returns:
        observations whose ``keypoints`` and ``keypoints3d`` rows are permuted by
        :func:`swap_permutations` where flagged; everything else is shared.
    """
    obs = observations
    dev = obs.keypoints.device
    up, low = (p.to(dev) for p in swap_permutations(obs.keypoint_format))
    su = torch.as_tensor(np.asarray(swap_upper, dtype=bool), device=dev)[:, None]
    sl = torch.as_tensor(np.asarray(swap_lower, dtype=bool), device=dev)[:, None]
    K = up.shape[0]
    idx = torch.arange(K, device=dev).expand(len(obs), K)
    idx = torch.where(su, up[idx], idx)
    idx = torch.where(sl, low[idx], idx)  # the two groups are disjoint, so the order does not matter

    def permute(t):
        return None if t is None else torch.gather(t, 1, idx[..., None].expand(-1, -1, t.shape[-1]))

    return dataclasses.replace(obs, keypoints=permute(obs.keypoints), keypoints3d=permute(obs.keypoints3d))


def as_fitted(observations, swap_upper, swap_lower):
    """The observations with the left/right labels a fit chose (:func:`swap_labels`), or the same
    object when no frame was swapped. ``swap_upper``, ``swap_lower``: (N,) bool."""
    if not (np.any(swap_upper) or np.any(swap_lower)):
        return observations
    return swap_labels(observations, swap_upper, swap_lower)


def yaw_orient(global_orient: torch.Tensor, degrees: float) -> torch.Tensor:
    """(N, 3) axis-angle ``R R_y(degrees)``: each body turned about its own vertical (y) axis."""
    a = math.radians(float(degrees))
    c, s = math.cos(a), math.sin(a)
    Ry = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=global_orient.dtype,
                      device=global_orient.device)
    return matrix_to_axis_angle(axis_angle_to_matrix(global_orient) @ Ry)


def viterbi(costs: np.ndarray, switch: np.ndarray) -> np.ndarray:
    """The state path of least total cost.

    Args:
        costs: (T, S) cost of state s at step t (inf allowed, not NaN).
        switch: (S, S) cost of going from state i at t to state j at t+1, or
            (T-1, S, S) such costs per step.
    Returns:
        (T,) int64 states; ties go to the lower state index.
    """
    T, S = costs.shape
    total = costs[0].astype(np.float64).copy()
    back = np.zeros((T, S), dtype=np.int64)
    for t in range(1, T):
        step = total[:, None] + (switch[t - 1] if switch.ndim == 3 else switch)  # (from, to)
        back[t] = np.argmin(step, axis=0)
        total = step[back[t], np.arange(S)] + costs[t]
    path = np.zeros(T, dtype=np.int64)
    path[-1] = int(np.argmin(total))
    for t in range(T - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def _stack(obs, H: int, keep_dense: bool):
    """H copies of the N frames as H*N rows (copy-major), each copy its own tracks."""
    N = len(obs)
    tracks = obs.track_ids or ["0"] * N
    numbers = obs.time_indices()

    def rep(t):
        return t.repeat(H, *[1] * (t.dim() - 1))

    changes = {}
    for f in dataclasses.fields(obs):  # every per-frame tensor (keypoints, intrinsics, keypoints3d, ...)
        value = getattr(obs, f.name)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == N:
            changes[f.name] = rep(value)
    changes.update(
        frame_ids=[f"{f}~h{h}" for h in range(H) for f in obs.frame_ids],
        track_ids=[f"{t}~h{h}" for h in range(H) for t in tracks],
        frame_numbers=[int(v) for _ in range(H) for v in numbers],
        image_paths=None if obs.image_paths is None else list(obs.image_paths) * H,
        dense={k: rep(v) for k, v in obs.dense.items()} if keep_dense and obs.dense else None)
    return dataclasses.replace(obs, **changes)


def cue_facings(obs) -> np.ndarray:
    """(N, 6) the observations' ``keypoints3d`` torso normals, camera axes: (left_hip - right_hip) x up
    and (left_shoulder - right_shoulder) x up (up: shoulder mid-point - hip mid-point), each unit
    length / sqrt(2), so the dot product of two rows is the mean cosine of the two normals; zeros where a
    torso point is unobserved (confidence 0 or not finite) or has no extent. Swapping the lower (upper)
    body's labels reverses the first (second); the detector's torso turning round between two frames
    is a sign of such a swap."""
    N = len(obs)
    if obs.keypoints3d is None:
        return np.zeros((N, 3))
    names = get_format(obs.keypoint_format).names
    k3 = obs.keypoints3d.detach().cpu().double().numpy()
    idx = [names.index(n) for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")]
    pts = k3[:, idx, :3]
    seen = np.isfinite(k3[:, idx]).all(-1).all(-1) & (k3[:, idx, 3] > 0).all(-1)
    up = 0.5 * (pts[:, 2] + pts[:, 3]) - 0.5 * (pts[:, 0] + pts[:, 1])
    out = []
    for left, right in ((0, 1), (2, 3)):  # the hips' normal, the shoulders' normal
        n = np.cross(pts[:, left] - pts[:, right], up)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        ok = seen & (norm[:, 0] > 1e-9)
        out.append(np.where(ok[:, None], n / np.where(ok[:, None], norm, 1.0), 0.0) / math.sqrt(2.0))
    return np.concatenate(out, axis=1)


def _short_recipe(recipe: Recipe, spec: Mapping[str, Any]) -> Recipe:
    cap = spec["iterations"]
    stages = []
    for st in recipe.stages[:spec["stages"]]:
        solver = dict(st.solver)
        if cap is not None:
            solver["iterations"] = min(int(solver.get("iterations", cap)), int(cap))
        stages.append(dataclasses.replace(st, solver=solver))
    return dataclasses.replace(recipe, name=f"{recipe.name} (hypotheses)", stages=stages,
                               init={"type": "file", "transl": recipe.init.get("transl", "auto")}, hypotheses={})


def _short_fit(model, obs, recipe, init, H: int, N: int, device, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Run the short recipe on H*N stacked rows: (H, N) total energies (inf where not finite)
    and (H, N, 3) the fitted bodies' forward directions (their z axis, camera frame)."""
    res = engine.fit(model, obs, recipe, init, device=device, dtype=dtype)
    e = res.energies["total"].detach().cpu().double().numpy().reshape(H, N)
    fwd = axis_angle_to_matrix(res.params["global_orient"].detach())[:, :, 2]
    return np.where(np.isfinite(e), e, np.inf), fwd.cpu().double().numpy().reshape(H, N, 3)


def _energies(model, obs, recipe, starts: Sequence[Mapping[str, torch.Tensor]], keep_dense: bool,
              device, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(H, N) energies and (H, N, 3) facings of the short fits from H starts (each smplx-named (N, ...))."""
    H, N = len(starts), len(obs)
    init = {k: torch.cat([s[k] for s in starts]) for k in starts[0]}
    return _short_fit(model, _stack(obs, H, keep_dense), recipe, init, H, N, device, dtype)


def _per_track_choice(obs, energies: np.ndarray, switch_cost: float | None, margin: float,
                      home: int | None) -> np.ndarray:
    """(N,) hypothesis per frame from (H, N) energies: per track, or a Viterbi per segment.
    Hypotheses other than ``home`` (the recipe's own start; None: no such hypothesis) pay
    ``margin`` in log-energy units."""
    H, N = energies.shape
    extra = np.full(H, float(margin) if home is not None else 0.0)
    if home is not None:
        extra[home] = 0.0
    choice = np.zeros(N, dtype=np.int64)
    if switch_cost is None:
        tracks = obs.track_ids or [""] * N
        for t in dict.fromkeys(tracks):
            rows = np.array([i for i, tt in enumerate(tracks) if tt == t])
            with np.errstate(divide="ignore"):
                total = np.log(energies[:, rows].sum(axis=1)) + extra
            choice[rows] = int(np.argmin(np.where(np.isnan(total), np.inf, total)))
        return choice
    switch = np.full((H, H), float(switch_cost))
    np.fill_diagonal(switch, 0.0)
    costs = np.log1p(np.maximum(energies, 0.0)) + extra[:, None]  # log units, as for the labels
    for seg in split_segments(obs):
        rows = np.array(seg.rows)
        choice[rows] = viterbi(costs[:, rows].T, switch)
    return choice


def _starts(model, obs, recipe: Recipe, init, spec, device, dtype, quiet: bool = False):
    """(names, yaw degrees, starts, init_info): the hypotheses' starting parameters
    (``quiet``: no log lines, for the relabelled observations)."""
    info_log = (lambda *a: None) if quiet else log.info
    N = len(obs)
    camera = build_fit_camera(recipe.camera, obs, dtype=dtype, device=device)
    base, init_info = initial_params(recipe.init, model, obs, camera, init, source=recipe.source)
    kind = init_info["type"]
    if kind == "smplr":
        info_log("%s: the SMPLR start reads %s", obs.source, "keypoints3d" if obs.keypoints3d is not None
                 else "the 2D keypoints, lifted (no keypoints3d in the observations)")
    base, has_transl = engine.prepare_init(base, model, N, device=device, dtype=dtype,
                                           source="init" if kind == "file" else f"init.type {kind}")
    keys = ["global_orient", "body_pose", "betas"] + (["transl"] if has_transl else [])
    base = {k: base[k] for k in keys}
    names, yaws, starts = [], [], []
    for a in spec["yaw"]:
        names.append(f"yaw{float(a):g}")
        yaws.append(float(a))
        starts.append(dict(base, global_orient=yaw_orient(base["global_orient"], a)))
    want = spec["smplr"]
    if want == "auto":
        want = obs.keypoints3d is not None and kind != "smplr"
    if want:
        try:
            smplr, info = initial_params({"type": "smplr"}, model, obs, camera, None, source=recipe.source)
        except InitError as exc:
            if spec["smplr"] != "auto":
                raise
            log.warning("hypotheses: no SMPLR start (%s)", exc)
        else:
            info_log("%s: the SMPLR hypothesis reads %s (%d frame(s) fell back to the mean pose)", obs.source,
                     "keypoints3d" if obs.keypoints3d is not None else "the 2D keypoints, lifted",
                     len(info["fallback_rows"]))
            smplr, _ = engine.prepare_init(smplr, model, N, device=device, dtype=dtype, source="init.type smplr")
            names.append("smplr")
            yaws.append(0.0)
            starts.append(dict(base, **{k: smplr[k] for k in ("global_orient", "body_pose", "betas")}))
    return names, yaws, starts, init_info


def fit_with_hypotheses(model, observations, recipe: Recipe, init: Mapping[str, Any] | None = None,
                        **fit_kwargs) -> engine.FitResult:
    """Fit like :func:`fitkit.fitting.engine.fit`, trying the recipe's facing and
    left/right hypotheses first (module docstring).

    Args:
        model, observations, recipe, init: as for :func:`engine.fit`.
        fit_kwargs: passed to the final :func:`engine.fit` (``device``, ``dtype``,
            ``progress``, ``trace``, ``init_source``); the short fits use ``device``
            and ``dtype`` only.
    Returns:
        the final fit; ``info['hypotheses']`` holds ``names`` (H str),
        ``yaw_deg`` (H floats), ``energies`` ((H, N) float64 numpy, the short
        fits' totals), ``yaw_index`` ((N,) int64), ``swap_upper`` / ``swap_lower``
        ((N,) bool), ``swap_energies`` ((4, N) float64 in :data:`LABELLINGS`
        order; inf where a labelling was not tried) and ``settings``.
    """
    spec = getattr(recipe, "hypotheses", None) or {}
    if not spec:
        return engine.fit(model, observations, recipe, init, **fit_kwargs)
    device = torch.device(fit_kwargs.get("device") or model.device)
    dtype = fit_kwargs.get("dtype") or model.dtype
    model = model.to(device=device, dtype=dtype)
    obs = observations.to(device=device, dtype=dtype)
    N = len(obs)
    short = _short_recipe(recipe, spec)
    used = {recipe.terms[k]["type"] for st in short.stages for k, w in st.terms.items() if w > 0}
    keep_dense = bool(used & _DENSE_TERMS)

    names, yaws, starts, init_info = _starts(model, obs, recipe, init, spec, device, dtype)
    energies, facings = _energies(model, obs, short, starts, keep_dense, device, dtype)
    home = next((i for i, (n, a) in enumerate(zip(names, yaws)) if n != "smplr" and a % 360.0 == 0.0), None)
    choice = _per_track_choice(obs, energies, spec["yaw_switch_cost"], spec["start_margin"], home)
    rows = torch.as_tensor(choice, device=device)
    pick = torch.arange(N, device=device)
    chosen = {k: torch.stack([s[k] for s in starts])[rows, pick] for k in starts[0]}
    log.info("hypotheses: starts %s chosen on %s frames", names,
             [int((choice == h).sum()) for h in range(len(names))])

    swap_upper = np.zeros(N, dtype=bool)
    swap_lower = np.zeros(N, dtype=bool)
    swap_energies = np.full((len(LABELLINGS), N), np.inf)
    swap_energies[0] = energies[choice, np.arange(N)]
    swap_facings = np.zeros((len(LABELLINGS), N, 3))
    swap_facings[0] = facings[choice, np.arange(N)]
    swap = spec["swap"]
    if swap:
        tried = [i for i, (u, lo) in enumerate(LABELLINGS)
                 if i > 0 and (swap["upper"] or not u) and (swap["lower"] or not lo)]
        if tried:
            relabelled = [swap_labels(obs, np.full(N, LABELLINGS[i][0]), np.full(N, LABELLINGS[i][1]))
                          for i in tried]
            # each labelling starts from the chosen hypothesis made from its own labels (SMPLR's
            # pose from swapped keypoints3d differs), not from the detector's labelling's start
            chosen_l = {}
            for i, o in zip(tried, relabelled):
                _, _, starts_l, _ = _starts(model, o, recipe, init, spec, device, dtype, quiet=True)
                chosen_l[i] = {k: torch.stack([st[k] for st in starts_l])[rows, pick] for k in starts_l[0]}
            swap_energies[tried], swap_facings[tried] = _relabelled_energies(
                model, relabelled, short, [chosen_l[i] for i in tried], keep_dense, device, dtype)
            flags = np.array(LABELLINGS, dtype=np.float64)
            changes = np.abs(flags[:, None, :] - flags[None, :, :]).sum(-1)  # flags changed between labellings
            switch = float(swap["switch_cost"]) * changes
            swapped = float(swap["swapped_cost"]) * (flags.sum(1) > 0)
            # log energies: the costs are ratios, the same for any scale of the recipe's weights
            costs = np.log1p(np.maximum(swap_energies, 0.0)) + swapped[:, None]
            cue = None
            if swap.get("cue_facing_cost", 0.0) > 0 and obs.keypoints3d is not None:
                cue = np.stack([cue_facings(swap_labels(obs, np.full(N, u), np.full(N, lo)))
                                for u, lo in LABELLINGS])  # (4, N, 6)
            labelling = np.zeros(N, dtype=np.int64)
            for seg in split_segments(obs):
                r = np.array(seg.rows)
                # a labelling whose fitted body turns round between consecutive frames pays for it:
                # a full swap and a turned body explain the same 2D keypoints, continuity does not
                f = swap_facings[:, r]  # (4, T, 3)
                cos = np.einsum("itk,jtk->tij", f[:, :-1], f[:, 1:])  # (T-1, from, to)
                step = switch[None] + float(swap["facing_cost"]) * (1.0 - cos) / 2.0
                if cue is not None:  # the same on the detector's own 3D torso, relabelled
                    g = cue[:, r]
                    cos_c = np.einsum("itk,jtk->tij", g[:, :-1], g[:, 1:])
                    step = step + float(swap["cue_facing_cost"]) * (1.0 - cos_c) / 2.0
                labelling[r] = viterbi(costs[:, r].T, step)
            swap_upper = flags[labelling, 0] > 0
            swap_lower = flags[labelling, 1] > 0
            # the full fit of a relabelled frame starts from the start made from its labels
            for i, c in chosen_l.items():
                sel = torch.as_tensor(labelling == i, device=device)
                if bool(sel.any()):
                    chosen = {k: torch.where(sel[:, None], c[k], chosen[k]) for k in chosen}
            log.info("hypotheses: left/right swapped on %d frame(s) (upper body) and %d (lower body)",
                     int(swap_upper.sum()), int(swap_lower.sum()))

    final_obs = swap_labels(observations, swap_upper, swap_lower) if (swap_upper.any() or swap_lower.any()) \
        else observations
    final = dataclasses.replace(recipe, init={"type": "file", "transl": recipe.init.get("transl", "auto")})
    res = engine.fit(model, final_obs, final, chosen, **fit_kwargs)
    if spec.get("keep_start") is not None:
        kept = _keep_start(model, res, chosen, final_obs.to(device=device, dtype=dtype), float(spec["keep_start"]))
        res.info["keep_start"] = kept
    res.info["init"] = dict(init_info, hypotheses=True)
    res.info["hypotheses"] = {
        "names": names, "yaw_deg": yaws, "energies": energies, "yaw_index": choice,
        "swap_upper": swap_upper, "swap_lower": swap_lower, "swap_energies": swap_energies,
        "settings": dict(spec)}
    return res


def _similarity_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between (K, 3) points ``a`` and ``b`` after the best similarity transform of a onto b."""
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, sv, vt = np.linalg.svd(a0.T @ b0)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    fix = np.array([1.0, 1.0, d])
    r = (u * fix) @ vt
    scale = (sv * fix).sum() / max((a0 * a0).sum(), 1e-12)
    return float(np.linalg.norm(scale * a0 @ r - b0, axis=-1).mean())


def cue_disagreement(model, params: Mapping[str, torch.Tensor], obs) -> np.ndarray:
    """(N,) per frame, the mean distance (meters) between the body's keypoints and the observed
    ``keypoints3d`` (confidence > 0) after the best similarity transform (rotation, scale,
    translation); nan where fewer than 4 points are observed or there are no ``keypoints3d``."""
    N = len(obs)
    if obs.keypoints3d is None:
        return np.full(N, np.nan)
    with torch.no_grad():
        out = model(params["global_orient"], params["body_pose"], params["betas"], None,
                    keypoints=obs.keypoint_format, validate=False)
    pts = out.keypoints.detach().cpu().double().numpy()
    k3 = obs.keypoints3d.detach().cpu().double().numpy()
    err = np.full(N, np.nan)
    for n in range(N):
        use = np.isfinite(k3[n]).all(-1) & (k3[n, :, 3] > 0)
        if use.sum() >= 4:
            err[n] = _similarity_error(pts[n, use], k3[n, use, :3])
    return err


def _keep_start(model, res, start: Mapping[str, torch.Tensor], obs, margin: float) -> np.ndarray:
    """Per run of consecutive frames of a track: where the fit's mean disagreement with the observed
    ``keypoints3d`` (:func:`cue_disagreement`) exceeds the start's by more than ``margin`` meters, put the
    start's ``global_orient`` and ``body_pose`` back into ``res.params`` for the whole run (translation and
    shape stay the fit's; a whole run, so the motion stays smooth). Returns the (N,) bool frames kept at
    the start."""
    fit_err = cue_disagreement(model, res.params, obs)
    start_err = cue_disagreement(model, dict(start, betas=res.params["betas"]), obs)
    kept = np.zeros(len(obs), dtype=bool)
    for seg in split_segments(obs):
        r = np.array(seg.rows)
        both = np.isfinite(fit_err[r]) & np.isfinite(start_err[r])
        if both.any() and fit_err[r][both].mean() - start_err[r][both].mean() > margin:
            kept[r] = True
    if kept.any():
        sel = torch.as_tensor(kept, device=res.params["body_pose"].device)[:, None]
        for k in ("global_orient", "body_pose"):
            res.params[k] = torch.where(sel, start[k].to(res.params[k]), res.params[k])
        log.info("hypotheses: %d frame(s) kept at the start (the fit disagreed more with keypoints3d)",
                 int(kept.sum()))
    return kept


def _relabelled_energies(model, parts, short, chosen, keep_dense, device, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(L, N) energies of the short fit on each of L relabelled observations from its start
    (``chosen[l]``, smplx-named (N, ...)), as one stacked batch of L*N rows."""
    L, N = len(parts), len(parts[0])
    base = _stack(parts[0], L, keep_dense)
    kps = torch.cat([p.keypoints for p in parts])
    k3 = None if parts[0].keypoints3d is None else torch.cat([p.keypoints3d for p in parts])
    stacked = dataclasses.replace(base, keypoints=kps, keypoints3d=k3)
    init = {k: torch.cat([c[k] for c in chosen]) for k in chosen[0]}
    return _short_fit(model, stacked, short, init, L, N, device, dtype)


def hypotheses_arrays(result: engine.FitResult) -> dict[str, np.ndarray]:
    """The per-frame arrays of ``result.info['hypotheses']`` to write into ``result.npz``
    (empty without hypotheses):

    - ``hypothesis_index`` (N,) int64: the chosen start, an index into ``hypothesis_names``;
    - ``hypothesis_yaw_deg`` (N,) float64: the yaw (degrees) that start applied;
    - ``hypothesis_smplr`` (N,) bool: the chosen start is SMPLR's;
    - ``swap_upper``, ``swap_lower`` (N,) bool: left/right labels swapped before the fit;
    - ``hypothesis_energies`` (N, H) float64 and ``swap_energies`` (N, 4) float64
      (inf: not tried), the short fits' total energies;
    - ``hypothesis_names`` (H,) unicode.
    """
    h = result.info.get("hypotheses")
    if not h:
        return {}
    idx = np.asarray(h["yaw_index"], dtype=np.int64)
    names = np.array(h["names"], dtype=str)
    return {"hypothesis_index": idx,
            "hypothesis_yaw_deg": np.asarray(h["yaw_deg"], dtype=np.float64)[idx],
            "hypothesis_smplr": names[idx] == "smplr",
            "swap_upper": np.asarray(h["swap_upper"], dtype=bool),
            "swap_lower": np.asarray(h["swap_lower"], dtype=bool),
            "hypothesis_energies": np.ascontiguousarray(np.asarray(h["energies"], dtype=np.float64).T),
            "swap_energies": np.ascontiguousarray(np.asarray(h["swap_energies"], dtype=np.float64).T),
            "hypothesis_names": names}
