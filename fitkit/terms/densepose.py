"""DensePose IUV maps as a data term (``type: densepose``).

An IUV map (``observations.dense['iuv']``, (N, H, W, 3) on the image grid)
gives at every foreground pixel the body part I (1..24, 0 background; see
:mod:`fitkit.render.iuv` for the list) and the part's chart coordinates
(U, V). Each such pixel names one point of the body surface: at set-up
:meth:`IUVCharts.uv_lookup` turns every foreground pixel into a face and
barycentrics ``b`` (batched over all pixels of all frames), and the residual
pulls the projection of that surface point onto the pixel:

    E_b = sum_p  rho( s_b * (pi(sum_k b_pk X_b,f(p)k) - x_p) )

with ``X`` the posed vertices (camera frame), ``rho`` Geman–McClure of scale
``sigma`` (or squares when ``sigma`` is null) and ``s_b`` the camera's
``pixel_scale`` times, with ``scale_by_size`` (default), ``reference_size /
person_size``, person_size being the longest side of the box around the
frame's (used) foreground pixels. Like ``displacements``, the sum runs over the
pixels without normalisation, so the recipe weight should shrink with the
number of pixels (use ``stride`` to thin them).

Input conventions (checked at set-up, :class:`ObservationError` naming
``dense_<field>``): a floating (N, H, W, 3) tensor on the full image grid;
channel 0 = I in 0..24 (integral; NaN = no value), channels 1, 2 = U, V.
U, V are accepted in [0, 1] or in 0..255 (DensePose's uint8 PNGs): when any
foreground U or V of the field exceeds 1 the whole field is taken as 0..255
and divided by 255. A pixel is foreground when I >= 1 and I, U, V are finite.

Options: ``stride`` k keeps every k-th foreground pixel of each frame in
raster order (k = 1: all); ``min_pixels``: a frame with fewer (kept)
foreground pixels has no evidence (the engine passes it through,
``no_evidence``); ``charts``: None for the open body's charts
(:func:`fitkit.render.iuv.open_body_charts` of the fitted model), a path to
DensePose's ``UV_Processed.mat`` for SMPL's official charts, or an
:class:`IUVCharts`.

Vertex set: ``Needs(vertices=ids)``, the union of the vertices of all looked-up
faces. The term is not pointwise (a residual depends on three vertices);
Levenberg–Marquardt differentiates it along all parameters (one forward pass
per parameter), which is fine with a ``stride`` of a few pixels; L-BFGS is the
cheaper choice at full resolution.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fitkit.camera import project
from fitkit.errors import ObservationError
from fitkit.fitting.camera_setup import masked_box
from fitkit.io.observations import read_dense_cue
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term
from fitkit.terms.robust import geman_mcclure

__all__ = ["DensePose"]

_CHART_CACHE: dict = {}


def _charts_for(charts: Any, model):
    from fitkit.render.iuv import IUVCharts, load_densepose_smpl_charts, open_body_charts

    if isinstance(charts, IUVCharts):
        return charts
    key = (id(model), str(charts))
    if key not in _CHART_CACHE:
        _CHART_CACHE.clear()
        _CHART_CACHE[key] = (model, open_body_charts(model) if charts is None
                             else load_densepose_smpl_charts(charts, model.faces))
    return _CHART_CACHE[key][1]


@register_term("densepose")
class DensePose(Term):
    """Pixels of a DensePose IUV map pulled onto their surface points (see module doc).

    Args:
        sigma: Geman–McClure scale in (scaled) pixels, or None for squared error.
        scale_by_size: multiply residuals by ``reference_size / person_size``.
        reference_size: the person size (pixels) residuals are scaled to.
        field: name of the dense cue in ``observations.dense``.
        min_pixels: frames with fewer used foreground pixels have no evidence.
        stride: use every k-th foreground pixel (raster order) of each frame.
        charts: None (open-body charts), a path to ``UV_Processed.mat``, or an IUVCharts.

    After :meth:`setup`: ``pixels`` (N, P, 2), ``face_vertices`` (N, P, 3) vertex
    ids, ``bary`` (N, P, 3), ``valid`` (N, P) bool (padded to the largest P),
    ``vertex_ids``, ``size_scale`` (N,), ``uv_scale`` (1 or 255).
    """

    kind = "data"
    pointwise = None

    def __init__(self, sigma: float | None = 100.0, scale_by_size: bool = True, reference_size: float = 224.0,
                 field: str = "iuv", min_pixels: int = 20, stride: int = 1, charts: Any = None):
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"densepose.sigma: expected a positive number of pixels or null, got {sigma!r}")
        if not (isinstance(reference_size, (int, float)) and reference_size > 0):
            raise ValueError(f"densepose.reference_size: expected a positive number of pixels, got {reference_size!r}")
        if not isinstance(field, str) or not field:
            raise ValueError(f"densepose.field: expected the name of a dense cue, got {field!r}")
        for name, val in (("min_pixels", min_pixels), ("stride", stride)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"densepose.{name}: expected an integer >= 1, got {val!r}")
        self.sigma = None if sigma is None else float(sigma)
        self.scale_by_size = bool(scale_by_size)
        self.reference_size = float(reference_size)
        self.field = field
        self.min_pixels = int(min_pixels)
        self.stride = int(stride)
        self.charts = charts
        self.vertex_ids: tuple[int, ...] | None = None

    # ------------------------------------------------------------ set-up
    def _read_field(self, ctx: SetupContext) -> Tensor:
        f = read_dense_cue(ctx.observations, self.field, 3, reader="densepose", content="(I, U, V)",
                           image_size=ctx.camera.image_size)
        src, name = getattr(ctx.observations, "source", "<observations>"), f"dense_{self.field}"
        f = f.detach().to(device=ctx.device, dtype=torch.float64)
        I = f[..., 0]
        fin = torch.isfinite(I)
        if bool(((I[fin] < 0) | (I[fin] > 24) | ((I[fin] - I[fin].round()).abs() > 1e-3)).any()):
            raise ObservationError(f"{src}: field '{name}': channel 0 (part index I) must hold integers 0..24")
        fg = fin & (I.round() >= 1) & torch.isfinite(f[..., 1:]).all(-1)
        uv = f[..., 1:][fg]
        if uv.numel() and (float(uv.min()) < 0 or float(uv.max()) > 255):
            raise ObservationError(f"{src}: field '{name}': U, V must be in [0, 1] (or 0..255), got values in "
                                   f"[{float(uv.min()):g}, {float(uv.max()):g}]")
        self.uv_scale = 255.0 if uv.numel() and float(uv.max()) > 1.0 else 1.0
        return f, fg

    def setup(self, ctx: SetupContext) -> None:
        f, fg = self._read_field(ctx)
        charts = _charts_for(self.charts, ctx.model)
        if int(charts.faces.max()) >= ctx.model.num_vertices:
            raise ObservationError(f"densepose.charts: the charts index vertex {int(charts.faces.max())} but the "
                                   f"model has {ctx.model.num_vertices} vertices")
        n, h, w = f.shape[:3]
        dev, dt = ctx.device, ctx.dtype
        b, y, x = torch.nonzero(fg, as_tuple=True)  # raster order per frame
        if self.stride > 1:
            counts = fg.flatten(1).sum(1)
            start = torch.cumsum(counts, 0) - counts
            rank = torch.arange(b.numel(), device=dev) - start[b]
            keep = rank % self.stride == 0
            b, y, x = b[keep], y[keep], x[keep]
        part = f[b, y, x, 0].round().long()
        uv = f[b, y, x, 1:] / self.uv_scale
        face, bary = charts.uv_lookup(part.cpu(), uv.cpu())
        face, bary = face.to(dev), bary.to(dev)
        ok = face >= 0
        b, y, x, face, bary = b[ok], y[ok], x[ok], face[ok], bary[ok]
        counts = torch.bincount(b, minlength=n)
        P = max(1, int(counts.max()) if counts.numel() else 1)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(b.numel(), device=dev) - start[b]
        pixels = torch.zeros(n, P, 2, dtype=dt, device=dev)
        pixels[b, slot] = torch.stack([x, y], -1).to(dt)
        vid = charts.faces.to(dev)[face]
        face_vertices = torch.zeros(n, P, 3, dtype=torch.long, device=dev)
        face_vertices[b, slot] = vid
        bw = torch.zeros(n, P, 3, dtype=dt, device=dev)
        bw[b, slot] = bary.to(dt)
        valid = torch.zeros(n, P, dtype=torch.bool, device=dev)
        valid[b, slot] = True

        self._evidence = counts >= self.min_pixels
        valid &= self._evidence[:, None]
        self.pixels, self.face_vertices, self.bary, self.valid = pixels, face_vertices, bw, valid

        scale = torch.ones(n, dtype=dt, device=dev)
        if self.scale_by_size:
            side = masked_box(pixels, valid)[1]
            side = torch.where(self._evidence, side, torch.ones_like(scale))
            scale = self.reference_size / side.clamp(min=1.0)
        self.size_scale = scale

        used = face_vertices[valid]
        ids = torch.unique(used) if used.numel() else torch.zeros(1, dtype=torch.long, device=dev)
        self.vertex_ids = tuple(int(i) for i in ids.tolist())
        self._slots = torch.searchsorted(ids, face_vertices.clamp(min=0)).clamp(max=ids.numel() - 1)
        self._w = valid.to(dt)

    # ------------------------------------------------------------ interface
    def needs(self) -> Needs:
        """Vertices: the union of the used faces' vertices (``'all'`` before :meth:`setup`)."""
        return Needs(vertices="all" if self.vertex_ids is None else self.vertex_ids, params=())

    def evidence(self) -> Tensor:
        return self._evidence

    def residuals(self, batch: Batch) -> Tensor:
        """(B, 2P): per used pixel, the x then y residual (0 for padding)."""
        verts = batch.vertices  # (B, U, 3)
        slots = batch.rows(self._slots)  # (B, P, 3)
        B, P = slots.shape[:2]
        tri = torch.gather(verts, 1, slots.reshape(B, P * 3, 1).expand(B, P * 3, 3)).reshape(B, P, 3, 3)
        point = (batch.rows(self.bary).to(verts)[..., None] * tri).sum(-2)
        proj = project(point, batch.K)
        scale = (batch.pixel_scale * batch.rows(self.size_scale))[:, None, None]
        e = (proj - batch.rows(self.pixels)) * scale
        r = e if self.sigma is None else geman_mcclure(e, self.sigma)
        r = r * batch.rows(self._w)[..., None]
        return r.reshape(B, -1)

    def __repr__(self) -> str:
        return (f"DensePose(sigma={self.sigma}, scale_by_size={self.scale_by_size}, "
                f"reference_size={self.reference_size}, field={self.field!r}, min_pixels={self.min_pixels}, "
                f"stride={self.stride}, charts={self.charts!r})")
