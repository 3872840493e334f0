"""Side and top views of a fitted body, to see 3D errors a 2D overlay hides.

A fit can match the 2D keypoints while the body is turned the wrong way
(torso facing off by tens of degrees, a body leaning towards the camera).
:func:`render_body_views` renders the fitted mesh from two virtual cameras and
marks where the real camera is, so such errors show at a glance.

Frames (all in the fit's camera frame, OpenCV axes: x right, y down, z
forward, metres):

* ``c``: the centre of the body's bounding box, the point every virtual camera
  looks at.
* ``"side"``: the real viewing direction turned 90 degrees about the vertical
  (y) axis: the virtual camera sits on the body's +x side (to the right of the
  real camera's view) and looks towards -x, image down = +y (down stays down).
  Image right is then +z (away from the real camera), so the real camera is
  on the **left** of a side view.
* ``"top"``: a camera above the body looking down (+y), image right = +x (as in
  the real image), image down = -z, so the real camera is at the **bottom** of
  a top view.

The virtual cameras are perspective cameras at 5 bounding-sphere radii from
``c``. The side view's focal length is fixed by that radius, the top view's by
the largest horizontal (x, z) distance from ``c``: neither changes when the
body turns about the vertical axis, so widths can be compared between a
facing and a turned body and between frames.
The surface is shaded by the angle between the surface normal and the virtual
view ray (a headlight), with the front of the body (facing the real camera,
normal . (camera - point) > 0) tinted warmer than its back, so which way the
torso faces reads even in a silhouette. The real camera is marked by a yellow
triangle pointing at the body, at the view's edge in the camera's direction
(or at the camera's own projection when it lies inside the view), labelled
"camera"; each view carries its name in the top-left corner.

Rendering uses :func:`fitkit.render.rasterizer.rasterize` and
:func:`fitkit.render.shading.render_normals` on the CPU (or the vertices'
device); the open body (27,420 faces) takes about 0.04 s per 360x480 view and
0.055 s per 540x720 view on one CPU core.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch

from fitkit.errors import ParameterError

logger = logging.getLogger(__name__)

#: BGR colours of the views.
BACKGROUND = (48, 48, 48)
FRONT_COLOR = (150, 190, 235)  # warm skin-like tint: the side facing the real camera
BACK_COLOR = (200, 175, 150)   # cooler: the side facing away
CAMERA_COLOR = (0, 220, 255)
LABEL_COLOR = (235, 235, 235)
AMBIENT = 0.25

VIEW_NAMES = ("side", "top")

# Rows: the virtual camera's x (right), y (down), z (forward) axes in the fit's camera frame.
_VIEW_AXES = {
    "side": np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]),
    "top": np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]),
}
_DISTANCE = 5.0  # virtual camera distance from the body centre, in bounding-sphere radii
_FILL = 0.42     # the bounding sphere spans at most this share of min(W, H) from the image centre


def _numpy(x, name: str, trailing: int, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[1] != trailing or arr.dtype.kind not in "fiu":
        raise ParameterError(f"{name} must be a numeric ({'V' if trailing == 3 else 'F'}, 3) array, "
                             f"got {arr.dtype} {arr.shape}")
    return arr.astype(dtype)


def view_camera(name: str, center: np.ndarray, radius: float, size: Sequence[int],
                lateral: Optional[float] = None):
    """Rotation R (3, 3), camera position ``eye`` (3,) and intrinsics K (3, 3) of a virtual view.

    A point p (fit camera frame) maps to the view's camera frame as ``R @ (p - eye)``.
    ``size`` is (W, H) pixels; ``radius`` (metres) is the body's bounding-sphere
    radius, which sets the camera distance; ``lateral`` (default ``radius``) is
    the largest distance of a vertex from the view axis, which sets the focal
    length so that the body fills the view.
    """
    if name not in _VIEW_AXES:
        raise ParameterError(f"unknown view {name!r}; choose from {', '.join(VIEW_NAMES)}")
    w, h = size
    R = _VIEW_AXES[name]
    eye = center - R[2] * (_DISTANCE * radius)
    lateral = radius if lateral is None else max(float(lateral), 1e-3)
    # No vertex is nearer than (DISTANCE - 1) radii, so none lands over FILL * min(W, H) off centre.
    f = _FILL * min(w, h) * (_DISTANCE - 1.0) * radius / lateral
    K = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
    return R, eye, K


def render_body_views(vertices, faces, *, views: Sequence[str] = VIEW_NAMES, size: Sequence[int] = (360, 480),
                      camera_center=None) -> list[np.ndarray]:
    """Render the mesh from the side and from above, with the real camera marked.

    Args:
        vertices: (V, 3) mesh vertices in the fit's camera frame (OpenCV axes), metres;
            numpy array or tensor.
        faces: (F, 3) vertex indices.
        views: names from ``("side", "top")``, in the order wanted.
        size: (W, H) of each view, pixels.
        camera_center: (3,) position of the real camera in the vertices' frame;
            None: the origin (the vertices are in the real camera's frame).
    Returns:
        one (H, W, 3) BGR uint8 image per view.
    Raises:
        ParameterError for bad shapes, an unknown view or a non-positive size.
    """
    import cv2
    from fitkit.render.rasterizer import rasterize
    from fitkit.render.shading import render_normals

    verts = _numpy(vertices, "vertices", 3, np.float64)
    tri = _numpy(faces, "faces", 3, np.int64)
    if len(verts) == 0 or not np.isfinite(verts).all():
        raise ParameterError(f"vertices must be a non-empty, finite (V, 3) array, got shape {verts.shape}")
    if len(tri) and (tri.min() < 0 or tri.max() >= len(verts)):
        raise ParameterError(f"faces index vertices outside [0, {len(verts)})")
    try:
        w, h = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ParameterError(f"size must be (width, height) in pixels, got {size!r}") from None
    if w < 8 or h < 8:
        raise ParameterError(f"size must be at least 8x8 pixels, got {size!r}")
    names = [views] if isinstance(views, str) else list(views)
    for name in names:
        if name not in _VIEW_AXES:
            raise ParameterError(f"unknown view {name!r}; choose from {', '.join(VIEW_NAMES)}")
    cam = np.zeros(3) if camera_center is None else np.asarray(
        camera_center.detach().cpu().numpy() if hasattr(camera_center, "detach") else camera_center, np.float64)
    if cam.shape != (3,) or not np.isfinite(cam).all():
        raise ParameterError(f"camera_center must be a finite (3,) point, got {cam.shape}")

    center = (verts.min(axis=0) + verts.max(axis=0)) / 2.0
    radius = max(float(np.linalg.norm(verts - center, axis=1).max()), 1e-3)
    horizontal = max(float(np.linalg.norm((verts - center)[:, [0, 2]], axis=1).max()), 1e-3)
    # Which vertices face the real camera: their normal points towards it.
    faces_t = torch.as_tensor(tri)
    from fitkit.render.shading import vertex_normals
    normals = vertex_normals(torch.as_tensor(verts)[None], faces_t)[0].numpy()
    facing = (normals * (cam[None, :] - verts)).sum(axis=1) > 0
    tint = np.where(facing[:, None], np.asarray(FRONT_COLOR, np.float64), np.asarray(BACK_COLOR, np.float64))

    images = []
    for name in names:
        # The top view's scale comes from the horizontal extent, which does not change when the body turns.
        lateral = radius if name == "side" else horizontal
        R, eye, K = view_camera(name, center, radius, (w, h), lateral)
        local = (verts - eye) @ R.T  # (V, 3) in the view's camera frame
        v_t = torch.as_tensor(local)[None]
        frags = rasterize(v_t, faces_t, torch.as_tensor(K)[None], (h, w))
        mask = frags.mask[0].numpy()
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = BACKGROUND
        if mask.any():
            n = render_normals(frags, v_t, faces_t)[0].numpy()  # (H, W, 3)
            # Headlight: brightness from |cos| between the normal and the ray through the pixel.
            ys, xs = np.nonzero(mask)
            rays = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones(len(xs))], axis=1)
            rays /= np.linalg.norm(rays, axis=1, keepdims=True)
            cos = np.abs((n[ys, xs] * rays).sum(axis=1))
            bary = frags.bary[0].numpy()[ys, xs]  # (P, 3)
            corner = tri[frags.face[0].numpy()[ys, xs]]  # (P, 3) vertex ids
            color = (bary[:, :, None] * tint[corner]).sum(axis=1)
            shade = AMBIENT + (1.0 - AMBIENT) * cos
            canvas[ys, xs] = np.clip(color * shade[:, None], 0, 255).round().astype(np.uint8)
        _draw_camera_marker(canvas, R, eye, K, center, cam)
        scale = max(0.4, min(w, h) / 480.0)
        cv2.putText(canvas, name, (int(6 * scale), int(22 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    LABEL_COLOR, max(1, int(round(1.5 * scale))), cv2.LINE_AA)
        images.append(canvas)
    logger.debug("rendered body views %s at %dx%d", names, w, h)
    return images


def camera_marker_position(R: np.ndarray, eye: np.ndarray, K: np.ndarray, center: np.ndarray,
                           camera: np.ndarray, size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Where the camera marker goes in a view: (position (2,), unit direction (2,) from the body to the camera).

    The direction is that of the camera seen from the body centre, in the
    view's image plane (its x, y view coordinates). The marker sits at the
    camera's projection when that lies inside the view (with a margin), else
    at the view's edge along that direction.
    """
    w, h = size
    rel = R @ (camera - center)  # camera relative to the body centre, view axes
    d = rel[:2]
    norm = float(np.linalg.norm(d))
    d = np.array([0.0, 1.0]) if norm < 1e-9 else d / norm
    mid = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    margin = 0.08 * min(w, h)
    local = R @ (camera - eye)
    if local[2] > 1e-6:
        p = K[:2, :2] @ (local[:2] / local[2]) + K[:2, 2]
        if margin <= p[0] <= w - 1 - margin and margin <= p[1] <= h - 1 - margin:
            return p, d
    # distance from the centre to the margin box along d
    t = min((mid[0] - margin) / abs(d[0]) if abs(d[0]) > 1e-9 else np.inf,
            (mid[1] - margin) / abs(d[1]) if abs(d[1]) > 1e-9 else np.inf)
    return mid + t * d, d


def _draw_camera_marker(canvas, R, eye, K, center, camera) -> None:
    import cv2

    h, w = canvas.shape[:2]
    p, d = camera_marker_position(R, eye, K, center, camera, (w, h))
    s = 0.05 * min(w, h)
    normal = np.array([-d[1], d[0]])
    apex = p - d * s          # points at the body
    base = p + d * 0.6 * s
    pts = np.array([apex, base + normal * 0.7 * s, base - normal * 0.7 * s])
    cv2.fillConvexPoly(canvas, np.round(pts * 16).astype(np.int32), CAMERA_COLOR, cv2.LINE_AA, 4)
    scale = max(0.35, min(w, h) / 600.0)
    (tw, th), _ = cv2.getTextSize("camera", cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, 1)
    # the label beside the triangle, across the direction to the body, kept inside the image
    if abs(d[0]) >= abs(d[1]):  # marker on the left or right edge: label below it
        tx, ty = p[0] - tw / 2, p[1] + s + th + 2
    else:  # marker on the top or bottom edge: label to its right
        tx, ty = p[0] + 0.8 * s + 2, p[1] + th / 2
    tx = int(np.clip(tx, 2, w - tw - 2))
    ty = int(np.clip(ty, th + 2, h - 3))
    cv2.putText(canvas, "camera", (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, CAMERA_COLOR, 1, cv2.LINE_AA)
