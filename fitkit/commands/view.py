"""``fitkit view``: an interactive 3D viewer of a fit result in the browser (needs viser)."""
from __future__ import annotations

import argparse

from fitkit.commands.options import number

EXAMPLES = """examples:
  fitkit view out/                        # then open http://127.0.0.1:8080/
  fitkit view out/ --port 9000 --input obs.npz
  fitkit view out/ --host 0.0.0.0         # reachable from other machines (no authentication)
"""


def add_parser(subparsers, parents) -> None:
    p = subparsers.add_parser(
        "view", parents=parents, help="browse the fitted meshes in 3D (browser viewer; needs fitkit[view])",
        description="Serve an interactive 3D view of the output folder of 'fitkit fit -o OUT': the fitted "
                    "meshes over time with a time slider and play button, and the camera as a frustum "
                    "carrying the frame's image (the input image, else the overlay). Runs until Ctrl-C. "
                    'Needs viser: pip install "fitkit[view]".',
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="OUT", help="the output folder of 'fitkit fit' (holds result.npz)")
    p.add_argument("--input", metavar="OBS",
                   help="the observation file fitted (default: the one result.npz records); gives "
                        "images, tracks and frame numbers")
    p.add_argument("--model-dir", metavar="DIR", help="folder of the official SMPL files, for fits with the smpl model")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=number(int, low=0, high=65535), default=8080,
                   help="port (default 8080; the next free one when it is taken; 0: any free port)")


def run(args) -> dict:
    from fitkit.viz.fit_folder import load_fit_folder, load_model_for
    from fitkit.viz.viewer import FitViewer, import_viser

    import_viser()  # fail before loading anything when viser is missing
    folder = load_fit_folder(args.folder, args.input)
    model = load_model_for(folder, getattr(args, "model_dir", None))
    viewer = FitViewer(folder, model, host=args.host, port=args.port,
                       verbose=bool(getattr(args, "verbose", 0))).start()
    if not getattr(args, "quiet", False):
        print(f"fitkit view: {len(folder)} frames in {len(viewer.steps)} time steps at {viewer.url} "
              "(Ctrl-C stops)", flush=True)
    url = viewer.url
    viewer.serve_forever()
    return {"url": url, "frames": len(folder), "steps": len(viewer.steps), "notes": list(folder.notes)}


def print_summary(summary: dict) -> None:
    print(f"fitkit view: stopped the viewer at {summary['url']} ({summary['frames']} frames)")
    for note in summary["notes"]:
        print(f"  note: {note}")
