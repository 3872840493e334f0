"""Monocular fits of the real dev set (``datasets/pose2sim_multiperson``) scored against its reference.

Each participant's main track in one view (``summary.json``) is fitted alone,
with the view's calibrated intrinsics, and scored on the 12 limb points
(shoulders, elbows, wrists, hips, knees, ankles) against the triangulated
reference moved into that view's camera frame (x_cam = R x_world + t):

- ``pa_mpjpe``: mm, Procrustes alignment with scale per frame;
- ``mpjpe_hip``: mm, both skeletons moved so their hip mid-points meet, camera
  axes (the facing counts);
- ``accel``: mm/frame^2, the acceleration error over triples of consecutive frames;
- ``facing_deg`` / ``facing_max_deg``: the angle between the torso normals
  (hips x (shoulders - hips)); frames where a torso point is missing are left out;
- ``err2d_px``: the mean 2D distance to the detections with confidence > 0.3,
  with the left/right labels the fit chose (nan for MediaPipe's world
  landmarks and the start, which have no fitted camera);
- ``cpu_s``: process CPU seconds of the fit.

Every method is scored twice: on ``all`` frames (the reference has the 12
points) and on ``clean`` frames (the reference's ``clean`` flags too).
Methods: ``mediapipe`` (the detector's world landmarks, ``keypoints3d``),
``start`` (SMPLR on those landmarks: what the ``video`` recipe starts from)
and any recipe (``name`` or ``name:nohyp``, the recipe without its
``hypotheses:`` section).

This module reads only the committed dev set; pose2sim's other demos are held
out for an independent evaluation and must never be fed to it.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from fitkit.camera import project
from fitkit.eval.metrics import procrustes_align
from fitkit.io.cameras import read_cameras, undistort_points
from fitkit.io.observations import Observations, load_observations

__all__ = ["DEV_SET", "Track", "load_tracks", "score", "predict", "evaluate", "summarise", "acceptance",
           "markdown_table"]

log = logging.getLogger(__name__)

DEV_SET = Path(__file__).resolve().parents[2] / "datasets" / "pose2sim_multiperson"
PARAMS = ("global_orient", "body_pose", "betas", "transl")
METRICS = ("pa_mpjpe", "mpjpe_hip", "accel", "facing_deg", "facing_max_deg", "err2d_px")


@dataclasses.dataclass
class Track:
    """One participant seen by one view.

    Attributes:
        person, view: names (``P0``, ``cam01``).
        obs: the track's observations (F rows), intrinsics = the view's K.
        frames: (F,) int video frame numbers.
        ref_cam: (F, 12, 3) float64 reference limb points in the view's camera frame, meters (NaN: missing).
        ok: (F,) bool, the reference has all 12 points.
        clean: (F,) bool, ``ok`` and the reference's clean flag.
        limbs: the 12 limb names; limb_idx: their indices in the BlazePose-33 order.
    """
    person: str
    view: str
    obs: Observations
    frames: np.ndarray
    ref_cam: np.ndarray
    ok: np.ndarray
    clean: np.ndarray
    limbs: list
    limb_idx: list


def _field(data, key: str, source: Path):
    if key not in data:
        raise KeyError(f"{source}: missing field {key!r}")
    return data[key]


def load_tracks(root: Path | str = DEV_SET, participants: Sequence[str] | None = None,
                views: Sequence[str] | None = None, max_frames: int | None = None,
                undistort: bool = False, first_row: int = 0) -> list[Track]:
    """The dev set's (participant, view) tracks.

    Args:
        root: the dev-set folder (``reference.npz``, ``summary.json``, ``calibration.json``, ``camXX.npz``).
        participants, views: names to keep (default all).
        max_frames, first_row: keep only rows ``first_row .. first_row + max_frames - 1`` of each track.
        undistort: undistort the 2D keypoints with the view's lens distortion.
    """
    root = Path(root)
    ref_path = root / "reference.npz"
    ref = np.load(ref_path, allow_pickle=False)
    summary = json.loads((root / "summary.json").read_text())
    cams = read_cameras(root / "calibration.json")
    names = [str(n) for n in _field(ref, "keypoint_names", ref_path)]
    limbs = [str(n) for n in _field(ref, "limb_names", ref_path)]
    limb_idx = [names.index(n) for n in limbs]
    points = _field(ref, "points3d", ref_path)
    clean_flags = _field(ref, "clean", ref_path)
    all_views = [str(v) for v in _field(ref, "views", ref_path)]
    tracks = []
    for p, person in enumerate(str(n) for n in _field(ref, "participants", ref_path)):
        if participants is not None and person not in participants:
            continue
        for view in all_views:
            if views is not None and view not in views:
                continue
            try:
                track_id = summary["participants"][person]["main_track"][view]
            except KeyError as exc:
                raise KeyError(f"{root / 'summary.json'}: no participants.{person}.main_track.{view}") from exc
            obs_all = load_observations(root / f"{view}.npz")
            rows = [i for i, t in enumerate(obs_all.track_ids) if t == track_id]
            rows = rows[first_row:] if max_frames is None else rows[first_row:first_row + max_frames]
            obs = obs_all.subset(rows)
            cam = cams[view]
            if undistort and cam.has_distortion:
                kp = obs.keypoints.clone()
                seen = kp[..., 2] > 0
                uv = torch.as_tensor(undistort_points(kp[..., :2].double().numpy(), cam)).to(kp)
                kp[..., :2] = torch.where(seen[..., None], uv, kp[..., :2])
                obs = dataclasses.replace(obs, keypoints=kp)
            K = torch.as_tensor(cam.K, dtype=obs.keypoints.dtype).expand(len(obs), 3, 3).clone()
            obs = dataclasses.replace(obs, intrinsics=K)
            frames = np.asarray(obs.frame_numbers)
            world = points[p, frames][:, limb_idx].astype(np.float64)
            ok = np.isfinite(world).all(axis=(1, 2))
            tracks.append(Track(person, view, obs, frames, world @ cam.R.T + cam.t, ok,
                                ok & clean_flags[p, frames], limbs, limb_idx))
    return tracks


def _facing(points: np.ndarray, names: list) -> np.ndarray:
    """(F, 3) unit torso normals of (F, K, 3) points named ``names``."""
    p = {n: points[:, names.index(n)] for n in ("left_hip", "right_hip", "left_shoulder", "right_shoulder")}
    hips = 0.5 * (p["left_hip"] + p["right_hip"])
    up = 0.5 * (p["left_shoulder"] + p["right_shoulder"]) - hips
    n = np.cross(p["left_hip"] - p["right_hip"], up)
    return n / np.linalg.norm(n, axis=-1, keepdims=True)  # nan where the points coincide


def score(pred: np.ndarray, ref: np.ndarray, frames: np.ndarray, limbs: list) -> dict:
    """3D scores of pred against ref, both (F, 12, 3) meters in camera axes; frames (F,) frame numbers."""
    if len(pred) == 0:
        return {k: float("nan") for k in METRICS[:-1]}
    pa = procrustes_align(torch.as_tensor(pred), torch.as_tensor(ref)).numpy()
    hip = lambda x: 0.5 * (x[:, limbs.index("left_hip")] + x[:, limbs.index("right_hip")])[:, None]
    rel_p, rel_r = pred - hip(pred), ref - hip(ref)
    acc = []
    for i in range(len(frames) - 2):
        if frames[i + 2] - frames[i] == 2:
            a_p = pred[i + 2] - 2 * pred[i + 1] + pred[i]
            a_r = ref[i + 2] - 2 * ref[i + 1] + ref[i]
            acc.append(np.linalg.norm(a_p - a_r, axis=-1).mean())
    with np.errstate(invalid="ignore", divide="ignore"):  # a detector's missing points (zeros): no normal
        cos = (_facing(pred, limbs) * _facing(ref, limbs)).sum(-1).clip(-1, 1)
    deg = np.degrees(np.arccos(cos))
    deg = deg[np.isfinite(deg)]
    return {"pa_mpjpe": float(1000 * np.linalg.norm(pa - ref, axis=-1).mean()),
            "mpjpe_hip": float(1000 * np.linalg.norm(rel_p - rel_r, axis=-1).mean()),
            "accel": float(1000 * np.mean(acc)) if acc else float("nan"),
            "facing_deg": float(deg.mean()) if deg.size else float("nan"),
            "facing_max_deg": float(deg.max()) if deg.size else float("nan")}


def _err2d(model, params, K, obs) -> float:
    with torch.no_grad():
        out = model(*(params[k] for k in PARAMS), keypoints="blazepose33", validate=False)
    uv = project(out.keypoints, K).double().numpy()
    kp = obs.keypoints.double().numpy()
    used = kp[..., 2] > 0.3
    return float(np.linalg.norm(uv - kp[..., :2], axis=-1)[used].mean())


def _start_params(model, obs, recipe) -> dict:
    """SMPLR's start on the observations' keypoints3d (smplx-named (F, ...) tensors; camera-facing transl)."""
    from fitkit.fitting import engine
    from fitkit.fitting.camera_setup import build_fit_camera
    from fitkit.init import initial_params

    dtype = model.dtype
    o = obs.to(device=model.device, dtype=dtype)
    camera = build_fit_camera(recipe.camera, o, dtype=dtype, device=model.device)
    params, _ = initial_params({"type": "smplr"}, model, o, camera, None, source=recipe.source)
    params, _ = engine.prepare_init(params, model, len(o), device=model.device, dtype=dtype, source="smplr")
    return params


def predict(model, track: Track, method: str, overrides: Sequence[str] = ()) -> dict:
    """Fit (or read) one method on one track.

    Args:
        method: ``mediapipe``, ``start`` or a recipe name, optionally ``:nohyp``.
        overrides: ``key=value`` recipe overrides (``--set``), for recipes and the start's camera.
    Returns:
        ``{'pred': (F, 12, 3) float64 camera-frame meters, 'err2d_px', 'cpu_s', 'info'}``.
    """
    from fitkit.fitting.hypotheses import fit_with_hypotheses
    from fitkit.fitting.recipe import load_recipe, recipe_from_dict

    obs = track.obs
    if method == "mediapipe":
        if obs.keypoints3d is None:
            raise ValueError(f"{obs.source}: no keypoints3d (MediaPipe's world landmarks) to score")
        return {"pred": obs.keypoints3d[..., :3].double().numpy()[:, track.limb_idx], "err2d_px": float("nan"),
                "cpu_s": 0.0, "info": {}}
    name, _, variant = method.partition(":")
    t = time.process_time()
    if name == "start":
        recipe = load_recipe("video", list(overrides))
        params = _start_params(model, obs, recipe)
        with torch.no_grad():
            out = model(*(params[k] for k in PARAMS[:3]), transl=None, keypoints="blazepose33", validate=False)
        return {"pred": out.keypoints.double().numpy()[:, track.limb_idx], "err2d_px": float("nan"),
                "cpu_s": time.process_time() - t, "info": {}}
    recipe = load_recipe(name, list(overrides))
    if variant == "nohyp":
        data = copy.deepcopy(recipe.data)
        data.pop("hypotheses", None)
        recipe = recipe_from_dict(data, recipe.source)
    elif variant:
        raise ValueError(f"unknown method variant {method!r} (known: NAME, NAME:nohyp)")
    res = fit_with_hypotheses(model, obs, recipe)
    secs = time.process_time() - t
    with torch.no_grad():
        out = model(*(res.params[k] for k in PARAMS), keypoints="blazepose33", validate=False)
    info = {}
    h = res.info.get("hypotheses")
    scored = obs
    if h is not None and (np.any(h["swap_upper"]) or np.any(h["swap_lower"])):
        from fitkit.fitting.hypotheses import swap_labels
        scored = swap_labels(obs, np.asarray(h["swap_upper"]), np.asarray(h["swap_lower"]))  # the labels fitted
    if h is not None:
        info = {"starts": sorted({h["names"][i] for i in np.asarray(h["yaw_index"])}),
                "swapped_upper": int(np.sum(h["swap_upper"])), "swapped_lower": int(np.sum(h["swap_lower"]))}
    if "keep_start" in res.info:
        info["kept_start_frames"] = int(np.sum(res.info["keep_start"]))
    return {"pred": out.keypoints.double().numpy()[:, track.limb_idx],
            "err2d_px": _err2d(model, res.params, res.K, scored), "cpu_s": secs, "info": info}


def evaluate(model, tracks: Iterable[Track], methods: Sequence[str], overrides: Sequence[str] = (),
             progress=None) -> list[dict]:
    """One row per (track, method): ``person``, ``view``, ``method``, ``frames_all``, ``frames_clean``,
    ``all`` and ``clean`` (dicts of :data:`METRICS`), ``cpu_s``, ``info``. ``progress(row)`` is called
    after each row."""
    rows = []
    for tr in tracks:
        for m in methods:
            out = predict(model, tr, m, overrides if m.partition(":")[0] in ("video", "start") else ())
            row = {"person": tr.person, "view": tr.view, "method": m, "frames_all": int(tr.ok.sum()),
                   "frames_clean": int(tr.clean.sum()), "cpu_s": out["cpu_s"], "info": out["info"]}
            for part, sel in (("all", tr.ok), ("clean", tr.clean)):
                s = score(out["pred"][sel], tr.ref_cam[sel], tr.frames[sel], tr.limbs)
                s["err2d_px"] = out["err2d_px"]
                row[part] = s
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def summarise(rows: Sequence[dict], part: str = "all") -> dict:
    """Per method, the mean of each metric over the rows' tracks (nan-aware)."""
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        r = [x for x in rows if x["method"] == m]
        with warnings.catch_warnings():  # a metric that is nan on every track (2D of mediapipe) stays nan
            warnings.simplefilter("ignore", RuntimeWarning)
            out[m] = {k: float(np.nanmean([x[part][k] for x in r])) for k in METRICS}
        out[m]["cpu_s"] = float(np.mean([x["cpu_s"] for x in r]))
    return out


