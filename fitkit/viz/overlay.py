"""Fit overlays: observed and fitted 2D keypoints (and the projected mesh) on the image.

Drawn with OpenCV in full-image pixels, integer coordinates at pixel centres
(OpenCV's own drawing convention, and fitkit's). Images are BGR, as
``cv2.imread`` returns them. The PNG is written atomically.

Legend: the mesh is a semi-transparent blue layer (filled triangles when
depths are given, painted far to near; a wireframe otherwise); observed
keypoints are green circles (confidence-0 points are skipped); fitted
keypoints are red crosses; a thin yellow line joins each observed point to its
fitted counterpart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fitkit.body.keypoint_formats import get_format
from fitkit.errors import ParameterError
from fitkit.io.atomic import atomic_write

# BGR colours.
MESH_COLOR = (200, 120, 40)
OBSERVED_COLOR = (60, 200, 60)
FITTED_COLOR = (40, 40, 230)
PAIR_COLOR = (0, 220, 240)
CANVAS_GREY = 128
MESH_ALPHA = 0.45

# Sub-pixel drawing: OpenCV takes integer points scaled by 2**_SHIFT.
_SHIFT = 4
_SCALE = 1 << _SHIFT
# Points further than this outside the image (pixels) are clamped before the
# integer conversion, so stray projections cannot overflow int32.
_CLAMP = 1 << 20

# Bones by keypoint name; a format uses the pairs whose names it has.
_BONES = (
    ("nose", "neck"), ("neck", "right_shoulder"), ("neck", "left_shoulder"), ("neck", "mid_hip"),
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("mid_hip", "left_hip"), ("mid_hip", "right_hip"),
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("left_ankle", "left_heel"), ("left_ankle", "left_big_toe"), ("left_big_toe", "left_small_toe"),
    ("right_ankle", "right_heel"), ("right_ankle", "right_big_toe"), ("right_big_toe", "right_small_toe"),
    ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
    ("right_heel", "right_foot_index"), ("right_ankle", "right_foot_index"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
    ("left_wrist", "left_pinky"), ("left_wrist", "left_index"), ("left_wrist", "left_thumb"),
    ("right_wrist", "right_pinky"), ("right_wrist", "right_index"), ("right_wrist", "right_thumb"),
)


def skeleton_edges(format_name: str) -> list[tuple[int, int]]:
    """Index pairs of the bones drawn for a keypoint format."""
    names = get_format(format_name).names
    where = {n: i for i, n in enumerate(names)}
    return [(where[a], where[b]) for a, b in _BONES if a in where and b in where]


def _array(x, name: str, trailing: Optional[tuple] = None, dtype=np.float64, rows: str = "N") -> Optional[np.ndarray]:
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if trailing is not None and (arr.ndim != 1 + len(trailing) or arr.shape[1:] != trailing):
        want = "(" + ", ".join([rows] + [str(t) for t in trailing]) + ")"
        raise ParameterError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ParameterError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(dtype)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Float pixels -> int32 fixed-point coordinates for OpenCV's ``shift`` argument."""
    return np.round(np.clip(points, -_CLAMP, _CLAMP) * _SCALE).astype(np.int32)


def _load_image(image, image_size) -> np.ndarray:
    import cv2

    if image is None:
        if image_size is None:
            raise ParameterError("draw_overlay needs image or image_size=(width, height)")
        w, h = (int(v) for v in image_size)
        if w <= 0 or h <= 0:
            raise ParameterError(f"image_size must be positive (width, height), got {tuple(image_size)}")
        return np.full((h, w, 3), CANVAS_GREY, dtype=np.uint8)
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"overlay image not found: {path}")
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ParameterError(f"{path}: cannot decode the image file")
    else:
        img = np.asarray(image)
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
            raise ParameterError(f"image must be an HxWx3 (BGR) or HxW uint8 array, got {img.dtype} {img.shape}")
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        else:
            img = img.copy()
    if image_size is not None and (img.shape[1], img.shape[0]) != tuple(int(v) for v in image_size):
        raise ParameterError(f"image is {img.shape[1]}x{img.shape[0]} but image_size is {tuple(image_size)}")
    return np.ascontiguousarray(img)


def _draw_mesh(canvas: np.ndarray, mesh_2d: np.ndarray, faces: Optional[np.ndarray],
               depth: Optional[np.ndarray]) -> None:
    import cv2

    h, w = canvas.shape[:2]
    layer = canvas.copy()
    if faces is None:
        finite = np.isfinite(mesh_2d).all(axis=1)
        for x, y in _fixed(mesh_2d[finite]):
            cv2.circle(layer, (int(x), int(y)), _SCALE, MESH_COLOR, -1, cv2.LINE_8, _SHIFT)
    else:
        if len(faces) and (faces.min() < 0 or faces.max() >= len(mesh_2d)):
            raise ParameterError(f"faces index vertices outside [0, {len(mesh_2d)})")
        tri = mesh_2d[faces]  # (F, 3, 2)
        keep = np.isfinite(tri).all(axis=(1, 2))
        lo, hi = tri.min(axis=1), tri.max(axis=1)
        keep &= (hi[:, 0] >= -0.5) & (lo[:, 0] <= w - 0.5) & (hi[:, 1] >= -0.5) & (lo[:, 1] <= h - 0.5)
        if depth is not None:
            face_depth = depth[faces].mean(axis=1)
            keep &= np.isfinite(face_depth)
        idx = np.flatnonzero(keep)
        pts = _fixed(tri[idx])
        if depth is None:
            cv2.polylines(layer, list(pts), True, MESH_COLOR, 1, cv2.LINE_AA, _SHIFT)
        elif len(idx):
            d = face_depth[idx]
            order = np.argsort(-d, kind="stable")  # far first, near last
            near, far = d.min(), d.max()
            t = (far - d) / (far - near) if far > near else np.ones_like(d)
            shade = 0.55 + 0.45 * t  # nearer faces brighter, so the shape reads
            colors = (np.asarray(MESH_COLOR, np.float64)[None, :] * shade[:, None]).round().astype(int).tolist()
            fill = cv2.fillConvexPoly
            for i in order.tolist():
                fill(layer, pts[i], colors[i], cv2.LINE_8, _SHIFT)
    # Pixels the mesh did not touch are equal in both images and stay unchanged.
    cv2.addWeighted(layer, MESH_ALPHA, canvas, 1.0 - MESH_ALPHA, 0.0, dst=canvas)


