"""``fitkit compare``: every init x data term x prior x solver on equal terms.

A grid file names the data and the combinations::

    benchmark: {frames: 16, difficulty: medium, seed: 0, image_size: [256, 256]}   # or
    dataset: path/to/benchmark_folder            # observations.npz, init.npz, gt.npz (optional)
    inits: [benchmark, mean]                     # the data's init, or the mean pose
    data_terms:                                  # name -> recipe (shipped name or file)
      keypoints: smplify_modified
      densepose: smplify_densepose
      displacements: smplify_displacements
    priors: [gmm, cnf, none, recipe]             # --prior presets (fitkit.priors.presets);
                                                 # recipe: the recipe's own pose line
    solvers:                                     # name -> solver of every stage (null: the recipe's)
      recipe: null
      lm: {type: lm, iterations: 30}
    set: ["stages.1.solver.iterations=50"]       # overrides for every recipe (after the prior
                                                 # swap; terms.pose.* ones skip prior 'none')
    output: out/compare

Everything is checked before any fitting starts (unknown keys, recipes,
priors, solvers, inits). Every combination fits the same observations;
``mean`` starts from the mean pose and shape facing the camera, placed by
the torso keypoints. The displacement cue is defined on the rendering of the
initialization it was made for, so for another init it is remade from the
ground truth (synthetic data only; without ground truth that combination is
skipped and reported). Without ground truth only the 2D keypoint error is
reported, and the report says so.

Outputs in ``output``: ``results.csv`` (one row per combination, every metric
before and after, time, iterations), ``results.md`` (a table in the shape of
seed 001's Table 1; an "after" value is bold only when it is a real improvement,
see :func:`is_improvement`), one bar chart ``<metric>.png`` per metric present
(e.g. ``pa_mpjpe_mm.png``), and ``error_vs_iteration.png`` (PA-MPJPE of the best
iterates after every iteration, numbered across stages, with a labelled vertical
line where each stage starts; with ground truth only; traced through
``fit(trace=...)``, and that time is not counted in the fit's).

Progress: every finished combination is logged at INFO through
``logging.getLogger(__name__)`` ("[3/12] init=... prior=... solver=...: MPJPE ... in ... s"),
and :func:`run_compare` calls an optional ``progress(done, total, label)``.
"""
from __future__ import annotations

import copy
import csv
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

from fitkit import shipped
from fitkit.camera import facing_camera_orient, project
from fitkit.errors import FitkitError
from fitkit.eval.metrics import err2d, evaluate_bodies, pa_mpjpe
from fitkit.fitting.camera_setup import build_fit_camera
from fitkit.fitting.engine import fit, torso_translation
from fitkit.fitting.recipe import RecipeError, load_recipe
from fitkit.fitting.recipe_schema import check_solver
from fitkit.io.atomic import atomic_write
from fitkit.priors.presets import PRIOR_NAMES
from fitkit.solvers import make_solver

__all__ = ["Grid", "load_grid", "run_compare", "write_report", "is_improvement", "curve_figure", "run",
           "print_summary", "GRID_KEYS", "INITS", "METRICS", "HIGHER_IS_BETTER", "MIN_RELATIVE_GAIN"]

logger = logging.getLogger(__name__)

GRID_KEYS = {"benchmark", "dataset", "inits", "data_terms", "priors", "solvers", "set", "output"}
INITS = ("benchmark", "mean")
#: metric (column prefix) -> label, in report order
METRICS = {"mpjpe_mm": "MPJPE mm", "pa_mpjpe_mm": "PA-MPJPE mm", "n_mpjpe_mm": "N-MPJPE mm", "pve_mm": "PVE mm",
           "pa_pve_mm": "PA-PVE mm", "n_pve_mm": "N-PVE mm", "pve_s_mm": "PVE-S mm", "pve_p_mm": "PVE-P mm",
           "err2d_px": "2D err px", "silhouette_iou": "silhouette IoU"}
