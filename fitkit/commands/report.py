"""``fitkit report``: one self-contained HTML page about a fit result folder."""
from __future__ import annotations

import argparse

from fitkit.commands.options import COUNT

EXAMPLES = """examples:
  fitkit report out/                      # writes out/report.html
  fitkit report out/ -o fit.html --frames 12
  fitkit report out/ --input obs.npz      # observations moved since the fit
"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "report", parents=parents, help="write a self-contained HTML report of a fit result",
        description="Write one HTML page about the output folder of 'fitkit fit -o OUT': a summary table, "
                    "the quality flags of every frame, a plot of the 2D keypoint error, overlays with side "
                    "and top views for frames spread over the sequence, and for videos a strip of thumbnails "
                    "over time. Images are inlined: the file can be mailed or archived alone.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="OUT", help="the output folder of 'fitkit fit' (holds result.npz)")
    p.add_argument("-o", "--output", metavar="HTML", help="the HTML file to write (default OUT/report.html)")
    p.add_argument("--input", metavar="OBS",
                   help="the observation file fitted (default: the one result.npz records); gives "
                        "images, observed keypoints, tracks and frame numbers")
    p.add_argument("--model-dir", metavar="DIR", help="folder of the official SMPL files, for fits with the smpl model")
    p.add_argument("--frames", type=COUNT, default=8, metavar="N",
                   help="frames shown with overlay and side views, spread over the sequence (default 8)")
    p.add_argument("--thumbnails", type=COUNT, default=24, metavar="N",
                   help="thumbnails per track in a video's strip over time (default 24)")


def run(args) -> dict:
    from fitkit.errors import FitkitError
    from fitkit.viz.report import write_report

    if args.frames < 0 or args.thumbnails < 0:
        raise FitkitError("--frames and --thumbnails must be >= 0")
    return write_report(args.folder, output=args.output, observations=args.input,
                        model_dir=getattr(args, "model_dir", None), max_frames=args.frames,
                        max_thumbs=args.thumbnails)


def print_summary(summary: dict) -> None:
    print(f"fitkit report: {summary['frames']} frames, {summary['quality_ok']} pass quality_ok; "
          f"2D error mean {summary['err2d_px_mean']:.2f} px")
    shown = summary["shown_frames"]
    if shown:
        print(f"  frames shown: {', '.join(shown[:8])}" + (" ..." if len(shown) > 8 else "")
              + f" (overlays: {summary['overlays']})")
    for note in summary["notes"]:
        print(f"  note: {note}")
    print(f"  wrote {summary['path']} ({summary['bytes'] / 1e6:.2f} MB)")
