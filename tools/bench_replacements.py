"""fitkit's own rotation / Procrustes / .flo / mesh code against the libraries that could replace it.

    python tools/bench_replacements.py              # 1 torch thread, prints one table per question
    python tools/bench_replacements.py --json out.json

For each pair it reports exactness (values, and gradients where the fitting code
differentiates through the function) against an independent float64 reference
(SciPy's rotations, NumPy's SVD, central finite differences), and speed as a
ratio library time / fitkit time (median of several repeats, 1 thread). The
decisions drawn from it are in docs/conventions.md ("fitkit's own code and the
libraries").
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import roma
import torch
from scipy.spatial.transform import Rotation

from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.eval.metrics import procrustes_align
from fitkit.fitting.rotations import rot6d_to_matrix

F64 = torch.float64


def former_matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """fitkit's hand-written matrix -> axis-angle before it moved to roma (commit 9f35714), kept
    here only to measure against: (..., 3, 3) -> (..., 3), angle in [0, pi].

    Goes through a unit quaternion chosen with the largest of its four
    components computed directly (numerically safe near 0 and near pi).
    """
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Squared quaternion components, each from a different combination of the diagonal.
    cand = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], dim=-1)
    k = cand.argmax(dim=-1, keepdim=True)
    s = torch.sqrt(cand.gather(-1, k).clamp(min=1e-12)) * 2  # 4 * |q_k|
    s = s[..., 0]
    w_from = torch.stack([
        torch.stack([s / 4, (m[..., 2, 1] - m[..., 1, 2]) / s, (m[..., 0, 2] - m[..., 2, 0]) / s,
                     (m[..., 1, 0] - m[..., 0, 1]) / s], -1),
        torch.stack([(m[..., 2, 1] - m[..., 1, 2]) / s, s / 4, (m[..., 0, 1] + m[..., 1, 0]) / s,
                     (m[..., 0, 2] + m[..., 2, 0]) / s], -1),
        torch.stack([(m[..., 0, 2] - m[..., 2, 0]) / s, (m[..., 0, 1] + m[..., 1, 0]) / s, s / 4,
                     (m[..., 1, 2] + m[..., 2, 1]) / s], -1),
        torch.stack([(m[..., 1, 0] - m[..., 0, 1]) / s, (m[..., 0, 2] + m[..., 2, 0]) / s,
                     (m[..., 1, 2] + m[..., 2, 1]) / s, s / 4], -1),
    ], dim=-2)  # (..., 4 choices, 4 quaternion components w, x, y, z)
    q = w_from.gather(-2, k[..., None].expand(*k.shape[:-1], 1, 4))[..., 0, :]
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0 -> angle in [0, pi]
    vec = q[..., 1:]
    sin_half = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    # angle / sin(angle/2) -> 2 as the angle -> 0
    factor = torch.where(sin_half > 1e-6, angle / sin_half.clamp(min=1e-12), 2.0 + angle * angle / 12)
    return vec * factor

#: angle classes the fitting code meets: the zero pose, tiny, small, ordinary, and up to pi
ANGLES = {"0": 0.0, "1e-7": 1e-7, "1e-5": 1e-5, "1e-3": 1e-3, "0.1": 0.1, "1.0": 1.0, "2.5": 2.5,
          "pi-1e-3": np.pi - 1e-3, "pi-1e-6": np.pi - 1e-6}


def _median_time(fn, repeats: int = 15) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _rotvecs(angle: float, n: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    axes = g.normal(size=(n, 3))
    return axes / np.linalg.norm(axes, axis=1, keepdims=True) * angle


def _vjp_fd(f64, r: np.ndarray, cot: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """(n, 3) gradient of sum(cot * f64(r)) by central differences (float64)."""
    out = np.zeros_like(r)
    for a in range(3):
        d = np.zeros(3)
        d[a] = h
        out[:, a] = ((f64(r + d) - f64(r - d)) * cot).reshape(len(r), -1).sum(1) / (2 * h)
    return out


def rotvec_to_matrix_exactness(n: int = 64) -> dict:
    """Max |value error| and max |gradient error| of axis-angle -> matrix, per angle and dtype."""
    impls = {"fitkit (lbs.axis_angle_to_matrix)": axis_angle_to_matrix, "roma.rotvec_to_rotmat": roma.rotvec_to_rotmat}
    rows = {}
    for label, angle in ANGLES.items():
        r = _rotvecs(angle, n, 1)
        ref = Rotation.from_rotvec(r).as_matrix()
        cot = np.random.default_rng(2).normal(size=(n, 3, 3))
        ref_grad = _vjp_fd(lambda x: Rotation.from_rotvec(x).as_matrix(), r, cot)
        for name, fn in impls.items():
            for dtype in (torch.float32, F64):
                x = torch.tensor(r, dtype=dtype, requires_grad=True)
                R = fn(x)
                (R * torch.tensor(cot, dtype=dtype)).sum().backward()
                rows.setdefault(name, {})[f"{label} {str(dtype)[6:]}"] = {
                    "value": float(np.abs(R.detach().double().numpy() - ref).max()),
                    "grad": float(np.abs(x.grad.double().numpy() - ref_grad).max())}
    return rows


def _tangent_jacobian(fn, R0: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) d fn(R0 exp([w]x)) / dw at w = 0, by autograd (fn: (n,3,3) -> (n,3))."""
    w = torch.zeros(R0.shape[0], 3, dtype=R0.dtype, requires_grad=True)
    out = fn(R0 @ axis_angle_to_matrix(w))
    rows = [torch.autograd.grad(out[:, i].sum(), w, retain_graph=True)[0] for i in range(3)]
    return torch.stack(rows, dim=1)


