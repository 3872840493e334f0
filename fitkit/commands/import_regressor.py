"""``fitkit import``: turn a regressor's output (HMR, SPIN, PARE, CLIFF, HMR2, ...) into an init file.

The layouts, field names and camera conversions are described in
:mod:`fitkit.io.regressors` and ``docs/init.md``.
"""
from __future__ import annotations

from fitkit.io.regressors import LAYOUTS, RegressorImportError, read_regressor_output, save_init


def add_parser(subparsers) -> None:
    """Register ``fitkit import`` on an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "import", help="convert a regressor's output (HMR/SPIN/PARE/CLIFF/HMR2) to a fitkit init file",
        description="Read a regressor output file (.npz, .json, or .pkl holding only plain dicts, lists and "
                    "numpy arrays) and write a fitkit init file with smplx names: global_orient, body_pose "
                    "(axis-angle), betas, transl (meters, full-image camera frame) and the intrinsics that "
                    "transl belongs to. Crop cameras (pred_cam + a box) need the image size: --image-size or "
                    "--observations. See docs/init.md for the accepted field names.")
    p.add_argument("input", metavar="INPUT", help="regressor output: .npz, .json or .pkl")
    p.add_argument("-o", "--output", required=True, metavar="INIT",
                   help="init file to write (.npz; .json writes lists); load it with fitkit fit --init")
    p.add_argument("--layout", choices=list(LAYOUTS), default="auto",
                   help="hmr: weak-perspective crop camera + box (HMR, SPIN, PARE); cliff: full-image "
                        "translation (CLIFF, HMR2's pred_cam_t_full); auto (default): cliff when a full-image "
                        "translation is present, else hmr")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--image-size", type=float, nargs=2, metavar=("W", "H"),
                      help="full image size in pixels (the principal point is its centre)")
    size.add_argument("--observations", metavar="OBS",
                      help="fitkit observations .npz of the same frames: its image sizes, and its intrinsics "
                           "when it has them (the camera the fit will use)")
    focal = p.add_mutually_exclusive_group()
    focal.add_argument("--focal", type=float, metavar="F",
                       help="full-image focal length in pixels (default: the observations' intrinsics, "
                            "else sqrt(W^2 + H^2), the camera fitkit fit uses without intrinsics)")
    focal.add_argument("--crop-focal", type=float, metavar="F",
                       help="the regressor's focal length in crop pixels (HMR/SPIN/PARE: 5000 at 224); the "
                            "full-image focal becomes F * box / crop-res per frame, written to the init's "
                            "intrinsics (fit with that camera)")
    p.add_argument("--crop-res", type=float, default=224, metavar="R",
                   help="the regressor's crop side in pixels, used with --crop-focal (default 224; HMR2 256)")
    p.add_argument("--bbox-scale", type=float, default=1.0, metavar="S",
                   help="crop side = S * max(w, h) of a bbox/bbox_xyxy/bbox_xywh/bbox_cxcywh box (default 1; "
                        "SPIN's demo enlarged detector boxes by 1.2)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON")


def run(args) -> dict:
    image_size = intrinsics = None
    if args.observations:
        from fitkit.io.observations import load_observations
        obs = load_observations(args.observations)
        image_size = obs.image_size.detach().cpu().double().numpy()
        if obs.intrinsics is not None:
            intrinsics = obs.intrinsics.detach().cpu().double().numpy()
    elif args.image_size:
        image_size = tuple(args.image_size)
    if intrinsics is not None and (args.focal is not None or args.crop_focal is not None):
        raise RegressorImportError(
            f"{args.observations}: has intrinsics, the camera fitkit fit will project with; drop "
            "--focal/--crop-focal (a translation for another focal would not match that camera)")
    result = read_regressor_output(args.input, image_size=image_size, intrinsics=intrinsics, focal=args.focal,
                                   crop_focal=args.crop_focal, crop_res=args.crop_res,
                                   bbox_scale=args.bbox_scale, layout=args.layout,
                                   camera_source=f"the observations {args.observations}" if args.observations
                                   else "--image-size" if args.image_size else "")
    out = save_init(args.output, result.params)
    return {
        "input": str(args.input),
        "output": str(out),
        "layout": result.layout,
        "frames": result.frames,
        "fields": result.fields,
        "intrinsics": "intrinsics" in result.params,
        "notes": result.notes,
        "warnings": result.warnings,
        "files": [str(out)],
    }


def print_summary(summary: dict) -> None:
    layout = {"hmr": "crop camera + box", "cliff": "full-image translation"}[summary["layout"]]
    n = summary["frames"]
    print(f"fitkit import: {n} frame{'s' if n != 1 else ''}, layout {summary['layout']} ({layout})")
    print("  fields: " + ", ".join(f"{role} <- {key}" for role, key in summary["fields"].items()))
    for note in summary["notes"]:
        print(f"  note: {note}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    for f in summary["files"]:
        print(f"  wrote {f}")
