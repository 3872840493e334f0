"""``fitkit demo --video``: fit a synthetic video per frame and as a sequence.

The video (:func:`fitkit.eval.video.make_synthetic_video`): the open body,
with a procedural texture over a static background, performs consecutive
frames of a held-out mocap clip; DIS optical flow is computed on the rendered
frames; the keypoints are noisy with dropouts and the initialization jitters
from frame to frame. It is fitted three ways:

- ``per-frame``: ``fitting_configs/demo.yaml`` (every frame alone);
- ``temporal``: ``fitting_configs/video_flow.yaml`` with its flow terms
  switched off (shared shape, smoothness terms);
- ``temporal + flow``: ``video_flow.yaml`` as shipped.

Reported per row (means over frames): MPJPE and PA-MPJPE (mm, 24 joints),
PVE (mm, pelvis-aligned vertices), the acceleration error (mm/frame^2,
seed 000's Eq. 12 against the truth), the 2D keypoint error (px) and the
spread of body height over the frames (max - min, mm; 0 by construction when
the shape is shared).
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import accel_error, err2d, mpjpe, pa_mpjpe, pve
from fitkit.eval.video import make_synthetic_video, overlay_video
from fitkit.fitting.engine import fit
from fitkit.fitting.recipe import load_recipe, recipe_from_dict
from fitkit.commands.progress import FitProgress, stage_iterations

log = logging.getLogger(__name__)

__all__ = ["run", "print_summary", "video_metrics", "body_heights", "FLOW_TERMS"]

#: Term types switched off for the ``temporal`` row.
FLOW_TERMS = ("vertex_flow", "photometric_flow")


def body_heights(model, betas: torch.Tensor) -> torch.Tensor:
    """(N,) height (m) of the body with shape ``betas`` (N, K) in the zero pose: the
    vertical extent of its mesh."""
    n = betas.shape[0]
    zeros = torch.zeros(n, 3, dtype=betas.dtype, device=betas.device)
    with torch.no_grad():
        v = model(zeros, torch.zeros(n, model.body_pose_dim, dtype=betas.dtype, device=betas.device), betas, zeros,
                  vertices="all").vertices
    return v[..., 1].amax(dim=1) - v[..., 1].amin(dim=1)


def video_metrics(model, params: dict, gt: dict, observations, K) -> dict:
    """Means over the frames of one sequence (see the module docstring)."""
    with torch.no_grad():
        out = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                    keypoints=observations.keypoint_format, vertices="all")
        ref = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all")
        e2d = err2d(project(out.keypoints, K), observations.keypoints.to(out.keypoints))
        heights = body_heights(model, params["betas"])
    return {
        "mpjpe": float(1000 * mpjpe(out.joints, ref.joints).mean()),
        "pa_mpjpe": float(1000 * pa_mpjpe(out.joints, ref.joints).mean()),
        "pve": float(1000 * pve(out.vertices, ref.vertices, out.joints[:, 0], ref.joints[:, 0]).mean()),
        "accel": float(1000 * accel_error(out.joints, ref.joints)),
        "err2d_px": float(e2d[torch.isfinite(e2d)].mean()),
        "height_spread_mm": float(1000 * (heights.max() - heights.min())),
    }


def _without_flow(recipe_name: str, overrides):
    """The recipe with its flow terms taken out of every stage."""
    recipe = load_recipe(recipe_name, overrides)
    data = copy.deepcopy(recipe.data)
    flow_keys = {k for k, spec in recipe.terms.items() if spec.get("type") in FLOW_TERMS}
    for st in data["stages"]:
        terms = st["terms"]
        st["terms"] = ([k for k in terms if k not in flow_keys] if isinstance(terms, list)
                       else {k: w for k, w in terms.items() if k not in flow_keys})
    data["name"] = f"{recipe.name} without flow"
    return recipe_from_dict(data, recipe.source)


def run(args) -> dict:
    torch.manual_seed(args.seed)
    model = load_body_model("open", num_betas=10)
    t0 = time.perf_counter()
    log.info("demo --video: rendering %d frames of the held-out clip '%s' (flow: %s)", args.frames, args.clip,
             args.flow)
    video = make_synthetic_video(model, clip=args.clip, frames=args.frames, noise_px=args.noise_px,
                                 dropout=args.dropout, seed=args.seed, flow=args.flow)
    setup = time.perf_counter() - t0
    obs, gt = video.observations, video.gt
    overrides = args.set or []
    runs = {"per-frame": load_recipe("demo", prior=args.prior),
            "temporal": _without_flow(args.video_recipe, overrides),
            "temporal + flow": load_recipe(args.video_recipe, overrides)}
    rows = {"init": video_metrics(model, video.init, gt, obs, video.K[None].expand(len(video), 3, 3))}
    results, seconds = {}, {}
    log.info("demo --video: made in %.1f s; fitting %d ways", setup, len(runs))
    progress = FitProgress([(name, stage_iterations(recipe)) for name, recipe in runs.items()],
                           enabled=not args.quiet, desc="demo --video")
    try:
        for i, (name, recipe) in enumerate(runs.items()):
            progress.begin(i)
            t = time.perf_counter()
            res = fit(model, obs, recipe, video.init, progress=progress.stage)
            seconds[name] = time.perf_counter() - t
            results[name] = res
            rows[name] = video_metrics(model, res.params, gt, obs, res.K)
            progress.end(f"{name} done in {seconds[name]:.1f} s")
            log.debug("phase %d/%d '%s': %.1f s, MPJPE %.1f mm", i + 1, len(runs), name, seconds[name],
                      rows[name]["mpjpe"])
    finally:
        progress.close()
    final = results["temporal + flow"]
    summary = {"clip": video.settings.get("clip", args.clip), "frames": len(video), "fps": video.fps,
               "flow": args.flow, "noise_px": args.noise_px, "dropout": args.dropout, "seed": args.seed,
               "recipe": args.video_recipe, "rows": rows, "seconds": seconds, "setup_seconds": setup,
               "sequence": final.info.get("sequence", {})}
    base, best = rows["per-frame"], rows["temporal + flow"]
    summary["accel_change"] = best["accel"] / base["accel"] - 1
    summary["mpjpe_change"] = best["mpjpe"] / base["mpjpe"] - 1
    if args.output:
        from fitkit.viz.video import side_by_side, write_video

        log.info("writing the overlay video")
        out_dir = Path(args.output)
        left = overlay_video(model, results["per-frame"].params, video.K, video.images)
        right = overlay_video(model, final.params, video.K, video.images)
        frames = side_by_side(video.images, left, right, labels=["input", "per-frame", "temporal + flow"])
        path = write_video(out_dir / f"video_demo.{args.format}", frames, fps=min(video.fps, 30.0))
        summary["files"] = [str(path)]
    return summary


def print_summary(s: dict) -> None:
    seq = s["sequence"]
    print(f"fitkit demo --video: {s['frames']} frames of the held-out clip '{s['clip']}' ({s['fps']:.0f} fps), "
          f"{s['noise_px']} px keypoint noise, {100 * s['dropout']:.0f}% dropped, flow: {s['flow']}")
    print(f"  sequence stages: {seq.get('tracks', 0)} track, {seq.get('chunks', 0)} chunks of "
          f"{seq.get('chunk_frames', 0)} frames, shape consensus passes {seq.get('consensus_passes', 0)}")
    head = (f"  {'':16s} {'MPJPE':>7s} {'PA-MPJPE':>9s} {'PVE':>7s} {'accel':>7s} {'2D px':>6s} "
            f"{'height spread':>14s} {'time s':>7s}")
    print(head)
    for name, m in s["rows"].items():
        t = s["seconds"].get(name)
        print(f"  {name:16s} {m['mpjpe']:7.1f} {m['pa_mpjpe']:9.1f} {m['pve']:7.1f} {m['accel']:7.1f} "
              f"{m['err2d_px']:6.2f} {m['height_spread_mm']:11.1f} mm {'' if t is None else f'{t:7.1f}'}")
    print(f"  (mm; accel in mm/frame^2.) temporal + flow vs per-frame: accel error {100 * s['accel_change']:+.0f}%, "
          f"MPJPE {100 * s['mpjpe_change']:+.1f}%")
    for f in s.get("files", []):
        print(f"  wrote {f}")