def matrix_to_rotvec_exactness(n: int = 64) -> dict:
    """Max |value error| (sign-free at pi) and max |tangent-Jacobian error| of matrix -> axis-angle."""
    impls = {"fitkit former (quaternion code)": former_matrix_to_axis_angle, "roma.rotmat_to_rotvec": roma.rotmat_to_rotvec}
    rows = {}
    h = 1e-6
    for label, angle in ANGLES.items():
        r = _rotvecs(angle, n, 3)
        R0 = Rotation.from_rotvec(r)
        ref = R0.as_rotvec()
        ref_jac = np.zeros((n, 3, 3))
        for a in range(3):
            d = np.zeros(3)
            d[a] = h
            plus = (R0 * Rotation.from_rotvec(d)).as_rotvec()
            minus = (R0 * Rotation.from_rotvec(-d)).as_rotvec()
            ref_jac[:, :, a] = (plus - minus) / (2 * h)
        for name, fn in impls.items():
            for dtype in (torch.float32, F64):
                Rt = torch.tensor(R0.as_matrix(), dtype=dtype)
                v = fn(Rt).double().numpy()
                err = np.minimum(np.abs(v - ref).max(1), np.abs(v + ref).max(1)).max()
                entry = {"value": float(err)}
                if angle < np.pi - 1e-2:  # the Jacobian is unbounded at pi (the axis flips)
                    jac = _tangent_jacobian(fn, Rt).double().numpy()
                    entry["grad"] = float(np.abs(jac - ref_jac).max())
                rows.setdefault(name, {})[f"{label} {str(dtype)[6:]}"] = entry
    return rows


def _roma_rot6d(x: torch.Tensor) -> torch.Tensor:
    """fitkit's column-order 6D (first column, then second) through roma.special_gramschmidt."""
    return roma.special_gramschmidt(x.unflatten(-1, (2, 3)).transpose(-1, -2))


def rot6d_exactness(n: int = 4096) -> dict:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(n, 6, generator=g, dtype=F64, requires_grad=True)
    a = rot6d_to_matrix(x)
    ga, = torch.autograd.grad(a.sum(), x)
    b = _roma_rot6d(x)
    gb, = torch.autograd.grad(b.sum(), x)
    return {"max |value difference|": float((a - b).abs().max().detach()), "max |gradient difference|": float((ga - gb).abs().max())}


def _umeyama_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(J,3) x aligned onto (J,3) y by a similarity (float64 NumPy, written independently)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    U, S, Vt = np.linalg.svd(yc.T @ xc)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (xc ** 2).sum()
    return s * xc @ R.T + my


