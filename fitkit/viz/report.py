"""``fitkit report``: one self-contained HTML page about a fit result folder.

The page needs nothing beside itself: images are inlined as base64 data URIs,
plots are inline SVG written here, the style sheet is inline, and there is no
script. It shows

- a summary table (frames, converged, no evidence, NaN rollbacks, quality_ok,
  mean / median 2D keypoint error, recipe, body model, fit time);
- the per-frame flags as a coloured strip (one column per frame; binned when
  there are more frames than :data:`MAX_STRIP_COLUMNS`);
- the per-frame 2D keypoint error as an SVG plot (pixels, full image);
- for up to ``max_frames`` frames spread over the sequence, the overlay
  (``OUT/overlays/<frame>.png`` when ``fitkit fit --overlays`` wrote it,
  otherwise drawn here with :func:`fitkit.viz.overlay.draw_overlay`) beside a
  side and a top view of the fitted mesh (:func:`fitkit.viz.views.render_body_views`);
- for videos (observations with track ids or frame numbers), a strip of small
  thumbnails over time per track (the existing overlays shrunk, else the
  shaded mesh rasterized at thumbnail size over the input image);
- a table of every frame (id, track, time, error, flags, energy), up to
  :data:`MAX_TABLE_ROWS` rows.
"""
from __future__ import annotations

import base64
import datetime
import html
import logging
import math
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from fitkit.io.atomic import atomic_write
from fitkit.viz.fit_folder import FitFolder, load_fit_folder, load_model_for, read_image_rgb

log = logging.getLogger(__name__)

__all__ = ["write_report", "spread_rows", "flag_columns", "MAX_STRIP_COLUMNS", "MAX_TABLE_ROWS"]

MAX_STRIP_COLUMNS = 600
MAX_TABLE_ROWS = 2000
OVERLAY_SIDE = 420      # longest side of the inlined overlays, pixels
VIEW_SIZE = (240, 320)  # side / top view images (width, height), pixels
THUMB_SIDE = 140        # video thumbnails, pixels
TRACK_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
GOOD, BAD, INFO, OFF = "#43a047", "#e53935", "#1e88e5", "#e6e6e6"

