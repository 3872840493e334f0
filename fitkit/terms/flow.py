"""Optical flow between consecutive frames as temporal data terms.

The forward flow lives in the fit's observations as the dense cue ``'flow'``:
``observations.dense['flow']`` is (N, H, W, 2), pixels, on the full image grid;
row i moves pixel centre (x, y) of frame i to ``(x + u, y + v)`` in the next
frame of its track. NaN = no value; a frame whose map has no finite value
(the last frame of a track, a missing file) has no flow, and the pairs that
start at it are skipped. Both terms are *temporal* (see
:mod:`fitkit.terms.base`): they run in sequence stages, read C chunks of T
slots and return (C, R) residuals with R fixed by (T, H, W). A slot pair
(t, t+1) counts when ``batch.sequence.pairs`` holds and frame ``frames[c, t]``
has flow.

- :class:`VertexFlow` (``type: vertex_flow``): the projected motion of every
  visible vertex must equal the flow at its projection (Tung et al.'s
  self-supervised flow loss).
- :class:`PhotometricFlow` (``type: photometric_flow``): the body rendered with
  a smooth colour gradient at t, warped by the flow, must match its rendering
  at t+1 (HPOF, seed 000, Sec. 3.3, Eq. 16-19).

Rasterization (:func:`fitkit.render.rasterizer.rasterize`) gives no
gradients; both terms rasterize the detached current vertices at every
evaluation and get their gradients through the projected vertex positions.

:func:`gt_flow` makes the ground-truth flow of a mesh sequence (synthetic data,
tests).
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

from fitkit.camera import project
from fitkit.errors import ParameterError
from fitkit.io.observations import read_dense_cue
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term
from fitkit.terms.robust import geman_mcclure

__all__ = ["VISIBLE_WEIGHT", "gt_flow", "screen_barycentrics", "vertex_visibility", "render_gradient_texture",
           "VertexFlow", "PhotometricFlow"]

#: A vertex is visible when the barycentric weights it gets from the pixels it wins sum above this.
VISIBLE_WEIGHT = 1e-3
#: A bilinear sample counts when the taps with a value carry at least this much of its weight.
_FULL_SAMPLE = 1.0 - 1e-4
#: Pixels rasterized at once by :func:`gt_flow`.
_PIXELS_PER_CHUNK = 1 << 23


# ---------------------------------------------------------------- geometry helpers

def _pixel_grid(h: int, w: int, stride: int, like: Tensor) -> Tensor:
    """(Hs, Ws, 2) (x, y) centres of every ``stride``-th pixel row and column."""
    ys = torch.arange(0, h, stride, device=like.device, dtype=like.dtype)
    xs = torch.arange(0, w, stride, device=like.device, dtype=like.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _normalized(points: Tensor, h: int, w: int) -> Tensor:
    """Pixels (x, y) -> grid_sample coordinates (align_corners=True: -1/+1 at the outer pixel centres)."""
    scale = points.new_tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])
    return points * scale - 1.0


def _bilinear(image: Tensor, points: Tensor) -> Tensor:
    """Bilinear samples of (P, H, W, C) images at (P, M, 2) pixel positions -> (P, M, C).

    Zero outside the image; differentiable in both the image and the positions.
    """
    h, w = image.shape[1:3]
    grid = _normalized(points, h, w)[:, None]  # (P, 1, M, 2)
    out = F.grid_sample(image.permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)  # (P, C, 1, M)
    return out[:, :, 0].transpose(1, 2)


def screen_barycentrics(points: Tensor, triangles: Tensor) -> Tensor:
    """Screen-space barycentric coordinates of 2D points in 2D triangles.

    ``p = b0 q0 + b1 q1 + b2 q2`` with ``b0 + b1 + b2 = 1``, from the signed-area
    formula; differentiable in both arguments (the triangles must not be
    degenerate).

    Args:
        points: (..., 2) pixels.
        triangles: (..., 3, 2) corners, pixels.
    Returns:
        (..., 3) barycentrics, in the order of the corners.
    """
    q0 = triangles[..., 0, :]
    e1 = triangles[..., 1, :] - q0
    e2 = triangles[..., 2, :] - q0
    d = points - q0
    area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    b1 = (d[..., 0] * e2[..., 1] - d[..., 1] * e2[..., 0]) / area
    b2 = (e1[..., 0] * d[..., 1] - e1[..., 1] * d[..., 0]) / area
    return torch.stack([1.0 - b1 - b2, b1, b2], dim=-1)


def _per_frame_K(K: Tensor, n: int, like: Tensor) -> Tensor:
    K = torch.as_tensor(K).to(device=like.device, dtype=like.dtype)
    if K.shape in ((3, 3), (1, 3, 3)):
        K = K.expand(n, 3, 3)
    if K.shape != (n, 3, 3):
        raise ParameterError(f"K must be (3, 3), (1, 3, 3) or ({n}, 3, 3), got {tuple(K.shape)}")
    return K


@torch.no_grad()
def gt_flow(vertices: Tensor, faces: Tensor, K: Tensor, hw) -> Tensor:
    """Ground-truth forward flow of a mesh moving through consecutive frames.

    Frame i is rasterized; every covered pixel centre x lies in its visible
    face with screen-space barycentrics ``s`` (the rasterizer's
    perspective-correct ``b`` reweighted by the corner depths,
    ``s_k = b_k z_k / sum_j b_j z_j``), and the flow is where the affine map
    between that face's projected triangles at i and i+1 sends x:
    ``sum_k s_k pi_{i+1}(X_{i+1,k}) - x``. (The true projection of the same
    surface point differs from that by a second-order perspective term,
    hundredths of a pixel for body triangles.) Points visible at i that are
    hidden at i+1 still get their motion, as a real flow estimate would.

    It is computed as the interpolated per-vertex image motion,
    ``sum_k s_k (pi_{i+1}(X_{i+1,k}) - pi_i(X_{i,k}))`` (equal, since
    ``sum_k s_k pi_i(X_{i,k}) = x``): no cancellation against the pixel
    coordinates, so a part of the body that does not move gets exactly 0, and
    float32 rounding stays below 1e-4 px at image sizes of a few hundred pixels.

    Args:
        vertices: (N, V, 3) camera-frame vertices of N consecutive frames of one
            mesh (meters).
        faces: (F, 3) long.
        K: (N, 3, 3), (1, 3, 3) or (3, 3) intrinsics, pixels; frame i+1 is projected with its own K.
        hw: (H, W) of the flow maps, pixels (note: height first, as for the rasterizer).
    Returns:
        (N, H, W, 2) flow in pixels, the vertices' dtype; NaN where frame i shows
        no body, and everywhere in the last frame.
    """
    from fitkit.render.rasterizer import interpolate, rasterize

    if not isinstance(vertices, Tensor) or vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ParameterError(f"vertices must be (N, V, 3), got {tuple(getattr(vertices, 'shape', ()))}")
    n = vertices.shape[0]
    h, w = (int(s) for s in hw)
    K = _per_frame_K(K, n, vertices)
    faces = faces.to(vertices.device)
    out = vertices.new_full((n, h, w, 2), float("nan"))
    step = max(1, _PIXELS_PER_CHUNK // (h * w))
    for lo in range(0, n - 1, step):
        cur = slice(lo, min(n - 1, lo + step))
        nxt = slice(cur.start + 1, cur.stop + 1)
        frags = rasterize(vertices[cur], faces, K[cur], (h, w))
        motion = project(vertices[nxt], K[nxt]) - project(vertices[cur], K[cur])  # (B, V, 2) per vertex
        z = vertices[cur][..., 2:]
        acc = interpolate(frags, torch.cat([z * motion, z], dim=-1), faces)  # sum b_k z_k (d_k, 1)
        flow = acc[..., :2] / acc[..., 2:].clamp(min=torch.finfo(acc.dtype).tiny)
        out[cur] = torch.where(frags.mask[..., None], flow, out[cur])
    return out


# ---------------------------------------------------------------- shared base

class _FlowTerm(Term):
    """Reads the flow cue; common checks and per-pair bookkeeping."""

    kind = "data"
    temporal = True
    least_squares = True

    def __init__(self, field: str, refresh_px: float = 0.5):
        if not isinstance(field, str) or not field:
            raise ValueError(f"{self.name}.field: expected the name of a dense cue, got {field!r}")
        if isinstance(refresh_px, bool) or not isinstance(refresh_px, (int, float)) or not refresh_px >= 0:
            raise ValueError(f"{self.name}.refresh_px: expected a number of pixels >= 0, got {refresh_px!r}")
        self.field = field
        self.refresh_px = float(refresh_px)
        self._flow: Tensor | None = None
        self._cache: dict = {}

    def setup(self, ctx: SetupContext) -> None:
        f = read_dense_cue(ctx.observations, self.field, 2, reader=self.name or type(self).__name__,
                           content="(u, v) pixels", image_size=ctx.camera.image_size)
        self._flow = f.detach().to(device=ctx.device, dtype=ctx.dtype)
        self._has_flow = torch.isfinite(self._flow).all(dim=-1).flatten(1).any(dim=1)
        self._faces = ctx.model.faces.to(ctx.device).long()
        self._hw = (int(f.shape[1]), int(f.shape[2]))

    def needs(self) -> Needs:
        return Needs(vertices="all")

    def evidence(self) -> Tensor:
        """(N,) bool: frames whose flow map has a finite value somewhere."""
        return self._has_flow

    def _rasterized(self, rows: Tensor, vertices: Tensor, K: Tensor, compute) -> Tensor:
        """``compute(fragments)`` (B, ...) of frames ``rows`` (B,), from a per-frame cache.

        A frame is rasterized again (detached ``vertices`` (B, V, 3), ``K``) only when
        one of its projected vertices moved more than ``refresh_px`` since its cached
        rasterization: solvers take many small steps, and most evaluations then
        reuse the face assignment (its gradients never came from rasterization).
        ``refresh_px = 0`` rasterizes at every evaluation.
        """
        from fitkit.render.rasterizer import rasterize

        vertices, K = vertices.detach(), K.detach()
        q = project(vertices, K)
        if self.refresh_px == 0:
            return compute(rasterize(vertices, self._faces, K, self._hw))
        cache = self._cache
        n = self._flow.shape[0]
        if "q" not in cache or cache["q"].shape[1:] != q.shape[1:] or cache["q"].dtype != q.dtype:
            cache.clear()
            cache["q"] = torch.full((n,) + tuple(q.shape[1:]), float("nan"), dtype=q.dtype, device=q.device)
        moved = ~((q - cache["q"].index_select(0, rows)).norm(dim=-1).amax(dim=-1) <= self.refresh_px)
        if bool(moved.any()):
            pick = torch.nonzero(moved).squeeze(1)
            frames, first = _first_of_each(rows.index_select(0, pick))
            pick = pick.index_select(0, first)
            value = compute(rasterize(vertices.index_select(0, pick), self._faces, K.index_select(0, pick),
                                      self._hw))
            if "value" not in cache:
                cache["value"] = value.new_zeros((n,) + tuple(value.shape[1:]))
            cache["value"][frames] = value
            cache["q"][frames] = q.index_select(0, pick)
        return cache["value"].index_select(0, rows)

    def _pair_rows(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Flow maps (P, H, W, 2) of the P = C*(T-1) slot pairs (NaN kept) and (P,) bool: pair counts."""
        seq = batch.sequence
        if seq is None:
            raise ParameterError(f"the {self.name} term is temporal: use it in a sequence stage only")
        if self._flow is None:
            raise ParameterError(f"{self.name}: setup() has not run")
        start = seq.frames[:, :-1].reshape(-1)
        ok = seq.pairs.reshape(-1) & self._has_flow.index_select(0, start)
        return self._flow.index_select(0, start), ok


