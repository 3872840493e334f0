"""Shaded mesh drawings with matplotlib alone (painter's algorithm, orthographic).

For documentation figures and quick looks, not for fitting: the rasterizer is
the tool for renders that feed an optimizer.
"""
from __future__ import annotations

import numpy as np

# View directions (the camera looks along -view), with y up on the page.
VIEWS = {
    "front": np.eye(3),
    "side": np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),  # from the body's left
}


def draw_mesh(ax, vertices, faces, view: str = "front", color=(0.75, 0.78, 0.85), face_values=None,
              cmap="tab20"):
    """Draw a triangle mesh on a matplotlib Axes.

    Args:
        vertices: (V,3) meters, SMPL axes (y up, the body faces +z).
        faces: (F,3) vertex indices.
        view: "front" (camera on +z) or "side" (camera on +x, the body's left).
        face_values: optional (F,) integers (e.g. part labels) coloured with cmap.
    """
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection

    v = np.asarray(vertices, float) @ VIEWS[view].T
    tri = v[np.asarray(faces)]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    visible = normal[:, 2] > 0
    order = np.argsort(tri[:, :, 2].mean(1))  # far to near
    order = order[visible[order]]
    light = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])
    shade = 0.35 + 0.65 * np.clip(normal[order] @ light, 0, 1)
    if face_values is None:
        base = np.tile(color, (len(order), 1))
    else:
        base = colormaps[cmap](np.asarray(face_values)[order] % 20)[:, :3]
    polys = PolyCollection(tri[order][:, :, :2], facecolors=base * shade[:, None], edgecolors="none")
    ax.add_collection(polys)
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    pad = 0.05 * (hi - lo).max()
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(lo[1] - pad, hi[1] + pad)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax
