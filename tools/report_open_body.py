#!/usr/bin/env python
"""Describe the open body: counts, heights per shape component, symmetry, and a picture.

    python tools/report_open_body.py [--png docs/open_body.png]

Prints a markdown report and draws the body (zero pose and a few other poses,
front and side; the first two shape components at +-2 sigma; DensePose parts).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fitkit.body import load_body_model  # noqa: E402
from fitkit.body.open_body import open_body_arrays  # noqa: E402
from fitkit.commands.body import demo_pose  # noqa: E402

LEFT = [1, 4, 7, 10, 13, 16, 18, 20, 22]
RIGHT = [2, 5, 8, 11, 14, 17, 19, 21, 23]


def example_poses() -> dict[str, torch.Tensor]:
    """Named (72,) axis-angle poses (global_orient + body_pose) in SMPL joint order."""
    poses = {}
    go, bp = demo_pose()
    poses["relaxed"] = torch.cat([go, bp], 1)[0]
    walk = torch.zeros(24, 3)
    walk[1], walk[2] = torch.tensor([-0.5, 0, 0]), torch.tensor([0.35, 0, 0])  # hips
    walk[4], walk[5] = torch.tensor([0.3, 0, 0]), torch.tensor([0.8, 0, 0])  # knees
    walk[16], walk[17] = torch.tensor([0.0, 0.4, -1.2]), torch.tensor([0.0, 0.4, 1.2])  # arms down, swinging
    walk[18], walk[19] = torch.tensor([0.0, -0.6, 0.0]), torch.tensor([0.0, 0.6, 0.0])
    poses["walking"] = walk.reshape(-1)
    sit = torch.zeros(24, 3)
    sit[1], sit[2] = torch.tensor([-1.5, 0, 0.1]), torch.tensor([-1.5, 0, -0.1])
    sit[4], sit[5] = torch.tensor([1.5, 0, 0]), torch.tensor([1.5, 0, 0])
    sit[16], sit[17] = torch.tensor([0.0, 0.0, -1.3]), torch.tensor([0.0, 0.0, 1.3])
    sit[18], sit[19] = torch.tensor([0.0, -1.2, 0.0]), torch.tensor([0.0, 1.2, 0.0])
    poses["seated"] = sit.reshape(-1)
    return poses


def mesh(model, pose=None, betas=None):
    pose = torch.zeros(72, dtype=torch.float64) if pose is None else pose.double()
    betas = torch.zeros(1, model.num_betas, dtype=torch.float64) if betas is None else betas
    return model(pose[None, :3], pose[None, 3:], betas, vertices="all")


def height(out) -> float:
    v = out.vertices[0]
    return float(v[:, 1].max() - v[:, 1].min())


def report(model, arrays) -> str:
    lines = ["# Open body report", ""]
    lines += [f"- vertices: {model.num_vertices}", f"- faces: {model.faces.shape[0]}",
              f"- joints: {model.num_joints}", f"- shape components: {arrays['shapedirs'].shape[2]}",
              f"- provenance: {arrays['provenance']}", ""]
    lines += ["## Height (m) at -2, 0, +2 sigma of each shape component", "",
              "| component | explained variance | -2 sigma | 0 | +2 sigma |", "|---|---|---|---|---|"]
    base = height(mesh(model))
    for k in range(arrays["shapedirs"].shape[2]):
        full = load_body_model("open", num_betas=k + 1, dtype=torch.float64)
        hs = []
        for s in (-2.0, 2.0):
            betas = torch.zeros(1, k + 1, dtype=torch.float64)
            betas[0, k] = s
            hs.append(height(mesh(full, betas=betas)))
        ev = arrays["shape_explained_variance"][k]
        lines.append(f"| {k} | {ev:.2e} | {hs[0]:.3f} | {base:.3f} | {hs[1]:.3f} |")
    v = arrays["v_template"]
    dist, _ = cKDTree(v).query(v * [-1.0, 1.0, 1.0])
    joints = mesh(model).joints[0].numpy()
    jsym = np.linalg.norm(joints[LEFT] * [-1, 1, 1] - joints[RIGHT], axis=1)
    lines += ["", "## Left/right symmetry", "",
              f"- template vertex mirrored onto nearest vertex: mean {1e3 * dist.mean():.3f} mm, "
              f"max {1e3 * dist.max():.3f} mm",
              f"- mirrored left joints vs right joints: max {1e3 * jsym.max():.3f} mm",
              f"- midline joints off x = 0: max {1e3 * np.abs(joints[[0, 3, 6, 9, 12, 15], 0]).max():.3f} mm"]
    g = torch.Generator().manual_seed(0)
    n = 64
    posed = model(torch.zeros(n, 3, dtype=torch.float64), 0.4 * torch.randn(n, 69, generator=g, dtype=torch.float64),
                  torch.randn(n, model.num_betas, generator=g, dtype=torch.float64), vertices="all")
    drift = (torch.einsum("jv,bvd->bjd", model.J_regressor, posed.vertices) - posed.joints).norm(dim=-1)
    lines += ["", "## Joint regressor on posed meshes (not how it is meant to be used)", "",
              f"- J_regressor @ posed vertices vs kinematic joints, {n} random poses (0.4 rad std per "
              f"angle): mean {1e3 * drift.mean():.1f} mm, max {1e3 * drift.max():.1f} mm"]
    gd = arrays["gender_direction"]
    lines += ["", "## Gender direction", "",
              f"- betas change from a male (gender 0) to a female (gender 1) anny body: "
              f"{np.array2string(gd[:6], precision=2)} ... (norm {np.linalg.norm(gd):.2f})"]
    return "\n".join(lines)


def draw(model, arrays, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitkit.viz.mesh_plot import draw_mesh

    faces = model.faces.numpy()
    panels = [("zero pose", mesh(model), "front"), ("zero pose", mesh(model), "side")]
    for name, pose in example_poses().items():
        out = mesh(model, pose)
        panels += [(name, out, "front"), (name, out, "side")]
    for k in (0, 1):
        for s in (-2.0, 2.0):
            betas = torch.zeros(1, model.num_betas, dtype=torch.float64)
            betas[0, k] = s
            panels.append((f"beta{k} = {s:+.0f}", mesh(model, betas=betas), "front"))
    fig, axes = plt.subplots(2, 7, figsize=(21, 9))
    for ax, (title, out, view) in zip(axes.flat, panels):
        draw_mesh(ax, out.vertices[0].numpy(), faces, view)
        ax.set_title(f"{title} ({view})", fontsize=10)
    draw_mesh(axes.flat[-1], mesh(model).vertices[0].numpy(), faces, "front",
              face_values=arrays["densepose_part"])
    axes.flat[-1].set_title("DensePose parts", fontsize=10)
    for ax in axes.flat[len(panels):-1]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=70)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--png", type=Path, default=Path("docs/open_body.png"))
    args = parser.parse_args()
    model = load_body_model("open", num_betas=10, dtype=torch.float64)
    arrays = open_body_arrays()
    print(report(model, arrays))
    draw(model, arrays, args.png)


if __name__ == "__main__":
    main()