def draw_overlay(path, *, image=None, image_size: Optional[Sequence[int]] = None, observed=None,
                 fitted=None, mesh_2d=None, faces=None, mesh_depth=None,
                 skeleton_format: Optional[str] = None) -> Path:
    """Draw a fit overlay and write it as a PNG, atomically.

    Args:
        path: output file (written as PNG whatever the suffix).
        image: None (a grey canvas of ``image_size``), an HxWx3 BGR (or HxW)
            uint8 array, or an image file path.
        image_size: (width, height); required without ``image``, checked against it otherwise.
        observed: (K, 3) observed keypoints x, y, confidence (pixels); points
            with confidence <= 0 or non-finite values are not drawn.
        fitted: (K, 2) projected model keypoints (pixels).
        mesh_2d: (V, 2) projected vertices (pixels), or None.
        faces: (F, 3) vertex indices; without them the vertices are drawn as dots.
        mesh_depth: (V,) camera-frame depths; with faces, fills the triangles
            far to near. Without depths the mesh is a wireframe.
        skeleton_format: a keypoint format name to also draw bones between keypoints.
    Returns:
        ``Path(path)``.
    Raises:
        FileNotFoundError naming a missing image file; ParameterError for bad shapes.
    """
    import cv2

    canvas = _load_image(image, image_size)
    h, w = canvas.shape[:2]
    observed = _array(observed, "observed", (3,), rows="K")
    fitted = _array(fitted, "fitted", (2,), rows="K")
    mesh_2d = _array(mesh_2d, "mesh_2d", (2,), rows="V")
    faces = _array(faces, "faces", (3,), dtype=np.int64, rows="F")
    mesh_depth = _array(mesh_depth, "mesh_depth")
    if observed is not None and fitted is not None and len(observed) != len(fitted):
        raise ParameterError(f"observed has {len(observed)} keypoints but fitted has {len(fitted)}")
    if mesh_depth is not None:
        if mesh_2d is None or mesh_depth.shape != (len(mesh_2d),):
            raise ParameterError(f"mesh_depth must have shape (V,) matching mesh_2d, got {mesh_depth.shape}")
    if faces is not None and mesh_2d is None:
        raise ParameterError("faces given without mesh_2d")
    edges = skeleton_edges(skeleton_format) if skeleton_format is not None else []
    for arr, name in ((observed, "observed"), (fitted, "fitted")):
        if arr is not None and edges and len(arr) != get_format(skeleton_format).num_keypoints:
            raise ParameterError(f"{name} has {len(arr)} keypoints but format {skeleton_format!r} "
                                 f"has {get_format(skeleton_format).num_keypoints}")

    if mesh_2d is not None and len(mesh_2d):
        _draw_mesh(canvas, mesh_2d, faces, mesh_depth)

    size = max(w, h)
    radius = max(2.0, size / 250.0)
    thick = max(1, int(round(size / 500.0)))
    obs_ok = None
    if observed is not None:
        obs_ok = np.isfinite(observed).all(axis=1) & (observed[:, 2] > 0)
    fit_ok = None if fitted is None else np.isfinite(fitted).all(axis=1)

    if edges:
        if fitted is not None:
            for a, b in edges:
                if fit_ok[a] and fit_ok[b]:
                    pa, pb = _fixed(fitted[[a, b]])
                    cv2.line(canvas, tuple(pa.tolist()), tuple(pb.tolist()), FITTED_COLOR, 1, cv2.LINE_AA, _SHIFT)
        if observed is not None:
            for a, b in edges:
                if obs_ok[a] and obs_ok[b]:
                    pa, pb = _fixed(observed[[a, b], :2])
                    cv2.line(canvas, tuple(pa.tolist()), tuple(pb.tolist()), OBSERVED_COLOR, thick,
                             cv2.LINE_AA, _SHIFT)
    if observed is not None and fitted is not None:
        for k in np.flatnonzero(obs_ok & fit_ok):
            pa, pb = _fixed(observed[k, :2]), _fixed(fitted[k])
            cv2.line(canvas, tuple(pa.tolist()), tuple(pb.tolist()), PAIR_COLOR, 1, cv2.LINE_AA, _SHIFT)
    if observed is not None:
        r = int(round(radius * _SCALE))
        for k in np.flatnonzero(obs_ok):
            cv2.circle(canvas, tuple(_fixed(observed[k, :2]).tolist()), r, OBSERVED_COLOR, thick,
                       cv2.LINE_AA, _SHIFT)
    if fitted is not None:
        marker = max(5, int(round(2.5 * radius)))
        for k in np.flatnonzero(fit_ok):
            x, y = np.clip(np.round(fitted[k]), -_CLAMP, _CLAMP).astype(int).tolist()
            cv2.drawMarker(canvas, (x, y), FITTED_COLOR, cv2.MARKER_CROSS, marker, thick, cv2.LINE_AA)

    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:  # pragma: no cover - encoding a uint8 BGR image does not fail
        raise RuntimeError(f"{path}: OpenCV could not encode the overlay as PNG")
    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())
    return Path(path)
