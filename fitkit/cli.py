"""The ``fitkit`` command line: ``demo``, ``fit``, ``compare`` and ``body``."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from fitkit.body import load_body_model
from fitkit.priors.presets import PRIOR_NAMES
from fitkit.errors import FitkitError
from fitkit.io.atomic import atomic_write
from fitkit.io.mesh import write_obj, write_ply
from fitkit.commands import detect as detect_command
from fitkit.commands import import_regressor


def demo_pose(batch_size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A relaxed standing pose in SMPL's joint order: (B,3) global_orient, (B,69) body_pose."""
    pose = torch.zeros(24, 3)
    pose[16] = torch.tensor([0.0, 0.0, -1.1])  # left shoulder: arm down towards the side
    pose[17] = torch.tensor([0.0, 0.0, 1.1])   # right shoulder
    pose[18] = torch.tensor([0.0, -0.5, 0.0])  # left elbow bent forwards
    pose[19] = torch.tensor([0.0, 0.5, 0.0])
    pose[1] = torch.tensor([-0.35, 0.0, 0.05])  # left hip flexed
    pose[4] = torch.tensor([0.6, 0.0, 0.0])    # left knee bent
    pose[15] = torch.tensor([0.0, 0.4, 0.0])   # head turned to its left
    pose = pose[None].expand(batch_size, -1, -1)
    return pose[:, 0].clone(), pose[:, 1:].reshape(batch_size, -1).clone()


def _height(vertices: torch.Tensor) -> float:
    return float(vertices[0, :, 1].max() - vertices[0, :, 1].min())


def run_body_info(args) -> dict:
    t0 = time.perf_counter()
    model = load_body_model("open", num_betas=10)
    load_s = time.perf_counter() - t0
    zero = torch.zeros(1, 3)
    rest = model(zero, torch.zeros(1, 69), torch.zeros(1, 10), vertices="all")
    go, bp = demo_pose()
    t1 = time.perf_counter()
    posed = model(go, bp, torch.zeros(1, 10), keypoints="coco25", vertices="all")
    forward_ms = 1e3 * (time.perf_counter() - t1)
    heights = {}
    for sigma in (-2, 2):
        betas = torch.zeros(1, 10)
        betas[0, 0] = sigma
        heights[f"beta0={sigma:+d}"] = _height(model(zero, torch.zeros(1, 69), betas, vertices="all").vertices)

    out_dir = Path(args.output)
    files = [
        write_obj(out_dir / "open_body_zero_pose.obj", rest.vertices[0], model.faces),
        write_obj(out_dir / "open_body_posed.obj", posed.vertices[0], model.faces),
        write_ply(out_dir / "open_body_posed.ply", posed.vertices[0], model.faces),
    ]
    summary = {
        "model": "open body (SMPL format, built from anny)",
        "vertices": model.num_vertices,
        "faces": int(model.faces.shape[0]),
        "joints": model.num_joints,
        "betas": model.num_betas,
        "keypoint_sets": {k: v.num_keypoints for k, v in model.keypoint_sets.items()},
        "height_m": {"mean": _height(rest.vertices), **heights},
        "left_wrist_posed_m": [round(float(x), 4) for x in posed.joints[0, 20]],
        "load_seconds": round(load_s, 3),
        "forward_ms_full_mesh": round(forward_ms, 2),
        "files": [str(f) for f in files],
    }
    if not all(math.isfinite(v) for v in summary["height_m"].values()):
        raise RuntimeError("demo produced a non-finite mesh")
    return summary


def _print_body_info(summary: dict) -> None:
    print("fitkit body: the open body")
    print(f"  {summary['vertices']} vertices, {summary['faces']} faces, {summary['joints']} joints, "
          f"{summary['betas']} betas")
    print("  keypoint sets: " + ", ".join(f"{k} ({n})" for k, n in summary["keypoint_sets"].items()))
    h = summary["height_m"]
    print(f"  height: {h['mean']:.3f} m at betas = 0; "
          + ", ".join(f"{h[k]:.3f} m at {k}" for k in h if k != "mean"))
    print(f"  loaded in {summary['load_seconds']:.2f} s; full-mesh forward {summary['forward_ms_full_mesh']:.1f} ms")
    for f in summary["files"]:
        print(f"  wrote {f}")


