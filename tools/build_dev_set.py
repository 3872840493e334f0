"""Build datasets/pose2sim_multiperson/ from pose2sim 0.10.49's Demo_MultiPerson (build time only).

    .venv/bin/python tools/build_dev_set.py [--wheel PATH] [--detect-python venv-detect/bin/python]

1. Finds the pose2sim wheel (``--wheel``, else ``--cache/pose2sim-0.10.49-py3-none-any.whl``, else
   ``pip download --no-deps pose2sim==0.10.49 -d --cache``) and extracts only
   ``Pose2Sim/Demo_MultiPerson/*`` and the dist-info licence (nothing else of the wheel is read).
2. Runs ``fitkit detect VIDEO --max-people N --masks ...`` with the detect environment's Python on
   each of the 4 videos.
3. Writes into ``--out``: per view the observation file (``cam01.npz``, image paths '') and the
   masks (``masks/cam01.npz``, 1/4 size), 3 frames per view at 1/4 size (``frames/``), the
   triangulated reference (``reference.npz``, :mod:`fitkit.devset.pose2sim_demo`), ``summary.json``,
   ``LICENSE`` and ``PROVENANCE.md``. The calibration (``calibration.json``) must already be there
   (written by the cameras work); it is read, not written.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fitkit.priors.files import file_sha256  # noqa: E402
from fitkit.devset.pose2sim_demo import (  # noqa: E402
    LIMBS,
    VIEWS,
    Settings,
    build_reference,
    flip_spans,
    reference_arrays,
)

VERSION = "0.10.49"
WHEEL = f"pose2sim-{VERSION}-py3-none-any.whl"
DEMO = "Pose2Sim/Demo_MultiPerson/"
LICENCE = f"pose2sim-{VERSION}.dist-info/licenses/LICENSE"
FRAMES_KEPT = (0, 50, 99)
SCALE = 4


def find_wheel(wheel: str | None, cache: Path) -> Path:
    if wheel:
        return Path(wheel)
    path = cache / WHEEL
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"pose2sim=={VERSION}", "-d", str(cache)],
                       check=True)
    return path


def extract(wheel: Path, work: Path) -> Path:
    """Only Demo_MultiPerson and the licence; returns the demo folder."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if n.startswith(DEMO) or n == LICENCE]
        for n in names:
            z.extract(n, work)
    return work / DEMO


