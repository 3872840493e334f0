"""`fitkit compare`: grid checks before fitting, the report files, data without ground truth."""
import csv
import json
import logging
import math
from pathlib import Path

import pytest
import yaml

from fitkit.cli import main
from fitkit.errors import FitkitError
from fitkit.eval.compare import METRICS, curve_figure, is_improvement, load_grid, write_report


def write_grid(path, **changes):
    grid = {"benchmark": {"frames": 2, "difficulty": "easy", "seed": 3, "image_size": [96, 96]},
            "inits": ["benchmark", "mean"], "data_terms": {"keypoints": "smplify_modified"},
            "priors": ["gmm", "none"], "solvers": {"lm": {"type": "lm", "iterations": 3}},
            "output": str(path.parent / "out")}
    grid.update(changes)
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.parametrize("change,message", [
    ({"prior": ["gmm"]}, r"unknown key\(s\) \['prior'\]"),
    ({"priors": ["flow"]}, r"priors: unknown \['flow'\]"),
    ({"inits": ["regressor"]}, r"inits: unknown \['regressor'\]"),
    ({"solvers": {"x": {"type": "newton"}}}, r"solvers.x"),
    ({"data_terms": {"kp": "no_such_recipe"}}, r"data_terms.kp .*recipe file not found"),
])
def test_grid_errors_come_before_any_fitting(tmp_path, change, message):
    with pytest.raises(FitkitError, match=message):
        load_grid(write_grid(tmp_path / "grid.yaml", **change))


def test_compare_writes_csv_table_and_plots(tmp_path):
    grid = write_grid(tmp_path / "grid.yaml")
    assert main(["compare", "--grid", str(grid), "--quiet", "--json", str(tmp_path / "s.json")]) == 0
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 4 and {(r["init"], r["prior"]) for r in rows} == {
        ("benchmark", "gmm"), ("benchmark", "none"), ("mean", "gmm"), ("mean", "none")}
    for r in rows:  # every metric before and after, and the mean init starts worse than the benchmark's
        assert float(r["pa_mpjpe_mm_before"]) > 0 and float(r["pve_s_mm_after"]) >= 0 and float(r["seconds"]) > 0
    by = {(r["init"], r["prior"]): r for r in rows}
    assert float(by[("mean", "gmm")]["mpjpe_mm_before"]) > float(by[("benchmark", "gmm")]["mpjpe_mm_before"])
    table = (out / "results.md").read_text()
    assert "PA-MPJPE mm: before → after" in table
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5  # header, then 4 rows
    assert (out / "pa_mpjpe_mm.png").stat().st_size > 1000 and (out / "pve_mm.png").exists()
    assert (out / "error_vs_iteration.png").stat().st_size > 1000
    assert json.loads((tmp_path / "s.json").read_text())["combinations"] == 4


