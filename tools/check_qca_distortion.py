"""Plumb-line check of a calibration's lens distortion on the recording's own frames.

    python tools/check_qca_distortion.py \\
        --calib datasets/pose2sim_multiperson/Calib.qca.txt \\
        --videos /tmp/pose2sim/x/Pose2Sim/Demo_MultiPerson/videos   # <view name>.mp4 per view

Straight scene edges (walls, windows, the treadmill) must stay straight on a
pinhole image. For each view the first frame's long straight edges are found
(Canny + probabilistic Hough, segments of at least --min-length pixels), their
edge pixels are undistorted with three lens models and a line and a parabola
are fitted to them:

* ``none``: no distortion;
* ``as read``: the coefficients fitkit reads (for a .qca: divided by 64, as
  pose2sim reads them);
* ``x64``: the same times 64 (the .qca numbers taken as OpenCV coefficients
  as they stand).

The right model makes the edges straightest: smallest RMS distance to the
fitted line and smallest bow (the parabola's sagitta over the edge). The
edges found are the same for all three models, so the comparison is paired.
A positive control runs on the same edges: their pixels are bent through the
x64 lens (as if the camera had it) and scored again with ``none`` and ``x64``;
it shows how large the difference would be if the x64 reading were right.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fitkit.io.cameras import project_points, read_cameras, undistort_points  # noqa: E402


def straight_edges(gray: np.ndarray, min_length: int) -> list[np.ndarray]:
    """Edge pixels (M, 2) of each long straight segment (duplicates dropped)."""
    edges = cv2.Canny(cv2.GaussianBlur(gray, (5, 5), 1.2), 40, 120)
    ys, xs = np.nonzero(edges)
    pixels = np.c_[xs, ys].astype(float)
    segments = cv2.HoughLinesP(edges, 1, np.pi / 720, threshold=150, minLineLength=min_length, maxLineGap=4)
    out, kept = [], []
    for x0, y0, x1, y1 in ([] if segments is None else segments.reshape(-1, 4).astype(float)):
        d = np.array([x1 - x0, y1 - y0])
        length = np.linalg.norm(d)
        d /= length
        rel = pixels - [x0, y0]
        along, across = rel @ d, rel @ np.array([-d[1], d[0]])
        sel = (np.abs(across) < 2.0) & (along > 0) & (along < length)
        if sel.sum() < 0.8 * length:
            continue
        mid = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        if any(np.linalg.norm(mid - m) < 30 and abs(d @ e) > 0.99 for m, e in kept):
            continue
        kept.append((mid, d))
        out.append(pixels[sel])
    return out


def bend_through_lens(points: np.ndarray, cam) -> np.ndarray:
    """Pinhole pixels (M, 2) moved to where ``cam``'s lens would image them."""
    rays = np.linalg.solve(cam.K, np.c_[points, np.ones(len(points))].T).T
    return project_points(rays, replace(cam, R=np.eye(3), t=np.zeros(3)))


def straightness(points: np.ndarray) -> tuple[float, float]:
    """(RMS distance to the best line, |sagitta| of the best parabola), pixels."""
    c = points.mean(0)
    _, _, vt = np.linalg.svd(points - c, full_matrices=False)
    t, r = (points - c) @ vt[0], (points - c) @ vt[1]
    a = np.linalg.lstsq(np.c_[t ** 2, t, np.ones_like(t)], r, rcond=None)[0][0]
    half = (t.max() - t.min()) / 2
    return float(np.sqrt(np.mean(r ** 2))), float(abs(a) * half ** 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calib", required=True)
    parser.add_argument("--videos", required=True, help="folder with <view name>.mp4 per view")
    parser.add_argument("--min-length", type=int, default=250)
    args = parser.parse_args(argv)
    cams = read_cameras(args.calib)
    names = ("none", "as read", "x64")
    scores = {m: [] for m in names + ("control none", "control x64")}
    for name, cam in cams.items():
        cap = cv2.VideoCapture(str(Path(args.videos) / f"{name}.mp4"))
        ok, frame = cap.read()
        cap.release()
        if not ok:
            print(f"{name}: no video frame, skipped")
            continue
        models = dict(zip(names, (replace(cam, dist=np.zeros(len(cam.dist))), cam, replace(cam, dist=cam.dist * 64))))
        edges = straight_edges(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), args.min_length)
        for pts in edges:
            for m, cal in models.items():
                scores[m].append(straightness(undistort_points(pts, cal)))
            bent = bend_through_lens(pts, models["x64"])
            scores["control none"].append(straightness(bent))
            scores["control x64"].append(straightness(undistort_points(bent, models["x64"])))
        print(f"{name}: {len(edges)} straight edges")
    n = len(scores["none"])
    print(f"\n{n} edges, min length {args.min_length} px")
    print(f"{'model':13s} {'mean RMS px':>12s} {'mean bow px':>12s} {'median bow px':>14s}")
    for m in scores:
        if m == "control none":
            print("positive control: the same edges bent through the x64 lens, then")
        s = np.array(scores[m]).reshape(-1, 2)
        print(f"{m:13s} {s[:, 0].mean():12.3f} {s[:, 1].mean():12.3f} {np.median(s[:, 1]):14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