# Flag name -> the value that is good (None: neither good nor bad, just shown).
FLAG_GOOD = {"quality_ok": True, "converged": True, "no_evidence": False, "nan": False,
             "transl_from_torso": None}

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #222;
       background: #fff; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px;
       border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { background: #fbe3e3; } td.good { background: #e5f4e6; }
.muted { color: #777; font-size: 12px; }
.frames { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; border: 1px solid #ddd; padding: 6px; background: #fafafa; }
figure img { display: inline-block; vertical-align: top; margin-right: 4px; }
figcaption { font-size: 12px; margin-top: 4px; }
.strip { display: flex; flex-wrap: nowrap; overflow-x: auto; gap: 4px; padding-bottom: 6px; }
.strip figure { padding: 2px; } .strip figcaption { text-align: center; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
"""


def write_report(out_dir, *, output=None, observations: Optional[str] = None, model_dir=None,
                 max_frames: int = 8, max_thumbs: int = 24) -> dict:
    """Write the HTML report of a fit folder.

    Args:
        out_dir: the folder ``fitkit fit -o`` wrote (``result.npz`` inside).
        output: the HTML file (default ``OUT/report.html``).
        observations: the observation file to use instead of the one the result records.
        model_dir: folder of official SMPL files when the fit used ``smpl``.
        max_frames: frames shown with overlay and side views (spread over the sequence).
        max_thumbs: thumbnails per track in the video strip.
    Returns:
        A JSON-able summary: ``path``, ``bytes``, ``frames``, ``shown_frames`` (ids),
        ``overlays`` ('existing' or 'rendered'), ``video``, ``notes``, and the counts.
    """
    folder = load_fit_folder(out_dir, observations)
    output = Path(output) if output is not None else folder.path / "report.html"
    res = folder.result
    n = len(folder)
    stats = summary_stats(folder)
    shown = spread_rows(n, max_frames)
    model = load_model_for(folder, model_dir) if n else None
    renderer = _FrameRenderer(folder, model)

    parts = [f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
             f"<title>fitkit report: {_e(folder.path.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>fitkit report: {_e(str(folder.path))}</h1>",
             f"<p class='muted'>written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
             f"from {_e(str(folder.path / 'result.npz'))}</p>"]
    parts.append(_summary_table(folder, stats))
    if folder.notes:
        parts.append("<ul class='muted'>" + "".join(f"<li>{_e(t)}</li>" for t in folder.notes) + "</ul>")
    parts.append("<h2>Quality flags per frame</h2>" + flag_strip_svg(folder))
    parts.append("<h2>2D keypoint error per frame</h2>" + error_plot_svg(folder))
    parts.append(f"<h2>Selected frames ({len(shown)} of {n})</h2>")
    parts.append("<p class='muted'>Overlay: observed keypoints green, fitted red, mesh blue. "
                 "Side view from the camera's right; top view from above, camera at the bottom.</p>")
    parts.append(renderer.frames_html(shown))
    video = folder.is_video
    if video:
        parts.append("<h2>Over time</h2>" + renderer.video_strips_html(max_thumbs))
    parts.append(_frame_table(folder))
    parts.append("</body></html>\n")
    text = "\n".join(parts)
    with atomic_write(output, "w") as handle:
        handle.write(text)
    log.info("wrote %s (%d bytes)", output, len(text))
    return {
        "path": str(output),
        "bytes": len(text.encode("utf-8")),
        "frames": n,
        "shown_frames": [folder.frame_ids[i] for i in shown],
        "overlays": renderer.overlay_source,
        "video": video,
        "notes": list(folder.notes),
        **{k: stats[k] for k in ("converged", "no_evidence", "nan", "quality_ok", "err2d_px_mean",
                                 "err2d_px_median")},
    }


# ------------------------------------------------------------------ numbers

def summary_stats(folder: FitFolder) -> dict:
    """Counts of the flags and the mean / median 2D error (NaN when no frame has evidence)."""
    res = folder.result
    n = len(folder)

    def count(key):
        return int(np.asarray(res[key], dtype=bool).sum()) if key in res else None

    e = np.asarray(res.get("err2d_px", np.full(n, np.nan)), dtype=np.float64)
    finite = np.isfinite(e)
    worst = int(np.nanargmax(np.where(finite, e, -np.inf))) if finite.any() else None
    seconds = folder.text("fit_seconds")
    if not seconds and "stage_seconds" in res:
        seconds = None  # per-chunk stage times only: not a wall time
    return {
        "frames": n,
        "converged": count("converged"), "no_evidence": count("no_evidence"), "nan": count("nan"),
        "quality_ok": count("quality_ok"),
        "err2d_px_mean": float(e[finite].mean()) if finite.any() else float("nan"),
        "err2d_px_median": float(np.median(e[finite])) if finite.any() else float("nan"),
        "worst_row": worst,
        "fit_seconds": float(seconds) if seconds else None,
    }


def spread_rows(n: int, k: int) -> list[int]:
    """Up to k row indices spread evenly over 0..n-1, first and last included."""
    if n <= 0 or k <= 0:
        return []
    return sorted(set(np.linspace(0, n - 1, min(n, k)).round().astype(int).tolist()))


def flag_columns(folder: FitFolder) -> list[tuple[str, np.ndarray]]:
    """(name, (N,) bool) of the flags a result holds: quality_ok, the other quality_*
    flags, converged, no_evidence, nan, transl_from_torso, in that order."""
    res = folder.result
    names = ["quality_ok"] + sorted(k for k in res if k.startswith("quality_") and k.endswith("_ok")
                                    and k != "quality_ok")  # quality_<number>_mm etc. are the raw numbers
    names += ["converged", "no_evidence", "nan", "transl_from_torso"]
    return [(k, np.asarray(res[k], dtype=bool).reshape(-1)) for k in names
            if k in res and np.asarray(res[k]).shape[:1] == (len(folder),)]


# ------------------------------------------------------------------ HTML pieces

def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _fmt(x, digits=2) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _summary_table(folder: FitFolder, stats: dict) -> str:
    n = stats["frames"]

    def frac(k):
        v = stats[k]
        return "n/a" if v is None else f"{v} / {n}"

    worst = stats["worst_row"]
    rows = [
        ("frames", n),
        ("quality_ok", frac("quality_ok")),
        ("converged", frac("converged")),
        ("no evidence", frac("no_evidence")),
        ("rolled back after NaN", frac("nan")),
        ("2D error mean / median (px)", f"{_fmt(stats['err2d_px_mean'])} / {_fmt(stats['err2d_px_median'])}"),
        ("largest 2D error", "n/a" if worst is None else
         f"{_fmt(float(folder.result['err2d_px'][worst]))} px at frame {folder.frame_ids[worst]}"),
        ("recipe", folder.text("recipe_name", "n/a")),
        ("stages", ", ".join(str(s) for s in np.atleast_1d(folder.result.get("stage_names", []))) or "n/a"),
        ("body model", f"{folder.text('body_model', 'n/a')} ({folder.text('gender', '?')})"),
        ("keypoint format", folder.text("keypoint_format", "n/a")),
        ("fit time", "n/a" if stats["fit_seconds"] is None else f"{stats['fit_seconds']:.1f} s"),
        ("observations", folder.observations_path or "not recorded"),
    ]
    if folder.track_ids is not None:
        rows.insert(1, ("tracks", len(set(folder.track_ids))))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table class='summary'>{body}</table>"


def flag_strip_svg(folder: FitFolder, width: int = 900) -> str:
    """An SVG strip: one row per flag, one column per frame (or per bin of frames)."""
    flags = flag_columns(folder)
    n = len(folder)
    if not flags or n == 0:
        return "<p class='muted'>no flags in the result</p>"
    label_w, row_h = 150, 16
    bins = np.array_split(np.arange(n), min(n, MAX_STRIP_COLUMNS))
    col_w = (width - label_w) / len(bins)
    height = row_h * len(flags) + 20
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-family='sans-serif' font-size='11' class='flags'>"]
    for r, (name, values) in enumerate(flags):
        y = r * row_h
        out.append(f"<text x='0' y='{y + 12}'>{_e(name)}</text>")
        good = FLAG_GOOD.get(name, True)
        for c, rows in enumerate(bins):
            share = float(values[rows].mean())
            if good is None:
                color = _mix(OFF, INFO, share)
            else:
                share_good = share if good else 1.0 - share
                color = _mix(BAD, GOOD, share_good)
            first, last = folder.frame_ids[rows[0]], folder.frame_ids[rows[-1]]
            tip = f"{first}: {name}={bool(values[rows[0]])}" if len(rows) == 1 else \
                f"{first} .. {last}: {name} true in {int(values[rows].sum())}/{len(rows)}"
            out.append(f"<rect x='{label_w + c * col_w:.2f}' y='{y + 1}' width='{max(col_w - 0.3, 0.5):.2f}' "
                       f"height='{row_h - 3}' fill='{color}'><title>{_e(tip)}</title></rect>")
    ylab = len(flags) * row_h + 14
    out.append(f"<text x='{label_w}' y='{ylab}'>{_e(folder.frame_ids[0])}</text>")
    out.append(f"<text x='{width}' y='{ylab}' text-anchor='end'>{_e(folder.frame_ids[-1])}</text>")
    out.append("</svg>")
    legend = (f"<div class='legend muted'><span style='background:{GOOD}'></span>good"
              f"<span style='background:{BAD}'></span>bad"
              f"<span style='background:{INFO}'></span>set (informative)"
              + (f" &nbsp; {n} frames in {len(bins)} columns; a column's colour is its share of good frames"
                 if len(bins) < n else "") + "</div>")
    return "".join(out) + legend


def _mix(a: str, b: str, t: float) -> str:
    """The colour a + t (b - a) of two '#rrggbb' colours."""
    ca = np.array([int(a[i:i + 2], 16) for i in (1, 3, 5)], float)
    cb = np.array([int(b[i:i + 2], 16) for i in (1, 3, 5)], float)
    c = np.clip(np.round(ca + t * (cb - ca)), 0, 255).astype(int)
    return "#" + "".join(f"{v:02x}" for v in c)


def error_plot_svg(folder: FitFolder, width: int = 900, height: int = 280) -> str:
    """Per-frame 2D keypoint error (pixels) against the row index, as SVG.

    One line per track (colours in :data:`TRACK_COLORS`); frames failing
    quality_ok are red dots; frames without evidence (NaN error) are grey ticks
    on the axis.
    """
    res = folder.result
    if "err2d_px" not in res:
        return "<p class='muted'>no err2d_px in the result</p>"
    e = np.asarray(res["err2d_px"], dtype=np.float64).reshape(-1)
    n = len(e)
    finite = np.isfinite(e)
    left, right, top, bottom = 56, 16, 12, 36
    pw, ph = width - left - right, height - top - bottom
    step = _nice_step(float(e[finite].max()) / 4.0) if finite.any() else 0.25
    ymax = step * max(1, math.ceil(float(e[finite].max()) * 1.02 / step)) if finite.any() else 1.0

    def X(i):
        return left + (pw * (i / (n - 1)) if n > 1 else pw / 2)

    def Y(v):
        return top + ph * (1.0 - v / ymax)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"font-family='sans-serif' font-size='11' class='errplot'>",
           f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='#fcfcfc' stroke='#bbb'/>"]
    for t in np.arange(0.0, ymax + 0.5 * step, step):
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{Y(t):.1f}' y2='{Y(t):.1f}' stroke='#e3e3e3'/>"
                   f"<text x='{left - 6}' y='{Y(t) + 4:.1f}' text-anchor='end'>{t:g}</text>")
    out.append(f"<text x='14' y='{top + ph / 2}' transform='rotate(-90 14 {top + ph / 2})' "
               f"text-anchor='middle'>2D error (px)</text>")
    ticks = spread_rows(n, 6)
    for i in ticks:
        anchor = "start" if i == 0 else ("end" if i == n - 1 else "middle")
        out.append(f"<line x1='{X(i):.1f}' x2='{X(i):.1f}' y1='{top + ph}' y2='{top + ph + 3}' stroke='#888'/>"
                   f"<text x='{X(i):.1f}' y='{top + ph + 14}' text-anchor='{anchor}'>{_e(folder.frame_ids[i])}</text>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 4}' text-anchor='middle'>frame</text>")
    tracks = folder.track_ids or [""] * n
    names = list(dict.fromkeys(tracks))
    for t_i, name in enumerate(names):
        rows = [r for r in range(n) if tracks[r] == name]
        color = TRACK_COLORS[t_i % len(TRACK_COLORS)]
        for seg in _finite_runs(rows, finite):
            if len(seg) > 1:
                pts = " ".join(f"{X(r):.1f},{Y(e[r]):.1f}" for r in seg)
                out.append(f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='1.5'/>")
    ok = np.asarray(res.get("quality_ok", np.ones(n, bool)), dtype=bool)
    dot = n <= 300
    for r in range(n):
        tip = f"{folder.frame_ids[r]}: {e[r]:.2f} px" if finite[r] else f"{folder.frame_ids[r]}: no evidence"
        if not finite[r]:
            out.append(f"<line x1='{X(r):.1f}' x2='{X(r):.1f}' y1='{top + ph - 6}' y2='{top + ph}' stroke='#888'>"
                       f"<title>{_e(tip)}</title></line>")
        elif not ok[r] or dot:
            fill = BAD if not ok[r] else TRACK_COLORS[names.index(tracks[r]) % len(TRACK_COLORS)]
            out.append(f"<circle cx='{X(r):.1f}' cy='{Y(e[r]):.1f}' r='{3 if not ok[r] else 2}' fill='{fill}'>"
                       f"<title>{_e(tip)}</title></circle>")
    out.append("</svg>")
    legend = "<div class='legend muted'>" + "".join(
        f"<span style='background:{TRACK_COLORS[i % len(TRACK_COLORS)]}'></span>{_e(t or 'all frames')}"
        for i, t in enumerate(names[:len(TRACK_COLORS)])) + \
        f"<span style='background:{BAD}'></span>quality_ok false<span style='background:#888'></span>no evidence</div>"
    return "".join(out) + legend


def _nice_step(v: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at least v (1 when v is not positive)."""
    if not (v > 0 and math.isfinite(v)):
        return 1.0
    k = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * k >= v * (1 - 1e-9):
            return m * k
    return 10 * k


def _finite_runs(rows: Sequence[int], finite: np.ndarray) -> list[list[int]]:
    runs, cur = [], []
    for r in rows:
        if finite[r]:
            cur.append(r)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _frame_table(folder: FitFolder) -> str:
    res = folder.result
    n = len(folder)
    flags = flag_columns(folder)
    tracks = folder.track_ids
    times = folder.time_indices
    cols = ["row", "frame"] + (["track"] if tracks else []) + (["time"] if times else [])
    cols += ["err2d (px)"] + (["crop err (px)"] if "reproj_err_crop_px" in res else [])
    cols += [name for name, _ in flags] + (["energy_total"] if "energy_total" in res else [])
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = []
    for r in range(min(n, MAX_TABLE_ROWS)):
        cells = [f"<td class='num'>{r}</td>", f"<td>{_e(folder.frame_ids[r])}</td>"]
        if tracks:
            cells.append(f"<td>{_e(tracks[r])}</td>")
        if times:
            cells.append(f"<td class='num'>{times[r]}</td>")
        cells.append(f"<td class='num'>{_fmt(float(res['err2d_px'][r])) if 'err2d_px' in res else 'n/a'}</td>")
        if "reproj_err_crop_px" in res:
            cells.append(f"<td class='num'>{_fmt(float(res['reproj_err_crop_px'][r]))}</td>")
        for name, values in flags:
            good = FLAG_GOOD.get(name, True)
            cls = "" if good is None else (" class='good'" if bool(values[r]) == good else " class='bad'")
            cells.append(f"<td{cls}>{'yes' if values[r] else 'no'}</td>")
        if "energy_total" in res:
            cells.append(f"<td class='num'>{_fmt(float(res['energy_total'][r]), 1)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<p class='muted'>first {MAX_TABLE_ROWS} of {n} frames listed</p>" if n > MAX_TABLE_ROWS else ""
    return (f"<h2>All frames</h2><details open><summary>{n} frames</summary>"
            f"<table class='frames-table'><tr>{head}</tr>{''.join(body)}</table>{more}</details>")


# ------------------------------------------------------------------ images

def _data_uri(rgb: np.ndarray, max_side: int, fmt: str = "jpeg") -> str:
    """An (H, W, 3) uint8 RGB image, shrunk to ``max_side``, as a base64 data URI."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr)
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
        mime = "image/jpeg"
    if not ok:  # pragma: no cover - OpenCV encodes uint8 images
        raise RuntimeError("OpenCV could not encode an image for the report")
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _img(uri: str, alt: str, title: str = "") -> str:
    return f"<img src='{uri}' alt='{_e(alt)}' title='{_e(title or alt)}'>"


class _FrameRenderer:
    """Overlays (existing or drawn) and side / top views of chosen rows."""

    def __init__(self, folder: FitFolder, model):
        self.folder = folder
        self.model = model
        self.overlay_source = "none"  # 'existing' (OUT/overlays), 'rendered' (drawn here) or both
        self._sources: set = set()

    def _geometry(self, rows):
        """(R, V, 3) vertices and (R, K, 2) projected keypoints (None without a keypoint set)."""
        import torch

        from fitkit.camera import project

        res, model = self.folder.result, self.model
        fmt = self.folder.text("keypoint_format") or None
        p = {k: torch.as_tensor(np.asarray(res[k][rows], np.float32), dtype=model.dtype)
             for k in ("global_orient", "body_pose", "betas", "transl")}
        p["betas"] = torch.nn.functional.pad(p["betas"], (0, model.num_betas - p["betas"].shape[1]))
        with torch.no_grad():
            args = (p["global_orient"], p["body_pose"], p["betas"], p["transl"])
            try:
                out = model(*args, vertices="all", keypoints=fmt)
            except (KeyError, ValueError) as exc:  # a keypoint set this model lacks: mesh only
                log.info("no fitted keypoints in the overlays (%s)", exc)
                fmt = None
                out = model(*args, vertices="all")
            K = torch.as_tensor(np.asarray(res["intrinsics"][rows], np.float32), dtype=model.dtype)
            kp2d = None if fmt is None else project(out.keypoints, K).numpy()
            v2d = project(out.vertices, K).numpy()
        return out.vertices.numpy(), v2d, kp2d, fmt

    def overlays(self, rows) -> list[np.ndarray]:
        """(H, W, 3) uint8 RGB overlays of rows: OUT/overlays/<frame>.png, else drawn now."""
        from fitkit.viz.overlay import draw_overlay

        images: list = [None] * len(rows)
        missing = []
        for j, r in enumerate(rows):
            p = self.folder.overlay_path(r)
            img = read_image_rgb(p) if p is not None else None
            if img is None:
                missing.append(j)
            images[j] = img
        self._sources |= ({"existing"} if len(missing) < len(rows) else set()) | ({"rendered"} if missing else set())
        self.overlay_source = "+".join(sorted(self._sources)) or "none"
        if missing:
            sub = [rows[j] for j in missing]
            verts, v2d, kp2d, fmt = self._geometry(sub)
            faces = self.model.faces.cpu().numpy()
            with tempfile.TemporaryDirectory(prefix="fitkit_report_") as tmp:
                for i, j in enumerate(missing):
                    r = rows[j]
                    size = tuple(int(round(s)) for s in np.asarray(self.folder.result["image_size"][r]).tolist())
                    rgb = self.folder.frame_image(r)
                    image = None if rgb is None else np.ascontiguousarray(rgb[:, :, ::-1])
                    observed = self.folder.observed_keypoints(r)
                    if observed is not None and kp2d is not None and len(observed) != kp2d.shape[1]:
                        observed = None
                    path = draw_overlay(Path(tmp) / f"{i}.png", image=image, image_size=size,
                                        observed=observed, fitted=None if kp2d is None else kp2d[i],
                                        mesh_2d=v2d[i], faces=faces, mesh_depth=verts[i, :, 2],
                                        skeleton_format=fmt)
                    images[j] = read_image_rgb(path)
        return images

    def thumbnails(self, rows) -> list[np.ndarray]:
        """Small (about THUMB_SIDE) uint8 RGB pictures of rows: the existing overlay shrunk, else
        the shaded mesh rasterized at thumbnail size over the shrunk input image (or grey)."""
        import cv2
        import torch

        from fitkit.render.rasterizer import rasterize
        from fitkit.render.shading import render_normals, shade

        out: list = []
        faces = self.model.faces.cpu()
        missing = []
        for r in rows:
            p = self.folder.overlay_path(r)
            out.append(read_image_rgb(p) if p is not None else None)
            if out[-1] is None:
                missing.append(len(out) - 1)
        if not missing:
            return out
        verts = self._geometry([rows[j] for j in missing])[0]
        for i, j in enumerate(missing):
            r = rows[j]
            w, h = (float(v) for v in np.asarray(self.folder.result["image_size"][r]).tolist())
            s = THUMB_SIDE / max(w, h)
            tw, th = max(1, round(w * s)), max(1, round(h * s))
            K = np.asarray(self.folder.result["intrinsics"][r], np.float64).copy()
            # scale pixels whose integer coordinates are pixel centres: x' = (x + 0.5) s - 0.5
            K[:2, :2] *= s
            K[:2, 2] = (K[:2, 2] + 0.5) * s - 0.5
            v = torch.as_tensor(verts[i:i + 1], dtype=torch.float32)
            frags = rasterize(v, faces, torch.as_tensor(K[None], dtype=torch.float32), (th, tw))
            rgb = shade(render_normals(frags, v, faces), frags.mask, albedo=(0.45, 0.62, 0.92))[0].numpy()
            image = self.folder.frame_image(r)
            if image is None:
                base = np.full((th, tw, 3), 128.0)
            else:
                base = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float64)
            alpha = 0.6 * frags.mask[0].numpy()[..., None]
            out[j] = np.clip(base * (1 - alpha) + 255.0 * rgb * alpha, 0, 255).round().astype(np.uint8)
        self._sources.add("rendered")
        self.overlay_source = "+".join(sorted(self._sources))
        return out

    def frames_html(self, rows) -> str:
        if not rows:
            return "<p class='muted'>no frames</p>"
        from fitkit.viz.views import render_body_views

        overlays = self.overlays(rows)
        verts = self._geometry(rows)[0]
        faces = self.model.faces.cpu().numpy()
        res = self.folder.result
        tracks, times = self.folder.track_ids, self.folder.time_indices
        out = ["<div class='frames'>"]
        for j, r in enumerate(rows):
            fid = self.folder.frame_ids[r]
            flags = [name if not FLAG_GOOD.get(name, True) else f"not {name}"
                     for name, values in flag_columns(self.folder)
                     if FLAG_GOOD.get(name, True) is not None and bool(values[r]) != FLAG_GOOD.get(name, True)]
            err = float(res["err2d_px"][r]) if "err2d_px" in res else float("nan")
            where = ""
            if tracks:
                where += f", track {tracks[r]}"
            if times:
                where += f", time {times[r]}"
            caption = (f"<b>{_e(fid)}</b> (row {r}{_e(where)}): 2D error {_fmt(err)} px"
                       + (f"; <span style='color:{BAD}'>{_e(', '.join(flags))}</span>" if flags else "; all flags good"))
            has_views = self._has_views(overlays[j], r)
            side = int(OVERLAY_SIDE * (2.2 if has_views else 1.0))
            imgs = [_img(_data_uri(overlays[j], side), f"overlay {fid}")] if overlays[j] is not None else []
            if not has_views:
                views = render_body_views(verts[j], faces, views=("side", "top"), size=VIEW_SIZE)  # BGR
                imgs += [_img(_data_uri(img[:, :, ::-1], max(VIEW_SIZE)), f"{name} view {fid}")
                         for name, img in zip(("side", "top"), views)]
            out.append(f"<figure data-frame='{_e(fid)}'>{''.join(imgs)}<figcaption>{caption}</figcaption></figure>")
        out.append("</div>")
        return "".join(out)

    def _has_views(self, overlay, row: int) -> bool:
        """Whether an overlay is wider than its frame (``fitkit fit --side-views`` put views beside it)."""
        if overlay is None:
            return False
        w, h = (float(v) for v in np.asarray(self.folder.result["image_size"][row]).tolist())
        return overlay.shape[1] / overlay.shape[0] > 1.1 * w / h

    def video_strips_html(self, max_thumbs: int) -> str:
        folder = self.folder
        tracks = folder.track_ids or [""] * len(folder)
        times = folder.time_indices
        out = []
        for name in dict.fromkeys(tracks):
            rows = sorted((r for r in range(len(folder)) if tracks[r] == name), key=lambda r: times[r])
            pick = [rows[i] for i in spread_rows(len(rows), max_thumbs)]
            thumbs = self.thumbnails(pick)
            cells = []
            for r, img in zip(pick, thumbs):
                if img is None:
                    continue
                fid = folder.frame_ids[r]
                cells.append(f"<figure>{_img(_data_uri(img, THUMB_SIDE), f'thumbnail {fid}', fid)}"
                             f"<figcaption>t={times[r]}<br>{_e(fid)}</figcaption></figure>")
            label = f"track {name}" if name else "sequence"
            out.append(f"<h3>{_e(label)}: {len(pick)} of {len(rows)} frames</h3>"
                       f"<div class='strip'>{''.join(cells)}</div>")
        return "".join(out)
