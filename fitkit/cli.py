"""The ``fitkit`` command line: every command's options, global flags and dispatch.

This module is imported for every ``fitkit`` call, ``--help`` included, so it
imports only the standard library and :mod:`fitkit.shipped`; each command's
implementation (torch and the rest) is imported when that command runs:

    demo     fitkit.commands.demo (and .demo_video with --video)
    fit      fitkit.commands.fit
    compare  fitkit.eval.compare
    import   fitkit.commands.import_regressor
    detect   fitkit.commands.detect
    body     fitkit.commands.body
    report   fitkit.commands.report
    view     fitkit.commands.view

Each implementation has ``run(args) -> dict`` (the JSON-able summary) and
``print_summary(summary)``. Library code reports through :mod:`logging`
(logger ``fitkit``); ``-q`` keeps warnings only, ``-v`` adds debug lines.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from fitkit import __version__
from fitkit.commands.options import COUNT, FRACTION, PIXELS, POSITIVE_INT, number

# Literal copies so that --help needs no torch; tests/test_cli.py checks them against the library.
PRIOR_CHOICES = ("none", "gmm", "vposer", "cnf")  # fitkit.priors.presets.PRIOR_NAMES
KEYPOINT_FORMATS = ("body25", "coco25", "blazepose33")  # fitkit.body.keypoint_formats.FORMATS
IMPORT_LAYOUTS = ("auto", "hmr", "cliff")  # fitkit.io.regressors.LAYOUTS
MESH_AXES = ("opencv", "yup")  # fitkit.io.mesh.AXES
MODEL_CHOICES = ("open", "open_real", "smpl")  # fitkit.body.MODEL_TYPES
DEMO_CLIPS = ("punch", "run", "spin", "dance_b", "turn_left1")  # fitkit.eval.video.video_clips()

IMPLEMENTATIONS = {
    "demo": "fitkit.commands.demo",
    "fit": "fitkit.commands.fit",
    "compare": "fitkit.eval.compare",
    "import": "fitkit.commands.import_regressor",
    "detect": "fitkit.commands.detect",
    "body": "fitkit.commands.body",
    "report": "fitkit.commands.report",
    "view": "fitkit.commands.view",
}

log = logging.getLogger("fitkit")


def _shipped_recipes() -> str:
    from fitkit.shipped import recipe_names

    names = recipe_names()
    return ", ".join(names) if names else "(none found)"


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _global_options() -> argparse.ArgumentParser:
    """-v / -q, accepted before and after the command name (``fitkit -q fit`` or ``fitkit fit -q``)."""
    g = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's copy must not overwrite what was given before the command name.
    g.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="more log lines (-v: debug)")
    g.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or info lines; warnings, errors and the results only")
    return g


def _command(sub, parents, name: str, help: str, description: str, examples: tuple[str, ...]):
    return sub.add_parser(name, parents=parents, help=help, description=description,
                          epilog=_examples(*examples), formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_output_mesh_options(p) -> None:
    p.add_argument("--axes", choices=MESH_AXES, default="opencv",
                   help="axes of written meshes: opencv (the fit's camera frame: x right, y down, z forward; "
                        "default) or yup (x right, y up, z towards the viewer: Blender, MeshLab)")


def _add_demo_parser(sub, parents) -> None:
    p = _command(
        sub, parents, "demo", "fit a synthetic open-body example and print before/after metrics",
        "Make a synthetic example from the embedded open body (poses from the held-out clips of the open pose "
        "data, noisy keypoints with dropouts, a perturbed initialization), fit it, and print MPJPE, PA-MPJPE "
        "(mm), the mean 2D keypoint error (px) before and after, and the fit time.",
        ("fitkit demo", "fitkit demo --prior vposer --frames 64", "fitkit demo --video --flow gt -o video_demo"))
    p.add_argument("--frames", type=number(int, low=1, high=100_000), default=None,
                   help="number of synthetic frames (default 16; with --video 48 consecutive frames)")
    p.add_argument("--recipe", "--config", dest="recipe", default="demo", metavar="RECIPE",
                   help="recipe file or shipped name (default demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe entry (repeatable)")
    p.add_argument("--prior", choices=PRIOR_CHOICES,
                   help="pose prior: the open gmm (the demo recipe's), vposer, cnf, or none")
    p.add_argument("--poses", choices=["heldout", "random"], default="heldout",
                   help="held-out mocap frames of the open pose data (default) or random joint-range poses")
    p.add_argument("--init-noise", type=number(float, low=0.0, high=3.2), default=0.3,
                   help="std (rad) of the initial error per pose component (default 0.3)")
    p.add_argument("--noise-px", type=number(float, low=0.0, high=1000.0), default=2.0,
                   help="keypoint noise std in pixels, 0 to 1000 (default 2)")
    p.add_argument("--dropout", type=number(float, low=0.0, high=0.95), default=0.1,
                   help="fraction of dropped keypoints, 0 to 0.95 (default 0.1)")
    p.add_argument("--seed", type=COUNT, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="folder for the first frame's fitted and true meshes (.obj); with --video for the "
                        "overlay video (default with --video: video_demo)")
    _add_output_mesh_options(p)
    v = p.add_argument_group("video (--video)")
    v.add_argument("--video", action="store_true",
                   help="fit a synthetic video of a held-out motion per frame, with temporal terms, and with "
                        "temporal and optical-flow terms; print the table with the acceleration error and "
                        "write an overlay video")
    v.add_argument("--clip", default="punch", choices=DEMO_CLIPS, help="held-out clip (default punch)")
    v.add_argument("--flow", choices=["dis", "gt"], default="dis",
                   help="flow cue: OpenCV DIS on the rendered frames (default) or the geometric ground truth")
    v.add_argument("--video-recipe", default="video_flow", metavar="RECIPE",
                   help="sequence recipe (default video_flow)")
    v.add_argument("--format", choices=["gif", "mp4"], default="gif", help="overlay video format (default gif)")
    p.add_argument("--json", metavar="PATH",
                   help='write {"before": {mpjpe, pa_mpjpe, err2d_px}, "after": {...}, "seconds": ...}')


def _add_fit_parser(sub, parents) -> None:
    p = _command(
        sub, parents, "fit", "fit a body model to observed keypoints with a recipe",
        "Fit a body model to observations with a recipe and write OUT/result.npz (smplx-named parameters per "
        "frame, camera, per-term energies, per-sample flags). Frames with no usable keypoint are passed through "
        "unchanged and flagged no_evidence. Each finished batch is saved at once in OUT/chunks/, so --resume "
        "continues an interrupted run.",
        ("fitkit fit --recipe demo --input obs.npz -o out/fit",
         "fitkit fit --recipe smplify_modified --prior gmm --input keypoints/ --image-size 1920 1080 "
         "--init init.npz -o out/fit --overlays ::10 --side-views",
         "fitkit fit --recipe video_flow --input cam01.npz --camera Calib.qca.txt --view cam01 -o out/cam01"))
    p.add_argument("--recipe", "--config", dest="recipe", required=True, metavar="RECIPE",
                   help=f"recipe YAML file, or the name of a shipped recipe: {_shipped_recipes()} "
                        "(--config is the old name of this option)")
    p.add_argument("--input", required=True, metavar="OBS",
                   help="observations: a fitkit .npz observation file, a folder of OpenPose *_keypoints.json, "
                        "a COCO keypoint .json, or a .npy (N, K, 3) array (then give --keypoint-format and "
                        "--image-size)")
    p.add_argument("--init", metavar="INIT",
                   help="initial parameters: .npz/.json with smplx names (global_orient, body_pose, betas, "
                        "transl), one row per frame; default: the recipe's init (facing the camera, zero pose "
                        "and shape, translation from the torso)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (created)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to fit (default auto: CUDA when available)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1024,
                   help="frames fitted together (default 1024); recipes with sequence stages keep tracks whole")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a recipe entry, e.g. terms.pose.path=/data/gmm_08.pkl or "
                        "stages.1.solver.iterations=50 (repeatable)")
    p.add_argument("--prior", choices=PRIOR_CHOICES,
                   help="replace the recipe's pose prior (terms.pose) by fitkit's open gmm, vposer or cnf, "
                        "or remove it (none); applied before --set")
    p.add_argument("--model", choices=MODEL_CHOICES,
                   help="body model (default: the recipe's, else open; open_real: the open body with BlazePose "
                        "points calibrated on real detections, docs/open_body.md)")
    p.add_argument("--gender", choices=["neutral", "male", "female"], help="body model gender")
    p.add_argument("--model-dir", help="folder with licensed model files (default: $FITKIT_MODELS)")
    p.add_argument("--keypoint-format", choices=KEYPOINT_FORMATS, help="format of a .npy keypoint array")
    p.add_argument("--image-size", type=POSITIVE_INT, nargs=2, metavar=("W", "H"),
                   help="image size for inputs that do not carry it (OpenPose folders, .npy arrays)")
    p.add_argument("--camera", metavar="CALIB",
                   help="calibration file of the camera that saw the input: pose2sim .toml, Qualisys .qca.txt, "
                        "OpenCV FileStorage .yml/.json, EasyMocap intri.yml/extri.yml (or their folder), or "
                        "fitkit's plain .json; keypoints are undistorted and the fit uses its K "
                        "(docs/observations.md)")
    p.add_argument("--view", metavar="NAME", help="the view of --camera to use (needed when it holds several)")
    p.add_argument("--flow", metavar="DIR|dis|farneback",
                   help="forward optical flow for the flow terms: a folder of <frame_id>.flo / .npy files "
                        "(frame to the next frame of its track; a missing file skips that pair), or dis / "
                        "farneback to compute it with OpenCV from the observations' image_paths")
    p.add_argument("--meshes", action="store_true", help="also write OUT/meshes/<frame>.obj (see --axes)")
    _add_output_mesh_options(p)
    p.add_argument("--overlays", nargs="?", const="all", default=None, metavar="FRAMES",
                   help="also write OUT/overlays/<frame>.png (observed and fitted keypoints, the projected "
                        "mesh, a legend): all frames, or a selection such as 0,10,50, frame ids, or a stride "
                        "::10 / range 0:100:5")
    p.add_argument("--side-views", action="store_true",
                   help="with --overlays: add side and top views of the fitted body, so depth and facing "
                        "errors are visible")
    p.add_argument("--resume", action="store_true",
                   help="reuse the chunks an interrupted run left in OUT/chunks/ (same recipe, model, "
                        "inputs and --batch-size) and fit only the rest")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _add_compare_parser(sub, parents) -> None:
    p = _command(
        sub, parents, "compare", "fit every init x data term x prior x solver of a grid and report all metrics",
        "Run every combination of a grid file (see fitkit/eval/compare.py and docs/compare.md) on a synthetic "
        "benchmark or a dataset folder; write results.csv, results.md and plots.",
        ("fitkit compare --grid small", "fitkit compare --grid my_grid.yaml -o out/compare"))
    p.add_argument("--grid", required=True, metavar="GRID", help="grid YAML file or a shipped grid name")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder (default: the grid's 'output')")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _add_import_parser(sub, parents) -> None:
    p = _command(
        sub, parents, "import", "convert a regressor's output (HMR/SPIN/PARE/CLIFF/HMR2) to a fitkit init file",
        "Read a regressor output file (.npz, .json, or .pkl holding only plain dicts, lists and numpy arrays) "
        "and write a fitkit init file with smplx names: global_orient, body_pose (axis-angle), betas, transl "
        "(meters, full-image camera frame) and the intrinsics that transl belongs to. Crop cameras (pred_cam + "
        "a box) need the image size: --image-size or --observations. See docs/init.md for the field names.",
        ("fitkit import spin_out.npz --image-size 1920 1080 -o init.npz",
         "fitkit import hmr2_out.pkl --layout cliff --observations obs.npz -o init.npz"))
    p.add_argument("input", metavar="INPUT", help="regressor output: .npz, .json or .pkl")
    p.add_argument("-o", "--output", required=True, metavar="INIT",
                   help="init file to write (.npz; .json writes lists); load it with fitkit fit --init")
    p.add_argument("--layout", choices=IMPORT_LAYOUTS, default="auto",
                   help="hmr: weak-perspective crop camera + box (HMR, SPIN, PARE); cliff: full-image "
                        "translation (CLIFF, HMR2's pred_cam_t_full); auto (default): cliff when a full-image "
                        "translation is present, else hmr")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image-size", type=PIXELS, nargs=2, metavar=("W", "H"),
                      help="full image size in pixels (the principal point is its centre)")
    size.add_argument("--observations", metavar="OBS",
                      help="fitkit observations .npz of the same frames: its image sizes, and its intrinsics "
                           "when it has them (the camera the fit will use)")
    focal = p.add_mutually_exclusive_group()
    focal.add_argument("--focal", type=PIXELS, metavar="F",
                       help="full-image focal length in pixels (default: the observations' intrinsics, "
                            "else sqrt(W^2 + H^2), the camera fitkit fit uses without intrinsics)")
    focal.add_argument("--crop-focal", type=PIXELS, metavar="F",
                       help="the regressor's focal length in crop pixels (HMR/SPIN/PARE: 5000 at 224); the "
                            "full-image focal becomes F * box / crop-res per frame, written to the init's "
                            "intrinsics (fit with that camera)")
    p.add_argument("--crop-res", type=PIXELS, default=224, metavar="R",
                   help="the regressor's crop side in pixels, used with --crop-focal (default 224; HMR2 256)")
    p.add_argument("--bbox-scale", type=number(float, low=0.0, low_open=True, high=100.0), default=1.0, metavar="S",
                   help="crop side = S * max(w, h) of a bbox/bbox_xyxy/bbox_xywh/bbox_cxcywh box (default 1; "
                        "SPIN's demo enlarged detector boxes by 1.2)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def _add_detect_parser(sub, parents) -> None:
    p = _command(
        sub, parents, "detect", "detect BlazePose keypoints in images or a video and write an observation file",
        "Run MediaPipe Pose (BlazePose, 33 keypoints, offline, CPU) on images, folders of images or videos and "
        "write a fitkit observations .npz (keypoint format blazepose33, with the 3D world landmarks as "
        "keypoints3d) for 'fitkit fit'. Frames without a detected person are kept with all keypoints (0, 0, 0) "
        "and listed. Needs mediapipe==0.10.21 in a separate environment (numpy<2): see docs/detect.md.",
        ("fitkit detect frames/ -o obs.npz", "fitkit detect walk.mp4 --every 2 -o obs.npz"))
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_VIDEO",
                   help="image files (.png .jpg ...), folders of images (sorted names), or video files "
                        "(.mp4 .avi .mov ...); not images and videos together")
    p.add_argument("-o", "--output", required=True, metavar="OBS.npz", help="observation file to write")
    p.add_argument("--min-confidence", type=FRACTION, default=0.0, metavar="C",
                   help="keypoints whose MediaPipe visibility is below C are stored as not observed (0, 0, 0) "
                        "(default 0: keep all; the fit weights keypoints by their confidence)")
    p.add_argument("--model-complexity", type=int, choices=[0, 1], default=1,
                   help="1: BlazePose full (default; shipped in the mediapipe wheel); 0: lite (not shipped: "
                        "only if pose_landmark_lite.tflite was placed in the mediapipe package by hand)")
    p.add_argument("--min-detection-confidence", type=FRACTION, default=0.5, metavar="S",
                   help="MediaPipe's person-detection score threshold (default 0.5)")
    p.add_argument("--every", type=POSITIVE_INT, default=1, metavar="N",
                   help="videos: keep every N-th frame (default 1: all frames)")
    p.add_argument("--max-people", type=POSITIVE_INT, default=1, metavar="N",
                   help="find up to N people per frame (default 1: the most prominent one, tracked by MediaPipe); "
                        "N > 1 detects, paints the person out and detects again, and tracks the people by box "
                        "overlap into tracks <video stem>_p0, _p1, ... (docs/detect.md)")
    p.add_argument("--masks", metavar="MASKS.npz",
                   help="also write each row's segmentation mask (uint8 0/1 at 1/4 of the image size)")
    p.add_argument("--json", metavar="PATH", help="also write the summary (with every empty frame's id) as JSON")


def _add_body_parser(sub, parents) -> None:
    p = _command(sub, parents, "body", "describe the embedded open body; write posed meshes",
                 "Print the open body's size, keypoint sets and timings, and write its rest and posed meshes.",
                 ("fitkit body", "fitkit body -o out/body"))
    p.add_argument("-o", "--output", default="out/body", metavar="DIR",
                   help="folder for the meshes, in the body model's own axes (y up, as SMPL's) "
                        "(default: out/body)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="fitkit", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit SMPL-family body models to image cues by optimization.",
        epilog=_examples("fitkit demo", "fitkit fit --recipe demo --input obs.npz -o out/fit",
                         "fitkit report out/fit", "fitkit COMMAND --help"))
    parser.add_argument("--version", action="version", version=f"fitkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [common]
    _add_demo_parser(sub, parents)
    _add_fit_parser(sub, parents)
    _add_compare_parser(sub, parents)
    _add_import_parser(sub, parents)
    _add_detect_parser(sub, parents)
    _add_body_parser(sub, parents)
    from fitkit.commands import report, view  # their parsers; both modules import no torch at the top

    report.add_parser(sub, parents)
    view.add_parser(sub, parents)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log lines of the ``fitkit`` logger go to stderr: INFO by default, DEBUG with -v, WARNING with -q."""
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        log.addHandler(handler)
        log.propagate = False
    handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s" if verbose else "%(message)s"))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", 0) or 0
    args.quiet = bool(getattr(args, "quiet", False))
    configure_logging(args.verbose, args.quiet)

    from fitkit.errors import FitkitError

    implementation = IMPLEMENTATIONS[args.command]
    if args.command == "demo":
        args.frames = (48 if args.video else 16) if args.frames is None else args.frames
        if args.video:
            implementation = "fitkit.commands.demo_video"
            args.output = args.output or "video_demo"
    command = importlib.import_module(implementation)
    try:
        summary = command.run(args)
    except (FitkitError, ValueError, OSError) as exc:
        # expected failures (bad files, fields, recipes): one clear line, no traceback
        print(f"fitkit {args.command}: error: {exc}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    command.print_summary(summary)
    if getattr(args, "json", None):
        from fitkit.io.atomic import atomic_write

        with atomic_write(args.json) as f:
            json.dump(summary, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
