"""Batched z-buffer rasterizer for triangle meshes, in plain PyTorch.

Conventions (those of :mod:`fitkit.camera`): vertices are camera-frame points
(OpenCV axes: x right, y down, z forward, meters); ``K`` maps them to pixels
whose integer coordinates are pixel *centres*; pixel (x, y) is row y, column x
of an (H, W) image. Every pixel centre is sampled once (no anti-aliasing).

Algorithm (vectorized; Python loops only over a few box-size buckets and
memory-bounded chunks, never over faces or pixels):

1. Project the vertices with K; per (sample, face) pair, twice the signed
   screen area and the box of pixel centres the triangle can cover, clipped
   to the image. Faces with a vertex at z < ``near`` or not finite, zero
   screen area, an empty clipped box or (``cull_backfaces``) facing away from
   the camera are dropped.
2. Group the kept faces by box size into buckets of kh x kw pixels (sides 1,
   2, 3, 4, 6, 8, 12, 16, ... up to the image size). A bucket's candidates are
   a (faces, kh, kw) grid of pixel centres, in chunks of at most
   :data:`MAX_CANDIDATES` grid cells; the three screen-space barycentrics
   and 1/z are affine in the pixel offset, so each is one broadcast sum.
3. A candidate is inside its triangle when its three barycentrics are >= 0
   (edges inclusive, either winding), so a pixel centre on an edge shared by
   two faces is claimed by both and the depth test picks one. Depth
   z = 1 / sum(b_i / z_i) (perspective-correct).
4. Z-buffer: one ``scatter_reduce(amin)`` per chunk over the flat pixel index
   ``b*H*W + y*W + x`` of an int64 key packing (float32 depth bits, face id),
   so the nearest face wins and exact depth ties go to the smallest face id
   (deterministic, the same on CPU and CUDA).
5. For the winning face of each covered pixel, the perspective-correct
   barycentrics and the depth are computed again in the vertices' dtype (so a
   float64 input gives float64 depth and barycentrics). The inside test and
   the depth test run in float32: surfaces within ~1e-7 relative depth are a
   tie, and a pixel centre within ~1e-7 of a silhouette edge may fall either way.

Memory: the outputs (B*H*W * (8 + 3*4 + 4) bytes in float32) plus about
70 bytes per grid cell of a chunk (see :data:`MAX_CANDIDATES`) and ~100 bytes
per (sample, face) pair for the setup.

Nothing here is differentiable (it runs under ``torch.no_grad``); gradients
come through :func:`interpolate`, which is differentiable in the attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor

from fitkit.errors import ParameterError

__all__ = ["Fragments", "rasterize", "interpolate", "MAX_CANDIDATES"]

#: Grid cells (candidate face-pixel pairs) processed at once: the working memory of
#: the depth test is about 70 bytes per cell (~150 MB). A single face whose bucket
#: is larger (up to the whole image) is processed alone.
MAX_CANDIDATES = 1 << 21

_NO_HIT = torch.iinfo(torch.int64).max
_FACE_BITS = 32


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize` for a batch of B images of H x W pixels.

    Attributes:
        face: (B, H, W) long, index into ``faces`` of the visible triangle,
            -1 on background.
        bary: (B, H, W, 3) perspective-correct barycentric coordinates of the
            pixel centre in that face, in the order of the face's vertices
            (sum 1; 0 on background). Dtype of the rasterized vertices.
        depth: (B, H, W) camera-frame z (meters) of the visible surface;
            +inf on background.
    """

    face: Tensor
    bary: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a face is visible (``face >= 0``)."""
        return self.face >= 0

    @property
    def image_size(self) -> Tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.face.shape[1]), int(self.face.shape[2])


# ---------------------------------------------------------------- validation

def _check_faces(faces, num_vertices: int | None = None) -> Tensor:
    if not isinstance(faces, Tensor) or faces.dim() != 2 or faces.shape[1] != 3:
        got = tuple(faces.shape) if isinstance(faces, Tensor) else type(faces).__name__
        raise ParameterError(f"faces must be a (F, 3) long tensor of vertex indices, got {got}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ParameterError(f"faces (F, 3) must hold integer vertex indices, got dtype {faces.dtype}")
    return faces.long()


def _check_image_size(image_size) -> Tuple[int, int]:
    try:
        h, w = (int(s) for s in image_size)
        ok = all(int(s) == s for s in image_size)
    except (TypeError, ValueError):
        raise ParameterError(f"image_size must be a pair (H, W) of pixels, got {image_size!r}") from None
    if not ok or h < 1 or w < 1:
        raise ParameterError(f"image_size must be a pair (H, W) of positive integers, got {image_size!r}")
    return h, w


def check_vertices_and_K(vertices, K) -> int:
    """Check (B, V, 3) floating camera-frame vertices and (B, 3, 3) intrinsics; returns B.
    Raises ParameterError naming the argument."""
    if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[2] != 3:
        got = tuple(vertices.shape) if isinstance(vertices, Tensor) else type(vertices).__name__
        raise ParameterError(f"vertices must be a (B, V, 3) tensor (camera frame, meters), got {got}")
    if not vertices.is_floating_point():
        raise ParameterError(f"vertices (B, V, 3) must be floating point, got dtype {vertices.dtype}")
    batch = vertices.shape[0]
    if not isinstance(K, Tensor) or K.shape != (batch, 3, 3):
        got = tuple(K.shape) if isinstance(K, Tensor) else type(K).__name__
        raise ParameterError(f"K must have shape (B, 3, 3) with B={batch}, got {got}")
    return batch


def _check_inputs(vertices, faces, K, image_size, near):
    batch = check_vertices_and_K(vertices, K)
    faces = _check_faces(faces)
    if faces.device != vertices.device or K.device != vertices.device:
        raise ParameterError(f"vertices, faces and K must be on one device, got {vertices.device}, "
                             f"{faces.device} and {K.device}")
    h, w = _check_image_size(image_size)
    if not (float(near) > 0):
        raise ParameterError(f"near must be > 0 (meters), got {near!r}")
    if h * w * batch >= 2 ** 62:
        raise ParameterError(f"image_size {image_size!r} with B={batch} is too large")
    return faces, h, w


# ---------------------------------------------------------------- setup per face

def _project(vertices: Tensor, K: Tensor, near: float) -> Tuple[Tensor, Tensor]:
    """Per-vertex pixels (B, V, 2), as :func:`fitkit.camera.project`, and depth z (B, V).

    The pixels of vertices a face must not use (z < near or not finite) are
    NaN, so that any face using them gets a NaN screen area and is dropped.
    """
    z = vertices[..., 2]
    zc = z.clamp(min=near)
    x, y = vertices[..., 0] / zc, vertices[..., 1] / zc
    k = K.to(vertices.dtype)[:, :2, :, None]  # (B, 2, 3, 1)
    u = k[:, 0, 0] * x + k[:, 0, 1] * y + k[:, 0, 2]
    v = k[:, 1, 0] * x + k[:, 1, 1] * y + k[:, 1, 2]
    uv = torch.stack([u, v], dim=-1)
    return uv.masked_fill_(~((z >= near) & torch.isfinite(z))[..., None], float("nan")), z


def _face_setup(uv: Tensor, z: Tensor, faces: Tensor, h: int, w: int, cull_backfaces: bool):
    """Kept faces of every sample and their screen-space data, sorted by box size.

    Returns (ids, tri, area, x0, y0, bw, bh, sizes) for the N kept (sample,
    face) pairs: ids (N,) rows of the flattened (B*F) pairs, tri (N, 3, 3)
    the corners' (u, v, z), area (N,) twice the signed screen area, the
    clipped box of pixel centres (left x0, top y0, width bw, height bh; long),
    and ``sizes``, the number of faces in each bucket (see :func:`_buckets`),
    the rows being sorted by bucket.
    """
    batch, num_verts = z.shape
    num_faces = faces.shape[0]
    corners = uv.index_select(1, faces.reshape(-1)).view(batch, num_faces, 3, 2)  # (B, F, 3, 2)
    u, v = corners[..., 0], corners[..., 1]
    area = (u[..., 1] - u[..., 0]) * (v[..., 2] - v[..., 0]) - (v[..., 1] - v[..., 0]) * (u[..., 2] - u[..., 0])
    keep = torch.isfinite(area) & (area != 0)  # NaN for faces with a vertex before the near plane
    if cull_backfaces:
        # with every z > 0 the screen area has the sign of n . v0, n = (v1 - v0) x (v2 - v0)
        # (area = fx fy det[v0, v1, v2] / (z0 z1 z2)); keep the faces with n . v0 < 0
        keep &= area < 0
    # clipped box of pixel centres (bounded before any conversion to long)
    x0 = u.amin(-1).ceil().clamp(0, w)
    bw = u.amax(-1).floor().clamp(-1, w - 1) - x0 + 1
    y0 = v.amin(-1).ceil().clamp(0, h)
    bh = v.amax(-1).floor().clamp(-1, h - 1) - y0 + 1
    keep &= (bw > 0) & (bh > 0)
    ids = torch.nonzero(keep.reshape(-1)).squeeze(1)
    lh, lw = _buckets(h, w, uv.device)
    bw_k, bh_k = bw.reshape(-1)[ids].long(), bh.reshape(-1)[ids].long()
    bucket = torch.searchsorted(lh, bh_k) * lw.numel() + torch.searchsorted(lw, bw_k)
    order = torch.argsort(bucket)
    sizes = torch.bincount(bucket, minlength=lh.numel() * lw.numel())
    ids = ids[order]
    pick = lambda t: t.reshape(-1).index_select(0, ids)  # noqa: E731
    tri = torch.cat([corners.reshape(-1, 3, 2).index_select(0, ids), _corner_depths(z, faces, ids)[..., None]], -1)
    return ids, tri, pick(area), pick(x0).long(), pick(y0).long(), bw_k[order], bh_k[order], sizes


def _corner_depths(z: Tensor, faces: Tensor, ids: Tensor) -> Tensor:
    """(N, 3) depths of the corners of the (sample, face) pairs ``ids`` (rows of B*F)."""
    num_verts, num_faces = z.shape[1], faces.shape[0]
    b = ids // num_faces
    corner = b[:, None] * num_verts + faces.index_select(0, ids - b * num_faces)
    return z.reshape(-1)[corner.reshape(-1)].view(-1, 3)


def _buckets(h: int, w: int, device) -> Tuple[Tensor, Tensor]:
    """Bucket heights and widths (long tensors): 1, 2, 3, 4, 6, 8, 12, 16, ... below
    the image side, then the side itself. Bucket (i, j) holds the faces whose box
    is at most lh[i] x lw[j] pixels and larger than lh[i-1] x lw[j-1]."""
    def levels(size):
        out, p = {1}, 2
        while p < size:
            out |= {p, p + p // 2}
            p *= 2
        return torch.tensor(sorted({v for v in out if v < size} | {size}), device=device)
    return levels(h), levels(w)


def _bary_coefs(uv: Tensor, area: Tensor) -> Tensor:
    """(N, 4) coefficients with b1 = c0*dx + c1*dy and b2 = c2*dx + c3*dy,
    (dx, dy) the pixel relative to the face's first vertex."""
    e1 = uv[:, 1] - uv[:, 0]
    e2 = uv[:, 2] - uv[:, 0]
    inv = 1.0 / area
    return torch.stack([e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv], dim=-1)


