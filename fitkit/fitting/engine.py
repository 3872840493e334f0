"""Run a recipe: initialise, run its stages, collect per-sample results.

Observations -> initial parameters -> for each stage: terms + solver on the
packed free parameters -> :class:`FitResult` (smplx-named parameters, camera,
final per-term energies, per-sample flags and iteration counts).

Per-sample flags (also documented in docs/fitting.md):

- ``no_evidence``: no data term had a usable observation for the sample
  (e.g. all keypoint confidences zero); its initialization is passed through
  unchanged and no solver touches it.
- ``nan``: its energy became non-finite in some stage (NaN parameters,
  NaN-producing term); it was rolled back to its best iterate and left there
  for the remaining stages.
- ``converged``: in the last stage it ran, its solver's convergence test
  passed on a finite energy lower than the one the stage started from (False:
  stopped by the iteration or time limit, or stopped without improving), and
  its fitted keypoints are not further from the observed ones than
  :func:`keypoints_within_bound` allows (mean distance over the keypoints
  with confidence > 0 at most the person's box, 1.2 x the longest side of
  their bounding box, and at most the image diagonal). A ``nan`` sample is
  never ``converged``.

In a sequence stage (``sequence: true``, :mod:`fitkit.fitting.sequence`) the
solver's samples are chunks of frames; a chunk runs when any of its frames has
evidence and is not ``nan``, so frames without evidence inside it are filled
in by the temporal terms (they keep their ``no_evidence`` flag). A frame is
``nan`` when any chunk holding it was, ``converged`` when all were, and its
iteration count is the largest of its chunks'.

A stage whose solver has ``iterations: 0`` only evaluates: no solver step,
its start is kept exactly, its iteration count is 0 and it changes no flag
(the energies reported after it are those of its start).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from fitkit.camera import facing_camera_orient, project
from fitkit.fitting.camera_init import torso_pairs_for, translation_from_torso
from fitkit.errors import ModelFileError, ParameterError
from fitkit.fitting.camera_setup import FitCamera, build_fit_camera, masked_box
from fitkit.fitting.objective import Objective, WeightedTerm
from fitkit.fitting.params import PARAM_NAMES, ParamLayout
from fitkit.fitting.recipe import Recipe, RecipeError
from fitkit.fitting.sequence import SequenceLayout, SequenceObjective, plan_chunks, track_mean_betas
from fitkit.init import InitError, initial_params
from fitkit.solvers import SolveResult, make_solver
from fitkit.terms.base import LATENT_KEY, SetupContext, get_term_class

__all__ = ["FitResult", "fit", "prepare_init", "torso_translation", "keypoints_within_bound", "InitError"]

#: ``progress(stage_name, iteration, num_running, num_samples)``
StageProgress = Callable[[str, int, int, int], None]
#: ``trace(stage_name, iteration, params)``: smplx-named (N, ...) best parameters so far
Trace = Callable[[str, int, dict], None]


class _StageCallback:
    """The solver callback of one stage: progress, and the best iterate decoded for ``trace``.

    ``decode(x)``: the stage's packed (S, D) vector -> smplx-named (N, ...) parameters.
    """

    def __init__(self, name: str, progress, trace, decode):
        self.name, self.progress, self.trace, self.decode = name, progress, trace, decode
        if trace is not None:
            self.best = self._best

    def __call__(self, iteration: int, running: int, n: int) -> None:
        if self.progress is not None:
            self.progress(self.name, iteration, running, n)

    def _best(self, iteration: int, best_x: torch.Tensor) -> None:
        with torch.no_grad():
            decoded = self.decode(best_x.detach())
        decoded.pop(LATENT_KEY, None)
        self.trace(self.name, iteration, decoded)


@dataclass
class FitResult:
    """Outcome of :func:`fit` for N samples (tensors on the fit's device).

    Attributes:
        params: smplx-named parameters (N, ...) in the camera frame of ``K``.
        K: (N, 3, 3) the intrinsics the fit projected with (full-image pixels).
        image_size: (N, 2).
        energies: recipe term key -> (N,) weighted energy at the end, under the
            last stage's weights; ``'total'`` their sum.
        converged, nan, no_evidence: (N,) bool per-sample flags (module doc).
        iterations: (N, S) iterations per stage.
        stage_names: the S stage names.
        stage_seconds: wall time per stage.
        info: ``recipe``, ``camera_mode``, ``init`` (``type`` and ``fallback_rows``,
            the frames a neural initializer could not read), ``pose_latent`` (when a latent pose was
            optimized) and, after sequence stages, ``sequence`` (tracks, segments,
            chunks, consensus passes, pairs without a temporal cue per term).
        transl_from_torso: (N,) bool, the translation was initialised from the torso keypoints.
    """

    params: dict[str, torch.Tensor]
    K: torch.Tensor
    image_size: torch.Tensor
    energies: dict[str, torch.Tensor]
    converged: torch.Tensor
    nan: torch.Tensor
    no_evidence: torch.Tensor
    iterations: torch.Tensor
    stage_names: list[str]
    stage_seconds: list[float]
    transl_from_torso: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def to_numpy(self) -> dict[str, np.ndarray]:
        out = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        out.update(intrinsics=self.K.cpu().numpy(), image_size=self.image_size.cpu().numpy(),
                   converged=self.converged.cpu().numpy(), nan=self.nan.cpu().numpy(),
                   no_evidence=self.no_evidence.cpu().numpy(), iterations=self.iterations.cpu().numpy(),
                   transl_from_torso=self.transl_from_torso.cpu().numpy())
        for k, v in self.energies.items():
            out[f"energy_{k}"] = v.detach().cpu().numpy()
        return out


def prepare_init(init: Mapping[str, Any] | None, model, N: int, *, device, dtype,
                 source: str = "init") -> tuple[dict[str, torch.Tensor], bool]:
    """Complete and check smplx-named initial parameters.

    Missing ``global_orient`` faces the camera, missing ``body_pose``/``betas``
    are zero. ``betas`` with fewer columns than the model uses are zero-padded.

    Returns:
        (params, has_transl): params each (N, ...) on ``device``; whether the
        init gave a translation.
    """
    init = dict(init or {})
    widths = {"global_orient": 3, "body_pose": model.body_pose_dim, "transl": 3}
    out = {}
    for name in init:
        if name not in PARAM_NAMES:
            continue
        value = torch.as_tensor(np.asarray(init[name]), dtype=dtype, device=device)
        if value.ndim == 1:
            value = value[None].expand(N, -1)
        if value.ndim != 2 or value.shape[0] != N:
            raise InitError(f"{source}: field {name!r} has shape {tuple(value.shape)}, expected "
                            f"({N}, ...) -- one row per observed frame ({N} frames)")
        if name == "betas":
            if value.shape[1] > model.num_betas:
                raise InitError(f"{source}: field 'betas' has {value.shape[1]} columns but the model "
                                f"uses {model.num_betas}; set body.num_betas in the recipe")
            value = torch.nn.functional.pad(value, (0, model.num_betas - value.shape[1]))
        elif value.shape[1] != widths[name]:
            raise InitError(f"{source}: field {name!r} has shape {tuple(value.shape)}, expected ({N}, {widths[name]})")
        if not bool(torch.isfinite(value).all()):
            bad = torch.nonzero(~torch.isfinite(value).all(dim=1)).flatten()[:5].tolist()
            raise InitError(f"{source}: field {name!r} has NaN/inf values (rows {bad}...)")
        out[name] = value.contiguous()
    has_transl = "transl" in out
    out.setdefault("global_orient", facing_camera_orient(N, dtype=dtype, device=device))
    out.setdefault("body_pose", torch.zeros(N, model.body_pose_dim, dtype=dtype, device=device))
    out.setdefault("betas", torch.zeros(N, model.num_betas, dtype=dtype, device=device))
    out.setdefault("transl", torch.zeros(N, 3, dtype=dtype, device=device))
    return out, has_transl


def _retarget_translation(params, model, K_from, K_to):
    """Move the body so that its root projects to the same pixel under ``K_to`` and
    its image size is kept (depth scaled by the focal ratio)."""
    root = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                 validate=False).joints[:, 0]
    z = root[:, 2].clamp(min=1e-3)
    ratio = K_to[:, 0, 0] / K_from[:, 0, 0]
    u = K_from[:, 0, 0] * root[:, 0] / z + K_from[:, 0, 2]
    v = K_from[:, 1, 1] * root[:, 1] / z + K_from[:, 1, 2]
    z2 = z * ratio
    new_root = torch.stack([(u - K_to[:, 0, 2]) * z2 / K_to[:, 0, 0], (v - K_to[:, 1, 2]) * z2 / K_to[:, 1, 1], z2], -1)
    return params["transl"] + new_root - root


def torso_translation(params, model, observations, camera: FitCamera):
    """(N, 3) translations placing the posed body (``params`` without its translation)
    where its torso matches the observed torso keypoints, and (N,) bool: estimated."""
    fmt = observations.keypoint_format
    zero = torch.zeros_like(params["transl"])
    pts = model(params["global_orient"], params["body_pose"], params["betas"], zero,
                keypoints=fmt, validate=False).keypoints
    kps = observations.keypoints.to(pts)
    return translation_from_torso(pts, kps, camera.K, torso_pairs_for(fmt))


def fit(model, observations, recipe: Recipe, init: Mapping[str, Any] | None = None, *,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
        progress: StageProgress | None = None, init_source: str = "init",
        trace: Trace | None = None) -> FitResult:
    """Fit ``model`` to ``observations`` with ``recipe``.

    Args:
        model: :class:`fitkit.body.BodyModel` (moved to ``device``).
        observations: :class:`fitkit.io.observations.Observations` with N frames.
        recipe: :class:`fitkit.fitting.recipe.Recipe`.
        init: smplx-named arrays (N, ...) or None (see :func:`prepare_init`); a
            ``transl`` is in the camera frame of the observations' intrinsics
            (or the default full-image camera).
        device, dtype: default: the model's.
        progress: called after every solver iteration.
        trace: called after every solver iteration with the stage name, the
            iteration and the smplx-named best parameters of all N samples so
            far, and once more with each stage's result (e.g. to plot an error
            against iterations; each call costs a decode).
    """
    device = torch.device(device) if device is not None else model.device
    dtype = dtype or model.dtype
    model = model.to(device=device, dtype=dtype)
    obs = observations.to(device=device, dtype=dtype)
    N = len(obs)
    camera = build_fit_camera(recipe.camera, obs, dtype=dtype, device=device)
    init, init_info = initial_params(recipe.init, model, obs, camera, init, source=recipe.source)
    if init_info["type"] != "file":
        init_source = f"init.type {init_info['type']}"
    params, has_transl = prepare_init(init, model, N, device=device, dtype=dtype, source=init_source)

    mode = recipe.init.get("transl", "auto")
    if mode not in ("auto", "keep", "torso"):
        raise RecipeError(f"{recipe.source}: init.transl must be auto, keep or torso, got {mode!r}")
    from_torso = torch.zeros(N, dtype=torch.bool, device=device)
    with torch.no_grad():
        if mode == "torso" or (mode == "auto" and not has_transl):
            transl, ok = torso_translation(params, model, obs, camera)
            params["transl"] = transl
            from_torso = ok.to(device)
        elif camera.mode == "crop":
            K_full = build_fit_camera({"mode": "full"}, obs, dtype=dtype, device=device).K
            params["transl"] = _retarget_translation(params, model, K_full, camera.K)
    init_params = {k: v.clone() for k, v in params.items()}

    # one instance per term key, set up once on all N samples
    ctx = SetupContext(observations=obs, model=model, camera=camera, init=init_params,
                       device=device, dtype=dtype)
    used = {k for st in recipe.stages for k, w in st.terms.items() if w > 0}
    instances = {}
    for key in recipe.terms:
        if key not in used:
            continue
        kind, _, args = recipe.term_args(key)
        try:
            term = get_term_class(kind)(**args)
        except ModelFileError as exc:  # a missing or bad weight file: keep its type, name the key too
            exc.args = (f"{recipe.source}: terms.{key}: {exc}",)
            raise
        except (TypeError, ValueError) as exc:  # the constructor's own argument checks
            raise RecipeError(f"{recipe.source}: terms.{key}: {exc}") from None
        term.setup(ctx)
        instances[key] = term
    evidence = [t.evidence() for t in instances.values() if t.kind == "data"]
    evidence = [e for e in evidence if e is not None]
    has_evidence = torch.stack(evidence).any(dim=0) if evidence else torch.ones(N, dtype=torch.bool, device=device)
    no_evidence = ~has_evidence.to(device)

    widths = {"global_orient": 3, "body_pose": model.body_pose_dim, "betas": model.num_betas, "transl": 3}
    nan = torch.zeros(N, dtype=torch.bool, device=device)
    converged = torch.zeros(N, dtype=torch.bool, device=device)
    iterations = torch.zeros(N, len(recipe.stages), dtype=torch.long, device=device)
    seconds = []
    objective = None
    all_rows = torch.arange(N, device=device)
    carried = None  # (PoseLatent, (N, Dz) code) of the last stage that optimized a latent pose
    plan = None  # the chunks of the sequence stages, made at the first one
    seq_info: dict[str, Any] = {}
    x = None
    for s, stage in enumerate(recipe.stages):
        weighted = [WeightedTerm(k, instances[k], w) for k, w in stage.terms.items() if w > 0]
        latent = _stage_latent(weighted, stage, recipe.source, s)
        solver = make_solver(stage.solver)
        evaluate_only = int(solver.options.get("iterations", 1)) == 0  # keep the start, report its energies
        start = dict(params)
        if carried is not None and carried[0] is latent:
            start[LATENT_KEY] = carried[1]
        if stage.sequence:
            if solver.needs_jacobian:
                raise RecipeError(f"{recipe.source}: stages.{s}: solver {solver.name!r} cannot run a sequence "
                                  "stage (its frames are coupled and the Jacobian would be dense); use adam or lbfgs")
            if plan is None:
                plan = plan_chunks(obs, recipe.sequence["chunk"], recipe.sequence["overlap"], device=device)
                params["betas"] = start["betas"] = track_mean_betas(params["betas"], plan, has_evidence.to(device))
                seq_info = _sequence_info(plan, instances)
            layout = SequenceLayout(stage.free, widths, stage.rotation, latent, plan)
            objective = SequenceObjective(model, weighted, layout, params, init_params, camera)
            running = _chunks_running(plan, no_evidence | nan)
            cb = None if progress is None and trace is None else \
                _StageCallback(stage.name, progress, trace, lambda z, lay=layout, p=params: lay.to_frames(z, p))
            res = _solve(solver, objective, layout.encode(start), running, cb, evaluate_only)
            x = res.x.detach()
            with torch.no_grad():
                decoded = dict(start) if evaluate_only else layout.to_frames(x, params)
            chunk_iters, chunk_conv, chunk_nan, secs = res.iterations, res.converged, res.nan, res.seconds
            if "betas" in layout.free and not evaluate_only:
                decoded["betas"] = track_mean_betas(decoded["betas"], plan)
                again = running & plan.multi_chunk_tracks() & ~res.nan
                frame_free = [n for n in stage.free if n != "betas"]
                if frame_free and bool(again.any()):
                    # shape consensus: the chunks of split tracks fit again with the track's shape fixed
                    layout = SequenceLayout(frame_free, widths, stage.rotation, latent, plan)
                    fixed = {k: v for k, v in decoded.items() if k != LATENT_KEY}
                    objective = SequenceObjective(model, weighted, layout, fixed, init_params, camera)
                    cb = None if cb is None else _StageCallback(
                        stage.name, progress, trace, lambda z, lay=layout, p=fixed: lay.to_frames(z, p))
                    res = solver.run(objective, layout.encode(decoded), again, callback=cb)
                    x = res.x.detach()
                    with torch.no_grad():
                        decoded = layout.to_frames(x, fixed)
                    chunk_iters = chunk_iters + res.iterations
                    chunk_conv = torch.where(again, res.converged, chunk_conv)
                    chunk_nan = chunk_nan | res.nan
                    secs += res.seconds
                    seq_info["consensus_passes"] += 1
            stage_nan = plan.frame_chunk_any(chunk_nan)
            ran = plan.frame_chunk_any(running & (chunk_iters > 0))
            stage_conv = plan.frame_chunk_all(chunk_conv | ~running)
            stage_iters = plan.frame_chunk_max(chunk_iters)
        else:
            layout = ParamLayout(stage.free, widths, stage.rotation, latent=latent)
            if solver.needs_jacobian:
                _check_lm_stage(layout, weighted, stage, solver, recipe.source, s)
            objective = Objective(model, weighted, layout, params, init_params, camera)
            running = ~(no_evidence | nan)
            cb = None if progress is None and trace is None else \
                _StageCallback(stage.name, progress, trace, lambda z, lay=layout, p=params: lay.decode(z, p, all_rows))
            res = _solve(solver, objective, layout.encode(start, all_rows), running, cb, evaluate_only)
            x = res.x.detach()
            with torch.no_grad():
                decoded = dict(start) if evaluate_only else \
                    {k: v.detach() for k, v in layout.decode(x, params, all_rows).items()}
            stage_nan, stage_conv, stage_iters, secs = res.nan, res.converged, res.iterations, res.seconds
            ran = running & (res.iterations > 0)
        if LATENT_KEY in decoded:
            carried = (layout.latent, decoded.pop(LATENT_KEY))
        params = decoded
        if trace is not None:  # the stage's result (a solver may evaluate once more after its last step)
            trace(stage.name, int(stage_iters.max()), params)
        nan |= stage_nan
        converged = torch.where(ran, stage_conv, converged)
        iterations[:, s] = stage_iters
        seconds.append(secs)

    converged = converged & ~nan & keypoints_within_bound(model, params, obs, camera)
    if isinstance(objective, SequenceObjective):
        energies = objective.frame_energies(x)
    else:
        energies = objective.term_energies(x, all_rows)
    energies["total"] = sum(energies.values())
    info = {"recipe": recipe.name, "camera_mode": camera.mode, "init": init_info}
    if carried is not None:
        info[LATENT_KEY] = carried[1]
    if plan is not None:
        info["sequence"] = seq_info
    return FitResult(params=params, K=camera.K, image_size=camera.image_size, energies=energies,
                     converged=converged, nan=nan, no_evidence=no_evidence, iterations=iterations,
                     stage_names=[st.name for st in recipe.stages], stage_seconds=seconds,
                     transl_from_torso=from_torso, info=info)


@torch.no_grad()
def keypoints_within_bound(model, params, observations, camera: FitCamera) -> torch.Tensor:
    """(N,) bool: the fit is not grossly off its 2D keypoints (a condition of ``converged``).

    False where the mean pixel distance between the projected fitted keypoints
    and the observed ones (confidence > 0, finite coordinates) exceeds the
    person's box, ``max(1.2 x longest side of their bounding box, 1 px)``, or
    the image diagonal, whichever is smaller, or is not finite. True for
    frames without such a keypoint and when the model has no keypoint set of
    the observations' format.
    """
    kps = observations.keypoints
    used = (kps[..., 2] > 0) & torch.isfinite(kps[..., :2]).all(dim=-1)  # (N, K)
    N = kps.shape[0]
    ok = torch.ones(N, dtype=torch.bool, device=kps.device)
    if not bool(used.any()):
        return ok
    try:
        pts = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                    keypoints=observations.keypoint_format, validate=False).keypoints
    except ParameterError:
        return ok
    target = torch.where(used[..., None], kps[..., :2], torch.zeros_like(kps[..., :2]))
    dist = (project(pts, camera.K) - target).norm(dim=-1)
    count = used.sum(dim=1)
    err = torch.where(used, dist, torch.zeros_like(dist)).sum(dim=1) / count.clamp(min=1)
    _, side, _ = masked_box(kps[..., :2], used)
    bound = torch.minimum((1.2 * side).clamp(min=1.0), camera.image_size.to(err).norm(dim=1))
    return ok & ((count == 0) | (err <= bound))


def _solve(solver, objective, x0: torch.Tensor, running: torch.Tensor, callback, evaluate_only: bool) -> SolveResult:
    """``solver.run``, or for an evaluate-only stage (``iterations: 0``) no step at all:
    ``x0`` (S, D) back with its energies, zero iterations, nothing converged or flagged."""
    if not evaluate_only:
        return solver.run(objective, x0, running, callback=callback)
    S = x0.shape[0]
    with torch.no_grad():
        energy = objective.energy(x0, torch.arange(S, device=x0.device)).detach()
    none = torch.zeros(S, dtype=torch.bool, device=x0.device)
    return SolveResult(x=x0.detach(), energy=energy, iterations=torch.zeros(S, dtype=torch.long, device=x0.device),
                       converged=none, nan=none.clone(), seconds=0.0, stopped_by="iterations")


def _check_lm_stage(layout, weighted, stage, solver, source: str, s: int) -> None:
    why = None
    if stage.rotation != "axis_angle":
        why = "needs rotation: axis_angle"
    elif layout.latent is not None:
        why = "cannot optimize a latent pose (a prior in latent mode); use adam or lbfgs"
    elif not all(wt.term.least_squares for wt in weighted):
        why = (f"needs least-squares terms; {[wt.key for wt in weighted if not wt.term.least_squares]} "
               "define an energy only; use adam or lbfgs")
    if why:
        raise RecipeError(f"{source}: stages.{s}: solver {solver.name!r} {why}")


def _chunks_running(plan, stopped: torch.Tensor) -> torch.Tensor:
    """(C,) bool: chunks with at least one frame that is not ``stopped`` (N,)."""
    live = (~stopped).index_select(0, plan.frames.reshape(-1)).reshape(plan.frames.shape)
    return (live & plan.valid).any(dim=1)


def _sequence_info(plan, instances) -> dict[str, Any]:
    """What the sequence stages work on, for FitResult.info (and what is missing)."""
    last = torch.zeros(plan.num_frames, dtype=torch.bool)
    for seg in plan.segments:
        last[seg.rows[-1]] = True
    missing = {}
    for key, term in instances.items():
        ev = term.evidence() if term.kind == "data" and term.temporal else None
        if ev is not None:  # pairs (frame, next frame) the temporal cue does not cover
            missing[key] = int((~ev.cpu() & ~last).sum())
    return {"tracks": len(plan.tracks), "segments": len(plan.segments), "chunks": plan.num_chunks,
            "chunk_frames": int(plan.frames.shape[1]), "consensus_passes": 0, "pairs_without_cue": missing}


def _stage_latent(weighted, stage, source: str, s: int):
    """The pose latent the stage optimizes through: that of its (single) latent-mode term,
    or None when it has none or does not free ``body_pose``."""
    owners = [(wt.key, wt.term.latent()) for wt in weighted]
    owners = [(k, lat) for k, lat in owners if lat is not None]
    if len(owners) > 1:
        raise RecipeError(f"{source}: stages.{s}: terms {[k for k, _ in owners]} each reparameterize "
                          "body_pose by a latent; a stage can use one")
    if not owners or "body_pose" not in stage.free:
        return None
    return owners[0][1]
