"""Simple renders built on :func:`~fitkit.render.rasterizer.rasterize` and
:func:`~fitkit.render.rasterizer.interpolate`.

Every render returns a (B, H, W, C) float tensor on the fragments' device, 0
on background unless said otherwise. Renders that interpolate attributes
(colours, normals, texture coordinates) are differentiable in those
attributes; masks and depth are not (rasterization has no gradient).
Camera frame: OpenCV axes (x right, y down, z forward), meters.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fitkit.errors import ParameterError
from fitkit.render.rasterizer import Fragments, _check_faces, interpolate

__all__ = ["render_mask", "render_depth", "render_normals", "vertex_normals", "render_vertex_colors",
           "position_colors", "render_uv_texture", "shade", "overlay"]


def render_mask(fragments: Fragments) -> Tensor:
    """(B, H, W, 1) float32: 1 where a face is visible, 0 on background."""
    return fragments.mask[..., None].float()


def render_depth(fragments: Fragments, background: float = 0.0) -> Tensor:
    """(B, H, W, 1) camera-frame z (meters) of the visible surface, ``background`` elsewhere.

    Dtype of the fragments (that of the rasterized vertices).
    """
    depth = torch.where(fragments.mask, fragments.depth, torch.full_like(fragments.depth, background))
    return depth[..., None]


def vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(B, V, 3) unit vertex normals: the sum of the adjacent faces'
    (v1 - v0) x (v2 - v0) (area-weighted), normalized; outward for a closed mesh
    with counter-clockwise faces seen from outside (SMPL). Differentiable."""
    faces = _check_faces(faces)
    tri = vertices[:, faces]  # (B, F, 3, 3)
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    normals = torch.zeros_like(vertices).index_add_(1, faces.reshape(-1), fn.repeat_interleave(3, dim=1))
    return F.normalize(normals, dim=-1, eps=1e-12)


def render_normals(fragments: Fragments, vertices: Tensor, faces: Tensor, *, smooth: bool = True) -> Tensor:
    """(B, H, W, 3) unit surface normals in the frame of ``vertices`` (camera frame), 0 on background.

    Args:
        fragments: from :func:`rasterize` of these vertices and faces.
        vertices: (B, V, 3) the rasterized vertices.
        faces: (F, 3) long.
        smooth: True interpolates the vertex normals of :func:`vertex_normals`
            (renormalized per pixel); False gives each pixel its face's normal
            (v1 - v0) x (v2 - v0), normalized (flat shading).
    Returns:
        Outward normals for outward-oriented meshes: a surface seen from the
        camera has n . (-view direction) >= 0, i.e. n . p <= 0 at the point p.
        Differentiable in ``vertices``.
    """
    faces = _check_faces(faces)
    if smooth:
        normals = interpolate(fragments, vertex_normals(vertices, faces), faces)
        return F.normalize(normals, dim=-1, eps=1e-12)
    tri = vertices[:, faces]  # (B, F, 3, 3)
    fn = torch.linalg.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    return _per_face(fragments, F.normalize(fn, dim=-1, eps=1e-12))


def _per_face(fragments: Fragments, values: Tensor) -> Tensor:
    """(B, H, W, C) the (B, F, C) per-face ``values`` of every pixel's visible face, 0 on background."""
    batch, h, w = fragments.face.shape
    face = fragments.face.reshape(-1)
    pix = torch.nonzero(face >= 0).squeeze(1)
    rows = face.index_select(0, pix) + (pix // (h * w)) * values.shape[1]
    out = values.new_zeros(batch * h * w, values.shape[-1])
    out.index_copy_(0, pix, values.reshape(-1, values.shape[-1]).index_select(0, rows))
    return out.view(batch, h, w, -1)


def render_vertex_colors(fragments: Fragments, faces: Tensor, colors: Tensor) -> Tensor:
    """(B, H, W, C) per-vertex colours (B, V, C) or (V, C), interpolated; 0 on background.

    E.g. ``colors = position_colors(model.v_template)`` paints every pixel with
    the place on the mean body it shows (seed 001, Sec. 3.1).
    """
    return interpolate(fragments, colors, faces)


def position_colors(points: Tensor) -> Tensor:
    """(..., V, 3) colours in [0, 1]: each point's position normalized by the
    bounding box of its set (x, y, z -> r, g, b), e.g. of the mean-shape template."""
    lo = points.amin(dim=-2, keepdim=True)
    hi = points.amax(dim=-2, keepdim=True)
    return (points - lo) / (hi - lo).clamp(min=1e-12)


def render_uv_texture(fragments: Fragments, faces: Tensor, face_uvs: Tensor, texture: Tensor, *,
                      flip_v: bool = True, mode: str = "bilinear") -> Tensor:
    """(B, H, W, C) texture colours at the visible surface; 0 on background.

    Args:
        fragments: from :func:`rasterize` with ``faces``.
        faces: (F, 3) long.
        face_uvs: (F, 3, 2) texture coordinates (u, v) of every face's corners,
            in [0, 1] over the texture's full extent (its outer pixel edges).
        texture: (B, Ht, Wt, C) or (1, Ht, Wt, C) float image.
        flip_v: True (default) for the OBJ/OpenGL convention of SMPL's UV maps,
            v = 0 at the texture's bottom row; False for v = 0 at its top row.
        mode: ``grid_sample`` interpolation, "bilinear" (default) or "nearest".
    Returns:
        Differentiable in ``texture`` and ``face_uvs``. Texture borders clamp.
    """
    faces = _check_faces(faces)
    batch, h, w = fragments.face.shape
    if not isinstance(face_uvs, Tensor) or face_uvs.shape != (faces.shape[0], 3, 2):
        got = tuple(face_uvs.shape) if isinstance(face_uvs, Tensor) else type(face_uvs).__name__
        raise ParameterError(f"face_uvs must have shape (F, 3, 2) with F={faces.shape[0]}, got {got}")
    if not isinstance(texture, Tensor) or texture.dim() != 4 or texture.shape[0] not in (1, batch):
        got = tuple(texture.shape) if isinstance(texture, Tensor) else type(texture).__name__
        raise ParameterError(f"texture must have shape (B, Ht, Wt, C) with B={batch} or 1, got {got}")
    dt = texture.dtype
    face = fragments.face.reshape(-1)
    pix = torch.nonzero(face >= 0).squeeze(1)
    corner_uv = face_uvs.to(dt).index_select(0, face.index_select(0, pix))  # (N, 3, 2)
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix).to(dt)
    uv = torch.bmm(bary[:, None, :], corner_uv).squeeze(1)  # (N, 2)
    grid = torch.stack([2.0 * uv[:, 0] - 1.0, (1.0 - 2.0 * uv[:, 1]) if flip_v else (2.0 * uv[:, 1] - 1.0)], -1)
    grid = texture.new_zeros(batch * h * w, 2).index_copy(0, pix, grid).view(batch, h, w, 2)
    tex = texture.permute(0, 3, 1, 2).expand(batch, -1, -1, -1)
    out = F.grid_sample(tex, grid, mode=mode, padding_mode="border", align_corners=False)  # (B, C, H, W)
    return out.permute(0, 2, 3, 1) * fragments.mask[..., None].to(dt)


