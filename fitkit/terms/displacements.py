"""Dense 2D displacements as a data term (seed 001, Sec. 3.1-3.2, Eq. 1, 2, 5, 6, 7).

A displacement field ``f`` (N, H, W, 2), pixels, maps every pixel ``x`` where
the *initial* body is rendered to ``x + f(x)``, the place in the image where
that bit of body surface really is. It lives in the fit's observations as
``observations.dense['displacements']`` (NaN = no value), built with
``Observations.from_arrays(..., dense={'displacements': field})``; the files
of :mod:`fitkit.io.flow_readers` hold one frame each.

Per sample, :class:`Displacements` (``type: displacements``) turns the field
into per-vertex targets once, at set-up:

1. pose the initial body (the fit's initial parameters) and rasterize it with
   the fit's intrinsics at the full image size: visible face id and
   perspective-correct barycentrics ``b`` at every pixel centre;
2. Eq. 5 (:func:`vertex_displacements`): every pixel with a finite field
   value adds ``b_i * f(x)`` to each vertex ``i`` of its face and ``b_i`` to
   the vertex's weight; ``v_i = sum / weight``. A vertex is *visible* when
   its weight exceeds :data:`VISIBLE_WEIGHT` (1e-3, i.e. it is touched by
   more than a sliver of the pixels of its faces); only visible vertices are
   used (``w_i`` of Eq. 7 is 1 for them, 0 otherwise);
3. Eq. 6: target ``V_i = v_i + pi(M_init)_i``, the vertex's initial projection
   moved by its displacement.

The residual (Eq. 7) of visible vertex i, summed over x and y, is

    E_b = sum_i  rho( s_b * (pi(X_bi) - V_bi) )

with ``rho`` Geman–McClure of scale ``sigma`` (or squares when ``sigma`` is
null) and ``s_b`` the pixel scale: the camera's ``pixel_scale`` times, with
``scale_by_size: true`` (the default), ``reference_size / person_size``, where
person_size is the longest side of the box around the *initial* projections
of the visible vertices (the body's silhouette box, so no 1.2 enlargement as
for the keypoint box of ``keypoints2d``). This is seed 001's "we scale the
reprojection loss depending on the size of the person". The sum runs over
every visible vertex (no normalisation by their number), as in Eq. 7; seed
001 weights it by 0.4 where OpenPose keypoints get 5.0 (recipe ``weight``).

Vertex set: the term declares ``Needs(vertices=ids)`` with ids the union of
the visible vertices over all N samples (fixed at set-up; a sample's other
vertices of that set get weight 0), so the posed mesh is evaluated only where
some sample has a target.

No evidence: a sample whose field has no finite value, or with fewer than
``min_visible`` visible vertices, has no evidence from this term (all its
weights are 0; if no other data term has evidence for it the engine passes its
initialization through and flags it ``no_evidence``).

The field must have been computed for the *initialization and camera the fit
starts from*: full-image camera (``camera: {mode: full}`` with the
observations' intrinsics) and ``init: {transl: keep}``, so the rendering made
here is the one the field was predicted on. A field whose values mostly lie
off the rendered initial body triggers an :class:`ObservationWarning`.

:func:`gt_displacement_field` makes ground-truth fields (Eq. 1, 2) for
synthetic data and tests.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import torch
from torch import Tensor

from fitkit.camera import project
from fitkit.errors import ObservationWarning, ParameterError
from fitkit.fitting.camera_setup import masked_box
from fitkit.io.observations import read_dense_cue
from fitkit.terms.base import Batch, Needs, SetupContext, Term, register_term
from fitkit.terms.robust import geman_mcclure

__all__ = ["VISIBLE_WEIGHT", "gt_displacement_field", "vertex_displacements", "Displacements"]

#: A vertex is visible when its summed barycentric weight (Eq. 5's denominator) exceeds this.
VISIBLE_WEIGHT = 1e-3
#: Pixels rasterized at once (frames per chunk = max(1, this // (H * W))); bounds set-up memory.
_PIXELS_PER_CHUNK = 1 << 23
_PARAM_NAMES = ("global_orient", "body_pose", "betas", "transl")


def _chunks(n: int, h: int, w: int):
    step = max(1, _PIXELS_PER_CHUNK // max(1, h * w))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _hw_from_size(image_size, name: str = "image_size") -> tuple[int, int]:
    """(H, W) from a (width, height) pair or an (N, 2) tensor/array of equal rows."""
    t = torch.as_tensor(image_size, dtype=torch.float64).detach().cpu()
    if t.dim() == 2 and t.shape[1] == 2 and t.shape[0] > 0:
        if not bool((t == t[0]).all()):
            raise ParameterError(f"{name}: every frame must have the same (width, height), "
                                 f"got {t.unique(dim=0).tolist()}")
        t = t[0]
    if t.shape != (2,) or not bool(torch.isfinite(t).all()) or bool((t < 1).any()) or bool((t != t.round()).any()):
        raise ParameterError(f"{name} must be (width, height) in whole pixels, or (N, 2) of them; got {image_size!r}")
    return int(t[1]), int(t[0])


def _per_sample_K(K, n: int, name: str, like: Tensor) -> Tensor:
    K = torch.as_tensor(K).to(device=like.device, dtype=like.dtype)
    if K.shape == (3, 3):
        K = K.expand(n, 3, 3)
    if K.shape != (n, 3, 3):
        raise ParameterError(f"{name} must be (3, 3) or ({n}, 3, 3), got {tuple(K.shape)}")
    return K


def _pose(model, params: Mapping[str, Any], rows: slice, dev, dt) -> Tensor:
    """(n, V, 3) camera-frame vertices of rows ``rows`` of smplx-named ``params``."""
    p = [torch.as_tensor(params[k])[rows].to(device=dev, dtype=dt) if k in params else None for k in _PARAM_NAMES]
    if p[0] is None or p[1] is None:
        raise ParameterError("parameters need at least 'global_orient' and 'body_pose' (smplx names)")
    if p[2] is None:
        p[2] = torch.zeros(p[0].shape[0], model.num_betas, device=dev, dtype=dt)
    return model(*p, vertices="all").vertices


@torch.no_grad()
def gt_displacement_field(model, gt_params: Mapping[str, Any], init_params: Mapping[str, Any], K, image_size, *,
                          K_gt=None) -> tuple[Tensor, Tensor]:
    """Ground-truth displacement field between an initial and a true body (Eq. 1 and 2).

    Eq. 1: ``per_vertex = pi_gt(M_gt) - pi(M_init)`` for every vertex. Eq. 2: the
    initial body is rasterized (``K``, ``image_size``) and each covered pixel
    gets the barycentric interpolation of its face's per-vertex displacements.
    The interpolation uses *screen-space* barycentrics (the rasterizer's
    perspective-correct ``b_i`` reweighted by the vertex depths,
    ``b_i z_i / sum_j b_j z_j``), so the field is affine over every projected
    triangle ("interpolating across the projected triangle surfaces") and
    ``x + field(x)`` is exactly where the affine map between the initial and
    the true projected triangle sends pixel ``x``. (The true projection of the
    same surface point differs from that by a second-order perspective term,
    hundredths of a pixel for the triangles of a body at a few meters.)

    Args:
        model: :class:`fitkit.body.BodyModel` (its device and dtype are used).
        gt_params, init_params: smplx-named (N, ...) parameters (``global_orient``,
            ``body_pose``, ``betas`` (optional), ``transl`` (optional)),
            camera frame, meters and radians.
        K: (N, 3, 3) or (3, 3) intrinsics of the initial rendering, pixels.
        image_size: (width, height) in pixels (fitkit's order, as in
            ``Observations.image_size``), or an (N, 2) tensor of equal rows.
        K_gt: intrinsics of the true camera (default ``K``), for Eq. 1's ``pi_gt``.
    Returns:
        field (N, H, W, 2), pixels, NaN where the initial body is not rendered;
        per_vertex (N, V, 2), pixels (Eq. 1). Model dtype and device.
    """
    from fitkit.render.rasterizer import interpolate, rasterize

    dev, dt = model.device, model.dtype
    n = int(torch.as_tensor(init_params["global_orient"]).shape[0])
    if int(torch.as_tensor(gt_params["global_orient"]).shape[0]) != n:
        raise ParameterError(f"gt_params has {torch.as_tensor(gt_params['global_orient']).shape[0]} samples, "
                             f"init_params {n}")
    h, w = _hw_from_size(image_size)
    ref = torch.empty(0, device=dev, dtype=dt)
    K = _per_sample_K(K, n, "K", ref)
    K_gt = K if K_gt is None else _per_sample_K(K_gt, n, "K_gt", ref)
    faces = model.faces
    fields, per_vertex = [], []
    for rows in _chunks(n, h, w):
        v_init = _pose(model, init_params, rows, dev, dt)
        v_gt = _pose(model, gt_params, rows, dev, dt)
        disp = project(v_gt, K_gt[rows]) - project(v_init, K[rows])  # Eq. 1
        frags = rasterize(v_init, faces, K[rows], (h, w))
        z = v_init[..., 2:]
        acc = interpolate(frags, torch.cat([z * disp, z], dim=-1), faces)  # sum b_i z_i (d_i, 1)
        field = acc[..., :2] / acc[..., 2:].clamp(min=torch.finfo(dt).tiny)  # Eq. 2, screen-space weights
        fields.append(torch.where(frags.mask[..., None], field, torch.full_like(field, float("nan"))))
        per_vertex.append(disp)
    return torch.cat(fields), torch.cat(per_vertex)


def vertex_displacements(fragments, faces: Tensor, field: Tensor, num_vertices: int) -> tuple[Tensor, Tensor]:
    """Per-vertex displacements from a per-pixel field (seed 001, Eq. 5).

    For every pixel with a face and a finite field value (both components),
    each vertex ``i`` of the face gets ``b_i * f`` added to its sum and ``b_i``
    to its weight (``b`` the fragments' barycentrics, clamped at 0); then
    ``v = sum / weight``. Vectorised with ``index_add_`` (no loop over pixels).

    Args:
        fragments: anything with ``face`` (N, H, W) long (-1 background) and
            ``bary`` (N, H, W, 3), e.g. :class:`fitkit.render.rasterizer.Fragments`.
        faces: (F, 3) long vertex indices the fragments refer to.
        field: (N, H, W, 2) displacements, pixels; NaN/inf pixels are ignored.
        num_vertices: V.
    Returns:
        v (N, V, 2) in the field's dtype, NaN where the weight is 0; weight (N, V)
        (the sum of barycentrics; a vertex is *visible* when it exceeds
        :data:`VISIBLE_WEIGHT`).
    """
    face, bary = fragments.face, fragments.bary
    if face.dim() != 3 or bary.shape != face.shape + (3,):
        raise ParameterError(f"fragments: face must be (N, H, W) and bary (N, H, W, 3), got "
                             f"{tuple(face.shape)} and {tuple(bary.shape)}")
    if field.shape != face.shape + (2,):
        raise ParameterError(f"field must have shape {tuple(face.shape) + (2,)} (the fragments' N, H, W "
                             f"and 2), got {tuple(field.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ParameterError(f"faces must be (F, 3), got {tuple(faces.shape)}")
    n = face.shape[0]
    dt = field.dtype if field.is_floating_point() else torch.get_default_dtype()
    ok = (face >= 0) & torch.isfinite(field).all(dim=-1)
    sample = torch.arange(n, device=face.device).view(n, 1, 1).expand_as(face)[ok]  # (P,)
    vid = faces.to(face.device).long()[face[ok]]  # (P, 3)
    b = bary[ok].to(dt).clamp(min=0)  # (P, 3)
    f = field[ok].to(dt)  # (P, 2)
    index = (sample[:, None] * num_vertices + vid).reshape(-1)
    sums = torch.zeros(n * num_vertices, 2, dtype=dt, device=face.device)
    sums.index_add_(0, index, (b[..., None] * f[:, None, :]).reshape(-1, 2))
    weight = torch.zeros(n * num_vertices, dtype=dt, device=face.device)
    weight.index_add_(0, index, b.reshape(-1))
    v = torch.where(weight[:, None] > 0, sums / weight.clamp(min=torch.finfo(dt).tiny)[:, None],
                    torch.full_like(sums, float("nan")))
    return v.view(n, num_vertices, 2), weight.view(n, num_vertices)


@register_term("displacements")
class Displacements(Term):
    """Reprojection of visible vertices onto displacement-field targets (see module doc).

    Args:
        sigma: Geman–McClure scale in (scaled) pixels, or None for squared error.
        scale_by_size: multiply residuals by ``reference_size / person_size``.
        reference_size: the person size (pixels) residuals are scaled to.
        field: name of the dense cue in ``observations.dense``.
        min_visible: samples with fewer visible vertices have no evidence.

    After :meth:`setup`: ``targets`` (N, V, 2) Eq. 6 targets (pixels, 0 where not
    visible), ``visible`` (N, V) bool, ``displacement`` (N, V, 2) Eq. 5 (NaN where
    no pixel touched the vertex), ``vertex_ids`` the declared vertex set,
    ``size_scale`` (N,).
    """

    kind = "data"
    pointwise = "vertices"

    def __init__(self, sigma: float | None = 100.0, scale_by_size: bool = True, reference_size: float = 224.0,
                 field: str = "displacements", min_visible: int = 20):
        if sigma is not None and not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ValueError(f"displacements.sigma: expected a positive number of pixels or null, got {sigma!r}")
        if not (isinstance(reference_size, (int, float)) and reference_size > 0):
            raise ValueError(f"displacements.reference_size: expected a positive number of pixels, "
                             f"got {reference_size!r}")
        if not isinstance(field, str) or not field:
            raise ValueError(f"displacements.field: expected the name of a dense cue, got {field!r}")
        if isinstance(min_visible, bool) or not isinstance(min_visible, int) or min_visible < 1:
            raise ValueError(f"displacements.min_visible: expected an integer >= 1, got {min_visible!r}")
        self.sigma = None if sigma is None else float(sigma)
        self.scale_by_size = bool(scale_by_size)
        self.reference_size = float(reference_size)
        self.field = field
        self.min_visible = int(min_visible)
        self.vertex_ids: tuple[int, ...] | None = None

    # ------------------------------------------------------------ set-up
    def _read_field(self, ctx: SetupContext) -> Tensor:
        f = read_dense_cue(ctx.observations, self.field, 2, reader="displacements",
                           content="displacements in pixels", image_size=ctx.camera.image_size)
        return f.to(device=ctx.device, dtype=ctx.dtype)

    def setup(self, ctx: SetupContext) -> None:
        from fitkit.render.rasterizer import rasterize

        field = self._read_field(ctx)
        model, K = ctx.model, ctx.camera.K.to(device=ctx.device, dtype=ctx.dtype)
        n, h, w = field.shape[:3]
        V = model.num_vertices
        faces = model.faces.to(ctx.device)
        disp = field.new_empty(n, V, 2)
        weight = field.new_empty(n, V)
        proj = field.new_empty(n, V, 2)
        finite = torch.isfinite(field).all(dim=-1)
        on_body = field.new_zeros(n)
        with torch.no_grad():
            for rows in _chunks(n, h, w):
                verts = _pose(model, ctx.init, rows, ctx.device, ctx.dtype)
                frags = rasterize(verts, faces, K[rows], (h, w))
                disp[rows], weight[rows] = vertex_displacements(frags, faces, field[rows], V)
                proj[rows] = project(verts, K[rows])
                on_body[rows] = (finite[rows] & frags.mask).flatten(1).sum(1).to(field.dtype)
        num_finite = finite.flatten(1).sum(1).to(field.dtype)
        off = (num_finite > 0) & (on_body < 0.5 * num_finite)
        if bool(off.any()):
            rows = torch.nonzero(off).flatten()
            warnings.warn(f"{getattr(ctx.observations, 'source', '<observations>')}: field 'dense_{self.field}': "
                          f"in frame(s) {rows[:10].tolist()} most field values lie off the rendered initial "
                          "body; was the field computed for this initialization and camera "
                          "(use camera mode full and init transl: keep)?", ObservationWarning, stacklevel=2)

        visible = weight > VISIBLE_WEIGHT
        count = visible.sum(dim=1)
        self._evidence = (count >= self.min_visible) & (num_finite > 0)
        visible &= self._evidence[:, None]
        self.visible = visible
        self.displacement = disp
        self.targets = torch.where(visible[..., None], disp + proj, torch.zeros_like(proj))  # Eq. 6

        scale = torch.ones(n, dtype=ctx.dtype, device=ctx.device)
        if self.scale_by_size:
            side = masked_box(proj, visible)[1]
            side = torch.where(self._evidence, side, torch.ones_like(scale))
            scale = self.reference_size / side.clamp(min=1.0)
        self.size_scale = scale

        ids = torch.nonzero(visible.any(dim=0)).flatten()
        if ids.numel() == 0:  # nothing visible anywhere: one dummy vertex, weight 0
            ids = torch.zeros(1, dtype=torch.long, device=ctx.device)
        self.vertex_ids = tuple(int(i) for i in ids.tolist())
        self._target = self.targets.index_select(1, ids)
        self._w = visible.index_select(1, ids).to(ctx.dtype)

    # ------------------------------------------------------------ interface
    def needs(self) -> Needs:
        """Vertices: the union of the visible ones over all samples (``'all'`` before :meth:`setup`)."""
        return Needs(vertices="all" if self.vertex_ids is None else self.vertex_ids, params=())

    def evidence(self) -> Tensor:
        return self._evidence

    def residual_points(self) -> Tensor:
        """(2P,): residuals 2p and 2p+1 (x, y) belong to vertex ``vertex_ids[p]`` (row p of ``batch.vertices``)."""
        return torch.arange(self._target.shape[1], device=self._target.device).repeat_interleave(2)

    def residuals(self, batch: Batch) -> Tensor:
        """(B, 2P): per vertex of :attr:`vertex_ids`, the x then y residual (0 where not visible)."""
        proj = project(batch.vertices, batch.K)
        scale = (batch.pixel_scale * batch.rows(self.size_scale))[:, None, None]
        e = (proj - batch.rows(self._target)) * scale
        r = e if self.sigma is None else geman_mcclure(e, self.sigma)
        r = r * batch.rows(self._w)[..., None]
        return r.reshape(r.shape[0], -1)

    def __repr__(self) -> str:
        return (f"Displacements(sigma={self.sigma}, scale_by_size={self.scale_by_size}, "
                f"reference_size={self.reference_size}, field={self.field!r}, min_visible={self.min_visible})")
