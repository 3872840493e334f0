"""The short path for Python users: the handful of calls a notebook needs, in one place.

Everything here is a re-export of fitkit's own functions, plus three helpers
that do in one call what ``fitkit fit`` does around the engine:

- :func:`model_for_recipe`: the body model a recipe's ``body:`` section names;
- :func:`result_arrays`: a :class:`FitResult` as the per-frame arrays of a
  result file, with the 2D keypoint error and the pseudo-ground-truth quality
  flags that ``fitkit fit`` adds;
- :func:`save_fit`: those arrays written as a ``fitkit.result/1`` file, with the
  same metadata ``fitkit fit`` writes.

A walk-through is in ``docs/api.md``; ``examples/fit_from_python.py`` runs it::

    from fitkit import api

    obs = api.read_keypoints("keypoints/", image_size=(1920, 1080))
    recipe = api.load_recipe("demo", prior="cnf")
    model = api.model_for_recipe(recipe)
    result = api.fit(model, obs, recipe)
    arrays = api.result_arrays(model, obs, recipe, result)
    api.save_fit("out/result.npz", model, obs, recipe, result)

Conventions: meters, pixels, OpenCV camera axes (x right, y down, z
forward), smplx parameter names, batch (frame) first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.metrics import err2d, evaluate_bodies, mpjpe, pa_mpjpe, pve
from fitkit.eval.quality import quality_flags, quality_settings
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.fitting.engine import FitResult, fit
from fitkit.fitting.hypotheses import as_fitted
from fitkit.fitting.recipe import Recipe, load_recipe, recipe_from_dict
from fitkit.io.keypoint_readers import read_keypoint_array, read_keypoints, read_openpose_folder
from fitkit.io.mesh import write_obj
from fitkit.io.observations import Observations, load_observations, save_observations
from fitkit.io.params import load_params, load_result, save_result
from fitkit.io.regressors import save_init

__all__ = [
    # observations
    "Observations", "read_keypoints", "read_openpose_folder", "read_keypoint_array",
    "load_observations", "save_observations",
    # recipes, model, fitting
    "Recipe", "load_recipe", "recipe_from_dict", "load_body_model", "model_for_recipe", "fit", "FitResult",
    # results
    "result_arrays", "save_fit", "save_result", "load_result", "load_params", "save_init", "write_obj",
    # evaluation
    "evaluate_bodies", "mpjpe", "pa_mpjpe", "pve", "err2d", "make_keypoint_example",
]


def model_for_recipe(recipe: Recipe, *, model_dir=None, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32):
    """The body model named by ``recipe.body`` (``model``, ``gender``, ``num_betas``), as ``fitkit fit`` loads it.

    Defaults when the recipe leaves them out: the open body, neutral, 10 betas.
    ``model_dir``: folder of licensed SMPL files (``model: smpl``; else ``$FITKIT_MODELS``).
    """
    body = dict(recipe.body)
    return load_body_model(body.get("model", "open"), body.get("gender", "neutral"), model_dir=model_dir,
                           num_betas=int(body.get("num_betas", 10)), device=device, dtype=dtype)


def result_arrays(model, observations: Observations, recipe: Recipe, result: FitResult) -> dict[str, np.ndarray]:
    """The per-frame arrays ``fitkit fit`` writes for a fit of ``observations`` (N frames).

    Args:
        model: the body model that was fitted.
        observations: the N frames given to :func:`fit`.
        recipe: the recipe of the fit (its ``quality:`` thresholds are used).
        result: what :func:`fit` returned.
    Returns:
        name -> numpy array with one row per frame:

        - ``global_orient`` (N, 3), ``body_pose`` (N, 69) axis-angle radians,
          ``betas`` (N, k), ``transl`` (N, 3) meters in the camera frame;
        - ``intrinsics`` (N, 3, 3), ``image_size`` (N, 2) pixels;
        - flags (N,) bool ``converged``, ``nan``, ``no_evidence``, ``transl_from_torso``;
          ``iterations`` (N, S) per stage; ``stage_seconds`` (N, S) (the same row repeated);
        - ``energy_<term>`` (N,) and ``energy_total`` (N,): weighted energies at the end;
        - ``err2d_px`` (N,) mean distance in pixels between the fitted body's projected
          keypoints and the observed ones with confidence > 0 (NaN without any);
        - quality flags (:mod:`fitkit.eval.quality`): the raw numbers (N,) ``reproj_err_crop_px``,
          ``quality_keypoints3d_err_mm``, ``quality_joint_speed_mm``, ``quality_joint_accel_mm``,
          ``quality_facing_change_deg``, ``quality_swap_margin`` and bool ``quality_reprojection_ok``,
          ``quality_prior_ok``, ``quality_3d_ok``, ``quality_motion_ok``, ``quality_facing_ok``, ``quality_swap_ok``,
          ``quality_ok`` (the motion and facing checks see the tracks of these N frames only:
          :func:`fitkit.eval.quality.track_quality` redoes them on assembled batches);
        - ``frame_ids`` (N,) str.
    """
    n = len(observations)
    if result.params["transl"].shape[0] != n:
        raise ValueError(f"{observations.source}: the result has {result.params['transl'].shape[0]} frames, "
                         f"the observations {n}")
    chosen = result.info.get("hypotheses")
    if chosen:  # the 2D error and the quality checks are measured against the labels the fit used
        observations = as_fitted(observations, chosen["swap_upper"], chosen["swap_lower"])
    settings = quality_settings(recipe.data.get("quality"), recipe.source, recipe.data.get("terms"))
    arrays = result.to_numpy()
    p = result.params
    with torch.no_grad():
        kp = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"],
                   keypoints=observations.keypoint_format).keypoints
        kp2d = project(kp, result.K.to(kp))
        observed = observations.keypoints.to(kp2d)
        arrays["err2d_px"] = err2d(kp2d, observed).cpu().numpy()
    energies = {k: v.detach().cpu().numpy() for k, v in result.energies.items()}
    from fitkit.body.keypoint_formats import get_format
    from fitkit.fitting.hypotheses import hypotheses_arrays

    k3 = observations.keypoints3d
    arrays.update(quality_flags(observed.cpu().numpy(), kp2d.cpu().numpy(), energies,
                                arrays["no_evidence"], arrays["nan"], settings,
                                fitted_3d=kp.double().cpu().numpy(),
                                keypoint_names=get_format(observations.keypoint_format).names,
                                keypoints3d=None if k3 is None else k3.double().cpu().numpy(),
                                track_ids=observations.track_ids, frame_numbers=observations.frame_numbers,
                                swap_energies=hypotheses_arrays(result).get("swap_energies")))
    arrays["stage_seconds"] = np.tile(np.asarray(result.stage_seconds, dtype=np.float64)[None], (n, 1))
    arrays["frame_ids"] = np.array(observations.frame_ids, dtype=str)
    return arrays


def save_fit(path, model, observations: Observations, recipe: Recipe,
             result: FitResult | Mapping[str, np.ndarray]) -> Path:
    """Write a fit as a ``fitkit.result/1`` file (format: :mod:`fitkit.io.params`), atomically.

    ``result`` is what :func:`fit` returned or the arrays of :func:`result_arrays`.
    The metadata are those ``fitkit fit`` writes: ``keypoint_format``,
    ``body_model``, ``gender``, ``recipe_name``, ``recipe`` (YAML), ``stage_names``,
    and ``observations`` (the absolute path, when the observations came from a file).
    The file loads with plain numpy (``np.load(path)``), and as an init file
    (:func:`load_params`). Returns the path.
    """
    arrays = result_arrays(model, observations, recipe, result) if isinstance(result, FitResult) else dict(result)
    meta = dict(keypoint_format=observations.keypoint_format, gender=model.gender,
                body_model=getattr(model, "model_type", model.name),  # a BodyModel built by hand has none
                recipe_name=recipe.name, recipe=recipe.to_yaml(), stage_names=[st.name for st in recipe.stages])
    if Path(observations.source).exists():
        meta["observations"] = str(Path(observations.source).resolve())
    return save_result(path, arrays, **meta)
