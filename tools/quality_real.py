"""Precision / recall of the quality flags (fitkit.eval.quality) on the real dev set.

Fits each participant's main track of ``datasets/pose2sim_multiperson`` one view
at a time with the ``video`` recipe (as ``tools/devset_video_recipe.py`` does:
the view's intrinsics, ``fit_with_hypotheses``), keeps per frame the result
arrays of ``fitkit.api.result_arrays`` (the raw quality numbers) and the 3D
error against the triangulated reference on the 12 limb points (hip-aligned
MPJPE in the camera's axes, mm; PA-MPJPE too), and prints, per participant and
view, how well "not quality_ok" finds the frames whose error exceeds twice
that fit's median:

- precision: the share of flagged frames that are bad; recall: the share of
  bad frames flagged; the mean error of flagged and of ok frames and their ratio.

Frames where the track is not the participant (``reference.npz`` ``track_of``)
or the reference lacks a limb point are left out. Printed: the old 2D and prior
checks alone; the recipe's own ``quality:`` thresholds (the shipped ones) per
participant and both; each check alone at the loosest threshold reaching
recall 0.7 on one participant, scored on the other; and thresholds derived on
one participant (a grid over percentiles of the raw numbers: the setting
reaching recall 0.7 with the highest flagged / ok error ratio, ``--derive``),
scored on it and on the other. Fits are cached in ``--cache`` (refitted when
the recipe, its ``quality:`` section aside, changes; ``--refit`` forces it,
needed after a change of fitkit's code). Never run on the held-out demos: this
reads only the committed dev set.

Usage::

    python tools/quality_real.py [--derive both|P0|P1|none] [--error hip|pa] [--cache DIR] [--refit]
        [--set k=v ...] [--views cam01,...] [--json out.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fitkit.api import result_arrays
from fitkit.body import load_body_model
from fitkit.eval.metrics import procrustes_align
from fitkit.eval.quality import combine_flags, quality_settings
from fitkit.fitting.hypotheses import fit_with_hypotheses, hypotheses_arrays
from fitkit.fitting.recipe import load_recipe
from fitkit.io.cameras import read_cameras
from fitkit.io.observations import load_observations

ROOT = Path(__file__).resolve().parents[1] / "datasets" / "pose2sim_multiperson"
PARAMS = ("global_orient", "body_pose", "betas", "transl")
#: raw number -> (settings key, direction: +1 flags values above, -1 below)
CHECKS = {"quality_keypoints3d_err_mm": ("max_keypoints3d_mm", 1),
          "quality_joint_speed_mm": ("max_joint_speed_mm", 1),
          "quality_joint_accel_mm": ("max_joint_accel_mm", 1),
          "quality_facing_change_deg": ("max_facing_change_deg", 1),
          "quality_swap_margin": ("min_swap_margin", -1)}
FLAG_OF = {"quality_keypoints3d_err_mm": "quality_3d_ok", "quality_joint_speed_mm": "quality_motion_ok",
           "quality_joint_accel_mm": "quality_motion_ok", "quality_facing_change_deg": "quality_facing_ok",
           "quality_swap_margin": "quality_swap_ok"}


def fit_view(model, person: int, view: str, recipe, frames: int | None = None) -> dict:
    """Fit participant ``person``'s main track in ``view``; per-frame arrays plus the reference errors.

    Returns the ``result_arrays`` of the fit plus ``frame_numbers`` (F,), ``err_hip_mm`` and
    ``err_pa_mm`` (F,) (NaN where the reference is missing or the track is another person).
    ``frames``: fit only the first ``frames`` frames of the track.
    """
    ref = np.load(ROOT / "reference.npz", allow_pickle=False)
    summary = json.loads((ROOT / "summary.json").read_text())
    name = str(ref["participants"][person])
    track = summary["participants"][name]["main_track"][view]
    cam = read_cameras(ROOT / "calibration.json")[view]
    obs = load_observations(ROOT / f"{view}.npz")
    rows = [i for i, t in enumerate(obs.track_ids) if t == track][:frames]
    obs = obs.subset(rows)
    K = torch.as_tensor(cam.K, dtype=obs.keypoints.dtype).expand(len(obs), 3, 3).clone()
    obs = dataclasses.replace(obs, intrinsics=K)
    res = fit_with_hypotheses(model, obs, recipe)
    arrays = result_arrays(model, obs, recipe, res)
    arrays.pop("frame_ids")
    arrays.update({k: v for k, v in hypotheses_arrays(res).items() if k != "hypothesis_names"})
    f = np.asarray(obs.frame_numbers)
    names = [str(n) for n in ref["keypoint_names"]]
    limbs = [str(n) for n in ref["limb_names"]]
    idx = [names.index(n) for n in limbs]
    world = ref["points3d"][person, f][:, idx].astype(np.float64)
    same = np.array([str(ref["track_of"][person, fr, list(map(str, ref["views"])).index(view)]) == track
                     for fr in f])
    usable = np.isfinite(world).all(axis=(1, 2)) & same
    ref_cam = np.where(usable[:, None, None], world, 0.0) @ cam.R.T + cam.t
    with torch.no_grad():
        out = model(*(res.params[k] for k in PARAMS), keypoints="blazepose33", validate=False)
    pred = out.keypoints.double().numpy()[:, idx]
    hip = lambda x: 0.5 * (x[:, limbs.index("left_hip")] + x[:, limbs.index("right_hip")])[:, None]
    e_hip = 1000 * np.linalg.norm((pred - hip(pred)) - (ref_cam - hip(ref_cam)), axis=-1).mean(-1)
    pa = procrustes_align(torch.as_tensor(pred), torch.as_tensor(ref_cam)).numpy()
    e_pa = 1000 * np.linalg.norm(pa - ref_cam, axis=-1).mean(-1)
    arrays.update(frame_numbers=f, err_hip_mm=np.where(usable, e_hip, np.nan),
                  err_pa_mm=np.where(usable, e_pa, np.nan))
    return arrays


def flags_with(arrays: dict, settings: dict) -> np.ndarray:
    """(F,) quality_ok of cached arrays under other thresholds (every check redone from its raw numbers)."""
    reproj = np.nan_to_num(np.asarray(arrays["reproj_err_crop_px"], dtype=np.float64), nan=np.inf)
    prior = np.ones(len(reproj), bool)
    for term, limit in settings["max_energy"].items():
        prior &= np.asarray(arrays[f"energy_{term}"]) <= limit
    flags = {"quality_reprojection_ok": reproj <= settings["max_reproj_crop_px"], "quality_prior_ok": prior}
    for raw, (key, sign) in CHECKS.items():
        if raw not in arrays or settings.get(key) is None:
            continue
        v = np.asarray(arrays[raw], dtype=np.float64)
        bad = (v > settings[key]) if sign > 0 else (v < settings[key])
        flags[FLAG_OF[raw]] = flags.get(FLAG_OF[raw], np.ones(len(v), bool)) & ~bad
    return combine_flags(flags, arrays["no_evidence"], arrays["nan"])


def table_row(err: np.ndarray, ok: np.ndarray) -> dict:
    """err (F,) with NaN = not scored, ok (F,) -> precision, recall, mean errors (bad: > 2 x median)."""
    keep = np.isfinite(err)
    err, ok = err[keep], ok[keep]
    bad = err > 2 * np.median(err) if err.size else np.zeros(0, bool)
    flagged = ~ok
    tp = int((flagged & bad).sum())
    return {"frames": int(err.size), "bad": int(bad.sum()), "flagged": int(flagged.sum()),
            "precision": tp / flagged.sum() if flagged.any() else float("nan"),
            "recall": tp / bad.sum() if bad.any() else float("nan"),
            "err_flagged": float(err[flagged].mean()) if flagged.any() else float("nan"),
            "err_ok": float(err[ok].mean()) if ok.any() else float("nan"), "tp": tp}


def _pooled(fits: dict, people: list[str], error: str, settings: dict) -> tuple[float, float, int]:
    """recall, err_flagged / err_ok and flagged count over ``people``'s fits (bad: > 2 x each fit's median)."""
    tp = bad = flagged = 0
    e_f, e_o = [], []
    for (p, _), a in fits.items():
        if p not in people:
            continue
        e, ok = np.asarray(a[error]), flags_with(a, settings)
        keep = np.isfinite(e)
        e, ok = e[keep], ok[keep]
        b = e > 2 * np.median(e)
        tp, bad, flagged = tp + int((~ok & b).sum()), bad + int(b.sum()), flagged + int((~ok).sum())
        e_f.append(e[~ok])
        e_o.append(e[ok])
    e_f, e_o = np.concatenate(e_f), np.concatenate(e_o)
    ratio = e_f.mean() / e_o.mean() if e_f.size and e_o.size else float("nan")
    return tp / max(bad, 1), ratio, flagged


def single_checks(fits: dict, error: str, base: dict, recall_target: float = 0.7) -> None:
    """Each check alone (the others off, the 2D check as in the recipe): the loosest threshold
    reaching ``recall_target`` on one participant, scored on it and on the other."""
    print(f"\nsingle checks: the loosest threshold reaching recall {recall_target} on one participant")
    off = {key: None for key, _ in CHECKS.values()}
    for raw, (key, sign) in CHECKS.items():
        for on, other in (("P0", "P1"), ("P1", "P0")):
            v = np.concatenate([np.asarray(a[raw], dtype=np.float64) for (p, _), a in fits.items() if p == on])
            cand = np.unique(v[np.isfinite(v)])
            cand = cand[::-1] if sign > 0 else cand
            chosen = None
            for t in cand[:: max(1, len(cand) // 200)]:
                s = {**base, **off, key: float(t) - 1e-9 * sign}
                if _pooled(fits, [on], error, s)[0] >= recall_target:
                    chosen = s
                    break
            if chosen is None:
                print(f"  {key:22s} on {on}: recall {recall_target} not reachable")
                continue
            r_on, q_on, f_on = _pooled(fits, [on], error, chosen)
            r_ot, q_ot, f_ot = _pooled(fits, [other], error, chosen)
            print(f"  {key:22s} on {on}: {chosen[key]:8.3f}  recall {r_on:.2f} ratio {q_on:.2f} flagged {f_on:3d}"
                  f"  | held-out {other}: recall {r_ot:.2f} ratio {q_ot:.2f} flagged {f_ot:3d}")


def derive(fits: dict, people: list[str], error: str, base: dict, recall_target: float = 0.7) -> dict:
    """Thresholds chosen on ``people``'s fits: over a grid of per-check quantiles, the setting
    that reaches ``recall_target`` overall with the highest err_flagged / err_ok ratio (else the
    highest recall)."""
    sel = [a for (p, _), a in fits.items() if p in people]
    grids = {}  # coarse on purpose: 5 checks x 9 values is 59k settings
    for raw, (key, sign) in CHECKS.items():
        v = np.concatenate([np.asarray(a[raw], dtype=np.float64) for a in sel])
        v = v[np.isfinite(v)]
        if v.size == 0:
            grids[key] = [None]
            continue
        qs = (50, 60, 70, 80, 85, 90, 95, 98) if sign > 0 else (2, 5, 10, 20)
        grids[key] = [None] + [float(np.percentile(v, q)) for q in qs]
    best, best_key = None, None
    for combo in itertools.product(*grids.values()):
        settings = {**base, **dict(zip(grids, combo))}
        recall, ratio, _ = _pooled(fits, people, error, settings)
        key = (recall >= recall_target, np.nan_to_num(ratio) if recall >= recall_target else recall)
        if best_key is None or key > best_key:
            best, best_key = settings, key
    return best


def print_table(title: str, fits: dict, settings: dict, error: str, people: list[str]) -> list[dict]:
    print(title)
    print(f"  {'fit':12s} {'frames':>6s} {'bad':>4s} {'flag':>4s} {'prec':>5s} {'recall':>6s} "
          f"{'err flagged':>11s} {'err ok':>7s} {'ratio':>5s}")
    rows, tot_err, tot_ok = [], [], []
    for (p, v), a in fits.items():
        if p not in people:
            continue
        ok = flags_with(a, settings)
        r = table_row(np.asarray(a[error]), ok)
        r.update(person=p, view=v)
        rows.append(r)
        # overall: "bad" stays relative to each fit's own median
        e = np.asarray(a[error])
        keep = np.isfinite(e)
        tot_err.append((e[keep], e[keep] > 2 * np.median(e[keep])))
        tot_ok.append(ok[keep])
        print(f"  {p + ' ' + v:12s} {r['frames']:6d} {r['bad']:4d} {r['flagged']:4d} {r['precision']:5.2f} "
              f"{r['recall']:6.2f} {r['err_flagged']:11.1f} {r['err_ok']:7.1f} {r['err_flagged'] / r['err_ok']:5.2f}")
    err = np.concatenate([e for e, _ in tot_err])
    bad = np.concatenate([b for _, b in tot_err])
    ok = np.concatenate(tot_ok)
    tp = int((~ok & bad).sum())
    overall = {"person": "+".join(people), "view": "all", "frames": int(err.size), "bad": int(bad.sum()),
               "flagged": int((~ok).sum()), "precision": tp / max((~ok).sum(), 1), "recall": tp / max(bad.sum(), 1),
               "err_flagged": float(err[~ok].mean()) if (~ok).any() else float("nan"),
               "err_ok": float(err[ok].mean()) if ok.any() else float("nan")}
    rows.append(overall)
    print(f"  {'overall':12s} {overall['frames']:6d} {overall['bad']:4d} {overall['flagged']:4d} "
          f"{overall['precision']:5.2f} {overall['recall']:6.2f} {overall['err_flagged']:11.1f} "
          f"{overall['err_ok']:7.1f} {overall['err_flagged'] / overall['err_ok']:5.2f}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--derive", default="both", choices=["P0", "P1", "both", "none"],
                    help="participant to derive thresholds on (both: each, scored on the other); none: the recipe's")
    ap.add_argument("--error", default="hip", choices=["hip", "pa"], help="3D error: hip-aligned MPJPE or PA-MPJPE")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fitkit" / "quality_real"))
    ap.add_argument("--refit", action="store_true")
    ap.add_argument("--only", help="fit only PERSON:VIEW (e.g. P0:cam02) and exit (to run fits in parallel)")
    ap.add_argument("--set", action="append", default=[], help="override for the video recipe")
    ap.add_argument("--views", default="cam01,cam02,cam03,cam04")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    error = {"hip": "err_hip_mm", "pa": "err_pa_mm"}[args.error]
    recipe = load_recipe("video", args.set)
    settings = quality_settings(recipe.data.get("quality"), recipe.source, recipe.data.get("terms"))
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    model = load_body_model("open", num_betas=10)
    fits = {}
    jobs = [(p, v) for p in ("P0", "P1") for v in args.views.split(",")]
    if args.only:
        jobs = [tuple(args.only.split(":"))]
    # a cached fit is reused only for the same recipe (its quality: section aside: the fit ignores it)
    data = {k: v for k, v in recipe.data.items() if k != "quality"}
    stamp = json.dumps(data, sort_keys=True, default=str)
    for p, v in jobs:
        path = cache / f"{p}_{v}.npz"
        if path.exists() and not args.refit:
            cached = dict(np.load(path))
            if str(cached.pop("recipe_stamp", "")) == stamp:
                fits[(p, v)] = cached
                continue
        t = time.perf_counter()
        fits[(p, v)] = fit_view(model, int(p[1]), v, recipe)
        np.savez(path, **fits[(p, v)], recipe_stamp=np.array(stamp))
        print(f"fitted {p} {v}: {len(fits[(p, v)]['frame_numbers'])} frames in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)
    if args.only:
        return 0
    out = {"settings": {}, "rows": []}
    base = {**settings}
    # before: only the 2D and prior checks (the new checks off)
    before = {**settings, **{key: None for key, _ in CHECKS.values()}}
    for people in (["P0"], ["P1"], ["P0", "P1"]):
        recall, ratio, flagged = _pooled(fits, people, error, before)
        print(f"2D and prior checks only, {'+'.join(people)}: flagged {flagged}, recall {recall:.2f}, "
              f"err flagged / ok {ratio:.2f}")
    # the recipe's own (shipped) thresholds: per participant, then both
    print("recipe thresholds " + json.dumps({k: settings[k] for k, _ in CHECKS.values()}))
    for people in (["P0"], ["P1"], ["P0", "P1"]):
        out["rows"] += print_table(f"  on {'+'.join(people)}", fits, settings, error, people)
    out["settings"]["recipe"] = {k: settings[k] for k, _ in CHECKS.values()}
    single_checks(fits, error, base)
    for on in (["P0", "P1"] if args.derive == "both" else [args.derive] if args.derive in ("P0", "P1") else []):
        other = "P1" if on == "P0" else "P0"
        s = derive(fits, [on], error, base)
        shown = {k: (None if s[k] is None else round(s[k], 3)) for k, _ in CHECKS.values()}
        print(f"\nthresholds derived on {on}: {json.dumps(shown)}")
        out["rows"] += print_table(f"  on {on} (derivation set)", fits, s, error, [on])
        out["rows"] += print_table(f"  on {other} (held out)", fits, s, error, [other])
        out["rows"] += print_table("  on both", fits, s, error, ["P0", "P1"])
        out["settings"][on] = shown
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
