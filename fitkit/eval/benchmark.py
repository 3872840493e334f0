"""A seeded, versioned synthetic benchmark for comparing fitting recipes.

:func:`make_benchmark` builds ``n`` frames of the open body in *held-out*
mocap poses (``load_pose_data('test')``: motions no prior was trained or
tuned on), seen by a full-image camera, with realistic cues and a
regressor-like initialisation whose errors grow with the difficulty level.
A :class:`Benchmark` is saved to and loaded from a folder
(:meth:`Benchmark.save`, :func:`load_benchmark`); the folder carries
:data:`BENCHMARK_VERSION`, and a change to any number below that alters the
data must bump it.

Recipe (every random number comes from ``torch.Generator().manual_seed(seed)``
on the CPU, drawn in the order of the steps below; the placement of step 2
uses :func:`~fitkit.eval.synthetic.make_keypoint_example`'s own generator
seeded with the same ``seed``):

1. **Poses**: ``n`` distinct frames of the test split drawn by a random
   permutation (with replacement only when ``n`` exceeds the split).
2. **Bodies and camera**: :func:`make_keypoint_example` with all its noises
   at zero places each body (random global orientation, betas ~ N(0, 0.8^2)
   on the first 10 coefficients, depth 3 to 6 m, inside the image with a
   margin), focal ``sqrt(w^2 + h^2)`` pixels, principal point at the centre.
3. **Initialisation** (numbers in :data:`DIFFICULTY`):

   - body pose: every joint's rotation ``R_j`` becomes ``R_j exp([e_j])``,
     ``e_j ~ N(0, joint_sigma^2 I_3)`` (radians): a small rotation composed
     onto the joint's own (local) rotation, so errors accumulate down the
     kinematic chain like a regressor's;
   - global orientation: ``exp([e]) R``, ``e ~ N(0, orient_sigma^2 I_3)``
     (camera frame);
   - betas: + N(0, betas_sigma^2) on the first 10 coefficients;
   - depth: the pelvis is moved along its camera ray to ``(1 + d)`` times
     its distance, ``d ~ U(-depth_rel, depth_rel)``; ``transl`` is set so the
     *initial* body's pelvis lands there, so the pelvis projects to exactly
     the same pixel (regressors get the 2D position right, the depth wrong).

4. **Cues** (numbers in :data:`CUE_NOISE`, overridable per call):

   - ``keypoints`` (BODY_25): the clean projections of the true body plus
     N(0, (jitter_rel * s)^2) per coordinate, ``s`` the person size = the
     longer side of the clean keypoints' box (pixels). Confidences
     ``c ~ U(conf_low, 1)``; a keypoint is dropped (written (0, 0, 0)) with
     probability ``drop_max * (1 - c) / (1 - conf_low)`` (0 at c = 1,
     ``drop_max`` at c = ``conf_low``): confidence-correlated dropouts. Then,
     with probability ``swap_prob`` per frame, one left/right pair drawn
     uniformly from :data:`SWAP_PAIRS` exchanges its two rows (x, y, c) and
     both confidences are multiplied by ``swap_conf_factor``.
   - ``iuv``: :func:`~fitkit.render.iuv.open_body_charts` render of the *true*
     body (I in 0..24, 0 = background; U, V in [0, 1]). A *boundary pixel* is
     a foreground pixel with a foreground pixel of another part within
     ``boundary_px`` pixels (Chebyshev distance). Each boundary pixel, with
     probability ``part_flip``, takes the index of one such neighbouring
     part (drawn uniformly among the neighbours in its window). Every
     foreground pixel's U, V get N(0, uv_sigma^2), clipped to [0, 1].
     Background stays (0, 0, 0).
   - ``displacements``: :func:`~fitkit.terms.displacements.gt_displacement_field`
     from the initial to the true body (pixels), plus N(0, disp_sigma_px^2)
     per component on the pixels covered by the initial body; NaN elsewhere.

Files of a saved benchmark (all written atomically): ``observations.npz``
(:func:`~fitkit.io.observations.save_observations`, dense cues included),
``gt.npz`` and ``init.npz`` (smplx-named parameter arrays, readable by
:func:`~fitkit.io.params.load_params`; ``gt.npz`` also holds the cue truth
``truth_<name>`` arrays of :attr:`Benchmark.truth`), ``settings.json``.
Every ``.npz`` carries ``benchmark_version``.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import roma
import torch

from fitkit.body.keypoint_formats import get_format
from fitkit.body.lbs import axis_angle_to_matrix
from fitkit.errors import FitkitError, ObservationError, ParameterError
from fitkit.io.atomic import atomic_write
from fitkit.io.observations import Observations, load_observations, save_observations

__all__ = ["BENCHMARK_VERSION", "DIFFICULTY", "CUE_NOISE", "SWAP_PAIRS", "CUES", "Benchmark",
           "BenchmarkFileError", "make_benchmark", "load_benchmark", "init_errors"]

#: Version of the benchmark recipe and folder layout; bump it when any number changes.
BENCHMARK_VERSION = 1

#: Initialisation errors per level (see the module docstring, step 3):
#: ``joint_sigma`` (rad, per axis-angle component of the error rotation composed
#: onto every body joint), ``orient_sigma`` (rad, global orientation),
#: ``betas_sigma`` (added to the first 10 betas), ``depth_rel`` (the pelvis
#: depth is scaled by 1 + U(-depth_rel, depth_rel)).
DIFFICULTY: dict[str, dict[str, float]] = {
    "easy": {"joint_sigma": 0.05, "orient_sigma": 0.05, "betas_sigma": 0.2, "depth_rel": 0.05},
    "medium": {"joint_sigma": 0.10, "orient_sigma": 0.10, "betas_sigma": 0.5, "depth_rel": 0.10},
    "hard": {"joint_sigma": 0.20, "orient_sigma": 0.20, "betas_sigma": 1.0, "depth_rel": 0.20},
}

#: Cue noise, the same at every level (see the module docstring, step 4).
CUE_NOISE: dict[str, float] = {
    "jitter_rel": 0.01,       # keypoint jitter std, fraction of the person size
    "conf_low": 0.3,          # confidences ~ U(conf_low, 1)
    "drop_max": 0.25,         # drop probability at c = conf_low (0 at c = 1); ~12.5 % dropped overall
    "swap_prob": 0.05,        # per frame: one left/right pair swapped
    "swap_conf_factor": 0.5,  # confidence multiplier of a swapped pair
    "boundary_px": 2,         # IUV: window radius (pixels) defining part-boundary pixels
    "part_flip": 0.3,         # IUV: fraction of boundary pixels given a neighbouring part's index
    "uv_sigma": 0.03,         # IUV: U, V noise std on every foreground pixel
    "disp_sigma_px": 1.0,     # displacement noise std, pixels
}

#: BODY_25 left/right pairs a detector may swap.
SWAP_PAIRS = (("left_wrist", "right_wrist"), ("left_ankle", "right_ankle"),
              ("left_elbow", "right_elbow"), ("left_knee", "right_knee"))

CUES = ("keypoints", "iuv", "displacements")

_PARAM_KEYS = ("global_orient", "body_pose", "betas", "transl")
_FILES = ("observations.npz", "gt.npz", "init.npz", "settings.json")


class BenchmarkFileError(FitkitError, ValueError):
    """An unreadable, incomplete or wrong-version benchmark folder; the message names the file."""


@dataclass
class Benchmark:
    """A synthetic benchmark: cues, the answer and a starting point.

    Attributes:
        observations: :class:`Observations` (CPU, float32): BODY_25 keypoints,
            image sizes, intrinsics, and ``dense`` cues ``'iuv'`` (N, H, W, 3)
            and/or ``'displacements'`` (N, H, W, 2) as requested.
        gt: true smplx parameters ``global_orient`` (N, 3), ``body_pose``
            (N, 69), ``betas`` (N, B), ``transl`` (N, 3); CPU tensors in the
            model's dtype (metrics recompute joints and vertices from them);
            None for a dataset folder without ``gt.npz`` (:func:`load_benchmark`).
        init: the initialisation, same keys and shapes.
        settings: JSON-native record of everything the benchmark was made
            with (version, seed, difficulty and its numbers, cue noise, pose
            indices, image size, focal, ...).
        truth: what the cue noise did, for diagnostics and tests (CPU tensors):
            ``keypoints_2d_clean`` (N, 25, 2), ``keypoint_conf_drawn`` (N, 25),
            ``keypoint_dropped`` (N, 25) bool, ``swapped_pair`` (N,) int
            (index into :data:`SWAP_PAIRS`, -1 = none), ``person_size`` (N,);
            with IUV ``iuv_clean`` (N, H, W, 3), ``iuv_boundary`` and
            ``iuv_flipped`` (N, H, W) bool.
    """

    observations: Observations
    gt: dict
    init: dict
    settings: dict
    truth: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.gt["transl"].shape[0])

    def save(self, folder) -> Path:
        """Write the four files into ``folder`` (created if needed), each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        version = np.array(self.settings.get("version", BENCHMARK_VERSION), dtype=np.int64)
        save_observations(folder / "observations.npz", self.observations)
        arrays = lambda d, prefix="": {prefix + k: np.asarray(v.detach().cpu().numpy() if  # noqa: E731
                                                           isinstance(v, torch.Tensor) else v)
                                       for k, v in d.items()}
        for name, entries in (("gt.npz", {**arrays(self.gt), **arrays(self.truth, "truth_")}),
                              ("init.npz", arrays(self.init))):
            with atomic_write(folder / name, "wb") as handle:
                np.savez_compressed(handle, benchmark_version=version, **entries)
        with atomic_write(folder / "settings.json", "w") as handle:
            json.dump(self.settings, handle, indent=2, sort_keys=True)
            handle.write("\n")
        return folder


