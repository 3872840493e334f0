"""Draw the dev set's reference over its committed frames: docs/devset_frame50.jpg.

    .venv/bin/python tools/plot_dev_set.py [--frame 50] [-o docs/devset_frame50.jpg]

Each of the 4 views' 1/4-size frame (datasets/pose2sim_multiperson/frames/), with
the detections of the two participants (circles: P0 red, P1 green) and the
reference reprojected (crosses), side by side.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "datasets" / "pose2sim_multiperson"


def main(argv=None) -> int:
    import cv2

    from fitkit.devset.pose2sim_demo import MIRROR
    from fitkit.io.cameras import project_points, read_cameras
    from fitkit.io.observations import load_observations

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frame", type=int, default=50)
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "devset_frame50.jpg"))
    args = ap.parse_args(argv)
    f = args.frame
    cams = read_cameras(DATA / "calibration.json")
    ref = np.load(DATA / "reference.npz")
    colours = ((40, 40, 230), (40, 200, 40))  # BGR: P0 red, P1 green
    tiles = []
    for vi, view in enumerate(ref["views"]):
        image = cv2.imread(str(DATA / "frames" / f"{view}_{f:06d}.jpg"))
        if image is None:
            raise SystemExit(f"{DATA / 'frames'}: no frame {f} of {view} (committed: 0, 50, 99)")
        scale = image.shape[1] / 1088.0
        obs = load_observations(DATA / f"{view}.npz")
        rows = {(t, n): i for i, (t, n) in enumerate(zip(obs.track_ids, obs.frame_numbers))}
        kp = obs.keypoints.numpy()
        for p, colour in enumerate(colours):
            track = str(ref["track_of"][p, f, vi])
            if track:
                det = kp[rows[(track, f)]]
                if ref["flipped"][p, f, vi]:
                    det = det[MIRROR]
                for x, y, c in det:
                    if c >= 0.3:
                        cv2.circle(image, (int(x * scale), int(y * scale)), 3, colour, 1, cv2.LINE_AA)
            uv = project_points(ref["points3d"][p, f].astype(np.float64), cams[str(view)])
            for x, y in uv[np.isfinite(uv).all(axis=1)]:
                cv2.drawMarker(image, (int(x * scale), int(y * scale)), colour, cv2.MARKER_CROSS, 7, 1)
        cv2.putText(image, str(view), (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(image)
    cv2.imwrite(args.output, np.concatenate(tiles, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
