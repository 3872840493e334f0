"""Draw docs/iuv_charts.png: the open body's IUV charts (I, U, V), front and back views.

Usage: python tools/plot_iuv_charts.py [out.png]
"""
from __future__ import annotations

import sys

import torch


def plot_iuv_charts(out: str = "docs/iuv_charts.png", size: int = 320) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fitkit.body import load_body_model
    from fitkit.render.iuv import open_body_charts

    model = load_body_model("open", dtype=torch.float64)
    charts = open_body_charts(model)
    v = model.v_template
    K = torch.tensor([[size * 1.6, 0, (size - 1) / 2], [0, size * 1.6, (size - 1) / 2], [0, 0, 1]],
                     dtype=torch.float64)[None]
    views = {"front": torch.stack([v[:, 0], -v[:, 1], -v[:, 2] + 3.0], -1),
             "back": torch.stack([-v[:, 0], -v[:, 1], v[:, 2] + 3.0], -1)}
    fig, axes = plt.subplots(2, 3, figsize=(9, 6.4))
    for r, (name, cam) in enumerate(views.items()):
        iuv = charts.render(cam[None], K, (size, size))[0].numpy()
        bg = iuv[..., 0] == 0
        for c, (label, img, cmap, vmax) in enumerate([("I (part)", iuv[..., 0], "tab20b", 24),
                                                       ("U", iuv[..., 1], "viridis", 1),
                                                       ("V", iuv[..., 2], "viridis", 1)]):
            img = img.copy()
            img[bg] = float("nan")
            axes[r, c].imshow(img, cmap=cmap, vmin=0, vmax=vmax)
            axes[r, c].set_title(f"{name}: {label}")
            axes[r, c].axis("off")
    fig.suptitle("open body IUV charts (first of a pair = back)")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    plot_iuv_charts(*sys.argv[1:2])
