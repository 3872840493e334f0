"""Benchmark BodyModel: forward and forward+backward, joints / keypoints / full mesh.

    python tools/bench_body.py                    # open body, CPU (+ CUDA when present)
    python tools/bench_body.py --device cuda --batch-sizes 1 64 1024 4096
    python tools/bench_body.py --model smpl --model-path /path/SMPL_NEUTRAL.pkl

Timings are medians over repeated runs after a warm-up (CUDA synchronized).
"fwd" builds the autograd graph as a fitting iteration does; "fwd+bwd" adds the
backward pass of a scalar loss to all four parameter tensors. Peak memory is
torch.cuda.max_memory_allocated on CUDA and, on CPU, the peak resident-set
growth over one fwd+bwd (sampled every millisecond, so approximate).
(glibc is told to unmap freed large blocks so that RSS tracks live tensors).
--model synthetic uses a random SMPL-format model with --synthetic-vertices
vertices and no pose correctives.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fitkit.body import load_body_model  # noqa: E402
from fitkit.body.model import BodyModel  # noqa: E402
from fitkit.body.synthetic import synthetic_keypoint_set, synthetic_smpl_arrays  # noqa: E402


def load_model(args) -> tuple[BodyModel, str, str | None]:
    """(model, description, name of a 25-keypoint set or None)."""
    if args.model == "open":
        model = load_body_model("open")
        return model, f"open body (V={model.num_vertices})", _kp25(model)
    if args.model == "synthetic":
        return _synthetic(args.synthetic_vertices, correctives=False)
    if args.model_path:
        from fitkit.body.model_files import load_model_arrays

        arrays = load_model_arrays(args.model_path)
        kps = synthetic_keypoint_set(arrays["v_template"].shape[0], name="kp25")
        model = BodyModel(arrays, keypoint_sets={"kp25": kps})
        return model, f"SMPL file {Path(args.model_path).name} (V={model.num_vertices})", "kp25"
    return _synthetic(6890, correctives=True)


def _synthetic(num_vertices: int, correctives: bool):
    kps = synthetic_keypoint_set(num_vertices, name="kp25")
    model = BodyModel(synthetic_smpl_arrays(num_vertices, pose_correctives=correctives), keypoint_sets={"kp25": kps})
    kind = "with" if correctives else "without"
    return model, f"synthetic SMPL-format (V={num_vertices}, {kind} pose correctives)", "kp25"


def _kp25(model: BodyModel) -> str | None:
    sets = model.keypoint_sets
    return next((k for k, s in sets.items() if s.num_keypoints == 25), next(iter(sets), None))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _glibc_release_large_blocks() -> None:
    """Make glibc map every block >= 128 KiB separately and unmap it when freed.

    Otherwise freed tensor memory stays in the process and RSS growth reads ~0
    for every case after the first large one.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD; also stops its dynamic growth
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _RssPeak:
    """Peak growth of the resident set over a block, sampled every millisecond (Linux)."""

    def __enter__(self):
        _glibc_release_large_blocks()
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _poll(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def grown(self) -> int:
        return self.peak - self.base


def make_step(model, plan, batch, device):
    """(forward, forward+backward) closures over fresh random parameters."""
    g = torch.Generator(device="cpu").manual_seed(0)
    dt = model.dtype

    def param(*shape, scale):
        return (torch.randn(*shape, generator=g, dtype=dt) * scale).to(device).requires_grad_()

    params = dict(global_orient=param(batch, 3, scale=1.0), body_pose=param(batch, model.body_pose_dim, scale=0.3),
                  betas=param(batch, model.num_betas, scale=1.0), transl=param(batch, 3, scale=1.0))

    def forward():
        out = model(**params, plan=plan, validate=False)
        parts = [out.joints] + [t for t in (out.vertices, out.keypoints) if t is not None]
        return sum(t.square().sum() for t in parts)

    def fwd_bwd():
        forward().backward()

    return forward, fwd_bwd


def median_time(fn, device, budget_s, max_reps) -> float:
    """Median seconds per call after a warm-up; as many repeats as fit in budget_s."""
    return timed_median(fn, device, budget_s, max_reps)[0]


def timed_median(fn, device, budget_s, max_reps, *, once_if_slower=False) -> tuple[float, int]:
    """(median seconds per call, repeats) after a warm-up call; at least 3 repeats,
    as many as fit in budget_s, at most max_reps. With ``once_if_slower`` a call
    slower than the whole budget is timed once (for very slow reference paths)."""
    fn()
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t0
    if once_if_slower and first > budget_s:
        return first, 1
    reps = max(3, min(max_reps, int(budget_s / max(first, 1e-6))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), reps


def peak_memory(fn, device) -> int:
    """Bytes: CUDA peak allocation, or peak RSS growth on CPU, over one call."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        _sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with _RssPeak() as rss:
        fn()
    return rss.grown


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 10 else f"{s * 1e3:.0f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("open", "smpl", "synthetic"), default="open",
                    help="open: the embedded open body; smpl: --model-path, else a synthetic V=6890 SMPL; synthetic: see --synthetic-vertices")
    ap.add_argument("--model-path", help="SMPL .pkl/.npz for --model smpl")
    ap.add_argument("--synthetic-vertices", type=int, default=13718,
                    help="V of the --model synthetic stand-in")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cpu and cuda when present)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--budget", type=float, default=1.5, help="seconds of timed repeats per measurement")
    ap.add_argument("--max-reps", type=int, default=50)
    ap.add_argument("--threads", type=int, help="torch intra-op CPU threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    model, desc, kp_name = load_model(args)
    model = model.to(getattr(torch, args.dtype))

    print(f"model: {desc}; torch {torch.__version__}; dtype {args.dtype}; "
          f"CPU threads {torch.get_num_threads()} of {os.cpu_count()} cores; "
          f"load average before {os.getloadavg()[0]:.1f}\n")
    print("| device | batch | output | fwd ms | fwd+bwd ms | peak mem MB |")
    print("|---|---:|---|---:|---:|---:|")
    for dev_name in devices:
        device = torch.device(dev_name)
        model = model.to(device)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        cases = [("joints only", None)]
        if kp_name:
            cases.append((f"{kp_name} keypoints", model.plan(keypoints=kp_name)))
        cases.append(("full mesh", model.plan("all")))
        rows = []
        for batch in args.batch_sizes:
            for name, plan in cases:
                fwd, fwd_bwd = make_step(model, plan, batch, device)
                times = [median_time(fn, device, args.budget, args.max_reps) for fn in (fwd, fwd_bwd)]
                rows.append((batch, name, plan, times))
        # Memory last: on CPU it changes how glibc allocates, which would skew timings.
        for batch, name, plan, (t_fwd, t_bwd) in rows:
            peak = peak_memory(make_step(model, plan, batch, device)[1], device)
            print(f"| {label} | {batch} | {name} | {_fmt_time(t_fwd)} | {_fmt_time(t_bwd)} | "
                  f"{peak / 2**20:.1f} |", flush=True)


if __name__ == "__main__":
    main()
