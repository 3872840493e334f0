"""Readers for DensePose IUV outputs.

- :func:`read_iuv_png`: DensePose's ``*_IUV.png`` images. DensePose
  (``infer_simple.py`` / ``apply_net``) builds an array whose channels are
  (I, U * 255, V * 255) and writes it with ``cv2.imwrite``, which takes the
  array's channels as B, G, R: on disk B = I, G = U, R = V. We read with
  ``cv2.imread``, which returns the channels in that same (B, G, R) array
  order, so the default ``channels="IUV"`` names what the array's channels 0,
  1, 2 (B, G, R) hold. A PNG written by another tool in RGB order
  (R = I, G = U, B = V) reads with ``channels="VUI"``.
- :func:`read_densepose_results`: pickled per-image results, read with
  fitkit's restricted unpickler (:func:`fitkit.body.safe_pickle.load_pickle`;
  nothing in the file is run). Supported: a list (one entry per image) of
  dicts with plain numpy arrays: boxes under ``'pred_boxes_XYXY'`` (or
  ``'boxes'``), (K, 4) x0, y0, x1, y1 pixels, and IUVs under
  ``'pred_densepose'`` (or ``'iuv'``), a list of K (3, h, w) arrays (I, U, V;
  U, V in [0, 1] or 0..255). Boxes must be finite, within 1e5 px, with
  x1 >= x0 and y1 >= y0, and IUVs finite. Torch tensors and DensePose's result classes
  (what ``apply_net dump`` writes) are refused with an explanation of how to
  convert them.
- :func:`paste_box_iuv`: per-box IUVs composed into a full-image (H, W, 3) map.

All outputs use fitkit's IUV convention (``Observations.dense['iuv']``):
float32 (H, W, 3), channel 0 = I (0 background, 1..24), channels 1, 2 = U, V
in [0, 1] (0 on background).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fitkit.errors import ModelFileError, ObservationError

__all__ = ["read_iuv_png", "read_densepose_results", "paste_box_iuv"]


def read_iuv_png(path, channels: str = "IUV") -> np.ndarray:
    """(H, W, 3) float32 (I, U, V) from a DensePose IUV PNG (see module doc for the channel order).

    Args:
        path: the image file.
        channels: what ``cv2.imread``'s channels 0, 1, 2 (B, G, R) hold, a
            permutation of ``"IUV"`` (default: DensePose's files, B = I).
    Returns:
        I as float (0..24), U, V divided by 255 (in [0, 1]).
    Raises:
        ObservationError naming the file: missing/unreadable, not 3 x 8-bit
        channels, or I outside 0..24.
    """
    import cv2

    if sorted(channels) != ["I", "U", "V"]:
        raise ValueError(f"channels must be a permutation of 'IUV', got {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise ObservationError(f"{path}: IUV image not found")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ObservationError(f"{path}: not a readable image")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ObservationError(f"{path}: an IUV PNG must have 3 channels of 8 bits, got shape {img.shape} "
                               f"dtype {img.dtype}")
    order = [channels.index(c) for c in "IUV"]
    iuv = img[..., order].astype(np.float32)
    if iuv[..., 0].max(initial=0) > 24:
        raise ObservationError(f"{path}: channel {order[0]} (I) holds values above 24: wrong channel order? "
                               f"(channels={channels!r})")
    iuv[..., 1:] /= 255.0
    return iuv


def _unsupported(path: Path, what: str) -> ObservationError:
    return ObservationError(
        f"{path}: unsupported DensePose results pickle ({what}). Only plain containers of numpy arrays are "
        "read (nothing in the file is run). Convert DensePose's output first, e.g. for each image "
        "{'pred_boxes_XYXY': boxes.cpu().numpy(), 'pred_densepose': [np.stack([r.labels.cpu().numpy(), "
        "*(r.uv.cpu().numpy())]) for r in results]} (chart results via densepose's "
        "ToChartResultConverter), and pickle the list of those dicts")


def read_densepose_results(path) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Per-image (boxes (K, 4) float32 XYXY, [K arrays (3, h, w) float32 (I, U, V), U, V in [0, 1]]).

    See the module doc for the supported layout.
    """
    from fitkit.body.safe_pickle import load_pickle

    path = Path(path)
    if not path.is_file():
        raise ObservationError(f"{path}: DensePose results file not found")
    try:
        data = load_pickle(path)
    except ModelFileError as exc:
        msg = str(exc)
        what = "it holds torch tensors" if "torch" in msg else (
            "it holds DensePose result classes" if "densepose" in msg.lower() else "it names a refused global")
        detail = msg.split(": ", 1)[-1].split(": model files")[0]
        raise _unsupported(path, f"{what}: {detail}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, (list, tuple)):
        raise _unsupported(path, f"top level is a {type(data).__name__}, expected a list of per-image dicts")
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise _unsupported(path, f"entry {i} is a {type(entry).__name__}, expected a dict")
        boxes = entry.get("pred_boxes_XYXY", entry.get("boxes"))
        iuvs = entry.get("pred_densepose", entry.get("iuv"))
        if boxes is None or iuvs is None:
            raise _unsupported(path, f"entry {i} lacks 'pred_boxes_XYXY'/'boxes' or 'pred_densepose'/'iuv'")
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4),
                                                                                                   np.float32)
        _check_boxes(boxes, f"{path}: entry {i}, field 'pred_boxes_XYXY'")
        if isinstance(iuvs, np.ndarray) and iuvs.ndim == 4:
            iuvs = list(iuvs)
        if not isinstance(iuvs, (list, tuple)) or len(iuvs) != len(boxes):
            raise _unsupported(path, f"entry {i}: expected one (3, h, w) IUV array per box ({len(boxes)})")
        arrs = []
        for k, a in enumerate(iuvs):
            a = np.asarray(a)
            if a.ndim != 3 or a.shape[0] != 3 or a.dtype.kind not in "biuf":
                raise _unsupported(path, f"entry {i}, box {k}: IUV must be a numeric (3, h, w) array, got "
                                         f"{a.dtype} {a.shape}")
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ObservationError(f"{path}: entry {i}, box {k}: the IUV array holds NaN or infinite values")
            if np.nanmax(a[1:], initial=0) > 1:
                a[1:] /= 255.0
            arrs.append(a)
        out.append((boxes, arrs))
    return out