def _screen_bary(coef: Tensor, dx: Tensor, dy: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    b1 = coef[..., 0] * dx + coef[..., 1] * dy
    b2 = coef[..., 2] * dx + coef[..., 3] * dy
    return 1.0 - b1 - b2, b1, b2


# ---------------------------------------------------------------- rasterize

@torch.no_grad()
def rasterize(vertices: Tensor, faces: Tensor, K: Tensor, image_size: Sequence[int], *,
              near: float = 1e-3, cull_backfaces: bool = False) -> Fragments:
    """Nearest triangle at every pixel centre of a batch of images (z-buffer).

    Args:
        vertices: (B, V, 3) camera-frame vertices (OpenCV axes), meters; float32
            or float64 (the barycentrics and depth come back in this dtype).
        faces: (F, 3) long vertex indices, shared by the batch. Either winding
            rasterizes.
        K: (B, 3, 3) intrinsics, pixels (integer coordinates at pixel centres).
        image_size: (H, W) pixels.
        near: faces with any vertex at z < near (meters) are skipped (no clipping).
        cull_backfaces: drop faces whose normal (v1 - v0) x (v2 - v0) points away
            from the camera (n . v0 >= 0): with outward normals (counter-clockwise
            faces seen from outside, as in SMPL) only the front surface is drawn.
    Returns:
        :class:`Fragments` of shape (B, H, W), on the vertices' device. Pixel
        centres on a triangle's edge are inside it.
    Raises:
        ParameterError on bad shapes, devices, dtypes, image_size or near.
    """
    faces, h, w = _check_inputs(vertices, faces, K, image_size, near)
    batch, num_faces = vertices.shape[0], faces.shape[0]
    dev, dt = vertices.device, vertices.dtype
    num_pix = batch * h * w
    keybuf = torch.full((num_pix + max(h, w) + 1,), _NO_HIT, dtype=torch.int64, device=dev)

    if num_faces > 0 and batch > 0:
        uv, z = _project(vertices, K, float(near))
        ids, tri, area, x0, y0, bw, bh, sizes = _face_setup(uv, z, faces, h, w, cull_backfaces)
        if ids.numel() > 0:
            _zbuffer(keybuf, ids, tri, area, x0, y0, bw, bh, sizes, num_faces, h, w)

    # winners: face ids written over the keys (in place: the buffer is as big as the output)
    face = keybuf[:num_pix]
    pix = torch.nonzero(face != _NO_HIT).squeeze(1)
    winner = face[pix] & ((1 << _FACE_BITS) - 1)
    face.fill_(-1)
    face[pix] = winner
    bary = torch.zeros(num_pix, 3, dtype=dt, device=dev)
    depth = torch.full((num_pix,), float("inf"), dtype=dt, device=dev)
    if pix.numel() > 0:
        # perspective-correct barycentrics and depth of the winners, in the vertices' dtype
        b = pix // (h * w)
        rem = pix - b * (h * w)
        py = rem // w
        px = rem - py * w
        corner = (b[:, None] * uv.shape[1] + faces.index_select(0, winner)).reshape(-1)
        tri = torch.cat([uv.reshape(-1, 2).index_select(0, corner), z.reshape(-1, 1).index_select(0, corner)],
                        dim=-1).view(-1, 3, 3)  # (N, 3, 3) corners' (u, v, z)
        e1 = tri[:, 1, :2] - tri[:, 0, :2]
        e2 = tri[:, 2, :2] - tri[:, 0, :2]
        coef = _bary_coefs(tri[..., :2], e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
        s = torch.stack(_screen_bary(coef, px.to(dt) - tri[:, 0, 0], py.to(dt) - tri[:, 0, 1]), dim=-1)
        wgt = s.clamp_(min=0) / tri[..., 2]  # edge pixels may come out a rounding error below 0
        zinv = wgt.sum(-1, keepdim=True)
        bary[pix] = wgt / zinv
        depth[pix] = 1.0 / zinv.squeeze(1)
    return Fragments(face=face.view(batch, h, w), bary=bary.view(batch, h, w, 3), depth=depth.view(batch, h, w))


def _zbuffer(keybuf: Tensor, ids: Tensor, tri: Tensor, area: Tensor, x0: Tensor, y0: Tensor,
             bw: Tensor, bh: Tensor, sizes: Tensor, num_faces: int, h: int, w: int) -> None:
    """Scatter the (depth, face id) key of every covered pixel candidate into ``keybuf`` (amin).

    Takes the output of :func:`_face_setup`. The faces of a bucket with boxes
    of at most kh x kw pixels are processed together: their candidates are a
    (faces, kh, kw) grid on which the three barycentrics and 1/z, all affine
    in the pixel offset, are one broadcast sum each. ``keybuf`` holds B*H*W
    pixels plus a padding tail of max(H, W) + 1 entries that absorbs the grid
    cells beyond a face's box (they carry the no-hit key).
    """
    dev = keybuf.device
    num_pix = keybuf.numel() - (max(h, w) + 1)
    # affine coefficients [const, per x step, per y step] of b0, b1, b2 and 1/z over the
    # box's pixel grid, from the box's top-left pixel centre (computed in the vertices'
    # dtype, then float32 for the depth test)
    fuv = tri[..., :2]
    coef = _bary_coefs(fuv, area)  # (N, 4): b1 = c0 dx + c1 dy, b2 = c2 dx + c3 dy
    dx0 = x0.to(fuv.dtype) - fuv[:, 0, 0]
    dy0 = y0.to(fuv.dtype) - fuv[:, 0, 1]
    coefs = fuv.new_empty(fuv.shape[0], 4, 3)
    coefs[:, 1:3, 1:] = coef.view(-1, 2, 2)
    coefs[:, 1:3, 0] = coefs[:, 1:3, 1] * dx0[:, None] + coefs[:, 1:3, 2] * dy0[:, None]
    coefs[:, 0] = -(coefs[:, 1] + coefs[:, 2])
    coefs[:, 0, 0] += 1.0
    coefs[:, 3] = ((1.0 / tri[:, None, :, 2]) @ coefs[:, :3]).squeeze(1)  # 1/z = sum b_i / z_i
    coefs = coefs.float()  # (N, 4, 3)
    b = ids // num_faces
    fid = ids - b * num_faces
    base = b * (h * w) + y0 * w + x0

    lh, lw = (t.tolist() for t in _buckets(h, w, "cpu"))
    start = 0
    for bucket_id, count in enumerate(sizes.tolist()):
        if count == 0:
            continue
        kh, kw = lh[bucket_id // len(lw)], lw[bucket_id % len(lw)]
        step = max(1, MAX_CANDIDATES // (kh * kw))
        oy = torch.arange(kh, device=dev)
        ox = torch.arange(kw, device=dev)
        oyf, oxf = oy.float(), ox.float()
        for lo in range(start, start + count, step):
            sl = slice(lo, min(lo + step, start + count))
            c = coefs[sl]
            rows = c[:, :, 0, None] + c[:, :, 2, None] * oyf  # (n, 4, kh)
            cols = c[:, :, 1, None] * oxf  # (n, 4, kw)
            row_ok = oy < bh[sl, None]  # (n, kh)
            rows[:, 0].masked_fill_(~row_ok, float("-inf"))
            cols[:, 0].masked_fill_(ox >= bw[sl, None], float("-inf"))
            vals = rows[..., None] + cols[:, :, None, :]  # (n, 4, kh, kw)
            inside = vals[:, :3].amin(dim=1) >= 0
            depth_bits = (1.0 / vals[:, 3]).view(torch.int32).long()
            key = (depth_bits << _FACE_BITS) | fid[sl, None, None]
            key = torch.where(inside, key, _NO_HIT)
            rowbase = torch.where(row_ok, base[sl, None] + oy * w, num_pix)  # (n, kh)
            pix = rowbase[:, :, None] + ox
            keybuf.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amin")
        start += count


# ---------------------------------------------------------------- interpolate

def interpolate(fragments: Fragments, attributes: Tensor, faces: Tensor) -> Tensor:
    """Barycentric interpolation of per-vertex attributes at the visible surface.

    Args:
        fragments: from :func:`rasterize` with these ``faces``.
        attributes: (B, V, C) per sample or (V, C) shared by the batch.
        faces: (F, 3) long, the faces given to :func:`rasterize`.
    Returns:
        (B, H, W, C) in the attributes' dtype, 0 on background; differentiable
        in ``attributes`` (the barycentrics are constants).
    """
    faces = _check_faces(faces)
    batch, h, w = fragments.face.shape
    if not isinstance(attributes, Tensor) or attributes.dim() not in (2, 3) or (
            attributes.dim() == 3 and attributes.shape[0] != batch):
        got = tuple(attributes.shape) if isinstance(attributes, Tensor) else type(attributes).__name__
        raise ParameterError(f"attributes must have shape (B, V, C) with B={batch} or (V, C), got {got}")
    if not attributes.is_floating_point():
        raise ParameterError(f"attributes must be floating point, got dtype {attributes.dtype}")
    chans = attributes.shape[-1]
    face = fragments.face.reshape(-1)
    pix = torch.nonzero(face >= 0).squeeze(1)
    out = attributes.new_zeros(batch * h * w, chans)
    if pix.numel() == 0:
        return out.view(batch, h, w, chans)
    vid = faces.index_select(0, face.index_select(0, pix))  # (N, 3)
    if attributes.dim() == 2:
        vals = attributes.index_select(0, vid.reshape(-1))
    else:
        num_verts = attributes.shape[1]
        vid = vid + (pix // (h * w))[:, None] * num_verts
        vals = attributes.reshape(-1, chans).index_select(0, vid.reshape(-1))
    bary = fragments.bary.reshape(-1, 3).index_select(0, pix).to(attributes.dtype)
    out.index_copy_(0, pix, torch.bmm(bary[:, None, :], vals.view(-1, 3, chans)).squeeze(1))
    return out.view(batch, h, w, chans)