#: metrics where a larger value is better (IoU-like); every other one is an error, lower is better
HIGHER_IS_BETTER = frozenset({"silhouette_iou"})
#: an "after" value is bold in results.md only when it beats "before" by more than this fraction
#: of the "before" value (0.5 %) and the two differ at the table's precision (one decimal)
MIN_RELATIVE_GAIN = 0.005
#: decimals shown in results.md (default one: millimetres and pixels)
DECIMALS = {"silhouette_iou": 3}


def _decimals(metric: str) -> int:
    return DECIMALS.get(metric, 1)


def is_improvement(metric: str, before: float, after: float) -> bool:
    """Whether ``after`` is really better than ``before`` for ``metric``.

    Lower is better for every metric except those in :data:`HIGHER_IS_BETTER`.
    A real improvement beats ``before`` by more than :data:`MIN_RELATIVE_GAIN`
    (0.5 %) of ``|before|`` and still differs once both are rounded to the
    table's precision, so a tie or a change lost in rounding is never bold.
    NaN on either side is not an improvement.
    """
    if not (np.isfinite(before) and np.isfinite(after)):
        return False
    gain = (after - before) if metric in HIGHER_IS_BETTER else (before - after)
    digits = _decimals(metric)
    return gain > MIN_RELATIVE_GAIN * abs(before) and round(after, digits) != round(before, digits)


@dataclass
class Grid:
    """A validated grid file (see the module docstring)."""

    source: str
    benchmark: dict | None
    dataset: str | None
    inits: list[str]
    data_terms: dict[str, str]
    priors: list[str]
    solvers: dict[str, dict | None]
    overrides: list[str] = field(default_factory=list)
    output: Path = Path("out/compare")

    def combinations(self) -> list[tuple[str, str, str, str]]:
        return list(itertools.product(self.inits, self.data_terms, self.priors, self.solvers))

    def recipe(self, data_term: str, prior: str, solver: str):
        """The recipe of one combination (prior swapped, overrides applied, solver replaced)."""
        name = self.data_terms[data_term]
        # with prior 'none' the pose term is gone, so overrides of it do not apply
        overrides = [o for o in self.overrides if not (prior == "none" and o.startswith("terms.pose."))]
        prior = None if prior == "recipe" else prior
        base = load_recipe(name, overrides, prior=prior)
        spec = self.solvers[solver]
        if spec is None:
            return base
        extra = [f"stages.{i}.solver={yaml.safe_dump(spec, default_flow_style=True).strip()}"
                 for i in range(len(base.stages))]
        return load_recipe(name, [*overrides, *extra], prior=prior)


