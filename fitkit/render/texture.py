"""Approximate texture of a person by back-projecting image colours (seed 001, Sec. 4,
"Data preprocessing": image colours of several frames are back-projected onto the
visible vertices of the fitted body and the texture is their per-channel median).

Two outputs:

* :func:`vertex_colors_from_images`: one colour per mesh vertex (V, 3), for
  :func:`~fitkit.render.shading.render_vertex_colors`.
* :func:`texture_from_images`: a (T, T, 3) texture image for any UV layout
  ``face_uvs`` (F, 3, 2), for :func:`~fitkit.render.shading.render_uv_texture`.
  The open body ships without a UV layout; :func:`atlas_uvs` gives a generic
  fallback (one small triangle per face in a grid of cells), and any other
  layout (e.g. DensePose-style IUV charts) can be passed instead.

:func:`render_textured` renders a fitted body with such colours or texture,
optionally Lambert-shaded and composited over images.

Visibility rule (the same for vertices and texels; :func:`sample_visible`).
A surface point p (camera frame) with unit outward normal n is *seen* in a
frame when

1. it faces the camera: ``cos = n . (-p / |p|) >= cos_min``;
2. its projection lies inside the image, and among the four pixel centres
   around it (the bilinear taps) those whose z-buffer depth is within
   ``tol = depth_tol + 1.5 * (z / f) * tan(theta)`` of the point's depth z
   (theta the angle between n and the view ray, cos clamped to >= cos_min;
   1.5 px bounds the distance from the projection to a tap, z / f is a
   pixel's size in meters at depth z) include the nearest one and carry at
   least half of the bilinear weight. A tap showing a nearer surface (an occluder: e.g. an arm in front
   of the torso), a farther one (the background body behind a silhouette) or
   the background (depth +inf) fails this test.

The colour sampled is the bilinear interpolation over the passing taps only
(weights renormalized), so occluders and background never bleed into it.
Rasterization ignores back-face culling, so a point on the far side of the
body is hidden by the near side's depth even if its normal test passed.

Colours are taken per channel as the median over the frames that see the
point (``torch.nanmedian``: for an even count the lower of the two middle
values), which ignores a minority of corrupted frames (occlusion by other
objects, wrong fits, motion blur).

Conventions: OpenCV camera axes (x right, y down, z forward), meters, pixel
coordinates at pixel centres, images (N, H, W, 3) float in [0, 1] or uint8.
Nothing here is differentiable (it runs under ``torch.no_grad``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from fitkit.errors import ParameterError
from fitkit.render.rasterizer import (Fragments, _check_faces, _check_image_size, check_vertices_and_K, interpolate,
                                     rasterize)
from fitkit.render.shading import overlay, render_uv_texture, shade, vertex_normals

__all__ = ["sample_visible", "vertex_colors_from_images", "texture_from_images", "atlas_uvs", "chart_atlas_uvs",
           "uv_rasterize", "fill_vertex_colors", "render_textured"]

#: Points per ``torch.nanmedian`` call (bounds its working memory).
_MEDIAN_CHUNK = 1 << 16


# ---------------------------------------------------------------- checks

def _check_frames(vertices, K, images) -> Tuple[Tensor, Tensor, Tensor]:
    n = check_vertices_and_K(vertices, K)  # one (B = N frames) per image
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] != n or images.shape[3] != 3:
        got = tuple(images.shape) if isinstance(images, (Tensor, np.ndarray)) else type(images).__name__
        raise ParameterError(f"images must have shape (N, H, W, 3) with N={n}, got {got}")
    images = images.to(vertices.device)
    images = images.to(vertices.dtype) / 255.0 if images.dtype == torch.uint8 else images.to(vertices.dtype)
    return vertices, K.to(vertices.device, vertices.dtype), images


def _check_options(min_views, cos_min, depth_tol):
    if int(min_views) != min_views or min_views < 1:
        raise ParameterError(f"min_views must be an integer >= 1, got {min_views!r}")
    if not (-1.0 <= float(cos_min) < 1.0):
        raise ParameterError(f"cos_min must lie in [-1, 1), got {cos_min!r}")
    if not (float(depth_tol) >= 0 and math.isfinite(float(depth_tol))):
        raise ParameterError(f"depth_tol must be finite and >= 0 (meters), got {depth_tol!r}")


# ---------------------------------------------------------------- visibility and sampling

def sample_visible(points: Tensor, normals: Tensor, K: Tensor, fragments: Fragments, images: Tensor, *,
                   cos_min: float = 0.2, depth_tol: float = 0.01) -> Tuple[Tensor, Tensor]:
    """Colours of surface points in the frames that see them (rule in the module docstring).

    Args:
        points: (N, M, 3) camera-frame surface points per frame, meters.
        normals: (N, M, 3) their unit outward normals (camera frame).
        K: (N, 3, 3) intrinsics.
        fragments: :func:`rasterize` of the body in these N frames (its z-buffer).
        images: (N, H, W, 3) float images of the same size as the fragments.
        cos_min: minimum cosine between normal and the direction to the camera.
        depth_tol: meters of depth slack on top of the slope term.
    Returns:
        (colors (N, M, 3) with NaN where not seen, seen (N, M) bool).
    """
    n, m = points.shape[:2]
    h, w = fragments.image_size
    dt = points.dtype
    z = points[..., 2]
    dist = points.norm(dim=-1).clamp(min=1e-12)
    cos = -(normals * points).sum(-1) / dist
    zc = z.clamp(min=1e-6)
    k = K.to(dt)
    u = k[:, None, 0, 0] * points[..., 0] / zc + k[:, None, 0, 1] * points[..., 1] / zc + k[:, None, 0, 2]
    v = k[:, None, 1, 0] * points[..., 0] / zc + k[:, None, 1, 1] * points[..., 1] / zc + k[:, None, 1, 2]
    focal = torch.sqrt(k[:, 0, 0] * k[:, 1, 1]).abs()[:, None]
    c = cos.clamp(min=max(float(cos_min), 0.05), max=1.0)
    tol = depth_tol + 1.5 * (z / focal) * torch.sqrt(1.0 - c * c) / c

    front = (cos >= cos_min) & (z > 0) & torch.isfinite(u) & torch.isfinite(v)
    front &= (u > -1.0) & (u < w) & (v > -1.0) & (v < h)
    u = torch.where(front, u, torch.zeros_like(u))
    v = torch.where(front, v, torch.zeros_like(v))
    x0, y0 = u.floor(), v.floor()
    fx, fy = u - x0, v - y0
    x0, y0 = x0.long(), y0.long()
    depth = fragments.depth.to(dt).reshape(n, h * w)
    img = images.reshape(n, h * w, 3)
    acc = points.new_zeros(n, m, 3)
    wsum = points.new_zeros(n, m)
    near_ok = torch.zeros(n, m, dtype=torch.bool, device=points.device)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
        zt = torch.gather(depth, 1, flat)
        ok = inside & front & ((zt - z).abs() <= tol)
        near_ok |= ok & ((fx >= 0.5) == bool(dx)) & ((fy >= 0.5) == bool(dy))
        wt = wt * ok.to(dt)
        col = torch.gather(img, 1, flat[..., None].expand(-1, -1, 3))
        acc += wt[..., None] * col
        wsum += wt
    seen = front & near_ok & (wsum >= 0.5 - 1e-9)
    colors = acc / wsum.clamp(min=1e-12)[..., None]
    colors = torch.where(seen[..., None], colors, torch.full_like(colors, float("nan")))
    return colors, seen


def _median(samples: Tensor) -> Tensor:
    """Per-point, per-channel nanmedian over frames of (N, M, 3) -> (M, 3) (NaN where none)."""
    m = samples.shape[1]
    out = samples.new_full((m, 3), float("nan"))
    for s in range(0, m, _MEDIAN_CHUNK):
        out[s:s + _MEDIAN_CHUNK] = torch.nanmedian(samples[:, s:s + _MEDIAN_CHUNK], dim=0).values
    return out


# ---------------------------------------------------------------- per vertex

def fill_vertex_colors(colors: Tensor, faces: Tensor, *, max_iters: int = 1000, smooth_iters: int = 10) -> Tensor:
    """Fill the NaN rows of (V, 3) ``colors`` from their mesh neighbours.

    Phase 1 (front propagation, Jacobi): every iteration, each unknown vertex
    with at least one known neighbour (over the edges of ``faces``) gets the
    mean of its known neighbours; repeated until nothing changes (at most
    ``max_iters``). Phase 2: ``smooth_iters`` Jacobi iterations of neighbour
    averaging on the filled vertices only (the known ones stay fixed), which
    smooths the streaks of phase 1. Vertices in components without any known
    vertex get the median of the known colours (0.5 grey when none is known).
    """
    faces = _check_faces(faces)
    known = ~torch.isnan(colors).any(-1)
    out = torch.where(known[:, None], colors, torch.zeros_like(colors))
    if bool(known.all()):
        return out
    if not bool(known.any()):
        return torch.full_like(colors, 0.5)
    src = torch.cat([faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 1], faces[:, 2], faces[:, 0]])
    dst = torch.cat([faces[:, 1], faces[:, 2], faces[:, 0], faces[:, 0], faces[:, 1], faces[:, 2]])
    filled = known.clone()
    for _ in range(int(max_iters)):
        wk = filled.to(out.dtype)
        s = torch.zeros_like(out).index_add_(0, dst, out[src] * wk[src, None])
        cnt = torch.zeros_like(wk).index_add_(0, dst, wk[src])
        new = ~filled & (cnt > 0)
        if not bool(new.any()):
            break
        out[new] = s[new] / cnt[new, None]
        filled |= new
    free = filled & ~known
    deg = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device).index_add_(
        0, dst, torch.ones_like(dst, dtype=out.dtype))
    for _ in range(int(smooth_iters)):
        s = torch.zeros_like(out).index_add_(0, dst, out[src])
        out = torch.where(free[:, None], s / deg.clamp(min=1)[:, None], out)
    if not bool(filled.all()):
        out[~filled] = colors[known].median(dim=0).values
    return out


@torch.no_grad()
def vertex_colors_from_images(vertices: Tensor, faces: Tensor, K: Tensor, images, *, min_views: int = 1,
                              cos_min: float = 0.2, depth_tol: float = 0.01, fill: bool = True,
                              frame_chunk: int = 8) -> Tuple[Tensor, Tensor]:
    """Per-vertex colours of a body seen in several frames: median of back-projected image colours.

    Args:
        vertices: (N, V, 3) the fitted body's vertices in each frame's camera frame, meters.
        faces: (F, 3) long, outward-oriented (counter-clockwise seen from outside, as SMPL).
        K: (N, 3, 3) intrinsics.
        images: (N, H, W, 3) float in [0, 1] or uint8 (tensor or numpy).
        min_views: vertices seen in fewer frames are treated as unseen (filled).
        cos_min: a vertex is used in a frame only if cos(normal, direction to
            the camera) >= cos_min (grazing views sample smeared colours).
        depth_tol: meters of z-buffer slack (see the module docstring).
        fill: fill the unseen vertices from their neighbours (:func:`fill_vertex_colors`);
            False leaves them NaN.
        frame_chunk: frames rasterized at once (bounds memory).
    Returns:
        (colors (V, 3) float in [0, 1] of the vertices' dtype, seen (V,) long:
        the number of frames that saw each vertex).
    """
    vertices, K, images = _check_frames(vertices, K, images)
    faces = _check_faces(faces).to(vertices.device)
    _check_options(min_views, cos_min, depth_tol)
    n, h, w = images.shape[:3]
    samples = []
    for s in range(0, n, max(1, int(frame_chunk))):
        verts = vertices[s:s + frame_chunk]
        frags = rasterize(verts, faces, K[s:s + frame_chunk], (h, w))
        col, _ = sample_visible(verts, vertex_normals(verts, faces), K[s:s + frame_chunk], frags,
                                images[s:s + frame_chunk], cos_min=cos_min, depth_tol=depth_tol)
        samples.append(col)
    samples = torch.cat(samples, 0)  # (N, V, 3)
    seen = (~torch.isnan(samples[..., 0])).sum(0)
    colors = _median(samples)
    colors[seen < min_views] = float("nan")
    if fill:
        colors = fill_vertex_colors(colors, faces)
    return colors, seen


# ---------------------------------------------------------------- per texel

def chart_atlas_uvs(face_part: Tensor, face_uv: Tensor, *, columns: int = 6, margin: float = 0.02) -> Tensor:
    """A UV layout from per-part charts (e.g. :class:`fitkit.render.iuv.IUVCharts`): DensePose's
    24-tile texture atlas. Part p's (U, V) square becomes tile ``p - 1`` of a ``columns``-wide
    grid (row-major from the top, shrunk by ``margin`` of a tile on every side), so textures
    stay continuous inside every part.

    Args:
        face_part: (F,) long, part 1..P of every face.
        face_uv: (F, 3, 2) per-corner (U, V) in [0, 1] within the face's part.
    Returns:
        (F, 3, 2) (u, v) in [0, 1] (v up, for ``flip_v=True``).
    """
    if face_part.ndim != 1 or face_uv.shape != (face_part.shape[0], 3, 2):
        raise ParameterError(f"face_part (F,) and face_uv (F, 3, 2) expected, got {tuple(face_part.shape)} "
                             f"and {tuple(face_uv.shape)}")
    parts = int(face_part.max())
    rows = -(-parts // columns)
    tile = (face_part - 1).to(face_uv.device)
    col = (tile % columns).to(face_uv.dtype)[:, None]
    row = (tile // columns).to(face_uv.dtype)[:, None]
    inner = face_uv.clamp(0, 1) * (1 - 2 * margin) + margin
    u = (col + inner[..., 0]) / columns
    v = 1.0 - (row + 1.0 - inner[..., 1]) / rows
    return torch.stack([u, v], dim=-1)


def atlas_uvs(num_faces: int, cells: Optional[int] = None, *, margin: float = 0.1,
              dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """A generic fallback UV layout: face f gets its own small triangle in a grid of cells.

    The unit square is cut into ``cells`` x ``cells`` cells (default
    ceil(sqrt(num_faces))); face f lies in column f % cells, row f // cells
    (counted from v = 1 down, so face 0 is at the top-left of a texture image
    with ``flip_v=True``), as the right triangle with corners (0, 0), (1, 0),
    (0, 1) of the cell shrunk by ``margin`` of a cell on every side. It has no
    continuity between faces, so a texture of size T gives about
    (T / cells)^2 / 2 * (1 - 2 margin)^2 texels per face: use T >= 4 cells.

    Returns:
        (num_faces, 3, 2) (u, v) in [0, 1] for :func:`texture_from_images` and
        :func:`~fitkit.render.shading.render_uv_texture` (``flip_v=True``).
    """
    if int(num_faces) != num_faces or num_faces < 1:
        raise ParameterError(f"num_faces must be a positive integer, got {num_faces!r}")
    cells = int(math.ceil(math.sqrt(num_faces))) if cells is None else int(cells)
    if cells * cells < num_faces:
        raise ParameterError(f"cells={cells} gives {cells * cells} cells < num_faces={num_faces}")
    if not 0 <= margin < 0.5:
        raise ParameterError(f"margin must lie in [0, 0.5), got {margin!r}")
    f = torch.arange(num_faces, device=device)
    col, row = (f % cells).to(dtype), (f // cells).to(dtype)
    lo, hi = margin, 1.0 - margin
    corners = torch.tensor([[lo, lo], [hi, lo], [lo, hi]], dtype=dtype, device=device)  # (u, down) in a cell
    u = (col[:, None] + corners[None, :, 0]) / cells
    v = 1.0 - (row[:, None] + corners[None, :, 1]) / cells
    return torch.stack([u, v], -1)


def uv_rasterize(face_uvs: Tensor, texture_size: int, *, flip_v: bool = True) -> Tuple[Tensor, Tensor]:
    """Which face and barycentrics every texel centre of a T x T texture lies in.

    The UV triangles are rasterized as 2D shapes (texel (x, y) has centre
    u = (x + 0.5) / T and v = 1 - (y + 0.5) / T for ``flip_v``, as in
    :func:`~fitkit.render.shading.render_uv_texture`); overlapping charts go
    to the smaller face id.

    Returns:
        (face (T, T) long, -1 outside every chart; bary (T, T, 3)).
    """
    t = int(texture_size)
    if t != texture_size or t < 1:
        raise ParameterError(f"texture_size must be a positive integer, got {texture_size!r}")
    if not isinstance(face_uvs, Tensor) or face_uvs.dim() != 3 or face_uvs.shape[1:] != (3, 2):
        got = tuple(face_uvs.shape) if isinstance(face_uvs, Tensor) else type(face_uvs).__name__
        raise ParameterError(f"face_uvs must have shape (F, 3, 2), got {got}")
    uv = face_uvs.to(torch.float64).reshape(-1, 2)
    px = uv[:, 0] * t - 0.5
    py = ((1.0 - uv[:, 1]) if flip_v else uv[:, 1]) * t - 0.5
    verts = torch.stack([px, py, torch.ones_like(px)], -1)[None]
    K = torch.eye(3, dtype=torch.float64, device=uv.device)[None]
    tri = torch.arange(verts.shape[1], device=uv.device).view(-1, 3)
    frags = rasterize(verts, tri, K, (t, t))
    return frags.face[0], frags.bary[0]


@torch.no_grad()
def texture_from_images(vertices: Tensor, faces: Tensor, K: Tensor, images, face_uvs: Tensor,
                        texture_size: int, *, min_views: int = 1, cos_min: float = 0.2,
                        depth_tol: float = 0.01, fill: bool = True, flip_v: bool = True,
                        frame_chunk: int = 8) -> Tuple[Tensor, Tensor]:
    """A (T, T, 3) texture of a body seen in several frames: per-texel median of back-projected colours.

    The UV layout is rasterized once (:func:`uv_rasterize`); for every frame
    each chart texel's 3D surface point (its barycentrics applied to the
    frame's vertices) and normal (interpolated vertex normals) are tested for
    visibility and sampled as in :func:`sample_visible`; the texel colour is
    the per-channel median over the frames that see it. With ``fill``, texels
    seen in fewer than ``min_views`` frames and texels outside every chart
    take the colour of the nearest (Euclidean, in texels) filled texel
    (``scipy.ndimage.distance_transform_edt``), which also pads the chart
    borders against bilinear bleeding.

    Args:
        vertices, faces, K, images, min_views, cos_min, depth_tol, frame_chunk:
            as in :func:`vertex_colors_from_images`.
        face_uvs: (F, 3, 2) UV layout (u, v in [0, 1]), e.g. :func:`atlas_uvs`.
        texture_size: T, texels per side.
        fill: fill unseen texels; False leaves them NaN.
        flip_v: the v convention of :func:`~fitkit.render.shading.render_uv_texture`.
    Returns:
        (texture (T, T, 3) of the vertices' dtype, seen (T, T) long: frames seeing each texel).
    """
    vertices, K, images = _check_frames(vertices, K, images)
    faces = _check_faces(faces).to(vertices.device)
    _check_options(min_views, cos_min, depth_tol)
    if face_uvs.shape[0] != faces.shape[0]:
        raise ParameterError(f"face_uvs has {face_uvs.shape[0]} faces, faces has {faces.shape[0]}")
    n, h, w = images.shape[:3]
    t = int(texture_size)
    tface, tbary = uv_rasterize(face_uvs.to(vertices.device), t, flip_v=flip_v)
    texels = torch.nonzero(tface.reshape(-1) >= 0).squeeze(1)
    corner = faces.index_select(0, tface.reshape(-1).index_select(0, texels))  # (P, 3)
    bary = tbary.reshape(-1, 3).index_select(0, texels).to(vertices.dtype)  # (P, 3)
    samples = []
    for s in range(0, n, max(1, int(frame_chunk))):
        verts = vertices[s:s + frame_chunk]
        normals = vertex_normals(verts, faces)
        pts = (verts[:, corner] * bary[None, :, :, None]).sum(2)  # (n, P, 3)
        nrm = torch.nn.functional.normalize((normals[:, corner] * bary[None, :, :, None]).sum(2), dim=-1)
        frags = rasterize(verts, faces, K[s:s + frame_chunk], (h, w))
        col, _ = sample_visible(pts, nrm, K[s:s + frame_chunk], frags, images[s:s + frame_chunk],
                                cos_min=cos_min, depth_tol=depth_tol)
        samples.append(col)
    samples = torch.cat(samples, 0)  # (N, P, 3)
    seen_p = (~torch.isnan(samples[..., 0])).sum(0)
    col_p = _median(samples)
    col_p[seen_p < min_views] = float("nan")
    texture = vertices.new_full((t * t, 3), float("nan"))
    texture[texels] = col_p
    seen = torch.zeros(t * t, dtype=torch.long, device=vertices.device)
    seen[texels] = seen_p
    texture, seen = texture.view(t, t, 3), seen.view(t, t)
    if fill:
        texture = _fill_nearest(texture)
    return texture, seen


def _fill_nearest(texture: Tensor) -> Tensor:
    """NaN texels of (T, T, 3) take the colour of the nearest non-NaN texel (0.5 grey when none)."""
    from scipy.ndimage import distance_transform_edt

    known = ~torch.isnan(texture).any(-1)
    if bool(known.all()):
        return texture
    if not bool(known.any()):
        return torch.full_like(texture, 0.5)
    _, idx = distance_transform_edt(~known.cpu().numpy(), return_indices=True)
    iy = torch.from_numpy(idx[0]).to(texture.device)
    ix = torch.from_numpy(idx[1]).to(texture.device)
    return texture[iy, ix]


# ---------------------------------------------------------------- rendering

@torch.no_grad()
def render_textured(vertices: Tensor, faces: Tensor, K: Tensor, image_size: Sequence[int], *,
                    vertex_colors: Optional[Tensor] = None, uv_texture: Optional[Tuple[Tensor, Tensor]] = None,
                    background=None, shading: bool = True, alpha: float = 1.0, flip_v: bool = True,
                    light_dir=(0.0, 0.0, -1.0), ambient: float = 0.3) -> Tensor:
    """Render a fitted body with back-projected colours, optionally shaded and over images.

    Args:
        vertices: (B, V, 3) camera frame; faces (F, 3); K (B, 3, 3); image_size (H, W).
        vertex_colors: (V, 3) or (B, V, 3) per-vertex colours (:func:`vertex_colors_from_images`), or
        uv_texture: ``(face_uvs (F, 3, 2), texture (T, T, 3) or (1|B, T, T, 3))``
            (:func:`texture_from_images`); exactly one of the two.
        background: None (black), or (B, H, W, 3) / (H, W, 3) images (float
            [0, 1] or uint8, tensor or numpy) the render is blended onto with
            :func:`~fitkit.render.shading.overlay` (opacity ``alpha``).
        shading: multiply by Lambert + ambient shading (headlight ``light_dir``,
            ``ambient``) of the smooth vertex normals; False gives flat colours.
    Returns:
        (B, H, W, 3) float in [0, 1] (0 on the background when it is None);
        with a uint8 background, uint8.
    """
    if (vertex_colors is None) == (uv_texture is None):
        raise ParameterError("render_textured needs exactly one of vertex_colors and uv_texture")
    faces = _check_faces(faces).to(vertices.device)
    h, w = _check_image_size(image_size)
    frags = rasterize(vertices, faces, K.to(vertices.device, vertices.dtype), (h, w))
    if vertex_colors is not None:
        colors = interpolate(frags, vertex_colors.to(vertices.device, vertices.dtype), faces)
    else:
        face_uvs, texture = uv_texture
        texture = texture.to(vertices.device, vertices.dtype)
        if texture.dim() == 3:
            texture = texture[None]
        colors = render_uv_texture(frags, faces, face_uvs.to(vertices.device), texture, flip_v=flip_v)
    if shading:
        normals = torch.nn.functional.normalize(interpolate(frags, vertex_normals(vertices, faces), faces),
                                                dim=-1, eps=1e-12)
        colors = shade(normals, frags.mask, light_dir, ambient=ambient, albedo=colors)
    colors = colors.clamp(0.0, 1.0)
    if background is None:
        return colors
    bg = torch.as_tensor(np.asarray(background)) if isinstance(background, np.ndarray) else background
    if bg.dim() == 3:
        bg = bg[None].expand(colors.shape[0], -1, -1, -1)
    if bg.shape != colors.shape:
        raise ParameterError(f"background must have shape (B, H, W, 3) or (H, W, 3) = {tuple(colors.shape[1:])}, "
                             f"got {tuple(bg.shape)}")
    mask = frags.mask.cpu() if bg.device.type == "cpu" else frags.mask
    return torch.stack([overlay(bg[b], colors[b].to(bg.device), mask[b].to(bg.device), alpha=alpha)
                        for b in range(colors.shape[0])])