def _first_of_each(values: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct ``values`` (U,) and the position of each one's first occurrence (U,)."""
    uniq, inverse = torch.unique(values, return_inverse=True)
    pos = torch.arange(values.shape[0], device=values.device)
    first = torch.full_like(uniq, values.shape[0]).scatter_reduce(0, inverse, pos, reduce="amin")
    return uniq, first


def _split_nan(flow: Tensor) -> tuple[Tensor, Tensor]:
    """(..., 2) flow with NaN -> the flow with 0 there and (...) bool: finite."""
    finite = torch.isfinite(flow).all(dim=-1)
    return torch.where(finite[..., None], flow, torch.zeros_like(flow)), finite


# ---------------------------------------------------------------- vertex flow

def vertex_visibility(fragments, faces: Tensor, num_vertices: int) -> Tensor:
    """(B, V) bool: vertices whose summed barycentric weight over the pixels their faces
    win exceeds :data:`VISIBLE_WEIGHT` (a vertex touched by more than a sliver of a pixel)."""
    face = fragments.face
    n = face.shape[0]
    ok = face >= 0
    frame = torch.arange(n, device=face.device).view(n, 1, 1).expand_as(face)[ok]
    vid = faces[face[ok]]  # (P, 3)
    weight = torch.zeros(n * num_vertices, dtype=fragments.bary.dtype, device=face.device)
    weight.index_add_(0, (frame[:, None] * num_vertices + vid).reshape(-1), fragments.bary[ok].clamp(min=0).reshape(-1))
    return weight.view(n, num_vertices) > VISIBLE_WEIGHT


@register_term("vertex_flow")
class VertexFlow(_FlowTerm):
    """Projected motion of the visible vertices against the flow (per chunk).

    For every counted slot pair (t, t+1) and every used vertex i visible at t,
    with ``q_t = pi(X_t,i)``, ``q_t1 = pi(X_t+1,i)`` (pixels):

        e_i = (q_t1 - q_t) - F_t(q_t),    E_c = sum_t sum_i rho(s_t * e_i)   (x and y)

    ``F_t(q)`` is the flow of frame t sampled bilinearly at q (a sample any of
    whose taps with weight has no value, or that falls off the image, is
    missing: residual 0); ``rho`` is Geman–McClure of scale ``sigma`` (squares
    when ``sigma`` is null); ``s_t`` the camera's ``pixel_scale``. The sum runs
    over the vertices without normalisation, like ``displacements``.

    Visibility at t: frame t's current (detached) vertices are rasterized at
    every evaluation and a vertex is visible when the barycentric weights of
    the pixels its faces win sum above :data:`VISIBLE_WEIGHT` (no depth test:
    only vertices of winning faces can be visible, and the sum drops the
    corners a face touches with a sliver of its area). Hence at low resolution
    only part of the visible surface is used, and the set changes (without
    gradient) as the body moves.

    Gradients reach frame t (through q_t and the sampled flow) and frame t+1
    (through q_t1).

    Args:
        sigma: Geman–McClure scale in (scaled) pixels, or None for squared error.
        vertex_stride: use every k-th mesh vertex (k = 1: all).
        field: name of the dense cue in ``observations.dense``.
        refresh_px: rasterize a frame again only once a projected vertex moved
            more than this many pixels since its last rasterization (0: at every
            evaluation); see ``_FlowTerm._rasterized``.

    Residuals: (C, (T-1) * Vs * 2), pair-major, then vertex, then (x, y); Vs =
    ceil(V / vertex_stride). A rasterization of the C*(T-1) frames that start a
    pair per evaluation.
    """

    def __init__(self, sigma: float | None = 5.0, vertex_stride: int = 1, field: str = "flow",
                 refresh_px: float = 0.5):
        if sigma is not None and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0):
            raise ValueError(f"vertex_flow.sigma: expected a positive number of pixels or null, got {sigma!r}")
        if isinstance(vertex_stride, bool) or not isinstance(vertex_stride, int) or vertex_stride < 1:
            raise ValueError(f"vertex_flow.vertex_stride: expected an integer >= 1, got {vertex_stride!r}")
        super().__init__(field, refresh_px)
        self.sigma = None if sigma is None else float(sigma)
        self.vertex_stride = int(vertex_stride)

    def residuals(self, batch: Batch) -> Tensor:
        flow, pair_ok = self._pair_rows(batch)
        seq = batch.sequence
        C, T = seq.shape
        if T < 2:
            return batch.vertices.new_zeros(C, 0)
        verts = seq.grid(batch.vertices)  # (C, T, V, 3)
        K = seq.grid(batch.K)
        V = verts.shape[2]
        ids = torch.arange(0, V, self.vertex_stride, device=verts.device)
        cur = verts[:, :-1].reshape(-1, V, 3)  # (P, V, 3)
        K_cur = K[:, :-1].reshape(-1, 3, 3)
        rows = seq.frames[:, :-1].reshape(-1)
        visible = self._rasterized(rows, cur, K_cur, lambda fr: vertex_visibility(fr, self._faces, V))
        visible = visible.index_select(1, ids)  # (P, Vs)

        q = seq.grid(project(batch.vertices.index_select(1, ids), batch.K))  # (C, T, Vs, 2)
        q0 = q[:, :-1].reshape(C * (T - 1), -1, 2)
        q1 = q[:, 1:].reshape(C * (T - 1), -1, 2)
        filled, finite = _split_nan(flow.to(q.dtype))
        sample = _bilinear(torch.cat([filled, finite[..., None].to(q.dtype)], dim=-1), q0)  # (P, Vs, 3)
        used = visible & (sample[..., 2] >= _FULL_SAMPLE) & pair_ok[:, None]
        scale = seq.grid(batch.pixel_scale.to(q.dtype))[:, :-1].reshape(-1, 1, 1)
        e = ((q1 - q0) - sample[..., :2]) * scale
        r = e if self.sigma is None else geman_mcclure(e, self.sigma)
        r = torch.where(used[..., None], r, torch.zeros_like(r))
        return r.reshape(C, -1)

    def __repr__(self) -> str:
        return f"VertexFlow(sigma={self.sigma}, vertex_stride={self.vertex_stride}, field={self.field!r})"