def load_grid(path: str | Path, overrides: dict | None = None) -> Grid:
    """Read and check a grid file (or a shipped grid by name, :func:`fitkit.shipped.grid_path`);
    :class:`FitkitError` naming the file and key on any problem."""
    path = Path(path)
    if not path.exists() and not path.is_absolute():
        try:
            path = shipped.grid_path(str(path))
        except shipped.NotShippedError as exc:
            raise FitkitError(f"{exc} (and no grid file {path} in {Path.cwd()})") from None
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise FitkitError(f"{src}: cannot read the grid: {exc}") from None
    if not isinstance(data, dict):
        raise FitkitError(f"{src}: a grid must be a mapping")
    data.update(overrides or {})
    unknown = set(data) - GRID_KEYS
    if unknown:
        raise FitkitError(f"{src}: unknown key(s) {sorted(unknown)}; known: {sorted(GRID_KEYS)}")
    if ("benchmark" in data) == ("dataset" in data):
        raise FitkitError(f"{src}: give exactly one of 'benchmark' (a synthetic benchmark's settings) "
                          "or 'dataset' (a benchmark folder)")

    def listed(key, default):
        value = data.get(key, default)
        if not isinstance(value, list) or not value:
            raise FitkitError(f"{src}: '{key}' must be a non-empty list")
        return [str(v) for v in value]

    inits = listed("inits", ["benchmark"])
    bad = [i for i in inits if i not in INITS]
    if bad:
        raise FitkitError(f"{src}: inits: unknown {bad}; known: {list(INITS)}")
    priors = listed("priors", ["gmm"])
    bad = [p for p in priors if p not in (*PRIOR_NAMES, "recipe")]
    if bad:
        raise FitkitError(f"{src}: priors: unknown {bad}; known: {[*PRIOR_NAMES, 'recipe']}")
    terms = data.get("data_terms")
    if not isinstance(terms, dict) or not terms:
        raise FitkitError(f"{src}: 'data_terms' must map names to recipes")
    solvers = data.get("solvers", {"recipe": None})
    if not isinstance(solvers, dict) or not solvers:
        raise FitkitError(f"{src}: 'solvers' must map names to a solver spec (or null for the recipe's)")
    for name, spec in solvers.items():
        if spec is None:
            continue
        check_solver(spec, f"{src}: solvers.{name}")  # the recipes' own rules (types, ranges)
        try:
            make_solver(dict(spec))
        except (TypeError, ValueError, KeyError) as exc:
            raise FitkitError(f"{src}: solvers.{name}: {exc}") from None
    overrides_list = data.get("set") or []
    if not isinstance(overrides_list, list):
        raise FitkitError(f"{src}: 'set' must be a list of key=value overrides")
    bench = data.get("benchmark")
    if bench is not None and not isinstance(bench, dict):
        raise FitkitError(f"{src}: 'benchmark' must be a mapping (frames, difficulty, seed, image_size)")
    frames = (bench or {}).get("frames", 16)
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise FitkitError(f"{src}: benchmark.frames: expected an integer >= 1 (frames to synthesize), got {frames!r}")
    grid = Grid(source=src, benchmark=bench, dataset=None if bench is not None else str(data["dataset"]),
                inits=inits, data_terms={str(k): str(v) for k, v in terms.items()}, priors=priors,
                solvers={str(k): (None if v is None else dict(v)) for k, v in solvers.items()},
                overrides=[str(o) for o in overrides_list], output=Path(data.get("output", "out/compare")))
    for data_term, prior, solver in itertools.product(grid.data_terms, grid.priors, grid.solvers):
        try:  # every recipe of the grid loads (terms, prior presets, overrides) before anything runs
            grid.recipe(data_term, prior, solver)
        except RecipeError as exc:
            raise FitkitError(f"{src}: data_terms.{data_term} x prior {prior} x solver {solver}: {exc}") from None
    return grid


def _mean_init(model, observations, template: dict) -> dict:
    """The mean pose and shape facing the camera, translated by the torso keypoints."""
    n = len(observations)
    params = {"global_orient": facing_camera_orient(n, dtype=template["transl"].dtype),
              "body_pose": torch.zeros_like(template["body_pose"]), "betas": torch.zeros_like(template["betas"]),
              "transl": torch.zeros_like(template["transl"])}
    camera = build_fit_camera({"mode": "full"}, observations, dtype=params["transl"].dtype)
    with torch.no_grad():
        params["transl"], _ = torso_translation(params, model, observations, camera)
    return params


def _scores(model, params, gt, obs, K) -> dict:
    """(N,) metrics of ``params``: all of :func:`~fitkit.eval.metrics.evaluate_bodies` with ground
    truth, else only the 2D keypoint error."""
    with torch.no_grad():
        if gt is not None:
            return evaluate_bodies(model, params, gt, keypoints_2d=obs.keypoints, K=K,
                                   keypoint_format=obs.keypoint_format)
        kp = model(params["global_orient"], params["body_pose"], params["betas"], params["transl"],
                   keypoints=obs.keypoint_format).keypoints
        return {"err2d_px": err2d(project(kp, K.to(kp)), obs.keypoints.to(kp))}


