"""Mesh writers (.obj, .ply), written atomically, with an explicit axis convention.

fitkit's meshes are in the OpenCV camera frame (x right, y down, z forward,
docs/conventions.md), so a fitted body stands head-down in viewers that expect
y up. ``axes`` picks the frame of the written file:

- ``"opencv"`` (default): the vertices as given, x right, y down, z forward.
- ``"yup"``: x right, y up, z towards the viewer (Blender, MeshLab, three.js):
  a 180° rotation about x, (x, y, z) -> (x, -y, -z). A rotation keeps the
  orientation of every triangle, so the face order is unchanged and outward
  normals stay outward.

Both writers keep fitkit's own few lines rather than a mesh library (see
docs/conventions.md, "fitkit's own code and the libraries"); the tests read
the files back with trimesh's loaders.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fitkit.io.atomic import atomic_write

__all__ = ["AXES", "write_obj", "write_ply", "convert_axes"]

#: allowed values of ``axes`` -> the diagonal that maps OpenCV camera axes to them
AXES = {"opencv": (1.0, 1.0, 1.0), "yup": (1.0, -1.0, -1.0)}


def convert_axes(vertices, axes: str = "opencv", *, source: str = "mesh") -> np.ndarray:
    """(V, 3) vertices in OpenCV camera axes -> (V, 3) float64 in ``axes`` (see the module docstring).

    Raises:
        ValueError naming ``source`` and the allowed values when ``axes`` is unknown.
    """
    if axes not in AXES:
        raise ValueError(f"{source}: axes must be one of {', '.join(repr(a) for a in AXES)}, got {axes!r}")
    v = _as_numpy(vertices).astype(np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{source}: vertices must have shape (V, 3), got {v.shape}")
    return v * np.asarray(AXES[axes])


def write_obj(path: str | Path, vertices, faces, axes: str = "opencv") -> Path:
    """Write a triangle mesh as Wavefront OBJ.

    Args:
        path: the file.
        vertices: (V, 3) meters, in fitkit's OpenCV camera axes (array or tensor).
        faces: (F, 3) 0-based vertex indices, counter-clockwise seen from outside.
        axes: ``"opencv"`` or ``"yup"``, the axes of the written file.
    Returns:
        ``path``.
    """
    v = convert_axes(vertices, axes, source=str(path))
    f = _as_numpy(faces).astype(np.int64)
    _check(v, f, path)
    with atomic_write(path) as out:
        np.savetxt(out, v, fmt="v %.6f %.6f %.6f")
        np.savetxt(out, f + 1, fmt="f %d %d %d")
    return Path(path)


def write_ply(path: str | Path, vertices, faces, axes: str = "opencv") -> Path:
    """Write a binary little-endian PLY triangle mesh (float32 vertices, int32 indices).

    Args: as :func:`write_obj`.
    Returns:
        ``path``.
    """
    v64 = convert_axes(vertices, axes, source=str(path))
    f = _as_numpy(faces).astype(np.int64)
    _check(v64, f, path)
    v = v64.astype("<f4")
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


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check(v, f, path):
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{path}: vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{path}: faces must have shape (F, 3), got {f.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{path}: vertices contain NaN or inf")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"{path}: face indices must lie in [0, {len(v)})")
