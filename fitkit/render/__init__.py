"""Batched triangle rasterization and simple renders in plain PyTorch (CPU and CUDA).

:func:`rasterize` finds the visible face, perspective-correct barycentrics and
depth at every pixel centre; :func:`interpolate` turns per-vertex attributes
into images (differentiable in the attributes); :mod:`fitkit.render.shading`
builds masks, depth, normal, colour and texture renders, Lambert shading and
overlays on top of them. Conventions are those of :mod:`fitkit.camera`.

Example::

    frags = rasterize(vertices, model.faces, K, (256, 256))   # vertices (B, V, 3)
    colors = render_vertex_colors(frags, model.faces, position_colors(template))
"""
from fitkit.render.rasterizer import MAX_CANDIDATES, Fragments, interpolate, rasterize
from fitkit.render.shading import (overlay, position_colors, render_depth, render_mask, render_normals,
                                   render_uv_texture, render_vertex_colors, shade, vertex_normals)

__all__ = ["Fragments", "rasterize", "interpolate", "MAX_CANDIDATES", "render_mask", "render_depth",
           "render_normals", "vertex_normals", "render_vertex_colors", "position_colors",
           "render_uv_texture", "shade", "overlay"]