def detect(python: str, video: Path, out: Path, masks: Path, max_people: int) -> list[str]:
    cmd = [python, "-c", "import sys; from fitkit.cli import main; sys.exit(main(sys.argv[1:]))", "detect",
           str(video), "--max-people", str(max_people), "--masks", str(masks), "-o", str(out), "--quiet"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return cmd


def write_frames(video: Path, view: str, folder: Path) -> list[str]:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    written, index = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if index in FRAMES_KEPT:
            small = cv2.resize(frame, (frame.shape[1] // SCALE, frame.shape[0] // SCALE), interpolation=cv2.INTER_AREA)
            name = f"{view}_{index:06d}.jpg"
            cv2.imwrite(str(folder / name), small, [cv2.IMWRITE_JPEG_QUALITY, 80])
            written.append(name)
        index += 1
    cap.release()
    return written


def _loose_clean(arrays: dict, p: int, settings: Settings) -> int:
    """Frames whose 12 limb points all have >= 2 views and a mean error below clean_max_px (no 3-view rule)."""
    nv = arrays["num_views"][p][:, LIMBS]
    with np.errstate(invalid="ignore"):
        err = np.nanmean(np.where(nv > 0, arrays["error"][p][:, LIMBS], np.nan), axis=1)
    return int(((nv >= 2).all(axis=1) & (err < settings.clean_max_px)).sum())


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help=f"the {WHEEL} file (default: look in --cache, else pip download it)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "fitkit" / "pose2sim"))
    ap.add_argument("--detect-python", default=str(ROOT / "venv-detect" / "bin" / "python"),
                    help="the Python of the detect environment (docs/detect.md)")
    ap.add_argument("--out", default=str(ROOT / "datasets" / "pose2sim_multiperson"))
    ap.add_argument("--max-people", type=int, default=4)
    ap.add_argument("--detections", help="reuse the fitkit detect outputs (VIEW.npz, VIEW_masks.npz) in this "
                                         "folder instead of running the detector (for tuning the reference)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()

    from fitkit.io.cameras import read_cameras
    from fitkit.io.observations import load_observations, save_observations

    out = Path(args.out)
    calib_path = out / "calibration.json"
    if not calib_path.is_file():
        raise SystemExit(f"{calib_path}: missing (the dev set's calibration, written from Calib.qca.txt)")
    cameras = read_cameras(calib_path)
    wheel = find_wheel(args.wheel, Path(args.cache))
    work = Path(tempfile.mkdtemp(prefix="fitkit_devset_"))
    commands = []
    try:
        demo = extract(wheel, work)
        det_dir = Path(args.detections) if args.detections else work / "detect"
        det_dir.mkdir(parents=True, exist_ok=True)
        observations, video_sha, frames = {}, {}, {}
        (out / "masks").mkdir(parents=True, exist_ok=True)
        for view in VIEWS:
            video = demo / "videos" / f"{view}.mp4"
            video_sha[view] = file_sha256(video)
            raw, masks = det_dir / f"{view}.npz", det_dir / f"{view}_masks.npz"
            if not args.detections:
                cmd = detect(args.detect_python, video, raw, masks, args.max_people)[3:]
                commands.append(" ".join(cmd).replace(str(work), "$WORK"))
            obs = load_observations(raw)
            obs.image_paths = [""] * len(obs)  # the videos are not committed
            obs.source = f"{out / view}.npz"
            save_observations(out / f"{view}.npz", obs)
            shutil.copyfile(masks, out / "masks" / f"{view}.npz")
            observations[view] = obs
            frames[view] = write_frames(video, view, out / "frames")
        num_frames = int(max(max(o.frame_numbers) for o in observations.values())) + 1
        settings = Settings()
        ref = build_reference(observations, cameras, num_frames, settings)
        arrays = reference_arrays(ref)
        with open(out / "reference.npz", "wb") as f:
            np.savez_compressed(f, **arrays)
        shutil.copyfile(work / LICENCE, out / "LICENSE")
        mediapipe_version = subprocess.run([args.detect_python, "-c", "import mediapipe; print(mediapipe.__version__)"],
                                           capture_output=True, text=True).stdout.strip()

        summary = {"views": list(ref["views"]), "frames": num_frames, "participants": {}, "detections": {},
                   "view_mean_error_px": dict(zip(ref["views"], [round(float(e), 2) for e in arrays["view_mean_error"]])),
                   "view_median_error_px": dict(zip(ref["views"],
                                                    [round(float(e), 2) for e in arrays["view_median_error"]])),
                   "left_out": ref["left_out"], "settings": asdict(settings), "seconds": None}
        for view, obs in observations.items():
            kp = obs.keypoints.numpy()
            counts = {}
            for t in sorted(set(obs.track_ids)):
                rows = [i for i, x in enumerate(obs.track_ids) if x == t]
                counts[t] = int(sum(kp[i, :, 2].max() > 0 for i in rows))
            summary["detections"][view] = counts
        for p, name in enumerate(arrays["participants"]):
            track_of = arrays["track_of"][p]
            summary["participants"][str(name)] = {
                "main_track": dict(zip(ref["views"], arrays["tracks"][p].tolist())),
                "frames_per_view": {v: int((track_of[:, vi] != "").sum()) for vi, v in enumerate(ref["views"])},
                "tracks_per_view": {v: sorted(set(track_of[:, vi]) - {""}) for vi, v in enumerate(ref["views"])},
                "clean_frames": int(arrays["clean"][p].sum()),
                "frames_limbs_2_views_below_clean_px": int(_loose_clean(arrays, p, settings)),
                "frames_with_limbs": int(np.isfinite(arrays["points3d"][p][:, LIMBS]).all(axis=(1, 2)).sum()),
                "swaps": {v: flip_spans(arrays["flipped"][p, :, vi]) for vi, v in enumerate(ref["views"])},
            }
        seconds = time.perf_counter() - t0
        summary["seconds"] = round(seconds, 1)
        summary["folder_bytes"] = folder_size(out)
        with open(out / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
            f.write("\n")
        write_provenance(out, wheel, video_sha, mediapipe_version, commands, settings, args, frames, summary)
        summary["folder_bytes"] = folder_size(out)
        print(json.dumps(summary, indent=1))
        print(f"folder size {summary['folder_bytes'] / 1e6:.2f} MB, {seconds:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def write_provenance(out, wheel, video_sha, mediapipe_version, commands, settings, args, frames, summary) -> None:
    lines = [
        "# Provenance of datasets/pose2sim_multiperson",
        "",
        f"Source: pose2sim {VERSION} (BSD-3-Clause, `LICENSE` here is its licence file "
        f"`{LICENCE}`), the wheel `{WHEEL}` from PyPI, sha256 `{file_sha256(wheel)}`. Only "
        f"`{DEMO}` was extracted (4 synchronised, calibrated videos cam01..cam04, 1088x1920, 60 fps, 100 frames; "
        "two participants and a bystander). The videos are not committed.",
        "",
        "Videos (sha256):",
        "",
        *[f"- `videos/{v}.mp4`: `{h}`" for v, h in video_sha.items()],
        "",
        "Derived here:",
        "",
        f"- `cam01.npz` .. `cam04.npz`: `fitkit detect VIDEO --max-people {args.max_people} --masks ...` with "
        f"mediapipe {mediapipe_version} (BlazePose full, model complexity 1, static image mode, paint-out "
        "multi-person search, box-IoU tracks `<view>_p<k>`); `image_paths` set to '' (videos not here).",
        "- `masks/VIEW.npz`: the segmentation masks of those rows (uint8 0/1 at 1/4 size, `fitkit.masks/1`).",
        f"- `frames/`: frames {', '.join(map(str, FRAMES_KEPT))} of each video at 1/{SCALE} size (JPEG q80): "
        + ", ".join(sum(frames.values(), [])) + ".",
        "- `reference.npz`, `summary.json`: the triangulated reference (`fitkit.devset.pose2sim_demo`, "
        "docs/devset.md) from those detections and `calibration.json`.",
        "- `calibration.json`, `Calib.qca.txt`: the calibration (from the demo's `calibration/Calib.qca.txt`).",
        "",
        "Thresholds (`fitkit.devset.pose2sim_demo.Settings`):",
        "",
        *[f"- `{k}` = {v}" for k, v in asdict(settings).items()],
        "",
        "Command (from the repository root, with the detect environment of docs/detect.md):",
        "",
        "```bash",
        ".venv/bin/python tools/build_dev_set.py --detect-python venv-detect/bin/python",
        "```",
        "",
        "which ran, per view (`$WORK` is a temporary folder with the extracted demo): "
        + ("; ".join(f"`fitkit {c}`" for c in commands) if commands else "(detections reused with --detections)"),
        "",
        f"Build time: {summary['seconds']} s on a 2-core CPU machine.",
        "",
    ]
    (out / "PROVENANCE.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
