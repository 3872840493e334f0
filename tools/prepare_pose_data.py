"""Build fitkit's open pose set from the DeepMimic clips in the pybullet wheel.

    python tools/prepare_pose_data.py                      # fetch with pip, write the shipped file
    python tools/prepare_pose_data.py --wheel pybullet-3.2.7-...whl --out /tmp/poses.npz

Steps: ``pip download --no-deps pybullet`` (nothing is installed), read the
humanoid clips from ``pybullet_data/data/motions/`` inside the wheel, retarget
each to SMPL's 23 body joints (:mod:`fitkit.build.deepmimic`), add a
left–right mirrored copy of every frame, split train/val/test by clip
(:data:`TEST_CLIPS`, :data:`VAL_CLIPS`), and write one ``.npz`` (no pickles) with provenance, plus
the attribution file ``NOTICE`` beside it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from fitkit.build.deepmimic import MISSING_JOINT_NOISE, NOISE_SMOOTHING_FRAMES, parse_clip, retarget_clip
from fitkit.io.atomic import atomic_write
from fitkit.priors.files import file_sha256
from fitkit.priors.pose_data import OPEN_POSE_DATA, mirror_body_pose, mirror_global_orient

MOTIONS = "pybullet_data/data/motions/"
#: Held-out clips (with their mirror images): a run, punches, a spin, a dance, a turn.
TEST_CLIPS = ("humanoid3d_run", "humanoid3d_punch", "humanoid3d_spin", "humanoid3d_dance_b", "walker/turn_left1")
#: Validation clips, for choices made while training or tuning (epochs, recipe weights): a dance,
#: a kick, a turn. No prior is trained on them and no choice is made on the test clips.
VAL_CLIPS = ("humanoid3d_dance_a", "humanoid3d_kick", "walker/turn_right1")

NOTICE = """\
open_poses.npz: body poses retargeted by fitkit (tools/prepare_pose_data.py) from the
DeepMimic motion clips shipped in the pybullet wheel ({wheel}),
pybullet_data/data/motions/. Those clips were retargeted by the DeepMimic / pybullet
authors from the CMU Graphics Lab Motion Capture Database and the SFU Motion
Capture Database.

pybullet is distributed under the zlib licence:

  Bullet Continuous Collision Detection and Physics Library
  http://bulletphysics.org

  This software is provided 'as-is', without any express or implied warranty.
  In no event will the authors be held liable for any damages arising from the use
  of this software. Permission is granted to anyone to use this software for any
  purpose, including commercial applications, and to alter it and redistribute it
  freely, subject to the following restrictions:

  1. The origin of this software must not be misrepresented; you must not claim
     that you wrote the original software. If you use this software in a product,
     an acknowledgment in the product documentation would be appreciated but is
     not required.
  2. Altered source versions must be plainly marked as such, and must not be
     misrepresented as being the original software.
  3. This notice may not be removed or altered from any source distribution.

Altered: the keyframes were converted to SMPL axis-angle joint rotations, joints the
humanoid lacks were given small synthetic noise, and mirrored copies were added.
"""


def fetch_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "pybullet", "-d", str(folder)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    wheels = sorted(folder.glob("pybullet-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download left no pybullet wheel in {folder}")
    return wheels[-1]


def read_clips(wheel: Path) -> list[tuple[str, str]]:
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if not name.startswith(MOTIONS) or not name.endswith(".txt"):
                continue
            rel = name[len(MOTIONS):-4]
            if rel.startswith("humanoid3d_") or rel.startswith("walker/"):
                out.append((rel, zf.read(name).decode("utf-8")))
    if not out:
        raise SystemExit(f"{wheel}: no humanoid motion clips under {MOTIONS}")
    return out


def build(wheel: Path, seed: int) -> tuple[dict[str, np.ndarray], dict]:
    clips = read_clips(wheel)
    names = [n for n, _ in clips]
    missing = [c for c in TEST_CLIPS + VAL_CLIPS if c not in names]
    if missing:
        raise SystemExit(f"{wheel}: test/validation clips {missing} not found (clips: {names})")
    parts = {k: [] for k in ("body_pose", "global_orient", "transl", "clip", "frame", "mirrored")}
    fps, split = [], []
    for c, (name, text) in enumerate(clips):
        clip = parse_clip(name, text)
        rng = np.random.default_rng([seed, c])
        smpl = retarget_clip(clip, rng)
        T = len(clip.frames)
        mirrored = {"body_pose": mirror_body_pose(smpl["body_pose"]),
                    "global_orient": mirror_global_orient(smpl["global_orient"]),
                    "transl": smpl["transl"] * np.array([-1.0, 1.0, 1.0])}
        for flip, src in ((False, smpl), (True, mirrored)):
            for k in ("body_pose", "global_orient", "transl"):
                parts[k].append(src[k].astype(np.float32))
            parts["clip"].append(np.full(T, c, dtype=np.int16))
            parts["frame"].append(np.arange(T, dtype=np.int16))
            parts["mirrored"].append(np.full(T, flip))
        fps.append(clip.fps)
        split.append("test" if name in TEST_CLIPS else ("val" if name in VAL_CLIPS else "train"))
        print(f"  {name:28s} {T:4d} frames  {clip.fps:5.1f} fps  {split[-1]}")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays.update(clip_names=np.array(names), clip_fps=np.array(fps, dtype=np.float32), clip_split=np.array(split))
    sha = file_sha256(wheel)
    provenance = {
        "source": f"{wheel.name} (sha256 {sha}), {MOTIONS}",
        "licence": "zlib (pybullet); see NOTICE",
        "retargeting": "fitkit.build.deepmimic",
        "missing_joint_noise_rad": MISSING_JOINT_NOISE,
        "noise_smoothing_frames": NOISE_SMOOTHING_FRAMES,
        "mirrored_copies": True,
        "test_clips": list(TEST_CLIPS),
        "validation_clips": list(VAL_CLIPS),
        "seed": seed,
        "created": datetime.date.today().isoformat(),
        "command": "python tools/prepare_pose_data.py " + " ".join(sys.argv[1:]),
    }
    return arrays, provenance


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, help="a downloaded pybullet wheel (default: pip download it)")
    ap.add_argument("--out", type=Path, default=OPEN_POSE_DATA)
    ap.add_argument("--seed", type=int, default=0, help="seed of the missing-joint noise")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        arrays, provenance = build(wheel, args.seed)
        arrays["provenance"] = np.array(json.dumps(provenance, sort_keys=True))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(args.out, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        with atomic_write(args.out.parent / "NOTICE", "w") as fh:
            fh.write(NOTICE.format(wheel=wheel.name))
    per_frame = arrays["clip_split"][arrays["clip"]]
    counts = ", ".join(f"{int((per_frame == s).sum())} {s}" for s in ("train", "val", "test"))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {len(per_frame)} frames "
          f"({counts}; mirrored copies included)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