# ---------------------------------------------------------------- loading

def _check_version(found, path: Path) -> None:
    if found != BENCHMARK_VERSION:
        raise BenchmarkFileError(f"{path}: benchmark version {found!r}, this fitkit reads version "
                                 f"{BENCHMARK_VERSION}; rebuild it with tools/make_benchmark.py")


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise BenchmarkFileError(f"{path}: file not found (a benchmark folder holds {', '.join(_FILES)})")
    try:
        with np.load(path, allow_pickle=False) as data:
            entries = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BenchmarkFileError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if "benchmark_version" not in entries:
        raise BenchmarkFileError(f"{path}: field 'benchmark_version' is missing; not a fitkit benchmark file")
    _check_version(int(entries.pop("benchmark_version")), path)
    return entries


def load_benchmark(folder) -> Benchmark:
    """Read a folder written by :meth:`Benchmark.save` (or a user dataset in that layout:
    ``gt.npz`` may be absent, and then ``gt`` is None).

    Raises:
        BenchmarkFileError: a missing or unreadable file, a missing parameter,
            or a version other than :data:`BENCHMARK_VERSION` (naming the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkFileError(f"{folder}: benchmark folder not found")
    spath = folder / "settings.json"
    if not spath.is_file():
        raise BenchmarkFileError(f"{spath}: file not found (a benchmark folder holds {', '.join(_FILES)})")
    try:
        settings = json.loads(spath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchmarkFileError(f"{spath}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(settings, dict) or "version" not in settings:
        raise BenchmarkFileError(f"{spath}: field 'version' is missing; not a fitkit benchmark settings file")
    _check_version(settings["version"], spath)

    params = {}
    truth = {}
    for name in ("gt.npz", "init.npz"):
        path = folder / name
        if name == "gt.npz" and not path.exists():  # a user dataset without ground truth
            params[name] = None
            continue
        entries = _read_npz(path)
        missing = [k for k in _PARAM_KEYS if k not in entries]
        if missing:
            raise BenchmarkFileError(f"{path}: field(s) {missing} missing")
        params[name] = {k: torch.from_numpy(entries[k]) for k in _PARAM_KEYS}
        if name == "gt.npz":
            truth = {k[len("truth_"):]: torch.from_numpy(v) for k, v in entries.items() if k.startswith("truth_")}
    opath = folder / "observations.npz"
    try:
        observations = load_observations(opath)
    except ObservationError as exc:
        raise BenchmarkFileError(str(exc)) from None
    n = len(observations)
    for name, p in params.items():
        if p is not None and p["transl"].shape[0] != n:
            raise BenchmarkFileError(f"{folder / name}: has {p['transl'].shape[0]} frames, "
                                     f"{opath.name} has {n}")
    return Benchmark(observations=observations, gt=params["gt.npz"], init=params["init.npz"],
                     settings=settings, truth=truth)


# ---------------------------------------------------------------- building blocks

def _perturb_init(model, gt: Mapping[str, torch.Tensor], level: Mapping[str, float],
                  g: torch.Generator) -> dict:
    """Step 3 of the recipe: float64 CPU init parameters from float64 CPU gt."""
    f64 = torch.float64
    n = gt["transl"].shape[0]
    R = axis_angle_to_matrix(gt["body_pose"].reshape(n, 23, 3))
    E = axis_angle_to_matrix(level["joint_sigma"] * torch.randn(n, 23, 3, generator=g, dtype=f64))
    body_pose = roma.rotmat_to_rotvec(R @ E).reshape(n, 69)
    tilt = axis_angle_to_matrix(level["orient_sigma"] * torch.randn(n, 3, generator=g, dtype=f64))
    global_orient = roma.rotmat_to_rotvec(tilt @ axis_angle_to_matrix(gt["global_orient"]))
    betas = gt["betas"].clone()
    k = min(10, betas.shape[1])
    betas[:, :k] += level["betas_sigma"] * torch.randn(n, k, generator=g, dtype=f64)
    d = level["depth_rel"] * (2.0 * torch.rand(n, generator=g, dtype=f64) - 1.0)

    def pelvis(go, bp, be, tr):
        put = lambda t: t.to(device=model.device, dtype=model.dtype)  # noqa: E731
        return model(put(go), put(bp), put(be), put(tr)).joints[:, 0].to(device="cpu", dtype=f64)

    zero = torch.zeros(n, 3, dtype=f64)
    p_gt = pelvis(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"])
    p_init_rel = pelvis(global_orient, body_pose, betas, zero)
    transl = p_gt * (1.0 + d)[:, None] - p_init_rel  # pelvis on the same camera ray, depth scaled by 1 + d
    return {"global_orient": global_orient, "body_pose": body_pose, "betas": betas, "transl": transl}


def _keypoint_cues(clean: torch.Tensor, noise: Mapping[str, float], names: Sequence[str],
                   g: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Step 4, keypoints: (n, K, 3) observed keypoints and their truth record."""
    f64 = torch.float64
    n, k, _ = clean.shape
    extent = clean.amax(1) - clean.amin(1)
    size = extent.amax(-1)  # (n,) longer side of the clean keypoint box
    xy = clean + noise["jitter_rel"] * size[:, None, None] * torch.randn(n, k, 2, generator=g, dtype=f64)
    low = noise["conf_low"]
    conf = low + (1.0 - low) * torch.rand(n, k, generator=g, dtype=f64)
    p_drop = noise["drop_max"] * (1.0 - conf) / max(1.0 - low, 1e-12)
    dropped = torch.rand(n, k, generator=g, dtype=f64) < p_drop
    kp = torch.cat([xy, conf[..., None]], dim=-1)
    kp[dropped] = 0.0
    swap = torch.rand(n, generator=g, dtype=f64) < noise["swap_prob"]
    which = torch.randint(len(SWAP_PAIRS), (n,), generator=g)
    pairs = torch.tensor([[names.index(a), names.index(b)] for a, b in SWAP_PAIRS])
    swapped = torch.full((n,), -1, dtype=torch.long)
    for i in torch.nonzero(swap).flatten().tolist():
        a, b = pairs[which[i]].tolist()
        kp[i, [a, b]] = kp[i, [b, a]]
        kp[i, [a, b], 2] *= noise["swap_conf_factor"]
        swapped[i] = which[i]
    truth = {"keypoints_2d_clean": clean, "keypoint_conf_drawn": conf, "keypoint_dropped": dropped,
             "swapped_pair": swapped, "person_size": size}
    return kp, truth