class _Curve:
    """Engine ``trace``: PA-MPJPE (mm, mean over samples) of the best iterates after every
    iteration, numbered across stages. Its own time is kept apart from the fit's.

    ``points``: [(x, error mm)], x counting iterations across stages from 1.
    ``stages``: [(stage name, x where it starts)]: the x of the last point before
    the stage (0 for the first). A new stage is seen when the traced stage name
    changes, or when the iteration count goes back (two stages of one name, or a
    sequence stage's second pass).
    """

    def __init__(self, model, gt, obs):
        self.model, self.points, self.stages, self.seconds = model, [], [], 0.0
        self._stage, self._offset, self._last, self._iteration = None, 0, 0, -1
        with torch.no_grad():
            self.gt_joints = model(gt["global_orient"], gt["body_pose"], gt["betas"], gt["transl"]).joints

    def __call__(self, stage: str, iteration: int, params: dict) -> None:
        t0 = time.perf_counter()
        if stage != self._stage or iteration < self._iteration:
            self._stage, self._offset = stage, self._last
            self.stages.append((stage, self._offset))
        self._iteration = iteration
        self._last = self._offset + iteration + 1
        with torch.no_grad():
            joints = self.model(params["global_orient"], params["body_pose"], params["betas"],
                                params["transl"]).joints
            err = 1000.0 * float(pa_mpjpe(joints, self.gt_joints.to(joints)).mean())
        self.points.append((self._last, err))
        self.seconds += time.perf_counter() - t0


def _label(init_name: str, data_term: str, prior: str, solver: str) -> str:
    return f"init={init_name} data_term={data_term} prior={prior} solver={solver}"


def run_compare(grid: Grid, model, data, *,
                progress: Callable[[int, int, str], None] | None = None) -> list[dict]:
    """Fit every combination of ``grid`` on ``data`` (a :class:`fitkit.eval.benchmark.Benchmark`).

    Args:
        grid: from :func:`load_grid`.
        model: the body model every combination fits.
        data: observations, init and (optional) ground truth.
        progress: called as ``progress(done, total, label)`` after each combination
            (fitted or skipped), e.g. for a progress bar; ``label`` names the
            combination ("init=... data_term=... prior=... solver=...").
    Returns:
        one dict per combination (see :func:`write_report`); ``curve`` and
        ``stages`` (see :class:`_Curve`) with ground truth.
    """
    from fitkit.terms.displacements import gt_displacement_field

    obs, gt = data.observations, data.gt
    inits = {"benchmark": data.init, "mean": _mean_init(model, obs, data.init)}
    rows = []
    combos = grid.combinations()
    total = len(combos)
    for k, (init_name, data_term, prior, solver) in enumerate(combos, 1):
        label = _label(init_name, data_term, prior, solver)
        row = {"init": init_name, "data_term": data_term, "prior": prior, "solver": solver}
        recipe = grid.recipe(data_term, prior, solver)
        init = inits[init_name]
        observations = obs
        uses_field = any(spec.get("type") == "displacements" for spec in recipe.terms.values())
        if uses_field and init_name != "benchmark":
            if gt is None:
                row["skipped"] = "the displacement cue belongs to the data's own init and there is no ground truth"
                rows.append(row)
                logger.info("[%d/%d] %s: skipped (%s)", k, total, label, row["skipped"])
                if progress is not None:
                    progress(k, total, label)
                continue
            W, H = (int(v) for v in obs.image_size[0].tolist())
            field_, _ = gt_displacement_field(model, gt, init, obs.intrinsics, (W, H))
            observations = copy.copy(obs)
            observations.dense = dict(obs.dense or {}, displacements=field_.to(obs.keypoints.dtype))
        before = _scores(model, init, gt, obs, obs.intrinsics)
        curve = _Curve(model, gt, obs) if gt is not None else None
        t0 = time.perf_counter()
        res = fit(model, observations, recipe, init, trace=curve)
        seconds = time.perf_counter() - t0 - (curve.seconds if curve is not None else 0.0)
        after = _scores(model, res.params, gt, obs, res.K)
        for name in METRICS:
            if name in before:
                row[f"{name}_before"] = float(torch.nanmean(before[name].double()))
                row[f"{name}_after"] = float(torch.nanmean(after[name].double()))
        if curve is not None:
            row["curve"] = curve.points
            row["stages"] = curve.stages
        row.update(seconds=seconds, iterations=float(res.iterations.sum(dim=1).float().mean()),
                   converged=float(res.converged.float().mean()), nan=int(res.nan.sum()),
                   no_evidence=int(res.no_evidence.sum()))
        rows.append(row)
        shown = [(METRICS[m], m) for m in ("mpjpe_mm", "pa_mpjpe_mm", "err2d_px") if f"{m}_after" in row][:2]
        logger.info("[%d/%d] %s: %s in %.1f s", k, total, label,
                    ", ".join(f"{name} {row[f'{m}_after']:.1f}" for name, m in shown), seconds)
        if progress is not None:
            progress(k, total, label)
    return rows