def shade(normals: Tensor, mask: Tensor, light_dir: Union[Sequence[float], Tensor] = (0.0, 0.0, -1.0), *,
          ambient: float = 0.3, albedo: Union[float, Sequence[float], Tensor] = (0.8, 0.8, 0.8)) -> Tensor:
    """Lambert plus ambient shading: ``albedo * (ambient + (1 - ambient) * max(0, n . l))``.

    Args:
        normals: (B, H, W, 3) unit normals (e.g. :func:`render_normals`), camera frame.
        mask: (B, H, W) or (B, H, W, 1); 0/False pixels come out 0.
        light_dir: (3,) or (B, 3) direction from the surface *towards* the light,
            camera frame; normalized here. Default (0, 0, -1): a headlight at the camera.
        ambient: share of light reaching every visible pixel, in [0, 1].
        albedo: a number, C numbers, or a (B, H, W, C) tensor of surface colours.
    Returns:
        (B, H, W, C) (C = 3 for the default albedo), differentiable in normals and albedo.
    """
    if normals.dim() != 4 or normals.shape[-1] != 3:
        raise ParameterError(f"normals must have shape (B, H, W, 3), got {tuple(normals.shape)}")
    light = torch.as_tensor(light_dir, dtype=normals.dtype, device=normals.device)
    if light.shape not in ((3,), (normals.shape[0], 3)):
        raise ParameterError(f"light_dir must have shape (3,) or (B, 3), got {tuple(light.shape)}")
    light = F.normalize(light.reshape(-1, 1, 1, 3), dim=-1)
    if mask.dim() == 3:
        mask = mask[..., None]
    lambert = (normals * light).sum(-1, keepdim=True).clamp(min=0)
    intensity = (ambient + (1.0 - ambient) * lambert) * mask.to(normals.dtype)
    albedo = torch.as_tensor(albedo, dtype=normals.dtype, device=normals.device)
    return intensity * (albedo.reshape(-1) if albedo.dim() <= 1 else albedo)


def overlay(image, rendered, mask, alpha: float = 0.7):
    """Blend a render over an image where ``mask`` is set; other pixels are unchanged.

    Args:
        image: (H, W, 3) uint8 (0..255) or float (0..1); numpy array or tensor.
        rendered: (H, W, 3) float in [0, 1] (or uint8 0..255); numpy array or tensor.
        mask: (H, W) or (H, W, 1), bool or float in [0, 1] (soft edges blend partially).
        alpha: opacity of the render in [0, 1].
    Returns:
        (H, W, 3) of the image's type and dtype (uint8 rounded and clipped):
        ``image + alpha * mask * (rendered - image)``.
    """
    as_numpy = isinstance(image, np.ndarray)
    img = torch.as_tensor(np.asarray(image) if as_numpy else image)
    ren = torch.as_tensor(np.asarray(rendered) if isinstance(rendered, np.ndarray) else rendered)
    msk = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).to(img.device)
    if img.dim() != 3 or img.shape[-1] != 3 or ren.shape != img.shape:
        raise ParameterError(f"image and rendered must both have shape (H, W, 3), got {tuple(img.shape)} "
                             f"and {tuple(ren.shape)}")
    if msk.dim() == 3:
        msk = msk[..., 0]
    if msk.shape != img.shape[:2]:
        raise ParameterError(f"mask must have shape (H, W) = {tuple(img.shape[:2])}, got {tuple(msk.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ParameterError(f"alpha must lie in [0, 1], got {alpha!r}")
    is_uint8 = img.dtype == torch.uint8
    base = img.float() / 255.0 if is_uint8 else img.float()
    ren = ren.to(img.device)
    ren = ren.float() / 255.0 if ren.dtype == torch.uint8 else ren.float()
    weight = alpha * msk.float()[..., None]
    blended = base + weight * (ren - base)
    blended = (blended * 255.0).round().clamp(0, 255).to(torch.uint8) if is_uint8 else blended.to(img.dtype)
    out = torch.where(weight > 0, blended, img)  # background pixels exactly unchanged
    return out.cpu().numpy() if as_numpy else out