def test_dataset_without_ground_truth_reports_2d_error_only(tmp_path):
    from fitkit.body import load_body_model
    from fitkit.eval.benchmark import make_benchmark

    bench = make_benchmark(load_body_model("open", num_betas=10), 2, seed=1, image_size=(96, 96))
    folder = tmp_path / "data"
    bench.save(folder)
    (folder / "gt.npz").unlink()
    grid = write_grid(tmp_path / "grid.yaml", benchmark=None, dataset=str(folder), inits=["benchmark"],
                      priors=["none"])
    text = grid.read_text().replace("benchmark: null\n", "")
    grid.write_text(text)
    assert main(["compare", "--grid", str(grid), "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    assert len(rows) == 1 and rows[0]["err2d_px_after"] and "pa_mpjpe_mm_after" not in rows[0]
    assert "No ground truth" in (tmp_path / "out" / "results.md").read_text()


def test_error_curve_ends_at_the_reported_error(tmp_path, caplog):
    from fitkit.body import load_body_model
    from fitkit.eval.benchmark import make_benchmark
    from fitkit.eval.compare import run_compare

    model = load_body_model("open", num_betas=10)
    grid = load_grid(write_grid(tmp_path / "grid.yaml", inits=["benchmark"], priors=["gmm"]))
    bench = make_benchmark(model, 2, difficulty="easy", seed=3, image_size=(96, 96))
    calls = []
    with caplog.at_level(logging.INFO, logger="fitkit.eval.compare"):
        (row,) = run_compare(grid, model, bench, progress=lambda *a: calls.append(a))
    its = [i for i, _ in row["curve"]]
    assert its == sorted(its) and its[-1] == max(its)
    assert abs(row["curve"][-1][1] - row["pa_mpjpe_mm_after"]) < 0.05
    assert abs(row["curve"][0][1] - row["pa_mpjpe_mm_before"]) < 0.5 * row["pa_mpjpe_mm_before"]
    # the stages of the recipe, in order, each starting where the previous one's points end
    recipe = grid.recipe("keypoints", "gmm", "lm")
    assert [name for name, _ in row["stages"]] == [st.name for st in recipe.stages]
    starts = [x for _, x in row["stages"]]
    assert starts[0] == 0 and starts == sorted(starts) and len(set(starts)) == len(starts)
    for x in starts[1:]:
        assert x in its  # a stage starts at the last iterate of the one before
    # progress: the callable and one INFO line per combination
    assert calls == [(1, 1, "init=benchmark data_term=keypoints prior=gmm solver=lm")]
    msgs = [r.getMessage() for r in caplog.records if r.name == "fitkit.eval.compare"]
    assert any(m.startswith("[1/1] init=benchmark data_term=keypoints prior=gmm solver=lm: MPJPE mm ")
               and m.endswith(" s") for m in msgs), msgs


def test_seed001_good_init_finding_on_a_smaller_benchmark(tmp_path):
    """Seed 001's second finding, as fitting_configs/grids/seed001_good_init.yaml states it, on 32 frames:
    the modified SMPLify improves a regressor-quality init, SPIN's default degrades PA-MPJPE more."""
    from fitkit.body import load_body_model
    from fitkit.eval.benchmark import make_benchmark
    from fitkit.eval.compare import GRID_KEYS, run_compare

    grid_file = Path(__file__).resolve().parents[1] / "fitting_configs" / "grids" / "seed001_good_init.yaml"
    spec = yaml.safe_load(grid_file.read_text())
    assert set(spec) <= GRID_KEYS
    grid = load_grid(grid_file, {"output": str(tmp_path / "out")})
    model = load_body_model("open", num_betas=10)
    settings = {k: v for k, v in spec["benchmark"].items() if k != "frames"}
    bench = make_benchmark(model, 32, **{**settings, "image_size": tuple(settings["image_size"])})
    rows = {r["data_term"]: r for r in run_compare(grid, model, bench)}
    spin, mod = rows["spin_default"], rows["smplify_modified"]
    assert mod["mpjpe_mm_after"] < mod["mpjpe_mm_before"]
    assert spin["pa_mpjpe_mm_after"] - spin["pa_mpjpe_mm_before"] > mod["pa_mpjpe_mm_after"] - mod["pa_mpjpe_mm_before"]


# ---------------------------------------------------------------- report details (no fitting)
def _row(**metrics):
    row = {"init": "benchmark", "data_term": "keypoints", "prior": "gmm", "solver": "lm", "seconds": 1.0,
           "iterations": 10.0, "converged": 1.0, "nan": 0, "no_evidence": 0}
    for name, (before, after) in metrics.items():
        row[f"{name}_before"], row[f"{name}_after"] = before, after
    return row


def test_only_real_improvements_are_bold(tmp_path):
    row = _row(mpjpe_mm=(83.2, 103.3), pa_mpjpe_mm=(60.0, 50.0), pve_mm=(50.0, 49.96), n_pve_mm=(40.0, 39.9),
               silhouette_iou=(0.5, 0.6))
    write_report([row, _row(mpjpe_mm=(1.0, 1.0), pa_mpjpe_mm=(1.0, 1.0), pve_mm=(1.0, 1.0), n_pve_mm=(1, 1),
                            silhouette_iou=(0.7, 0.6))], tmp_path)
    table = (tmp_path / "results.md").read_text().splitlines()
    first, second = (line for line in table if line.startswith("| benchmark"))
    assert "83.2 → 103.3 |" in first and "**103.3**" not in first  # worse: plain
    assert "60.0 → **50.0**" in first  # better by 17 %: bold
    assert "50.0 → 50.0 |" in first  # lost in rounding: plain
    assert "40.0 → 39.9 |" in first  # 0.25 % better: under the 0.5 % threshold, plain
    assert "0.500 → **0.600**" in first  # IoU: higher is better
    assert "**" not in second  # ties and a lower IoU
    assert "Bold: better after the fit than before by more than 0.5 %" in table[0]


@pytest.mark.parametrize("metric,before,after,better", [
    ("mpjpe_mm", 83.2, 103.3, False), ("mpjpe_mm", 103.3, 83.2, True), ("err2d_px", 3.0, 3.0, False),
    ("pa_mpjpe_mm", 100.0, 99.6, False), ("pa_mpjpe_mm", 100.0, 99.4, True),
    ("silhouette_iou", 0.80, 0.85, True), ("silhouette_iou", 0.85, 0.80, False),
    ("pve_mm", math.nan, 1.0, False), ("pve_mm", 2.0, math.nan, False)])
def test_is_improvement_follows_each_metrics_direction(metric, before, after, better):
    assert is_improvement(metric, before, after) is better


def test_one_plot_per_metric(tmp_path):
    names = [m for m in METRICS if m != "silhouette_iou"]
    rows = [_row(**{m: (10.0 + i, 5.0 + i) for i, m in enumerate(names)}) for _ in range(2)]
    files = write_report(rows, tmp_path)
    for m in names:
        assert (tmp_path / f"{m}.png").stat().st_size > 1000, m
    assert {p.name for p in files} == {"results.csv", "results.md", *(f"{m}.png" for m in names)}


def test_curve_plot_marks_each_stage_start(tmp_path):
    pts = [(i, 100.0 - i) for i in range(1, 31)]
    curves = [("a", pts, [("camera", 0), ("body", 10)]), ("b", pts[:25], [("camera", 0), ("body", 8)])]
    fig = curve_figure(curves)
    ax = fig.axes[0]
    # one dashed line per distinct stage start: both combinations start at 0, "body" at 8 or 10
    stage_lines = sorted((float(ln.get_xdata()[0]), ln.get_gid()) for ln in ax.lines
                         if (ln.get_gid() or "").startswith("stage:"))
    assert stage_lines == [(0.0, "stage:camera"), (8.0, "stage:body"), (10.0, "stage:body")]
    assert sorted(t.get_text().strip() for t in ax.texts) == ["body", "body", "camera"]
    fig.savefig(tmp_path / "c.svg", format="svg")
    svg = (tmp_path / "c.svg").read_text()
    assert 'id="stage:camera"' in svg and 'id="stage:body"' in svg