def _add_fit_parser(sub) -> None:
    p = sub.add_parser(
        "fit", help="fit a body model to observed keypoints with a recipe",
        description="Fit a body model to observations with a recipe and write OUT/result.npz "
                    "(smplx-named parameters per frame, camera, per-term energies, per-sample flags). "
                    "Frames with no usable keypoint are passed through unchanged and flagged no_evidence. "
                    "Each finished batch is saved at once in OUT/chunks/, so --resume continues an "
                    "interrupted run.")
    p.add_argument("--config", required=True, metavar="RECIPE",
                   help="recipe YAML file, or the name of a shipped recipe in fitting_configs/ "
                        "(spin_default, smplify_modified, demo)")
    p.add_argument("--input", required=True, metavar="OBS",
                   help="observations: a fitkit .npz observation file, a folder of OpenPose *_keypoints.json, "
                        "a COCO keypoint .json, or a .npy (N, K, 3) array (then give --keypoint-format and --image-size)")
    p.add_argument("--init", metavar="INIT",
                   help="initial parameters: .npz/.json with smplx names (global_orient, body_pose, betas, transl), "
                        "one row per frame; default: facing the camera, zero pose and shape, translation from the torso")
    p.add_argument("--output", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to fit (default auto: CUDA when available)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="frames fitted together (default 1024); recipes with sequence stages keep tracks whole")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe entry, e.g. terms.pose.path=/data/gmm_08.pkl or "
                        "stages.1.solver.iterations=50 (repeatable)")
    p.add_argument("--prior", choices=list(PRIOR_NAMES),
                   help="replace the recipe's pose prior (terms.pose) by fitkit's open gmm, vposer or cnf, "
                        "or remove it (none); applied before --set")
    p.add_argument("--model", choices=["open", "smpl"], help="body model (default: the recipe's, else open)")
    p.add_argument("--gender", choices=["neutral", "male", "female"], help="body model gender")
    p.add_argument("--model-dir", help="folder with licensed model files (default: $FITKIT_MODELS)")
    p.add_argument("--keypoint-format", help="format of a .npy keypoint array (body25, coco25, blazepose33)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"),
                   help="image size for inputs that do not carry it (OpenPose folders, .npy arrays)")
    p.add_argument("--flow", metavar="DIR|dis|farneback",
                   help="forward optical flow for the flow terms: a folder of <frame_id>.flo / .npy files "
                        "(frame to the next frame of its track; a missing file skips that pair), or dis / "
                        "farneback to compute it with OpenCV from the observations' image_paths")
    p.add_argument("--meshes", action="store_true", help="also write OUT/meshes/<frame>.obj")
    p.add_argument("--overlays", action="store_true",
                   help="also write OUT/overlays/<frame>.png: observed and fitted keypoints and the projected mesh")
    p.add_argument("--resume", action="store_true",
                   help="reuse the chunks an interrupted run left in OUT/chunks/ (same recipe, model, "
                        "inputs and --batch-size) and fit only the rest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _add_compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="fit every init x data term x prior x solver of a grid and report all metrics",
        description="Run every combination of a grid file (see fitkit/eval/compare.py) on a synthetic "
                    "benchmark or a dataset folder; write results.csv, results.md and plots.")
    p.add_argument("--grid", required=True, metavar="GRID", help="grid YAML file")
    p.add_argument("--output", metavar="OUT", help="output folder (default: the grid's 'output')")
    p.add_argument("--quiet", action="store_true", help="no per-combination lines")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="fit a synthetic open-body example and print before/after metrics",
        description="Make a synthetic example from the embedded open body (poses from the held-out clips "
                    "of the open pose data, noisy keypoints with dropouts, a perturbed initialization), fit "
                    "it, and print MPJPE, PA-MPJPE (mm), the mean 2D keypoint error (px) before and after, "
                    "and the fit time.")
    p.add_argument("--frames", type=int, default=None,
                   help="number of synthetic frames (default 16; with --video 48 consecutive frames)")
    p.add_argument("--recipe", default="demo", help="recipe file or shipped name (default demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe entry (repeatable)")
    p.add_argument("--prior", choices=list(PRIOR_NAMES),
                   help="pose prior: the open gmm (the demo recipe's), vposer, cnf, or none")
    p.add_argument("--poses", choices=["heldout", "random"], default="heldout",
                   help="held-out mocap frames of the open pose data (default) or random joint-range poses")
    p.add_argument("--init-noise", type=float, default=0.3,
                   help="std (rad) of the initial error per pose component (default 0.3)")
    p.add_argument("--noise-px", type=float, default=2.0, help="keypoint noise std in pixels (default 2)")
    p.add_argument("--dropout", type=float, default=0.1, help="fraction of dropped keypoints (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None,
                   help="folder for the first frame's fitted and true meshes (.obj); with --video for the "
                        "overlay video (default with --video: video_demo)")
    v = p.add_argument_group("video (--video)")
    v.add_argument("--video", action="store_true",
                   help="fit a synthetic video of a held-out motion per frame, with temporal terms, and with "
                        "temporal and optical-flow terms; print the table with the acceleration error and "
                        "write an overlay video")
    v.add_argument("--clip", default="punch",
                   help="held-out clip: punch (default), run, spin, dance_b, turn_left1")
    v.add_argument("--flow", choices=["dis", "gt"], default="dis",
                   help="flow cue: OpenCV DIS on the rendered frames (default) or the geometric ground truth")
    v.add_argument("--video-recipe", default="video_flow", help="sequence recipe (default video_flow)")
    v.add_argument("--format", choices=["gif", "mp4"], default="gif", help="overlay video format (default gif)")
    p.add_argument("--json", metavar="PATH",
                   help='write {"before": {mpjpe, pa_mpjpe, err2d_px}, "after": {...}, "seconds": ...}')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fitkit", description="Fit SMPL-family body models to image cues.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    _add_fit_parser(sub)
    _add_compare_parser(sub)
    import_regressor.add_parser(sub)
    detect_command.add_parser(sub)
    body = sub.add_parser("body", help="describe the embedded open body; write posed meshes")
    body.add_argument("--output", default="out/body", help="folder for the meshes (default: out/body)")
    body.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    args = parser.parse_args(argv)

    if args.command in ("demo", "fit", "compare", "import", "detect"):
        from fitkit.commands import demo, demo_video, fit
        from fitkit.eval import compare
        command = {"demo": demo, "fit": fit, "compare": compare, "import": import_regressor,
                   "detect": detect_command}[args.command]
        if args.command == "demo":
            video = args.video
            if args.frames is None:
                args.frames = 48 if video else 16
            if video:
                command = demo_video
                args.output = args.output or "video_demo"
        try:
            summary = command.run(args)
        except (FitkitError, ValueError, OSError) as exc:
            # expected failures (bad files, fields, recipes): one clear line, no traceback
            print(f"fitkit {args.command}: error: {exc}", file=sys.stderr)
            return 2
        command.print_summary(summary)
    else:
        summary = run_body_info(args)
        _print_body_info(summary)
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
