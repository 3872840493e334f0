"""Mesh writers (.obj, .ply), written atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fitkit.io.atomic import atomic_write


def write_obj(path: str | Path, vertices, faces) -> Path:
    """Write a triangle mesh: vertices (V,3) meters, faces (F,3) 0-based indices."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    _check(v, f, path)
    with atomic_write(path) as out:
        np.savetxt(out, v, fmt="v %.6f %.6f %.6f")
        np.savetxt(out, f + 1, fmt="f %d %d %d")
    return Path(path)


def write_ply(path: str | Path, vertices, faces) -> Path:
    """Write a binary little-endian PLY triangle mesh (vertices (V,3), faces (F,3))."""
    v = np.asarray(vertices, dtype="<f4")
    f = np.asarray(faces, dtype=np.int64)
    _check(v, f, path)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    rows = np.zeros(len(f), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    rows["n"], rows["idx"] = 3, f
    with atomic_write(path, "wb") as out:
        out.write(header.encode("ascii"))
        out.write(v.tobytes())
        out.write(rows.tobytes())
    return Path(path)


def _check(v, f, path):
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{path}: vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{path}: faces must have shape (F, 3), got {f.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: vertices contain NaN or inf")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"{path}: face indices must lie in [0, {len(v)})")