def _roma_align(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    R, t, s = roma.rigid_points_registration(pred, gt, compute_scaling=True)
    return s[:, None, None] * pred @ R.transpose(1, 2) + t[:, None]


def procrustes_exactness(n: int = 256) -> dict:
    g = torch.Generator().manual_seed(5)
    gt = torch.randn(n, 24, 3, generator=g, dtype=F64)
    R = roma.random_rotmat(n, dtype=F64)
    pred = 0.8 * gt @ R.transpose(1, 2) + 0.05 * torch.randn(n, 24, 3, generator=g, dtype=F64)
    pred[: n // 2] = pred[: n // 2] * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)  # half need a reflection: refused
    ref = np.stack([_umeyama_numpy(p, q) for p, q in zip(pred.numpy(), gt.numpy())])
    out = {}
    for name, fn in {"fitkit (procrustes_align)": procrustes_align, "roma.rigid_points_registration": _roma_align}.items():
        out[name] = {"max |error| vs numpy Umeyama": float(np.abs(fn(pred, gt).numpy() - ref).max())}
    same = torch.zeros(1, 24, 3, dtype=F64)  # all predicted points coincide
    for name, fn in {"fitkit (procrustes_align)": procrustes_align, "roma.rigid_points_registration": _roma_align}.items():
        out[name]["coincident points finite"] = bool(torch.isfinite(fn(same, gt[:1])).all())
    return out


def speed(threads: int) -> dict:
    torch.set_num_threads(threads)
    out = {}
    g = torch.Generator().manual_seed(6)
    for n in (16 * 24, 1024 * 24):
        for dtype in (torch.float32, F64):
            r = (torch.randn(n, 3, generator=g) * 0.5).to(dtype)

            def fwd_bwd(fn, x0):
                def run():
                    x = x0.detach().requires_grad_()
                    fn(x).sum().backward()
                return run

            key = f"n={n} {str(dtype)[6:]}"
            t_own = _median_time(fwd_bwd(axis_angle_to_matrix, r))
            t_lib = _median_time(fwd_bwd(roma.rotvec_to_rotmat, r))
            out.setdefault("axis-angle -> matrix (fwd+bwd)", {})[key] = {"fitkit s": t_own, "roma s": t_lib,
                                                                        "roma / fitkit": t_lib / t_own}
            Rm = axis_angle_to_matrix(r)
            t_own = _median_time(fwd_bwd(former_matrix_to_axis_angle, Rm))
            t_lib = _median_time(fwd_bwd(roma.rotmat_to_rotvec, Rm))
            out.setdefault("matrix -> axis-angle (fwd+bwd)", {})[key] = {"fitkit s": t_own, "roma s": t_lib,
                                                                        "roma / fitkit": t_lib / t_own}
            x6 = torch.randn(n, 6, generator=g).to(dtype)
            t_own = _median_time(fwd_bwd(rot6d_to_matrix, x6))
            t_lib = _median_time(fwd_bwd(_roma_rot6d, x6))
            out.setdefault("6D -> matrix (fwd+bwd)", {})[key] = {"fitkit s": t_own, "roma s": t_lib,
                                                                "roma / fitkit": t_lib / t_own}
    for n in (16, 1024):
        pred = torch.randn(n, 24, 3, generator=g, dtype=F64)
        gt = torch.randn(n, 24, 3, generator=g, dtype=F64)
        t_own = _median_time(lambda: procrustes_align(pred, gt))
        t_lib = _median_time(lambda: _roma_align(pred, gt))
        out.setdefault("Procrustes (float64, 24 joints)", {})[f"n={n}"] = {"fitkit s": t_own, "roma s": t_lib,
                                                                          "roma / fitkit": t_lib / t_own}
    return out


def io_speed() -> dict:
    import cv2

    from fitkit.io.flow_readers import read_flo, write_flo
    from fitkit.io.mesh import write_obj, write_ply

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.flo"
        field = np.random.default_rng(7).normal(size=(1080, 1920, 2)).astype(np.float32)
        write_flo(path, field)
        t_own = _median_time(lambda: read_flo(path), 7)
        t_lib = _median_time(lambda: cv2.readOpticalFlow(str(path)), 7)
        same = bool(np.array_equal(read_flo(path), cv2.readOpticalFlow(str(path))))
        out[".flo read 1920x1080"] = {"fitkit s": t_own, "cv2 s": t_lib, "cv2 / fitkit": t_lib / t_own,
                                      "identical arrays": same}
        try:
            import trimesh
        except ImportError:
            return out
        from fitkit.body import load_body_model

        model = load_body_model("open", num_betas=10)
        z = torch.zeros(1, 3)
        verts = model(z, torch.zeros(1, 69), torch.zeros(1, 10), z, vertices="all").vertices[0].numpy()
        faces = np.asarray(model.faces)
        mesh = trimesh.Trimesh(verts, faces, process=False)
        for ext, own in (("obj", write_obj), ("ply", write_ply)):
            p = Path(tmp) / f"m.{ext}"
            t_own = _median_time(lambda: own(p, verts, faces), 7)
            t_lib = _median_time(lambda: mesh.export(str(Path(tmp) / f"t.{ext}")), 7)
            out[f"{ext} write ({len(verts)} vertices)"] = {"fitkit s": t_own, "trimesh s": t_lib,
                                                          "trimesh / fitkit": t_lib / t_own}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write every number here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = {"axis-angle -> matrix exactness": rotvec_to_matrix_exactness(),
              "matrix -> axis-angle exactness": matrix_to_rotvec_exactness(),
              "6D -> matrix, fitkit vs roma": rot6d_exactness(),
              "Procrustes exactness": procrustes_exactness(),
              "speed": speed(args.threads), "io speed": io_speed()}
    for title, block in report.items():
        print(f"\n== {title}")
        for name, val in block.items():
            if isinstance(val, dict):
                print(f"  {name}")
                for k, v in val.items():
                    print(f"    {k:28s} {json.dumps(v, default=lambda o: round(o, 4))}")
            else:
                print(f"  {name:28s} {val}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