# ---------------------------------------------------------------- photometric flow

def render_gradient_texture(vertices: Tensor, K: Tensor, faces: Tensor, colors: Tensor, fragments) -> Tensor:
    """(B, H, W, 4): RGB of the body painted with per-vertex ``colors``, then the coverage mask.

    Every covered pixel centre gets ``sum_k s_k c_k`` with ``s`` its screen-space
    barycentrics (:func:`screen_barycentrics`) in the *projected* triangle of the
    face that wins it in ``fragments``, so the colours are differentiable in the
    vertices (the face assignment is not). Background: 0 (mask 0).

    Args:
        vertices: (B, V, 3) camera frame, meters (the ones rasterized into ``fragments``).
        K: (B, 3, 3) intrinsics, pixels.
        faces: (F, 3) long.
        colors: (V, 3) per-vertex colours.
        fragments: :class:`fitkit.render.rasterizer.Fragments` (B, H, W).
    """
    face = fragments.face
    B, H, W = face.shape
    V = vertices.shape[1]
    flat = face.reshape(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    frame = pix // (H * W)
    rem = pix - frame * (H * W)
    y = rem // W
    x = rem - y * W
    vid = faces.index_select(0, flat.index_select(0, pix))  # (P, 3)
    q = project(vertices, K).reshape(-1, 2)
    tri = q.index_select(0, (frame[:, None] * V + vid).reshape(-1)).view(-1, 3, 2)
    p = torch.stack([x, y], dim=-1).to(q.dtype)
    s = screen_barycentrics(p, tri)  # (P, 3)
    rgb = (s[..., None] * colors.to(q.dtype).index_select(0, vid.reshape(-1)).view(-1, 3, 3)).sum(1)
    vals = torch.cat([rgb, torch.ones_like(rgb[:, :1])], dim=-1)
    return q.new_zeros(B * H * W, 4).index_copy(0, pix, vals).view(B, H, W, 4)


@register_term("photometric_flow")
class PhotometricFlow(_FlowTerm):
    """HPOF's optical-flow loss (seed 000, Sec. 3.3, Eq. 16-19), as a fitting term.

    Texture (Eq. 17's "artificial texture with gradient colour"): every vertex
    is coloured by its position on the rest-pose mean-shape template, each axis
    normalized to [0, 1] (:func:`fitkit.render.shading.position_colors`).
    ``m_t`` (H, W, 3) is the body rendered with it at frame t
    (:func:`render_gradient_texture`: screen-space interpolation in the winning
    face's projected triangle, 0 on background), with our full perspective
    camera in place of HPOF's weak-perspective one (Eq. 16).

    Eq. 18, brightness constancy along the flow: for a counted slot pair
    (t, t+1) and every used pixel x of frame t (every ``stride``-th row and
    column), ``m_t(x) = m_t+1(x + F_t(x))`` with ``m_t+1`` sampled bilinearly.
    A pixel is used when it is covered at t, ``F_t(x)`` is finite, and
    ``x + F_t(x)`` lies in the image with all four bilinear taps covered at
    t+1; the others give residual 0.

    Eq. 19, mean squared error per pair, summed over the pairs:

        E_c = sum_t  1 / (3 n_t)  sum_x |m_t+1(x + F_t(x)) - m_t(x)|^2

    with n_t the number of used pixels of pair t (no gradient through n_t);
    residuals are the differences times ``1 / sqrt(3 n_t)``. Colours are in
    [0, 1], so the energy is small (about 1e-3 for a one-pixel misalignment of
    a 100-pixel body, 1e-5 at the true motion, where occlusion edges and
    bilinear sampling leave a floor) and wants a large recipe weight.

    The energy is only piecewise smooth: pixels join and leave the used set,
    and colours jump across occlusion edges, as the body moves. In our tests
    Adam follows it well; L-BFGS with a strong-Wolfe line search tends to stop
    early. Alone, it pins the motion in the image plane well and depth and
    out-of-plane turns only weakly.

    Gradients: frame t+1 through the rendered colours of ``m_t+1`` (the sample
    position x + F(x) is data); frame t through ``m_t(x)`` when ``gradient`` is
    ``'both'``; with ``'next'`` frame t's rendering is a detached target (HPOF's
    warped image is "the ground truth of frame t+1"). Coverage changes
    (silhouettes) carry no gradient.

    Args:
        stride: use every k-th pixel row and column of frame t.
        gradient: ``'both'`` or ``'next'``.
        field: name of the dense cue in ``observations.dense``.
        refresh_px: rasterize a frame again only once a projected vertex moved
            more than this many pixels since its last rasterization (0: at every
            evaluation); see ``_FlowTerm._rasterized``.

    Residuals: (C, (T-1) * Hs * Ws * 3), pair-major, then pixel row, column,
    colour; Hs = ceil(H / stride), Ws = ceil(W / stride). One rasterization of
    the C*T frames per evaluation (frame t's serves both pairs it is in).
    """

    def __init__(self, stride: int = 2, gradient: str = "both", field: str = "flow", refresh_px: float = 0.5):
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"photometric_flow.stride: expected an integer >= 1, got {stride!r}")
        if gradient not in ("both", "next"):
            raise ValueError(f"photometric_flow.gradient: expected 'both' or 'next', got {gradient!r}")
        super().__init__(field, refresh_px)
        self.stride = int(stride)
        self.gradient = gradient

    def setup(self, ctx: SetupContext) -> None:
        from fitkit.render.shading import position_colors

        super().setup(ctx)
        self.colors = position_colors(ctx.model.v_template.detach().to(device=ctx.device, dtype=ctx.dtype))

    def residuals(self, batch: Batch) -> Tensor:
        flow, pair_ok = self._pair_rows(batch)
        seq = batch.sequence
        C, T = seq.shape
        if T < 2:
            return batch.vertices.new_zeros(C, 0)
        H, W = self._hw
        s = self.stride
        face = self._rasterized(batch.index, batch.vertices, batch.K, lambda fr: fr.face.to(torch.int32))
        frags = SimpleNamespace(face=face.long())
        img = seq.grid(render_gradient_texture(batch.vertices, batch.K, self._faces, self.colors, frags))
        P = C * (T - 1)
        src = img[:, :-1, ::s, ::s].reshape(P, -1, 4)  # (P, M, 4), frame t on the stride grid
        if self.gradient == "next":
            src = src.detach()
        nxt = img[:, 1:].reshape(P, H, W, 4)

        filled, finite = _split_nan(flow[:, ::s, ::s].to(img.dtype))
        pos = (_pixel_grid(H, W, s, img) + filled).reshape(P, -1, 2)
        warped = _bilinear(nxt, pos)  # (P, M, 4)
        used = ((src[..., 3] > 0.5) & finite.reshape(P, -1) & (warped[..., 3] >= _FULL_SAMPLE)
                & pair_ok[:, None])
        n = used.sum(dim=1).clamp(min=1).to(img.dtype)
        diff = (warped[..., :3] - src[..., :3]) * torch.rsqrt(3.0 * n)[:, None, None]
        r = torch.where(used[..., None], diff, torch.zeros_like(diff))
        return r.reshape(C, -1)

    def __repr__(self) -> str:
        return f"PhotometricFlow(stride={self.stride}, gradient={self.gradient!r}, field={self.field!r})"

