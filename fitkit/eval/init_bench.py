"""How much a learned initializer helps: mean pose vs SMPLR vs DaNet, before and after a fit.

Held-out synthetic bodies (poses of the open pose data's *test* clips, never
seen by any shipped network) are seen by a full-image camera as

* body25 2D keypoints (``noise_px`` pixel noise, 10% dropped), which every
  fit uses;
* noisy 3D body25 keypoints (:func:`fitkit.init.smplr_train.corrupt`:
  Gaussian, depth and limb errors, missing points) for SMPLR from 3D;
* the ground-truth IUV map (rendered with the open-body charts), optionally
  part-dropped, for DaNet.

Each initializer starts the same recipe (default ``demo.yaml``); the table
reports MPJPE, PA-MPJPE and PVE (mm, pelvis-aligned) of the start and of
the fit. ``tools/bench_init.py`` prints it; the README quotes it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from fitkit.eval.metrics import evaluate_bodies
from fitkit.eval.synthetic import make_keypoint_example

__all__ = ["INIT_VARIANTS", "make_init_benchmark_data", "run_init_benchmark"]

#: name -> (init section of the recipe, which observations it reads)
INIT_VARIANTS = {
    "mean": ({"type": "mean"}, "2d"),
    "smplr (3D keypoints)": ({"type": "smplr"}, "3d"),
    "smplr (2D keypoints, lifted)": ({"type": "smplr"}, "2d"),
    "danet (GT IUV)": ({"type": "danet"}, "iuv"),
}


def make_init_benchmark_data(model, n: int = 64, *, seed: int = 0, image_size=(512, 512), noise_px: float = 2.0,
                             noise_3d: float = 1.0, iuv: bool = True):
    """(example, observations with keypoints3d and dense['iuv']) for the benchmark."""
    from fitkit.init.smplr import hip_centre
    from fitkit.init.smplr_train import corrupt
    from fitkit.priors.pose_data import load_pose_data

    test = load_pose_data("test").body_pose
    rng = np.random.default_rng(seed)
    poses = test[rng.choice(len(test), size=n, replace=len(test) < n)]
    ex = make_keypoint_example(model, n, keypoint_format="body25", image_size=image_size, noise_px=noise_px,
                               dropout=0.1, seed=seed, body_pose=poses)
    k3 = ex.gt["keypoints_3d"].to(torch.float32)
    centre = hip_centre(k3, "body25")
    noisy, conf, _ = corrupt(k3 - centre, "body25", torch.Generator().manual_seed(seed + 7), scale=noise_3d,
                             flat_rate=0.0)
    obs = dataclasses.replace(ex.observations, keypoints3d=torch.cat([noisy + centre, conf[..., None]], -1))
    if iuv:
        from fitkit.render.iuv import open_body_charts

        gt = ex.gt
        verts = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"], vertices="all").vertices
        w, h = (int(v) for v in image_size)
        maps = open_body_charts(model).render(verts, obs.intrinsics, (h, w))
        obs = dataclasses.replace(obs, dense={"iuv": maps.to(obs.keypoints.dtype)})
    return ex, obs


def _metrics(model, params, gt) -> dict[str, float]:
    m = evaluate_bodies(model, params, gt)
    return {k: float(m[k].mean()) for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm")}


def run_init_benchmark(model, *, n: int = 64, seed: int = 0, recipe: str = "fitting_configs/demo.yaml",
                       variants: Sequence[str] = tuple(INIT_VARIANTS), part_drop: float = 0.0,
                       log: Optional[Callable[[str], None]] = print) -> dict[str, dict[str, float]]:
    """Rows ``variant -> {init_mpjpe_mm, ..., fit_mpjpe_mm, ..., seconds}`` (see the module doc).

    Args:
        part_drop: PartDrop rate (seed 004 Eq. 5): each of the 24 parts is
            removed from the IUV maps the DaNet variant reads with this probability.
    """
    from fitkit.fitting.camera_setup import build_fit_camera
    from fitkit.fitting.engine import fit
    from fitkit.fitting.recipe import load_recipe
    from fitkit.init import initial_params

    ex, obs_all = make_init_benchmark_data(model, n, seed=seed, iuv=any("danet" in v for v in variants))
    if part_drop > 0 and obs_all.dense:
        from fitkit.init.danet_data import remove_parts, sample_part_drop

        drop = sample_part_drop(len(obs_all), part_drop, torch.Generator().manual_seed(seed + 11))
        iuv = remove_parts(obs_all.dense["iuv"], drop)
        obs_all = dataclasses.replace(obs_all, dense={"iuv": iuv})
    gt = ex.gt
    rows = {}
    for name in variants:
        spec, reads = INIT_VARIANTS[name]
        obs = obs_all if reads != "2d" else dataclasses.replace(obs_all, keypoints3d=None)
        r = load_recipe(recipe)
        r.init.update(spec)
        camera = build_fit_camera(r.camera, obs, dtype=obs.keypoints.dtype)
        t0 = time.time()
        start, _ = initial_params(r.init, model, obs, camera)
        res = fit(model, obs, r)
        row = {f"init_{k}": v for k, v in _metrics(model, start, gt).items()}
        row.update({f"fit_{k}": v for k, v in _metrics(model, res.params, gt).items()})
        row["seconds"] = time.time() - t0
        rows[name] = row
        if log:
            log(f"{name:30s} init MPJPE {row['init_mpjpe_mm']:6.1f} PVE {row['init_pve_mm']:6.1f} | "
                f"fit MPJPE {row['fit_mpjpe_mm']:6.1f} PA {row['fit_pa_mpjpe_mm']:5.1f} PVE {row['fit_pve_mm']:6.1f} "
                f"({row['seconds']:.0f} s)")
    return rows