def write_report(rows: list[dict], folder: str | Path, *, has_gt: bool = True) -> list[Path]:
    """``results.csv``, ``results.md`` and the plots in ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys = ["init", "data_term", "prior", "solver"]
    metric_cols = [f"{m}_{w}" for m in METRICS for w in ("before", "after") if any(f"{m}_{w}" in r for r in rows)]
    cols = keys + metric_cols + ["seconds", "iterations", "converged", "nan", "no_evidence", "skipped"]
    files = []
    with atomic_write(folder / "results.csv", "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: (f"{r[c]:.3f}" if isinstance(r.get(c), float) else r.get(c, "")) for c in cols})
    files.append(folder / "results.csv")

    metrics = [m for m in METRICS if any(f"{m}_after" in r for r in rows)]
    head = "| init | data term | prior | solver | " + " | ".join(f"{METRICS[m]}: before → after" for m in metrics) \
        + " | time s | iterations |"
    note = (f"Bold: better after the fit than before by more than {100 * MIN_RELATIVE_GAIN:g} % "
            "(lower is better for errors, higher for IoU).\n")
    lines = [("" if has_gt else "_No ground truth: only the 2D keypoint error is reported._\n") + note, head,
             "|" + "---|" * (4 + len(metrics) + 2)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['init']} | {r['data_term']} | {r['prior']} | {r['solver']} | "
                         + " | ".join("—" for _ in metrics) + f" | skipped: {r['skipped']} | |")
            continue
        cells = [_cell(m, r[f"{m}_before"], r[f"{m}_after"]) for m in metrics]
        lines.append(f"| {r['init']} | {r['data_term']} | {r['prior']} | {r['solver']} | " + " | ".join(cells)
                     + f" | {r['seconds']:.1f} | {r['iterations']:.0f} |")
    with atomic_write(folder / "results.md", "w") as fh:
        fh.write("\n".join(lines).strip() + "\n")
    files.append(folder / "results.md")
    files += _plots(rows, folder, metrics)
    return files


def _cell(metric: str, before: float, after: float) -> str:
    d = _decimals(metric)
    shown = f"{after:.{d}f}"
    return f"{before:.{d}f} → " + (f"**{shown}**" if is_improvement(metric, before, after) else shown)


def curve_figure(curves: list[tuple[str, list, list]]):
    """The error-vs-iteration figure: one line per combination and a dashed vertical
    line, labelled with the stage name, where each stage starts.

    Args:
        curves: [(label, points [(x, error mm)], stages [(stage name, x of its start)])].
    Returns:
        a matplotlib Figure (the caller saves and closes it). The stage lines carry
        ``gid`` ``"stage:<name>"`` (an ``id`` in SVG output) and their labels are texts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for lab, pts, _ in curves:
        it, err = zip(*pts)
        ax.plot(it, err, label=lab, lw=1.2)
    # combinations may stop a stage at different iterations: one line per distinct start
    starts: dict[float, list[str]] = {}
    for _, _, stages in curves:
        for name, x in stages:
            if name not in starts.setdefault(float(x), []):
                starts[float(x)].append(name)
    for x, names in sorted(starts.items()):
        name = " / ".join(names)
        ax.axvline(x, color="0.4", ls="--", lw=0.8, gid=f"stage:{name}")
        ax.text(x, 1.0, f" {name}", transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="left",
                fontsize=7, color="0.3", gid=f"stage-label:{name}",
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})
    ax.set_xlabel("iteration (all stages)")
    ax.set_ylabel("PA-MPJPE mm (best iterates)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _plots(rows: list[dict], folder: Path, metrics: list[str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "skipped" not in r]
    labels = [f"{r['init']}/{r['data_term']}/{r['prior']}/{r['solver']}" for r in done]
    files = []
    for metric in metrics:
        fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(done) + 2), 4))
        y = np.arange(len(done))
        ax.barh(y - 0.2, [r[f"{metric}_before"] for r in done], 0.4, label="before", color="0.75")
        ax.barh(y + 0.2, [r[f"{metric}_after"] for r in done], 0.4, label="after", color="tab:blue")
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(METRICS[metric])
        ax.legend()
        fig.tight_layout()
        path = folder / f"{metric}.png"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=90)
        plt.close(fig)
        files.append(path)
    curves = [(lab, r["curve"], r.get("stages", [])) for lab, r in zip(labels, done) if r.get("curve")]
    if curves:
        fig = curve_figure(curves)
        path = folder / "error_vs_iteration.png"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=90)
        plt.close(fig)
        files.append(path)
    return files


