"""Benchmark the PyTorch rasterizer on the open body: images per second.

    python tools/bench_render.py                        # CPU (+ CUDA when present), 256 and 512, B = 1, 64
    python tools/bench_render.py --device cuda --sizes 256 512 1024 --batch-sizes 1 64 256
    python tools/bench_render.py --threads 1

Bodies: random poses and shapes from ``make_keypoint_example`` (seed 0),
each seen by its own camera whose focal length makes the body's height 60%
of the image height, centred. "rasterize" is :func:`fitkit.render.rasterize`
(float32); "+ colours" adds :func:`fitkit.render.render_vertex_colors` of
the mean body's vertex positions (seed 001, Sec. 3.1). Timings are medians
(``timed_median`` of tools/bench_body.py, CUDA synchronized). Peak memory is
torch.cuda.max_memory_allocated on CUDA and, on CPU, the peak resident-set
growth over one rasterize + colours call (sampled every millisecond, so
approximate), measured after all timings.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_body import peak_memory, timed_median  # noqa: E402
from fitkit.body import load_body_model  # noqa: E402
from fitkit.eval.synthetic import make_keypoint_example  # noqa: E402
from fitkit.render import position_colors, rasterize, render_vertex_colors  # noqa: E402


def posed_bodies(model, n: int, seed: int = 0) -> torch.Tensor:
    """(n, V, 3) camera-frame vertices of random bodies in front of the camera."""
    g = make_keypoint_example(model, n, seed=seed).gt
    with torch.no_grad():
        return model(g["global_orient"], g["body_pose"], g["betas"], g["transl"], vertices="all").vertices


def framing_intrinsics(verts: torch.Tensor, size: int, height_fraction: float = 0.6) -> torch.Tensor:
    """(B, 3, 3) K per body: its projected height is ``height_fraction`` of the
    image, its box centred in the size x size image."""
    p = verts[..., :2] / verts[..., 2:]
    lo, hi = p.amin(1), p.amax(1)
    f = height_fraction * size / (hi - lo)[:, 1]
    c = (lo + hi) / 2
    K = torch.zeros(verts.shape[0], 3, 3, dtype=verts.dtype, device=verts.device)
    K[:, 0, 0], K[:, 1, 1], K[:, 2, 2] = f, f, 1.0
    K[:, 0, 2] = (size - 1) / 2 - f * c[:, 0]
    K[:, 1, 2] = (size - 1) / 2 - f * c[:, 1]
    return K


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cpu and cuda when present)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="square image sides, pixels")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timed repeats per measurement")
    ap.add_argument("--max-reps", type=int, default=30)
    ap.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if args.device == "auto" else [args.device]

    model = load_body_model("open", num_betas=10)
    verts_all = posed_bodies(model, max(args.batch_sizes))
    template_colors = position_colors(model.v_template)
    faces = model.faces
    print(f"open body: V={model.num_vertices}, F={faces.shape[0]}; torch {torch.__version__}; float32; "
          f"CPU threads {torch.get_num_threads()} of {os.cpu_count()} cores; "
          f"load average before {os.getloadavg()[0]:.1f}\n")
    print("| device | image | batch | covered | rasterize ms | rasterize img/s | + colours ms | + colours img/s "
          "| peak mem MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for dev_name in devices:
        device = torch.device(dev_name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        f_dev, colors = faces.to(device), template_colors.to(device)
        rows = []
        for size in args.sizes:
            for batch in args.batch_sizes:
                verts = verts_all[:batch].to(device)
                K = framing_intrinsics(verts, size)

                def rast(verts=verts, K=K, size=size):
                    return rasterize(verts, f_dev, K, (size, size))

                def rast_colors(verts=verts, K=K, size=size):
                    return render_vertex_colors(rast(verts, K, size), f_dev, colors)

                covered = rast().mask.float().mean().item()
                t_r, _ = timed_median(rast, device, args.budget, args.max_reps)
                t_c, _ = timed_median(rast_colors, device, args.budget, args.max_reps)
                rows.append((size, batch, covered, t_r, t_c, rast_colors))
        # Memory last: on CPU it changes how glibc allocates, which would skew timings.
        for size, batch, covered, t_r, t_c, fn in rows:
            mem = "-" if args.no_memory else f"{peak_memory(fn, device) / 2**20:.0f}"
            print(f"| {label} | {size}x{size} | {batch} | {covered:.1%} | {t_r * 1e3:.1f} | {batch / t_r:.0f} | "
                  f"{t_c * 1e3:.1f} | {batch / t_c:.0f} | {mem} |", flush=True)


if __name__ == "__main__":
    main()
