"""Fit overlays: observed and fitted 2D keypoints (and the projected mesh) on the image.

Drawn with OpenCV in full-image pixels, integer coordinates at pixel centres
(OpenCV's own drawing convention, and fitkit's). Images are BGR, as
``cv2.imread`` returns them. :func:`compose_overlay` returns the picture as an
array; :func:`draw_overlay` writes it as a PNG, atomically.

What is drawn: the mesh is a semi-transparent blue layer (filled triangles
when depths are given, painted far to near; a wireframe otherwise); observed
keypoints are green circles (confidence-0 points are skipped); fitted
keypoints are red crosses; a thin yellow line joins each observed point to its
fitted counterpart. A legend box in the top-left corner names these colours
and gives the frame id and the frame's mean 2D error in pixels. Side and top
views of the body (:mod:`fitkit.viz.views`) can be appended on the right,
scaled to the image's height.

Image sizes: coordinates refer to the observed frame (``image_size``); an
image of another size with the same aspect ratio (within
:data:`ASPECT_TOLERANCE`) gets every coordinate scaled to it.

Also here: :func:`parse_frame_selection` (which frames ``fitkit fit
--overlays FRAMES`` draws) and :class:`VideoFrames`, which reads the video
frames named by ``image_paths`` entries ``<video>#<index>``
(:func:`fitkit.io.observations.video_frame_ref`) forwards, one
``cv2.VideoCapture`` per video.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fitkit.body.keypoint_formats import get_format
from fitkit.errors import ParameterError
from fitkit.io.atomic import atomic_write
from fitkit.io.observations import video_frame_ref

logger = logging.getLogger(__name__)

# BGR colours.
MESH_COLOR = (200, 120, 40)
OBSERVED_COLOR = (60, 200, 60)
FITTED_COLOR = (40, 40, 230)
PAIR_COLOR = (0, 220, 240)
LEGEND_TEXT = (245, 245, 245)
CANVAS_GREY = 128
MESH_ALPHA = 0.45
#: Largest relative difference of aspect ratio between a given image and ``image_size``.
ASPECT_TOLERANCE = 0.03

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
    """The canvas: a copy of the given image (BGR uint8) or a grey one of ``image_size``."""
    import cv2

    if image is None:
        if image_size is None:
            raise ParameterError("draw_overlay needs image or image_size=(width, height)")
        w, h = (int(v) for v in image_size)
        if w <= 0 or h <= 0:
            raise ParameterError(f"image_size must be positive (width, height), got {tuple(image_size)}")
        return np.full((h, w, 3), CANVAS_GREY, dtype=np.uint8)
    if isinstance(image, (str, Path)):
        ref = video_frame_ref(str(image))
        if ref is not None:
            with VideoFrames() as frames:
                img = frames.frame(*ref)
        else:
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
    return np.ascontiguousarray(img)


def image_scale(given_size: Sequence[int], image_size: Optional[Sequence[int]]) -> tuple[float, float]:
    """(sx, sy) mapping pixels of an ``image_size`` (w, h) frame onto an image of ``given_size`` (w, h).

    Raises ParameterError naming both sizes when their aspect ratios differ by
    more than :data:`ASPECT_TOLERANCE` (a crop or a rotated frame, not a resize).
    """
    if image_size is None:
        return 1.0, 1.0
    gw, gh = (int(v) for v in given_size)
    w, h = (float(v) for v in image_size)
    if (gw, gh) == (w, h):
        return 1.0, 1.0
    if w <= 0 or h <= 0:
        raise ParameterError(f"image_size must be positive (width, height), got {tuple(image_size)}")
    sx, sy = gw / w, gh / h
    if abs(sx / sy - 1.0) > ASPECT_TOLERANCE:
        raise ParameterError(f"image is {gw}x{gh} but image_size is {tuple(image_size)}: the aspect ratios "
                             f"({gw / gh:.3f} and {w / h:.3f}) differ by more than {ASPECT_TOLERANCE:.0%}, "
                             "so the image is not a resized copy of the observed frame")
    return sx, sy


def _scale_points(points: Optional[np.ndarray], sx: float, sy: float) -> Optional[np.ndarray]:
    """Pixel coordinates (integer = pixel centre) of an image resized by (sx, sy): (u + 0.5) s - 0.5."""
    if points is None or (sx, sy) == (1.0, 1.0):
        return points
    out = points.copy()
    out[:, 0] = (out[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = (out[:, 1] + 0.5) * sy - 0.5
    return out


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


def compose_overlay(*, image=None, image_size: Optional[Sequence[int]] = None, observed=None,
                    fitted=None, mesh_2d=None, faces=None, mesh_depth=None,
                    skeleton_format: Optional[str] = None, frame_id: Optional[str] = None,
                    error_px: Optional[float] = None, legend: bool = True,
                    side_views: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """The overlay image as an array (nothing is written); :func:`draw_overlay` writes it.

    Args:
        image: None (a grey canvas of ``image_size``), an HxWx3 BGR (or HxW)
            uint8 array, an image file path, or a video frame ``<video>#<index>``
            (see :func:`fitkit.io.observations.video_frame_ref`; opens the video
            for this one frame: to draw many frames of a video, read them with
            :class:`VideoFrames` and pass the arrays).
        image_size: (width, height) of the frame the pixel coordinates refer to
            (the observation's ``image_size``); required without ``image``.
            When the given image has another size, every 2D coordinate is
            scaled to it (pixel centres kept: u' = (u + 0.5) * W_image / W - 0.5);
            the aspect ratios must agree within :data:`ASPECT_TOLERANCE`.
        observed: (K, 3) observed keypoints x, y, confidence (pixels of
            ``image_size``); points with confidence <= 0 or non-finite values are not drawn.
        fitted: (K, 2) projected model keypoints (pixels).
        mesh_2d: (V, 2) projected vertices (pixels), or None.
        faces: (F, 3) vertex indices; without them the vertices are drawn as dots.
        mesh_depth: (V,) camera-frame depths; with faces, fills the triangles
            far to near. Without depths the mesh is a wireframe.
        skeleton_format: a keypoint format name to also draw bones between keypoints.
        frame_id: printed in the legend box.
        error_px: the frame's mean 2D keypoint error (pixels of ``image_size``)
            printed in the legend box; None computes it, when both ``observed``
            and ``fitted`` are given, as the unweighted mean distance over the
            keypoints with confidence > 0 (as :func:`fitkit.eval.metrics.err2d`).
        legend: draw the legend box (top-left): frame id, 2D error and a
            swatch for each of observed / fitted / mesh that is drawn.
        side_views: BGR uint8 images (e.g. :func:`fitkit.viz.views.render_body_views`)
            appended to the right, each scaled to the image's height.
    Returns:
        (H, W + widths of the scaled side views, 3) BGR uint8.
    Raises:
        FileNotFoundError naming a missing image file; ParameterError for bad
        shapes or an image whose aspect ratio differs from ``image_size``'s.
    """
    import cv2

    canvas = _load_image(image, image_size)
    h, w = canvas.shape[:2]
    sx, sy = image_scale((w, h), image_size)
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
    side = [_check_view(v, i) for i, v in enumerate(side_views or [])]

    obs_ok = None
    if observed is not None:
        obs_ok = np.isfinite(observed).all(axis=1) & (observed[:, 2] > 0)
    fit_ok = None if fitted is None else np.isfinite(fitted).all(axis=1)
    if error_px is None and obs_ok is not None and fit_ok is not None and obs_ok.any():
        # err2d ignores unobserved points; a non-finite fitted point makes the error NaN, as there
        d = np.linalg.norm(fitted[obs_ok] - observed[obs_ok, :2], axis=1)
        error_px = float(d.mean())
    observed = _scale_points(observed, sx, sy)
    fitted = _scale_points(fitted, sx, sy)
    mesh_2d = _scale_points(mesh_2d, sx, sy)

    if mesh_2d is not None and len(mesh_2d):
        _draw_mesh(canvas, mesh_2d, faces, mesh_depth)

    size = max(w, h)
    radius = max(2.0, size / 250.0)
    thick = max(1, int(round(size / 500.0)))

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

    if legend:
        items = [name for name, arr in (("observed", observed), ("fitted", fitted), ("mesh", mesh_2d))
                 if arr is not None]
        _draw_legend(canvas, frame_id, error_px, items, radius, thick)
    if side:
        scaled = []
        for view in side:
            vh, vw = view.shape[:2]
            new_w = max(1, int(round(vw * h / vh)))
            interp = cv2.INTER_AREA if vh > h else cv2.INTER_LINEAR
            scaled.append(cv2.resize(view, (new_w, h), interpolation=interp) if vh != h else view)
        canvas = np.concatenate([canvas] + scaled, axis=1)
    return canvas


def draw_overlay(path, *, image=None, image_size: Optional[Sequence[int]] = None, observed=None,
                 fitted=None, mesh_2d=None, faces=None, mesh_depth=None,
                 skeleton_format: Optional[str] = None, frame_id: Optional[str] = None,
                 error_px: Optional[float] = None, legend: bool = True,
                 side_views: Optional[Sequence[np.ndarray]] = None) -> Path:
    """Draw a fit overlay (:func:`compose_overlay`) and write it as a PNG, atomically.

    Args:
        path: output file (written as PNG whatever the suffix).
        everything else: as in :func:`compose_overlay`.
    Returns:
        ``Path(path)``.
    Raises:
        FileNotFoundError naming a missing image file; ParameterError for bad shapes.
    """
    import cv2

    canvas = compose_overlay(image=image, image_size=image_size, observed=observed, fitted=fitted,
                             mesh_2d=mesh_2d, faces=faces, mesh_depth=mesh_depth,
                             skeleton_format=skeleton_format, frame_id=frame_id, error_px=error_px,
                             legend=legend, side_views=side_views)
    ok, encoded = cv2.imencode(".png", canvas)
    if not ok:  # pragma: no cover - encoding a uint8 BGR image does not fail
        raise RuntimeError(f"{path}: OpenCV could not encode the overlay as PNG")
    with atomic_write(path, "wb") as handle:
        handle.write(encoded.tobytes())
    logger.debug("wrote overlay %s", path)
    return Path(path)


def _check_view(view, index: int) -> np.ndarray:
    arr = np.asarray(view)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise ParameterError(f"side_views[{index}] must be an HxWx3 BGR uint8 image, got {arr.dtype} {arr.shape}")
    return arr


def legend_box(image_shape: Sequence[int], lines: int = 5) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel box the legend of an (H, W) image may cover (top-left corner)."""
    h, w = image_shape[:2]
    scale = _text_scale(h, w)
    line = int(round(22 * scale))
    return 0, 0, min(w, int(round(230 * scale))), min(h, line * lines + int(round(12 * scale)))


def _text_scale(h: int, w: int) -> float:
    return max(0.35, min(2.5, max(h, w) / 1000.0))


def _draw_legend(canvas: np.ndarray, frame_id, error_px, items: list[str], radius: float, thick: int) -> None:
    """Legend box in the top-left corner: text lines, then one swatch line per drawn layer."""
    import cv2

    h, w = canvas.shape[:2]
    scale = _text_scale(h, w)
    line = int(round(22 * scale))
    pad = int(round(8 * scale))
    font, font_scale, font_thick = cv2.FONT_HERSHEY_SIMPLEX, 0.55 * scale, max(1, int(round(1.2 * scale)))
    texts = []
    if frame_id is not None:
        texts.append(f"frame {frame_id}")
    if error_px is not None:
        texts.append("2D error " + (f"{error_px:.1f} px" if np.isfinite(error_px) else "n/a"))
    rows = len(texts) + len(items)
    if rows == 0:
        return
    x0, y0, x1, y1 = legend_box((h, w), rows)
    # darken the box so the text reads on any image
    box = canvas[y0:y1, x0:x1]
    box[:] = (box.astype(np.uint16) * 2 // 5).astype(np.uint8)
    y = pad + line - int(round(6 * scale))
    for text in texts:
        cv2.putText(canvas, text, (pad, y), font, font_scale, LEGEND_TEXT, font_thick, cv2.LINE_AA)
        y += line
    sw = int(round(10 * scale))
    cx = pad + sw
    for name in items:
        cy = y - int(round(5 * scale))
        if name == "observed":
            cv2.circle(canvas, (cx, cy), max(2, int(round(0.5 * sw))), OBSERVED_COLOR, max(1, thick), cv2.LINE_AA)
        elif name == "fitted":
            cv2.drawMarker(canvas, (cx, cy), FITTED_COLOR, cv2.MARKER_CROSS, max(5, sw + 2), max(1, thick),
                           cv2.LINE_AA)
        else:
            cv2.rectangle(canvas, (cx - sw // 2, cy - sw // 2), (cx + sw // 2, cy + sw // 2), MESH_COLOR, -1)
        cv2.putText(canvas, name, (cx + sw + pad // 2, y), font, font_scale, LEGEND_TEXT, font_thick, cv2.LINE_AA)
        y += line


# ---------------------------------------------------------------- frames to draw

def parse_frame_selection(spec, frame_ids: Sequence[str]) -> list[int]:
    """Row indices picked by a frame selection, sorted, without repeats.

    ``spec`` is ``all`` (or None / True, the same), or comma-separated tokens,
    each one of:

    * a frame id (``frame_000010``); a token that is a frame id always means that frame;
    * a row index ``i`` with 0 <= i < N (N = ``len(frame_ids)``);
    * a range ``start:stop:step`` in Python slice form with every part
      optional (``::10``, ``0:100:5``, ``20:``), 0 <= start < N, 0 <= stop <= N, step >= 1.

    Raises ParameterError naming the bad token and the valid range.
    """
    n = len(frame_ids)
    if spec is None or spec is True:
        spec = "all"
    if not isinstance(spec, str):
        raise ParameterError(f"frame selection must be a string such as 'all', '0,10,50' or '::10', got {spec!r}")
    where = {fid: i for i, fid in enumerate(frame_ids)}
    text = spec.strip()
    if text.lower() == "all":
        return list(range(n))
    valid = f"valid: 'all', frame ids, indices 0..{n - 1}, or ranges start:stop:step within 0..{n}"
    picked: set[int] = set()
    for raw in text.split(","):
        token = raw.strip()
        if token in where:
            picked.add(where[token])
            continue
        if not token:
            raise ParameterError(f"frame selection {spec!r} has an empty entry; {valid}")
        if ":" in token:
            parts = token.split(":")
            if len(parts) > 3:
                raise ParameterError(f"frame selection entry {token!r} is not start:stop:step; {valid}")
            try:
                nums = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
            except ValueError:
                raise ParameterError(f"frame selection entry {token!r} is not start:stop:step with integers; "
                                     f"{valid}") from None
            start, stop, step = nums
            start = 0 if start is None else start
            stop = n if stop is None else stop
            step = 1 if step is None else step
            if step < 1 or not 0 <= start < max(n, 1) or not 0 <= stop <= n:
                raise ParameterError(f"frame selection entry {token!r} is out of range (start 0..{n - 1}, "
                                     f"stop 0..{n}, step >= 1) for {n} frames")
            picked.update(range(start, stop, step))
            continue
        try:
            index = int(token)
        except ValueError:
            raise ParameterError(f"frame selection entry {token!r} is neither a frame id nor an index; "
                                 f"{valid}") from None
        if not 0 <= index < n:
            raise ParameterError(f"frame selection entry {token!r} is outside the indices 0..{n - 1} "
                                 f"of the {n} frames")
        picked.add(index)
    return sorted(picked)


class VideoFrames:
    """Frames of videos read forward with ``cv2.VideoCapture`` (no seeking).

    ``frame(path, index)`` returns frame ``index`` (0-based, in decoding
    order, as ``fitkit detect`` counts them) of the video at ``path`` as BGR
    uint8. Each video stays open; asking for increasing indices decodes every
    frame once (frames in between are grabbed, not converted). An index below
    the last one read reopens the video from the start. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(self):
        self._open: dict[str, list] = {}  # path -> [capture, index of the next frame, last frame read]

    def frame(self, path, index: int) -> np.ndarray:
        import cv2

        key = str(path)
        index = int(index)
        state = self._open.get(key)
        if state is not None and index < state[1] - 1:
            logger.debug("%s: frame %d is behind frame %d: reopening the video", key, index, state[1] - 1)
            state[0].release()
            state = None
        if state is None:
            if not Path(key).is_file():
                raise FileNotFoundError(f"overlay video not found: {key}")
            cap = cv2.VideoCapture(key)
            if not cap.isOpened():
                raise ParameterError(f"{key}: cannot open the video")
            state = self._open[key] = [cap, 0, None]
        cap = state[0]
        if index == state[1] - 1 and state[2] is not None:
            return state[2].copy()  # the same frame again
        while state[1] < index:
            if not cap.grab():
                raise ParameterError(f"{key}: the video ends before frame {index} (it has {state[1]} frames)")
            state[1] += 1
        ok, img = cap.read()
        if not ok or img is None:
            raise ParameterError(f"{key}: the video ends before frame {index} (it has {state[1]} frames)")
        state[1] += 1
        state[2] = img
        return img.copy()

    def close(self) -> None:
        for state in self._open.values():
            state[0].release()
        self._open.clear()

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