def acceptance(rows: Sequence[dict], method: str, part: str = "clean", factor: float = 0.85) -> dict:
    """Issue 17's acceptance per track for ``method``: PA and hip-MPJPE <= factor x MediaPipe's, accel <=
    MediaPipe's, mean 3D error (PA and hip-MPJPE) no worse than the start's. ``{(person, view): {check: bool}}``;
    a check whose ``mediapipe`` or ``start`` row is missing is left out (not passed)."""
    by = {(r["person"], r["view"], r["method"]): r[part] for r in rows}
    out = {}
    for (p, v, m), s in by.items():
        if m != method:
            continue
        mp, st = by.get((p, v, "mediapipe")), by.get((p, v, "start"))
        res = {}
        if mp is not None:
            res["pa"] = s["pa_mpjpe"] <= factor * mp["pa_mpjpe"]
            res["hip"] = s["mpjpe_hip"] <= factor * mp["mpjpe_hip"]
            res["accel"] = s["accel"] <= mp["accel"]
        if st is not None:
            res["start_pa"] = s["pa_mpjpe"] <= st["pa_mpjpe"]
            res["start_hip"] = s["mpjpe_hip"] <= st["mpjpe_hip"]
        out[(p, v)] = res
    return out


def markdown_table(rows: Sequence[dict], part: str = "all") -> str:
    """The per-track table (PA / hip-MPJPE / accel / facing / 2D px per method), markdown."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    tracks = list(dict.fromkeys((r["person"], r["view"]) for r in rows))
    by = {(r["person"], r["view"], r["method"]): r for r in rows}
    head = "| participant / view | frames | " + " | ".join(f"`{m}`: PA / hip / accel / facing / 2D" for m in methods)
    lines = [head + " |", "|---|---|" + "---|" * len(methods)]

    def cell(s):
        e2d = "—" if not np.isfinite(s["err2d_px"]) else f"{s['err2d_px']:.1f}"
        return f"{s['pa_mpjpe']:.1f} / {s['mpjpe_hip']:.1f} / {s['accel']:.1f} / {s['facing_deg']:.0f} / {e2d}"

    for p, v in tracks:
        r0 = by[(p, v, methods[0])]
        cells = [cell(by[(p, v, m)][part]) for m in methods]
        lines.append(f"| {p} {v} | {r0['frames_' + part]} | " + " | ".join(cells) + " |")
    mean = summarise(rows, part)
    lines.append("| mean | | " + " | ".join(cell(mean[m]) for m in methods) + " |")
    return "\n".join(lines)
