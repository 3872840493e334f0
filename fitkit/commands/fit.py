"""``fitkit fit``: run a recipe on an observation file and write the results."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.eval.quality import quality_settings, track_quality
from fitkit.fitting.hypotheses import as_fitted, fit_with_hypotheses, hypotheses_arrays
from fitkit.fitting.recipe import load_recipe
from fitkit.io.keypoint_readers import read_keypoints
from fitkit.io.mesh import write_obj
from fitkit.errors import FitkitError
from fitkit.io.lock import folder_lock
from fitkit.io.params import ParamFileError, load_params, load_result, save_result
from fitkit.commands.progress import FitProgress, stage_iterations
from fitkit.api import result_arrays

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FitkitError("--device cuda requested but torch sees no CUDA device")
    return torch.device(name)


def _assemble(parts: list[tuple[np.ndarray, dict]], n: int) -> dict:
    """Per-batch arrays (rows ``idx``) -> arrays of all n frames in the observations' order."""
    out = {}
    for k, v in parts[0][1].items():
        out[k] = np.empty((n,) + v.shape[1:], dtype=v.dtype)
    for idx, arrays in parts:
        for k, v in arrays.items():
            out[k][idx] = v
    return out


def frame_batches(obs, recipe, batch_size: int) -> list[np.ndarray]:
    """Row sets fitted together: runs of ``batch_size`` frames; with sequence stages whole
    tracks, packed greedily up to ``batch_size`` frames (a longer track is one batch:
    sequence stages chunk it themselves)."""
    n = len(obs)
    if not any(st.sequence for st in recipe.stages):
        return [np.arange(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    tracks: dict[str, list[int]] = {}
    for row, t in enumerate(obs.track_ids or [""] * n):
        tracks.setdefault(t, []).append(row)
    batches, current = [], []
    for rows in tracks.values():
        if current and len(current) + len(rows) > batch_size:
            batches.append(np.array(current))
            current = []
        current = current + rows
    batches.append(np.array(current))
    return batches


def run(args) -> dict:
    t0 = time.perf_counter()
    recipe = load_recipe(args.recipe, args.set or [], prior=getattr(args, "prior", None))
    quality = quality_settings(recipe.data.get("quality"), recipe.source, recipe.data.get("terms"))  # fails early
    last = recipe.stages[-1].terms
    missing = [k for k in quality["max_energy"] if k not in last]
    if missing:
        raise FitkitError(f"{recipe.source}: quality.max_energy names {missing}, not terms of the last stage "
                          f"(terms: {sorted(last)})")
    device = pick_device(args.device)
    body = dict(recipe.body)
    model = load_body_model(args.model or body.get("model", "open"), args.gender or body.get("gender", "neutral"),
                            model_dir=args.model_dir, num_betas=int(body.get("num_betas", 10)), device=device)
    reader_args = {}
    if args.image_size:
        reader_args["image_size"] = tuple(args.image_size)
    if args.keypoint_format:
        reader_args["keypoint_format"] = args.keypoint_format
    obs = read_keypoints(args.input, **reader_args)
    if getattr(args, "camera", None):
        from fitkit.io.cameras import apply_camera, read_camera

        calib = read_camera(args.camera, getattr(args, "view", None))
        obs = apply_camera(obs, calib)
        log.info("camera %s from %s: keypoints undistorted, K set on every frame", calib.name, args.camera)
    elif getattr(args, "view", None):
        raise FitkitError("--view names a view of a --camera file; give --camera too")
    if getattr(args, "flow", None):
        from fitkit.fitting.video_recipe import with_flow

        recipe = with_flow(recipe)  # flow terms a recipe lists at weight 0 (video.yaml) are switched on
        obs = _attach_flow(obs, args.flow, recipe)
    N = len(obs)
    overlay_selection(args, obs)  # a bad --overlays FRAMES fails before any fitting
    init = None
    if args.init:
        init = load_params(args.init)
        rows = next(iter(init.values())).shape[0]
        if rows != N:
            raise ParamFileError(f"{args.init} has {rows} frames but {args.input} has {N}; "
                                 "an init file needs one row per observed frame")

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise FitkitError(f"{out_dir}: exists and is not a folder; -o/--output names the folder fit writes into")
    parts = []
    bs = int(args.batch_size)
    if bs < 1:
        raise FitkitError(f"--batch-size must be an integer >= 1, got {args.batch_size}")
    chunk_dir = out_dir / "chunks"
    stamp = _chunk_stamp(recipe, model, args)
    stage_names = [st.name for st in recipe.stages]
    batches = frame_batches(obs, recipe, bs)
    log.info("fitting %d frames in %d batch%s with recipe '%s' on %s", N, len(batches),
             "" if len(batches) == 1 else "es", recipe.name, device)
    names = [_chunk_name(idx) for idx in batches]
    with folder_lock(out_dir, "fitkit fit"):  # one writer per output folder
        _check_chunk_folder(chunk_dir, names, bs, args.resume)
        stages = stage_iterations(recipe)
        progress = FitProgress([(f"batch {b + 1}/{len(batches)}", stages) for b in range(len(batches))],
                               enabled=not args.quiet)
        done = 0
        try:
            for b, idx in enumerate(batches):
                progress.begin(b)
                chunk_path = chunk_dir / names[b]
                ids = [obs.frame_ids[i] for i in idx]
                arrays = _load_chunk(chunk_path, stamp, ids) if args.resume else None
                if arrays is None:
                    arrays = _fit_chunk(model, obs, idx, init, recipe, device, progress, args)
                    # every finished chunk is on disk at once: an interrupted run resumes from here
                    save_result(chunk_path, dict(arrays, frame_ids=np.array(ids, dtype=str)), stamp=stamp)
                else:
                    arrays.pop("frame_ids")
                    log.info("resumed frames %s..%s from %s", ids[0], ids[-1], chunk_path)
                parts.append((idx, arrays))
                done += len(idx)
                progress.end(f"{done}/{N} frames fitted")
        finally:
            progress.close()
        arrays = _assemble(parts, N)
        arrays.update(track_quality(model, _as_fitted(obs, arrays), arrays, quality))  # motion / facing, whole tracks
        arrays["frame_ids"] = np.array(obs.frame_ids, dtype=str)
        result_path = save_result(out_dir / "result.npz", arrays, keypoint_format=obs.keypoint_format,
                                  body_model=model.model_type, gender=model.gender, recipe_name=recipe.name,
                                  recipe=recipe.to_yaml(), stage_names=list(stage_names),
                                  observations=str(Path(args.input).resolve()),
                                  fit_seconds=f"{time.perf_counter() - t0:.3f}")
        files = [result_path]
        if args.meshes or args.overlays:  # overlays show the keypoints with the labels the fit used
            files += _write_extras_with_bar(args, model, _as_fitted(obs, arrays), arrays, out_dir, device)
    seconds = time.perf_counter() - t0
    e = arrays["err2d_px"]
    summary = {
        "frames": N,
        "no_evidence": int(arrays["no_evidence"].sum()),
        "nan_rolled_back": int(arrays["nan"].sum()),
        "converged": int(arrays["converged"].sum()),
        "err2d_px_mean": float(np.nanmean(e)) if np.isfinite(e).any() else float("nan"),
        "err2d_px_median": float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan"),
        "quality_ok": int(arrays["quality_ok"].sum()),
        "seconds": seconds,
        "files": [str(f) for f in files],
    }
    return summary


def _attach_flow(obs, flow: str, recipe):
    """The observations with their forward optical flow: read from a folder of
    ``<frame_id>.flo``/``.npy`` files, or computed (``dis``, ``farneback``) from ``image_paths``."""
    from fitkit.fitting.sequence import split_segments
    from fitkit.io.optical_flow import add_flow, compute_flow, read_flow_files

    if flow in ("dis", "farneback"):
        paths = obs.image_paths or []
        missing = [obs.frame_ids[i] for i, p in enumerate(paths) if not p] if paths else list(obs.frame_ids)
        if missing:
            raise FitkitError(f"{obs.source}: --flow {flow} computes the flow from the images, but frames "
                              f"{missing[:5]} have no image path (field 'image_paths')")
        from PIL import Image

        from fitkit.io.observations import video_frame_ref
        from fitkit.viz.overlay import VideoFrames

        fields = np.full(tuple(obs.keypoints.shape[:1]) + (int(obs.image_size[0, 1]), int(obs.image_size[0, 0]), 2),
                         np.nan, dtype=np.float32)
        with VideoFrames() as videos:  # image_paths may name video frames, '<video>#<index>'
            for seg in split_segments(obs):
                frames = []
                for r in seg.rows:
                    ref = video_frame_ref(paths[r])
                    try:
                        frames.append(videos.frame(*ref)[..., ::-1] if ref else
                                      np.asarray(Image.open(paths[r]).convert("RGB")))
                    except (OSError, FitkitError) as exc:
                        raise FitkitError(f"{paths[r]}: cannot read the image of frame {obs.frame_ids[r]!r}: "
                                          f"{exc}") from None
                if len(frames) > 1:
                    fields[list(seg.rows)] = compute_flow(np.ascontiguousarray(np.stack(frames)), method=flow)
        return add_flow(obs, fields)
    fields, missing = read_flow_files(flow, obs.frame_ids, tuple(int(v) for v in obs.image_size[0].tolist()))
    if missing:
        log.warning("no flow file for %d frame(s) (e.g. %s); the flow terms skip those frame pairs",
                    len(missing), missing[:3])
    return add_flow(obs, fields)


def _chunk_name(idx: np.ndarray) -> str:
    """The chunk file of a batch of rows: ``frames_<first row>_<last row>.npz``."""
    return f"frames_{idx[0]:08d}_{idx[-1]:08d}.npz"


def _check_chunk_folder(chunk_dir: Path, names: list[str], batch_size: int, resume: bool) -> None:
    """Refuse chunks that this run would not reuse exactly: without --resume any chunk (an earlier run's
    work would be overwritten or mixed in), with it any chunk whose rows are not one of this run's batches
    (another --batch-size)."""
    existing = sorted(p.name for p in chunk_dir.glob("frames_*.npz")) if chunk_dir.is_dir() else []
    if not existing:
        return
    if not resume:
        raise FitkitError(f"{chunk_dir}: holds {len(existing)} chunk(s) of an earlier run; add --resume to "
                          "continue it, or use another --output")
    foreign = [n for n in existing if n not in set(names)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise FitkitError(f"{chunk_dir}: chunk {foreign[0]}{more} does not match this run's batches "
                          f"(--batch-size {batch_size} makes {names[0]}, ...): an earlier run used another "
                          "--batch-size; resume with that one, or use another --output")


def _chunk_stamp(recipe, model, args) -> str:
    """What a saved chunk must have been fitted with to be reused by --resume."""
    return "\n".join([recipe.to_yaml(), model.model_type, model.gender, str(args.input), str(args.init),
                      str(int(args.batch_size)), str(getattr(args, "flow", None))])


def _load_chunk(path: Path, stamp: str, frame_ids: list[str]) -> dict | None:
    """A finished chunk's arrays, or None when it is absent; an error when it belongs to another run."""
    if not path.exists():
        return None
    data = load_result(path)
    if str(data.pop("stamp", "")) != stamp or data["frame_ids"].tolist() != frame_ids:
        raise FitkitError(f"{path}: was written by a different run (recipe, model, inputs or --batch-size "
                          "differ); use another --output or delete its chunks/ folder")
    for key in ("schema",):
        data.pop(key, None)
    return data


def _fit_chunk(model, obs, idx, init, recipe, device, progress, args) -> dict:
    sub = obs.subset(torch.as_tensor(idx))
    sub_init = None if init is None else {k: v[idx] for k, v in init.items()}
    res = fit_with_hypotheses(model, sub, recipe, sub_init, device=device, progress=progress.stage,
                              init_source=str(args.init or "default init"))
    chosen = hypotheses_arrays(res)  # facing / left-right choices of a recipe with a hypotheses: section
    chosen.pop("hypothesis_names", None)  # not per frame: result.npz records them once
    arrays = result_arrays(model, sub, recipe, res)  # scored against the labels the fit chose
    arrays.pop("frame_ids")  # the chunk file and result.npz add them
    arrays.update(chosen)
    return arrays


def _as_fitted(obs, arrays):
    """The observations with the left/right labels the fit chose (``swap_upper`` / ``swap_lower``
    of a recipe with hypotheses), else ``obs`` itself."""
    if "swap_upper" not in arrays:
        return obs
    return as_fitted(obs, arrays["swap_upper"], arrays["swap_lower"])


def _write_extras_with_bar(args, model, obs, arrays, out_dir: Path, device) -> list[Path]:
    """:func:`_write_extras` with a bar over the overlays written (none under -q or without overlays)."""
    if args.quiet or not args.overlays:
        return _write_extras(args, model, obs, arrays, out_dir, device)
    from tqdm import tqdm

    with tqdm(unit="overlay", file=sys.stderr, dynamic_ncols=True, desc="overlays", mininterval=0.5) as bar:
        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return _write_extras(args, model, obs, arrays, out_dir, device, progress=advance)


def _write_extras(args, model, obs, arrays, out_dir: Path, device, progress=None) -> list[Path]:
    """Write ``OUT/meshes/<frame id>.obj`` (every frame, ``--meshes``) and
    ``OUT/overlays/<frame id>.png`` (the frames ``--overlays [FRAMES]`` selects,
    see :func:`fitkit.viz.overlay.parse_frame_selection`; ``True`` means all),
    with the body's side and top views beside each overlay under ``--side-views``.

    Overlays are drawn on the frame's image (``obs.image_paths``; a
    ``<video>#<index>`` entry is read from the video, forwards, one capture per
    video), else on a grey canvas. ``progress(done, total)``, when given, is
    called after each overlay is written; each file is also logged at debug level.
    Returns the paths written.
    """
    from fitkit.viz.overlay import VideoFrames, draw_overlay
    from fitkit.io.observations import video_frame_ref

    overlay_rows = set(overlay_selection(args, obs))
    meshes = bool(getattr(args, "meshes", False))
    side_views = bool(getattr(args, "side_views", False))
    rows = range(len(obs)) if meshes else sorted(overlay_rows)
    files = []
    faces = model.faces.cpu().numpy()
    done, total = 0, len(overlay_rows)
    with VideoFrames() as videos:
        for i in rows:
            fid = obs.frame_ids[i]
            p = {k: torch.as_tensor(arrays[k][i:i + 1], dtype=model.dtype, device=device)
                 for k in ("global_orient", "body_pose", "betas", "transl")}
            out = model(p["global_orient"], p["body_pose"], p["betas"], p["transl"], vertices="all",
                        keypoints=obs.keypoint_format)
            if meshes:
                files.append(write_obj(out_dir / "meshes" / f"{fid}.obj", out.vertices[0], model.faces,
                                       axes=getattr(args, "axes", None) or "opencv"))
                log.debug("wrote mesh %s", files[-1])
            if i not in overlay_rows:
                continue
            K = torch.as_tensor(arrays["intrinsics"][i:i + 1], dtype=model.dtype, device=device)
            v2d = project(out.vertices, K)[0].cpu().numpy()
            k2d = project(out.keypoints, K)[0].cpu().numpy()
            image = None
            if obs.image_paths is not None and obs.image_paths[i]:
                image = obs.image_paths[i]
                ref = video_frame_ref(image)
                if ref is not None:
                    image = videos.frame(*ref)
            size = tuple(int(s) for s in obs.image_size[i].tolist())
            views = None
            if side_views:
                from fitkit.viz.views import render_body_views

                height = min(size[1], 720)
                views = render_body_views(out.vertices[0], faces, size=(max(8, round(0.75 * height)), max(8, height)))
            error = float(arrays["err2d_px"][i]) if "err2d_px" in arrays else None
            files.append(draw_overlay(out_dir / "overlays" / f"{fid}.png", image=image, image_size=size,
                                      observed=obs.keypoints[i].cpu().numpy(), fitted=k2d, mesh_2d=v2d,
                                      faces=faces, mesh_depth=out.vertices[0, :, 2].cpu().numpy(),
                                      skeleton_format=obs.keypoint_format, frame_id=fid, error_px=error,
                                      side_views=views))
            done += 1
            log.debug("overlay %d/%d: %s", done, total, files[-1])
            if progress is not None:
                progress(done, total)
    return files


def overlay_selection(args, obs) -> list[int]:
    """Rows ``--overlays [FRAMES]`` selects: [] when absent (None/False), all rows for True or ``all``.
    Raises ParameterError naming a bad entry (call it before fitting to fail early)."""
    from fitkit.viz.overlay import parse_frame_selection

    spec = getattr(args, "overlays", None)
    if spec is None or spec is False:
        return []
    return parse_frame_selection("all" if spec is True else spec, obs.frame_ids)


def print_summary(summary: dict) -> None:
    print(f"fitkit fit: {summary['frames']} frames in {summary['seconds']:.1f} s")
    print(f"  converged {summary['converged']}, no evidence {summary['no_evidence']}, "
          f"rolled back after NaN {summary['nan_rolled_back']}")
    print(f"  2D keypoint error: mean {summary['err2d_px_mean']:.2f} px, median {summary['err2d_px_median']:.2f} px")
    print(f"  pseudo-GT quality flags: {summary['quality_ok']}/{summary['frames']} frames pass (quality_ok)")
    for f in summary["files"][:3]:
        print(f"  wrote {f}")
    if len(summary["files"]) > 3:
        print(f"  ... and {len(summary['files']) - 3} more files")
