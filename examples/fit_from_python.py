"""Fit the body model to 2D keypoints from Python: docs/api.md, end to end.

The example needs no data files and runs in a few seconds on a CPU. It makes
a small synthetic problem from the embedded open body (8 random joint-range
poses seen by a 1000 x 1000 full-image camera, BODY_25 keypoints with 2 px
noise and 10% dropped, and a start perturbed by 0.3 rad per pose component,
as a regressor might give), writes it the ways real data arrives (a fitkit
observation file, a folder of OpenPose JSON files, a bare .npy array, a
regressor's init file), reads it back, fits it from three starts and with a
second pose prior, compares each fit with the ground truth, saves the result
and a mesh, and loads the result back with plain numpy and plain smplx.

Usage (from any folder)::

    python examples/fit_from_python.py [OUT]    # OUT: output folder (default: a new temporary folder)
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import smplx
import torch

from fitkit import api
from fitkit.body.open_body import OPEN_BODY_PATH, smplx_data_struct

FRAMES = 8
IMAGE_SIZE = (1000, 1000)  # width, height in pixels


def write_inputs(out: Path) -> dict:
    """Make the synthetic problem and write it as input files; returns the ground truth and the OpenPose folder."""
    model = api.load_body_model("open", num_betas=10)
    example = api.make_keypoint_example(model, FRAMES, image_size=IMAGE_SIZE, noise_px=2.0, dropout=0.1,
                                        pose_noise=0.3, seed=0)
    keypoints = example.observations.keypoints.numpy()  # (N, 25, 3): x, y in pixels, confidence
    api.save_observations(out / "observations.npz", example.observations)
    np.save(out / "keypoints.npy", keypoints)
    openpose_dir = out / "openpose"  # what OpenPose writes: one <frame>_keypoints.json per frame
    openpose_dir.mkdir(parents=True, exist_ok=True)
    for frame_id, points in zip(example.observations.frame_ids, keypoints):
        people = [{"pose_keypoints_2d": points.reshape(-1).tolist()}]
        (openpose_dir / f"{frame_id}_keypoints.json").write_text(json.dumps({"people": people}))
    api.save_init(out / "regressor_init.npz", example.init)  # stands in for a regressor's output
    return {"gt": example.gt, "openpose_dir": openpose_dir}


def metrics(model, params, gt, obs) -> dict:
    """Mean MPJPE, PA-MPJPE, PVE (mm, pelvis-aligned) against ``gt`` and 2D error (px) against ``obs``."""
    m = api.evaluate_bodies(model, params, gt, keypoints_2d=obs.keypoints, K=obs.intrinsics,
                            keypoint_format=obs.keypoint_format)
    return {k: float(torch.nanmean(m[k])) for k in ("mpjpe_mm", "pa_mpjpe_mm", "pve_mm", "err2d_px")}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", help="output folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    out = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="fitkit_example_"))
    out.mkdir(parents=True, exist_ok=True)
    made = write_inputs(out)
    gt, openpose_dir = made["gt"], made["openpose_dir"]

    # 1. observations
    obs = api.read_keypoints(out / "observations.npz")  # a fitkit observation file (keeps the intrinsics)
    obs_openpose = api.read_keypoints(openpose_dir, image_size=(1000, 1000))  # a folder of *_keypoints.json
    obs_npy = api.read_keypoints(out / "keypoints.npy", keypoint_format="body25", image_size=(1000, 1000))

    # 2. recipes
    recipe = api.load_recipe("demo", ["stages.1.solver.iterations=40"])  # shipped recipe, one override
    recipe_cnf = api.load_recipe("demo", ["stages.1.solver.iterations=40"], prior="cnf")  # another pose prior
    recipe_smplr = api.recipe_from_dict({**recipe.data, "init": {"type": "smplr"}})  # a recipe from a dict
    model = api.model_for_recipe(recipe)  # the open body, 10 betas (the recipe's body: section)

    # 3. starts and 4. fits
    init = api.load_params(out / "regressor_init.npz")  # smplx-named arrays (N, ...) from an init file
    result = api.fit(model, obs, recipe, init)  # start from the init file
    result_default = api.fit(model, obs, recipe)  # default start: facing the camera, zero pose
    result_smplr = api.fit(model, obs, recipe_smplr)  # SMPLR from the 2D keypoints, lifted
    result_cnf = api.fit(model, obs, recipe_cnf, init)  # the init file again, with the flow prior
    result_openpose = api.fit(model, obs_openpose, recipe, init)  # the OpenPose folder: default camera

    # 5. what a fit returns
    params = result.params  # global_orient (N, 3), body_pose (N, 69), betas (N, 10), transl (N, 3)
    flags = {"converged": result.converged, "nan": result.nan, "no_evidence": result.no_evidence}
    arrays = api.result_arrays(model, obs, recipe, result)  # numpy, plus err2d_px and quality flags
    print(f"frames {len(obs)}: converged {int(arrays['converged'].sum())}, quality_ok "
          f"{int(arrays['quality_ok'].sum())}, energy_total {arrays['energy_total'].mean():.1f}, "
          f"2D error {np.nanmean(arrays['err2d_px']):.2f} px")

    # 6. evaluation against the ground truth
    rows = {
        "start: init file": metrics(model, init, gt, obs),
        "fit from init file": metrics(model, params, gt, obs),
        "fit from default start": metrics(model, result_default.params, gt, obs),
        "fit from SMPLR": metrics(model, result_smplr.params, gt, obs),
        "fit from init file, cnf": metrics(model, result_cnf.params, gt, obs),
        "fit of OpenPose folder": metrics(model, result_openpose.params, gt, obs),
    }
    print(f"{'':26s} {'MPJPE mm':>9s} {'PA-MPJPE':>9s} {'PVE mm':>9s} {'2D px':>7s}")
    for name, m in rows.items():
        print(f"{name:26s} {m['mpjpe_mm']:9.1f} {m['pa_mpjpe_mm']:9.1f} {m['pve_mm']:9.1f} {m['err2d_px']:7.2f}")

    # 7. save: the result file (what `fitkit fit` writes) and a mesh
    result_file = api.save_fit(out / "result.npz", model, obs, recipe, result)
    vertices = model(**params, vertices="all").vertices  # (N, V, 3) meters, camera frame
    mesh_file = api.write_obj(out / "meshes" / f"{obs.frame_ids[0]}.obj", vertices[0], model.faces)

    # 8. load it back: plain numpy, smplx names; plain smplx poses the open body from them
    with np.load(result_file) as saved:
        loaded = {k: saved[k] for k in ("global_orient", "body_pose", "betas", "transl")}
    again = api.load_params(result_file)  # a result file is also an init file
    smpl = smplx.SMPL(str(OPEN_BODY_PATH.parent), data_struct=smplx_data_struct())
    smpl_vertices = smpl(**{k: torch.as_tensor(v) for k, v in loaded.items()}).vertices  # (N, V, 3)
    gap = float((smpl_vertices - vertices).abs().max())
    print(f"wrote {result_file} and {mesh_file}; smplx and fitkit vertices differ by {gap:.1e} m at most")

    return {
        "output": out, "result_file": result_file, "mesh_file": mesh_file, "metrics": rows,
        "params": {k: v.cpu().numpy() for k, v in params.items()}, "flags": flags, "arrays": arrays,
        "loaded": loaded, "loaded_as_init": again, "vertices": vertices, "smplx_vertices": smpl_vertices,
        "observations": {"npz": obs, "openpose": obs_openpose, "npy": obs_npy},
        "results": {"init file": result, "default": result_default, "smplr": result_smplr, "cnf": result_cnf,
                    "openpose": result_openpose},
    }


if __name__ == "__main__":
    main()