#: Largest box coordinate accepted, in pixels (a box beyond it is a corrupt file, and pasting
#: it would allocate an image-sized index per pixel of the box).
MAX_BOX_PX = 1e5


def _check_boxes(boxes: np.ndarray, where: str) -> None:
    """(K, 4) XYXY boxes: finite, within +-MAX_BOX_PX, x1 >= x0 and y1 >= y0; ObservationError naming ``where``."""
    if boxes.size == 0:
        return
    bad = ~np.isfinite(boxes).all(axis=1)
    if bad.any():
        raise ObservationError(f"{where}: box(es) {np.flatnonzero(bad)[:5].tolist()} hold NaN or infinite "
                               f"coordinates: {boxes[bad][0].tolist()}")
    bad = (np.abs(boxes) > MAX_BOX_PX).any(axis=1)
    if bad.any():
        raise ObservationError(f"{where}: box(es) {np.flatnonzero(bad)[:5].tolist()} have coordinates beyond "
                               f"{MAX_BOX_PX:g} px: {boxes[bad][0].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        raise ObservationError(f"{where}: box(es) {np.flatnonzero(bad)[:5].tolist()} are not x0, y0, x1, y1 with "
                               f"x1 >= x0 and y1 >= y0: {boxes[bad][0].tolist()}")


def paste_box_iuv(image_size, boxes, iuvs) -> np.ndarray:
    """Compose per-box IUV arrays into one (H, W, 3) float32 image map.

    Args:
        image_size: (width, height) pixels (fitkit's order).
        boxes: (K, 4) x0, y0, x1, y1 pixels.
        iuvs: K arrays (3, h, w) (I, U, V); an array whose size differs from
            its box's (int(x1) - int(x0), int(y1) - int(y0)) is resized to it
            (nearest neighbour).
    Returns:
        (H, W, 3): boxes are pasted in order, each only where its I >= 1 (a
        later box wins where two overlap); I = U = V = 0 elsewhere; parts of
        boxes outside the image are dropped.
    """
    w_img, h_img = int(image_size[0]), int(image_size[1])
    out = np.zeros((h_img, w_img, 3), np.float32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    _check_boxes(boxes, "paste_box_iuv: boxes")
    if len(iuvs) != len(boxes):
        raise ValueError(f"paste_box_iuv: {len(boxes)} boxes but {len(iuvs)} IUV arrays")
    for box, a in zip(boxes, iuvs):
        a = np.asarray(a, dtype=np.float32)
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        bw, bh = max(1, int(box[2]) - x0), max(1, int(box[3]) - y0)
        h, w = a.shape[1:]
        if (h, w) != (bh, bw):
            ri = np.minimum((np.arange(bh) + 0.5) * h / bh, h - 1).astype(int)
            ci = np.minimum((np.arange(bw) + 0.5) * w / bw, w - 1).astype(int)
            a = a[:, ri][:, :, ci]
        ys, xs = slice(max(y0, 0), min(y0 + bh, h_img)), slice(max(x0, 0), min(x0 + bw, w_img))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        sub = a[:, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0].transpose(1, 2, 0)
        fg = np.round(sub[..., 0]) >= 1
        region = out[ys, xs]
        region[fg] = sub[fg]
    return out
