"""`fitkit compare`: grid checks before fitting, the report files, data without ground truth."""
import csv
import json
from pathlib import Path

import pytest
import yaml

from fitkit.cli import main
from fitkit.errors import FitkitError
from fitkit.eval.compare import load_grid


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
    assert "PA-MPJPE mm: before → after" in table and table.count("\n| ") == 4  # header, then 4 rows
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


def test_error_curve_ends_at_the_reported_error(tmp_path):
    from fitkit.body import load_body_model
    from fitkit.eval.benchmark import make_benchmark
    from fitkit.eval.compare import run_compare

    model = load_body_model("open", num_betas=10)
    grid = load_grid(write_grid(tmp_path / "grid.yaml", inits=["benchmark"], priors=["gmm"]))
    bench = make_benchmark(model, 2, difficulty="easy", seed=3, image_size=(96, 96))
    (row,) = run_compare(grid, model, bench, log=lambda _m: None)
    its = [i for i, _ in row["curve"]]
    assert its == sorted(its) and its[-1] == max(its)
    assert abs(row["curve"][-1][1] - row["pa_mpjpe_mm_after"]) < 0.05
    assert abs(row["curve"][0][1] - row["pa_mpjpe_mm_before"]) < 0.5 * row["pa_mpjpe_mm_before"]


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
    rows = {r["data_term"]: r for r in run_compare(grid, model, bench, log=lambda _m: None)}
    spin, mod = rows["spin_default"], rows["smplify_modified"]
    assert mod["mpjpe_mm_after"] < mod["mpjpe_mm_before"]
    assert spin["pa_mpjpe_mm_after"] - spin["pa_mpjpe_mm_before"] > mod["pa_mpjpe_mm_after"] - mod["pa_mpjpe_mm_before"]
