"""DensePose-style IUV charts: body part index I and per-part (U, V) on the mesh surface.

DensePose part indices (fitkit uses the same 24 parts; 0 is background)::

    1, 2   torso                 3   right hand          4   left hand
    5      left foot             6   right foot
    7, 9   upper leg right       8, 10  upper leg left
    11, 13 lower leg right       12, 14 lower leg left
    15, 17 upper arm left        16, 18 upper arm right
    19, 21 lower arm left        20, 22 lower arm right
    23, 24 head

Pairs are the two sides of one part. **fitkit's convention on the open body:
the first index of a pair is the back, the second the front** (1 = torso
back, 2 = torso front, 7 = right upper leg back, 9 = its front, ...,
23 = head back, 24 = head front). "Left"/"right" are the person's own
(SMPL's ``left_*`` joints, +x in the rest pose). Charts loaded from
DensePose's own ``UV_Processed.mat`` (:func:`load_densepose_smpl_charts`) keep
DensePose's assignment, whatever its sides are.

:class:`IUVCharts` holds, per face of a mesh, its part (F,) and the (U, V) of
each of its three corners (F, 3, 2): corners carry their own UVs, so chart
seams need no duplicated vertices. It renders ground-truth IUV images
(:meth:`IUVCharts.render`, the per-face (I, U, V) "texture" of seed 004) and
inverts the map (:meth:`IUVCharts.uv_lookup`: part + (U, V) -> face and
barycentrics).

Open-body charts (:func:`open_body_charts`), built from the rest pose and
the skinning weights, so they work for any SMPL-skeleton mesh:

1. *Part.* Each face's dominant joint is the argmax of the summed skinning
   weights of its three vertices; joints map to segments: pelvis, spine1-3
   and collars -> torso; neck, head -> head; wrist and hand joint -> hand;
   ankle and foot joint -> foot; hip -> upper leg; knee -> lower leg;
   shoulder -> upper arm; elbow -> lower arm.
2. *Side.* Torso and head: back when the rest-pose face normal points
   backwards (n_z < 0), else front. Limbs: back when the face centroid lies
   behind the bone axis (offset from the axis . f < 0, f = +z made
   orthogonal to the bone), else front. Hands and feet are single parts.
3. *(U, V).* Limbs: a cylindrical unwrapping around the bone (parent joint
   -> child joint, unit direction a). V = the offset along a, normalised to
   [0, 1] over the part (0 at the parent end). U = the angle around the bone,
   measured from s = a x f towards f (front) or towards -f (back), divided by
   pi, so each half spans U in [0, 1] and both halves meet at U = 0 (the +s
   side) and U = 1 (the -s side); corners of a face straddling a seam are
   clamped into its half. Torso and head: a planar projection on the
   frontal (x, y) plane, U = x (front) or -x (back) and V = -y (top = 0),
   each normalised to [0, 1] over the part. Hands: planar on the plane of
   the palm (coordinates along the wrist -> hand bone and z), top side
   (n_y >= 0) in U in [0, 0.5], palm side in U in [0.5, 1]. Feet: planar on
   the ground plane (along the ankle -> foot bone and outwards along x), top
   in U in [0, 0.5], sole in [0.5, 1].

Planar charts are not injective where the surface folds over the projection
direction (ears, the underside of the chin, between fingers): there a (U, V)
names one of the overlapping surface points (the lowest face id).

Lookup (:meth:`IUVCharts.uv_lookup`): every part's chart is rasterized once,
in UV space, with :func:`fitkit.render.rasterizer.rasterize` on a G x G grid
(G = :attr:`IUVCharts.grid`, default 128; corner (u, v) drawn at pixel
(u (G-1), v (G-1))). Empty cells take the face of the nearest filled cell of
the same part (``scipy.ndimage.distance_transform_edt``). A query reads the
face at its nearest cell and computes the exact barycentrics of (u, v) in
that face's UV triangle, clamped into the triangle (negative weights set to 0,
renormalised).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from fitkit.errors import ModelFileError, ParameterError

__all__ = ["PART_NAMES", "MIRROR_PART", "IUVCharts", "open_body_charts", "load_densepose_smpl_charts"]

#: Name of each DensePose part index (fitkit's back/front convention for the pairs).
PART_NAMES = {
    1: "torso back", 2: "torso front", 3: "right hand", 4: "left hand", 5: "left foot", 6: "right foot",
    7: "upper leg right back", 8: "upper leg left back", 9: "upper leg right front", 10: "upper leg left front",
    11: "lower leg right back", 12: "lower leg left back", 13: "lower leg right front",
    14: "lower leg left front", 15: "upper arm left back", 16: "upper arm right back",
    17: "upper arm left front", 18: "upper arm right front", 19: "lower arm left back",
    20: "lower arm right back", 21: "lower arm left front", 22: "lower arm right front",
    23: "head back", 24: "head front",
}
#: Part index of the left-right mirror image of each part.
MIRROR_PART = {1: 1, 2: 2, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7, 9: 10, 10: 9, 11: 12, 12: 11, 13: 14, 14: 13,
               15: 16, 16: 15, 17: 18, 18: 17, 19: 20, 20: 19, 21: 22, 22: 21, 23: 23, 24: 24}

# SMPL joint -> segment name
_SEGMENT_OF_JOINT = {
    0: "torso", 3: "torso", 6: "torso", 9: "torso", 13: "torso", 14: "torso", 12: "head", 15: "head",
    20: "hand_l", 22: "hand_l", 21: "hand_r", 23: "hand_r", 7: "foot_l", 10: "foot_l", 8: "foot_r", 11: "foot_r",
    1: "upleg_l", 2: "upleg_r", 4: "loleg_l", 5: "loleg_r", 16: "uparm_l", 17: "uparm_r",
    18: "loarm_l", 19: "loarm_r",
}
# limb segment -> (parent joint, child joint, back part, front part)
_LIMBS = {
    "upleg_r": (2, 5, 7, 9), "upleg_l": (1, 4, 8, 10), "loleg_r": (5, 8, 11, 13), "loleg_l": (4, 7, 12, 14),
    "uparm_l": (16, 18, 15, 17), "uparm_r": (17, 19, 16, 18), "loarm_l": (18, 20, 19, 21),
    "loarm_r": (19, 21, 20, 22),
}
# hand/foot segment -> (bone start, bone end, part, lateral sign for the second planar axis)
_EXTREMITIES = {"hand_l": (20, 22, 4), "hand_r": (21, 23, 3), "foot_l": (7, 10, 5), "foot_r": (8, 11, 6)}


@dataclass
class IUVCharts:
    """Per-face part index and per-corner (U, V) of a mesh (see the module doc).

    Attributes:
        faces: (F, 3) long vertex indices of the charted faces (the model's
            faces for the open body; DensePose's re-indexed SMPL faces for
            :func:`load_densepose_smpl_charts`).
        face_part: (F,) long part index 1..24.
        face_uv: (F, 3, 2) (U, V) in [0, 1] of each face corner.
        grid: side G of each part's lookup raster.
    """

    faces: Tensor
    face_part: Tensor
    face_uv: Tensor
    grid: int = 128
    _tables: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.faces = torch.as_tensor(self.faces, dtype=torch.long)
        self.face_part = torch.as_tensor(self.face_part, dtype=torch.long)
        self.face_uv = torch.as_tensor(self.face_uv, dtype=torch.float64)
        f = self.faces.shape[0]
        if self.faces.shape != (f, 3) or self.face_part.shape != (f,) or self.face_uv.shape != (f, 3, 2):
            raise ParameterError(f"IUVCharts: faces (F, 3), face_part (F,) and face_uv (F, 3, 2) expected, got "
                                 f"{tuple(self.faces.shape)}, {tuple(self.face_part.shape)}, "
                                 f"{tuple(self.face_uv.shape)}")
        if f and (int(self.face_part.min()) < 1 or int(self.face_part.max()) > 24):
            raise ParameterError("IUVCharts: face_part must be in 1..24")
        if not bool(torch.isfinite(self.face_uv).all()) or (f and (float(self.face_uv.min()) < 0
                                                                  or float(self.face_uv.max()) > 1)):
            raise ParameterError("IUVCharts: face_uv must be finite and in [0, 1]")
        if int(self.grid) < 2:
            raise ParameterError(f"IUVCharts: grid must be >= 2, got {self.grid}")

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    # ------------------------------------------------------------ rendering
    @torch.no_grad()
    def render(self, vertices: Tensor, K: Tensor, image_size: Sequence[int]) -> Tensor:
        """Ground-truth IUV images of posed meshes.

        Args:
            vertices: (B, V, 3) camera-frame vertices (meters, OpenCV axes).
            K: (B, 3, 3) or (3, 3) intrinsics, pixels.
            image_size: (H, W) pixels (the rasterizer's order).
        Returns:
            (B, H, W, 3) in the vertices' dtype: I (constant over a face, 0 on
            background), U, V (interpolated over the face, 0 on background).
        """
        from fitkit.render.rasterizer import rasterize

        if K.dim() == 2:
            K = K.expand(vertices.shape[0], 3, 3)
        frags = rasterize(vertices, self.faces.to(vertices.device), K.to(vertices), tuple(image_size))
        face = frags.face
        hit = face >= 0
        fid = face.clamp(min=0)
        part = self.face_part.to(vertices.device)[fid].to(vertices.dtype)
        uv = (frags.bary[..., None] * self.face_uv.to(vertices)[fid]).sum(-2)
        out = torch.cat([part[..., None], uv], dim=-1)
        return torch.where(hit[..., None], out, torch.zeros_like(out))

    # ------------------------------------------------------------ lookup
    def _build_tables(self):
        from scipy.ndimage import distance_transform_edt

        from fitkit.render.rasterizer import rasterize

        g = int(self.grid)
        f = self.num_faces
        uv = self.face_uv.reshape(-1, 2) * (g - 1)
        off = ((self.face_part - 1) * g).to(torch.float64).repeat_interleave(3)
        verts = torch.stack([uv[:, 0] + off, uv[:, 1], torch.ones_like(off)], dim=-1)
        corners = torch.arange(3 * f).view(f, 3)
        K = torch.eye(3, dtype=torch.float64)[None]
        frags = rasterize(verts[None], corners, K, (g, 24 * g))
        face = frags.face[0].view(g, 24, g).permute(1, 0, 2).numpy()  # (24, G(v), G(u))
        out = np.empty((24, g, g), dtype=np.int64)
        for p in range(24):
            cells = face[p]
            empty = cells < 0
            if empty.all():
                out[p] = -1
                continue
            if empty.any():
                _, (iy, ix) = distance_transform_edt(empty, return_indices=True)
                cells = cells[iy, ix]
            out[p] = cells
        self._tables = (torch.from_numpy(out),)
        return self._tables

    def uv_lookup(self, part: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
        """Surface points of given parts with the nearest (U, V) (batched, no loop over points).

        Args:
            part: (P,) integer part indices 1..24 (a part without faces gives face -1).
            uv: (P, 2) (U, V), clamped into [0, 1].
        Returns:
            face (P,) long index into :attr:`faces` (-1 for an empty part) and
            bary (P, 3) barycentrics in that face (uv's float dtype; 0 where face is -1).
        """
        part = torch.as_tensor(part).long()
        uv = torch.as_tensor(uv)
        if not uv.is_floating_point():
            uv = uv.double()
        if part.dim() != 1 or uv.shape != (part.shape[0], 2):
            raise ParameterError(f"uv_lookup: part (P,) and uv (P, 2) expected, got {tuple(part.shape)} "
                                 f"and {tuple(uv.shape)}")
        if part.numel() and (int(part.min()) < 1 or int(part.max()) > 24):
            raise ParameterError("uv_lookup: part indices must be in 1..24")
        dev, dt = uv.device, uv.dtype
        tables = self._tables or self._build_tables()
        table = tables[0].to(dev)
        g = int(self.grid)
        q = uv.clamp(0, 1).nan_to_num(0.0)
        ix = (q[:, 0] * (g - 1)).round().long()
        iy = (q[:, 1] * (g - 1)).round().long()
        face = table[(part.to(dev) - 1), iy, ix]
        ok = face >= 0
        tri = self.face_uv.to(device=dev, dtype=dt)[face.clamp(min=0)]  # (P, 3, 2)
        e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], q - tri[:, 0]
        den = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        good = den.abs() > 1e-14
        den = torch.where(good, den, torch.ones_like(den))
        l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / den
        l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / den
        bary = torch.stack([1 - l1 - l2, l1, l2], dim=-1).clamp(min=0)
        bary = torch.where(good[:, None], bary, torch.full_like(bary, 1.0 / 3))
        bary = bary / bary.sum(-1, keepdim=True).clamp(min=1e-12)
        bary = torch.where(ok[:, None], bary, torch.zeros_like(bary))
        return torch.where(ok, face, torch.full_like(face, -1)), bary

    def surface_points(self, vertices: Tensor, face: Tensor, bary: Tensor) -> Tensor:
        """(P, 3) points sum_k bary_k vertices[faces[face, k]] of a (V, 3) mesh."""
        vid = self.faces.to(vertices.device)[face.clamp(min=0)]
        return (bary.to(vertices)[..., None] * vertices[vid]).sum(-2)


# ---------------------------------------------------------------- open body charts

def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(np.linalg.norm(v), 1e-12)


def _axis_z(J: np.ndarray, j0: int, j1: int, y: np.ndarray) -> np.ndarray:
    """z of the line through joints j0, j1 at heights y."""
    t = (y - J[j0, 1]) / max(J[j1, 1] - J[j0, 1], 1e-12)
    return J[j0, 2] + t * (J[j1, 2] - J[j0, 2])


def open_body_charts(model, grid: int = 128) -> IUVCharts:
    """IUV charts of the open body (or any SMPL-skeleton mesh), from rest pose and skinning weights.

    See the module docstring for the construction and the back/front convention.
    """
    v = model.v_template.detach().cpu().double().numpy()
    faces = model.faces.detach().cpu().long().numpy()
    w = model.lbs_weights.detach().cpu().double().numpy()
    J = model.J_template.detach().cpu().double().numpy()
    if w.shape[1] != 24 or J.shape[0] != 24:
        raise ParameterError(f"open_body_charts needs SMPL's 24 joints, the model has {w.shape[1]}")
    F = faces.shape[0]
    dominant = w[faces].sum(1).argmax(1)  # (F,)
    corners = v[faces]  # (F, 3, 3)
    centroid = corners.mean(1)
    normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    seg = np.array([_SEGMENT_OF_JOINT[int(j)] for j in dominant])
    part = np.zeros(F, dtype=np.int64)
    uv = np.zeros((F, 3, 2))

    for name in ("torso", "head"):
        sel = seg == name
        back_part, front_part = (1, 2) if name == "torso" else (23, 24)
        # torso: the side the normal faces; head: the side of the neck-head axis the centroid is on
        # (the head's interior (mouth, eyes) then joins the face, not the back of the head)
        side = normal[:, 2] if name == "torso" else centroid[:, 2] - _axis_z(J, 12, 15, centroid[:, 1])
        for is_back, p in ((True, back_part), (False, front_part)):
            s = sel & ((side < 0) == is_back)
            part[s] = p
            c = corners[s]
            x = -c[..., 0] if is_back else c[..., 0]
            uv[s, :, 0] = _normalise(x)
            uv[s, :, 1] = _normalise(-c[..., 1])

    for name, (j0, j1, back_part, front_part) in _LIMBS.items():
        sel = seg == name
        a = _unit(J[j1] - J[j0])
        f = _unit(np.array([0.0, 0.0, 1.0]) - a[2] * a)
        s_dir = np.cross(a, f)
        front = ((centroid - J[j0]) @ f) >= 0
        for is_back, p in ((True, back_part), (False, front_part)):
            s = sel & (front != is_back)
            part[s] = p
            d = corners[s] - J[j0]
            sign = -1.0 if is_back else 1.0
            theta = np.arctan2(sign * (d @ f), d @ s_dir)
            theta = np.where(theta < -np.pi / 2, theta + 2 * np.pi, theta)
            uv[s, :, 0] = np.clip(theta / np.pi, 0.0, 1.0)
            uv[s, :, 1] = _normalise(d @ a)

    for name, (j0, j1, p) in _EXTREMITIES.items():
        sel = seg == name
        part[sel] = p
        a = _unit(J[j1] - J[j0] - (J[j1] - J[j0])[1] * np.array([0.0, 1.0, 0.0]))  # horizontal bone direction
        if name.startswith("hand"):  # second axis: forward (z), the same on both sides
            lateral = _unit(np.array([0.0, 0.0, 1.0]) - a[2] * a)
        else:  # feet: second axis outwards along x (mirror-consistent)
            lateral = _unit(np.array([np.sign(J[j0][0]) or 1.0, 0.0, 0.0]) - np.sign(J[j0][0]) * a[0] * a)
        c = corners[sel] - J[j0]
        top = normal[sel, 1] >= 0
        u_in = _normalise(c @ lateral)
        uv[sel, :, 0] = 0.5 * u_in + 0.5 * (~top)[:, None]
        uv[sel, :, 1] = _normalise(c @ a)

    return IUVCharts(torch.from_numpy(faces), torch.from_numpy(part), torch.from_numpy(uv), grid=grid)


# ---------------------------------------------------------------- DensePose's SMPL charts

_MAT_FIELDS = ("All_FaceIndices", "All_Faces", "All_vertices", "All_U_norm", "All_V_norm")


def load_densepose_smpl_charts(path, smpl_faces, grid: int = 128) -> IUVCharts:
    """SMPL's official DensePose charts from DensePose's ``UV_Processed.mat``.

    The file (from DensePose's ``DensePoseData``, not shipped with fitkit)
    holds ``All_FaceIndices`` (F,) part per face (1..24), ``All_Faces`` (F, 3)
    1-based indices into ``All_vertices`` (Vd,), which are 1-based SMPL vertex
    ids (vertices on seams repeat), and ``All_U_norm``, ``All_V_norm`` (Vd,).
    The charts' :attr:`IUVCharts.faces` are the SMPL vertex ids of each
    DensePose face, so they apply to any mesh with SMPL's vertices.

    Args:
        path: the ``.mat`` file.
        smpl_faces: (F_smpl, 3) faces of the model the charts are used with;
            the vertex ids are checked against it.
    Raises:
        ModelFileError naming the file (and the field) when it is missing,
        unreadable, lacks a field or holds inconsistent values.
    """
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(str(path))
    except FileNotFoundError:
        raise ModelFileError(f"{path}: DensePose UV_Processed.mat not found") from None
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: not a readable .mat file: {type(exc).__name__}: {exc}") from exc
    for key in _MAT_FIELDS:
        if key not in mat:
            raise ModelFileError(f"{path}: field '{key}' is missing (a DensePose UV_Processed.mat holds "
                                 f"{', '.join(_MAT_FIELDS)})")
    try:
        fparts = np.asarray(mat["All_FaceIndices"]).reshape(-1).astype(np.int64)
        dfaces = np.asarray(mat["All_Faces"]).astype(np.int64)
        dverts = np.asarray(mat["All_vertices"]).reshape(-1).astype(np.int64)
        U = np.asarray(mat["All_U_norm"], dtype=np.float64).reshape(-1)
        V = np.asarray(mat["All_V_norm"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: non-numeric field: {exc}") from exc
    nf, nv = fparts.shape[0], dverts.shape[0]
    if dfaces.shape != (nf, 3):
        raise ModelFileError(f"{path}: field 'All_Faces' has shape {dfaces.shape}, expected ({nf}, 3)")
    if U.shape != (nv,) or V.shape != (nv,):
        raise ModelFileError(f"{path}: fields 'All_U_norm', 'All_V_norm' must have {nv} values "
                             f"(one per All_vertices), got {U.shape[0]} and {V.shape[0]}")
    if nf and (dfaces.min() < 1 or dfaces.max() > nv):
        raise ModelFileError(f"{path}: field 'All_Faces' must hold 1-based indices into All_vertices (1..{nv})")
    if nf and (fparts.min() < 1 or fparts.max() > 24):
        raise ModelFileError(f"{path}: field 'All_FaceIndices' must hold parts 1..24")
    num_v = int(torch.as_tensor(smpl_faces).max()) + 1
    if nv and (dverts.min() < 1 or dverts.max() > num_v):
        raise ModelFileError(f"{path}: field 'All_vertices' must hold 1-based vertex ids of the model "
                             f"(1..{num_v})")
    if not (np.isfinite(U).all() and np.isfinite(V).all()) or U.min() < 0 or U.max() > 1 or V.min() < 0 \
            or V.max() > 1:
        raise ModelFileError(f"{path}: fields 'All_U_norm', 'All_V_norm' must be in [0, 1]")
    corner = dfaces - 1
    faces = dverts[corner] - 1
    uv = np.stack([U[corner], V[corner]], axis=-1)
    return IUVCharts(torch.from_numpy(faces), torch.from_numpy(fparts), torch.from_numpy(uv), grid=grid)