def describe(grid: Grid) -> str:
    n = len(grid.combinations())
    return (f"{len(grid.inits)} inits x {len(grid.data_terms)} data terms x {len(grid.priors)} priors x "
            f"{len(grid.solvers)} solvers = {n} fits")



def run(args, *, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """``fitkit compare --grid GRID.yaml [--output OUT]``: load, check, fit every combination, report.

    ``args``: ``grid``, ``output`` (or None). Progress goes to this module's logger
    (INFO) and to ``progress(done, total, label)`` when given (see :func:`run_compare`).
    """
    from fitkit.body import load_body_model
    from fitkit.eval.benchmark import load_benchmark, make_benchmark

    t0 = time.perf_counter()
    output = getattr(args, "output", None)
    grid = load_grid(args.grid, {"output": output} if output else None)
    logger.info("fitkit compare: %s", describe(grid))
    model = load_body_model("open", num_betas=10)
    if grid.benchmark is not None:
        spec = dict(grid.benchmark)
        frames = int(spec.pop("frames", 16))
        try:
            spec["image_size"] = tuple(spec.get("image_size", (256, 256)))
            data = make_benchmark(model, frames, **spec)
        except (TypeError, ValueError) as exc:  # e.g. an unknown key or difficulty, a bad image_size
            raise FitkitError(f"{grid.source}: benchmark: {exc}") from None
    else:
        data = load_benchmark(grid.dataset)
    rows = run_compare(grid, model, data, progress=progress)
    files = write_report(rows, grid.output, has_gt=data.gt is not None)
    return {"combinations": len(rows), "has_ground_truth": data.gt is not None,
            "seconds": time.perf_counter() - t0, "files": [str(f) for f in files]}


def print_summary(summary: dict) -> None:
    print(f"fitkit compare: {summary['combinations']} combinations in {summary['seconds']:.1f} s"
          + ("" if summary["has_ground_truth"] else " (no ground truth: 2D keypoint error only)"))
    for f in summary["files"]:
        print(f"  wrote {f}")
