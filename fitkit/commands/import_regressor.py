"""``fitkit import``: turn a regressor's output (HMR, SPIN, PARE, CLIFF, HMR2, ...) into an init file.

The layouts, field names and camera conversions are described in
:mod:`fitkit.io.regressors` and ``docs/init.md``.
"""
from __future__ import annotations

from fitkit.io.regressors import RegressorImportError, read_regressor_output, save_init


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