def _iuv_cues(clean: torch.Tensor, noise: Mapping[str, float], g: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Step 4, IUV: part flips near part boundaries and U, V noise. clean: (n, H, W, 3) float64."""
    f64 = torch.float64
    n, h, w, _ = clean.shape
    r = int(noise["boundary_px"])
    part = clean[..., 0].round().long()
    fg = part > 0
    out = clean.clone()
    boundary = torch.zeros(n, h, w, dtype=torch.bool)
    flipped = torch.zeros_like(boundary)
    shifts = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]
    padded = torch.nn.functional.pad(part.to(torch.int16), (r, r, r, r))  # background (0) outside the image
    for i in range(n):
        rows, cols = torch.nonzero(fg[i], as_tuple=True)
        if rows.numel() == 0:
            continue
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        own = padded[i, r + y0:r + y1, r + x0:r + x1]
        neighbours = torch.stack([padded[i, r + y0 + dy:r + y1 + dy, r + x0 + dx:r + x1 + dx]
                                  for dy, dx in shifts])  # (S, h', w') within the foreground's box
        other = (neighbours > 0) & (neighbours != own) & (own > 0)
        is_b = other.any(0)
        by, bx = torch.nonzero(is_b, as_tuple=True)  # boundary pixels, row-major order
        cand = other[:, by, bx].T  # (B, S)
        score = torch.rand(cand.shape, generator=g, dtype=f64).masked_fill(~cand, -1.0)
        new_part = neighbours[:, by, bx].T.gather(1, score.argmax(1, keepdim=True))[:, 0]  # random other part
        flip = torch.rand(by.shape, generator=g, dtype=f64) < noise["part_flip"]
        boundary[i, by + y0, bx + x0] = True
        flipped[i, by[flip] + y0, bx[flip] + x0] = True
        out[i, by[flip] + y0, bx[flip] + x0, 0] = new_part[flip].to(f64)
    uv_noise = noise["uv_sigma"] * torch.randn(n, h, w, 2, generator=g, dtype=f64)
    out[..., 1:] = torch.where(fg[..., None], (clean[..., 1:] + uv_noise).clamp(0.0, 1.0), clean[..., 1:])
    return out, {"iuv_clean": clean, "iuv_boundary": boundary, "iuv_flipped": flipped}


def _json_native(x):
    return json.loads(json.dumps(x))


# ---------------------------------------------------------------- the benchmark

def make_benchmark(model, n: int, *, difficulty: str = "medium", seed: int = 0,
                   image_size: Sequence[int] = (256, 256), cues: Sequence[str] = CUES,
                   cue_noise: Optional[Mapping[str, float]] = None, poses=None) -> Benchmark:
    """Build a benchmark of ``n`` frames (recipe in the module docstring).

    Args:
        model: body model with BODY_25 keypoints (``load_body_model('open')``);
            IUV cues need the open body's charts (:func:`open_body_charts`).
        n: number of frames (>= 1).
        difficulty: a key of :data:`DIFFICULTY`.
        seed: the one seed; the same arguments give identical arrays.
        image_size: (width, height) pixels.
        cues: any of ``'keypoints'``, ``'iuv'``, ``'displacements'``. Without
            ``'keypoints'`` every keypoint is written unobserved (0, 0, 0).
        cue_noise: overrides of :data:`CUE_NOISE` entries (recorded in settings).
        poses: optional (n, 69) body poses instead of the held-out test split.
    Returns:
        :class:`Benchmark` (CPU tensors, model dtype).
    """
    from fitkit.eval.synthetic import make_keypoint_example

    if not (isinstance(n, int) and n >= 1):
        raise ParameterError(f"n must be an int >= 1, got {n!r}")
    if difficulty not in DIFFICULTY:
        raise ParameterError(f"difficulty must be one of {list(DIFFICULTY)}, got {difficulty!r}")
    cues = tuple(cues)
    unknown = [c for c in cues if c not in CUES]
    if unknown or len(set(cues)) != len(cues):
        raise ParameterError(f"cues must be distinct entries of {CUES}, got {cues}")
    noise = dict(CUE_NOISE)
    for key, value in (cue_noise or {}).items():
        if key not in CUE_NOISE:
            raise ParameterError(f"cue_noise: unknown entry {key!r}; known: {sorted(CUE_NOISE)}")
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ParameterError(f"cue_noise[{key!r}] must be finite and >= 0, got {value!r}")
        noise[key] = float(value)
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ParameterError(f"image_size must be (width, height) in pixels, got {image_size!r}") from None
    if width < 8 or height < 8 or (width, height) != tuple(image_size):
        raise ParameterError(f"image_size must be two integers >= 8, got {image_size!r}")
    level = DIFFICULTY[difficulty]
    fmt = get_format("body25")
    f64 = torch.float64
    g = torch.Generator().manual_seed(int(seed))

    # 1. held-out poses
    if poses is None:
        from fitkit.priors.pose_data import load_pose_data

        bank = torch.from_numpy(load_pose_data("test").body_pose).to(f64)
        pose_source = "open pose data, test split"
        if n <= len(bank):
            index = torch.randperm(len(bank), generator=g)[:n]
        else:
            index = torch.randint(len(bank), (n,), generator=g)
        body_pose = bank[index]
        index_list = index.tolist()
    else:
        body_pose = torch.as_tensor(np.asarray(poses), dtype=f64)
        if body_pose.shape != (n, 69):
            raise ParameterError(f"poses must have shape ({n}, 69), got {tuple(body_pose.shape)}")
        pose_source, index_list = "given", None

    # 2. bodies and camera, noise-free
    ex = make_keypoint_example(model, n, keypoint_format=fmt.name, image_size=(width, height), noise_px=0.0,
                               dropout=0.0, pose_noise=0.0, shape_noise=0.0, transl_noise=(0, 0, 0),
                               seed=int(seed), body_pose=body_pose)
    K = ex.observations.intrinsics.to(f64)
    gt64 = {k: ex.gt[k].detach().to(device="cpu", dtype=f64) for k in _PARAM_KEYS}

    # 3. initialisation
    init64 = _perturb_init(model, gt64, level, g)

    # 4. cues
    dt = model.dtype
    truth: dict = {}
    dense: dict = {}
    clean = ex.gt["keypoints_2d_clean"].detach().to(device="cpu", dtype=f64)
    kp, kp_truth = _keypoint_cues(clean, noise, fmt.names, g)
    if "keypoints" in cues:
        truth.update(kp_truth)
    else:
        kp = torch.zeros_like(kp)
    if "iuv" in cues:
        from fitkit.render.iuv import open_body_charts

        put = lambda t: t.to(device=model.device, dtype=dt)  # noqa: E731
        verts = model(*(put(gt64[k]) for k in _PARAM_KEYS), vertices="all").vertices
        iuv_clean = open_body_charts(model).render(verts, put(K), (height, width)).to(device="cpu", dtype=f64)
        dense["iuv"], iuv_truth = _iuv_cues(iuv_clean, noise, g)
        truth.update(iuv_truth)
    if "displacements" in cues:
        from fitkit.terms.displacements import gt_displacement_field

        disp, _ = gt_displacement_field(model, gt64, init64, K, (width, height))
        disp = disp.to(device="cpu", dtype=f64)
        disp = disp + noise["disp_sigma_px"] * torch.randn(disp.shape, generator=g, dtype=f64)
        dense["displacements"] = disp  # NaN + noise stays NaN: off the initial body

    observations = Observations.from_arrays(
        kp, fmt.name, torch.tensor([float(width), float(height)], dtype=f64), intrinsics=K,
        frame_ids=[f"bench_{i:06d}" for i in range(n)], source="<benchmark>", dtype=torch.float32,
        dense=dense or None)

    cpu = lambda d: {k: v.to(dtype=dt) if v.is_floating_point() else v for k, v in d.items()}  # noqa: E731
    truth = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in truth.items()}
    settings = _json_native({
        "version": BENCHMARK_VERSION, "seed": int(seed), "difficulty": difficulty, "n": n,
        "difficulty_numbers": dict(level), "cue_noise": noise, "cues": list(cues),
        "image_size": [width, height], "focal": float(K[0, 0, 0]), "keypoint_format": fmt.name,
        "swap_pairs": [list(p) for p in SWAP_PAIRS], "pose_source": pose_source, "pose_indices": index_list,
        "body_model": getattr(model, "name", type(model).__name__), "num_betas": int(gt64["betas"].shape[1]),
    })
    return Benchmark(observations=observations, gt=cpu(gt64), init=cpu(init64), settings=settings,
                     truth=truth)


def init_errors(model, bench: Benchmark, params: Optional[Mapping] = None) -> dict[str, torch.Tensor]:
    """Per-frame errors of ``params`` (default the benchmark's init) against the gt:
    ``mpjpe`` and ``pve`` (pelvis-aligned, meters, :func:`fitkit.eval.metrics.mpjpe` /
    :func:`~fitkit.eval.metrics.pve`) and ``depth_err`` (|pelvis depth error|, meters)."""
    from fitkit.eval.metrics import mpjpe, pve

    params = bench.init if params is None else params
    put = lambda t: torch.as_tensor(np.asarray(t) if not isinstance(t, torch.Tensor) else t).to(  # noqa: E731
        device=model.device, dtype=model.dtype)
    with torch.no_grad():
        a = model(*(put(params[k]) for k in _PARAM_KEYS), vertices="all")
        b = model(*(put(bench.gt[k]) for k in _PARAM_KEYS), vertices="all")
    return {"mpjpe": mpjpe(a.joints, b.joints).cpu(),
            "pve": pve(a.vertices, b.vertices, a.joints[:, 0], b.joints[:, 0]).cpu(),
            "depth_err": (a.joints[:, 0, 2] - b.joints[:, 0, 2]).abs().cpu()}
