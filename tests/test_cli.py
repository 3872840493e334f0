"""The command line's conventions: --version, -v/-q everywhere, examples that parse, help without torch."""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fitkit
from fitkit import cli
from fitkit.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _required_args(name: str) -> list[str]:
    """The smallest argv after the command name that parses."""
    return {"fit": ["--recipe", "demo", "--input", "x.npz", "-o", "out"], "compare": ["--grid", "g.yaml"],
            "import": ["in.npz", "-o", "init.npz"], "detect": ["a.png", "-o", "o.npz"],
            "report": ["out"], "view": ["out"]}.get(name, [])


def test_every_command_is_listed_and_has_an_implementation():
    assert set(_subcommands(build_parser())) == set(cli.IMPLEMENTATIONS)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"fitkit {fitkit.__version__}"


@pytest.mark.parametrize("name", sorted(cli.IMPLEMENTATIONS))
def test_verbose_and_quiet_are_accepted_before_and_after_every_command(name):
    parser = build_parser()
    rest = _required_args(name)
    after = parser.parse_args([name, "-q", *rest])
    assert after.quiet is True and not hasattr(after, "verbose")
    before = parser.parse_args(["-v", "-v", name, *rest])
    assert before.verbose == 2 and not hasattr(before, "quiet")  # the subcommand's copy must not reset it
    both = parser.parse_args(["-q", name, "--verbose", *rest])
    assert both.quiet is True and both.verbose == 1


@pytest.mark.parametrize("name", sorted(cli.IMPLEMENTATIONS))
def test_every_help_ends_with_examples_that_parse(name):
    sub = _subcommands(build_parser())[name]
    assert sub.epilog and sub.epilog.startswith("examples:"), name
    examples = [line.strip() for line in sub.epilog.splitlines()[1:] if line.strip()]
    assert 1 <= len(examples) <= 3, name
    for example in examples:
        argv = shlex.split(example, comments=True)
        assert argv[0] == "fitkit" and argv[1] == name, example
        build_parser().parse_args(argv[1:])  # exits (SystemExit 2) on an example that does not parse


def test_output_option_is_dash_o_everywhere_it_exists():
    for name, sub in _subcommands(build_parser()).items():
        flags = {s for a in sub._actions for s in a.option_strings}
        if "--output" in flags:
            assert "-o" in flags, name


def test_literal_choices_match_the_library():
    from fitkit.body.keypoint_formats import FORMATS
    from fitkit.eval.video import video_clips
    from fitkit.io.mesh import AXES
    from fitkit.io.regressors import LAYOUTS
    from fitkit.priors.presets import PRIOR_NAMES

    assert tuple(cli.PRIOR_CHOICES) == tuple(PRIOR_NAMES)
    assert set(cli.KEYPOINT_FORMATS) == set(FORMATS)
    assert tuple(cli.IMPORT_LAYOUTS) == tuple(LAYOUTS)
    assert tuple(cli.MESH_AXES) == tuple(AXES)
    from fitkit.body import MODEL_TYPES

    assert tuple(cli.MODEL_CHOICES) == tuple(MODEL_TYPES)
    assert set(cli.DEMO_CLIPS) == set(video_clips())


def test_fit_help_lists_exactly_the_shipped_recipes(capsys):
    from fitkit.shipped import recipe_names

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert recipe_names() and all(name in text for name in recipe_names())
    assert "video_flow" in recipe_names()


def test_config_is_an_alias_of_recipe():
    parser = build_parser()
    a = parser.parse_args(["fit", "--config", "demo", "--input", "x", "-o", "y"])
    b = parser.parse_args(["fit", "--recipe", "demo", "--input", "x", "--output", "y"])
    assert a.recipe == b.recipe == "demo" and a.output == b.output == "y"


def test_enumerated_options_refuse_other_values(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--recipe", "demo", "--input", "x", "-o", "y",
                                   "--keypoint-format", "openpose"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["report", "--help"], ["view", "--help"],
                                  ["demo", "--help"], ["detect", "--help"]])
def test_help_imports_no_torch(argv):
    code = ("import sys\nfrom fitkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'cv2', 'matplotlib') if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-300:]


def _small_fit_input(tmp_path):
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.io.observations import save_observations

    ex = make_keypoint_example(load_body_model("open", num_betas=10), 3, noise_px=1.0, seed=3)
    path = tmp_path / "obs.npz"
    save_observations(path, ex.observations)
    return path


def test_progress_moves_and_quiet_silences_it(tmp_path, capsys):
    obs = _small_fit_input(tmp_path)
    argv = ["fit", "--recipe", "demo", "--input", str(obs), "--set", "stages.1.solver.iterations=4",
            "--batch-size", "2"]
    assert main(argv + ["-o", str(tmp_path / "loud")]) == 0
    loud = capsys.readouterr()
    assert "fitting 3 frames in 2 batches" in loud.err
    assert "3/3 frames fitted" in loud.err
    assert re.search(r"\b(\d+)/\1 \[", loud.err), loud.err[-300:]  # the bar ended full
    assert "fitkit fit: 3 frames" in loud.out
    assert main(argv + ["-q", "-o", str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr()
    assert "frames fitted" not in quiet.err and "fitting 3 frames" not in quiet.err
    assert "fitkit fit: 3 frames" in quiet.out  # results are still printed
    a = np.load(tmp_path / "loud" / "result.npz")["body_pose"]
    b = np.load(tmp_path / "quiet" / "result.npz")["body_pose"]
    np.testing.assert_array_equal(a, b)


def test_verbose_shows_the_traceback_of_an_expected_error(tmp_path, capsys):
    argv = ["fit", "--recipe", "no_such_recipe", "--input", str(tmp_path / "x.npz"), "-o", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no_such_recipe" in err and "demo" in err  # the shipped recipes are listed
    with pytest.raises(Exception):
        main(["-v"] + argv)


def test_fit_progress_moves_within_a_fit_and_jumps_over_an_early_stop():
    from fitkit.commands.progress import FitProgress

    bar = FitProgress([("batch 1/2", {"camera": 10, "body": 30}), ("batch 2/2", {"camera": 10, "body": 30})],
                      enabled=True)
    seen = []
    try:
        bar.begin(0)
        for it in range(3):
            bar.stage("camera", it, 4, 4)
            seen.append(bar.bar.n)
        bar.stage("body", 0, 4, 4)  # the camera stage stopped after 3 iterations
        seen.append(bar.bar.n)
        bar.stage("body", 29, 1, 4)
        seen.append(bar.bar.n)
        bar.end("4/8 frames fitted")
        seen.append(bar.bar.n)
        bar.begin(1)
        bar.stage("camera", 0, 4, 4)
        seen.append(bar.bar.n)
        bar.stage("camera", 0, 4, 4)  # a second pass over a stage (shape consensus) never moves it back
        seen.append(bar.bar.n)
        bar.end()
        seen.append(bar.bar.n)
    finally:
        bar.close()
    assert seen == [1, 2, 3, 11, 40, 40, 41, 41, 80]


def _obj_vertices(path):
    return np.array([[float(x) for x in line.split()[1:4]] for line in open(path) if line.startswith("v ")])


def test_demo_meshes_in_y_up_axes_stand_upright(tmp_path):
    import torch

    from fitkit.body import load_body_model

    rest = load_body_model("open", num_betas=10)(torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 10),
                                                   vertices="all").vertices[0]
    top, sole = int(rest[:, 1].argmax()), int(rest[:, 1].argmin())  # the model's own frame is y up
    argv = ["demo", "-q", "--frames", "1", "--set", "stages.1.solver.iterations=2"]
    assert main(argv + ["-o", str(tmp_path / "cv")]) == 0
    assert main(argv + ["-o", str(tmp_path / "up"), "--axes", "yup"]) == 0
    cv = _obj_vertices(tmp_path / "cv" / "gt_000.obj")  # the true body in the camera frame
    up = _obj_vertices(tmp_path / "up" / "gt_000.obj")
    np.testing.assert_allclose(up, cv * np.array([1.0, -1.0, -1.0]), atol=2e-6)
    assert up[top, 1] - up[sole, 1] > 1.0  # y-up viewers see the person standing
    assert cv[top, 1] < cv[sole, 1]  # OpenCV's y points down
    assert (up[:, 2] < 0).all()  # in front of the camera means negative z in y-up axes


def test_a_bad_overlay_selection_fails_before_fitting(tmp_path, capsys):
    obs = _small_fit_input(tmp_path)
    out = tmp_path / "o"
    assert main(["fit", "-q", "--recipe", "demo", "--input", str(obs), "-o", str(out), "--overlays", "0,7"]) == 2
    err = capsys.readouterr().err
    assert "7" in err and "fitkit fit: error" in err
    assert not out.exists()  # nothing was fitted or written


@pytest.mark.parametrize("argv, option", [
    (["fit", "--recipe", "demo", "--input", "x", "-o", "y", "--batch-size", "0"], "--batch-size"),
    (["fit", "--recipe", "demo", "--input", "x", "-o", "y", "--batch-size", "-4"], "--batch-size"),
    (["fit", "--recipe", "demo", "--input", "x", "-o", "y", "--batch-size", "2.5"], "--batch-size"),
    (["fit", "--recipe", "demo", "--input", "x", "-o", "y", "--image-size", "0", "10"], "--image-size"),
    (["demo", "--frames", "-3"], "--frames"),
    (["demo", "--noise-px", "1e30"], "--noise-px"),
    (["demo", "--noise-px", "nan"], "--noise-px"),
    (["demo", "--dropout", "1.5"], "--dropout"),
    (["import", "a.npz", "-o", "b.npz", "--focal", "-100"], "--focal"),
    (["import", "a.npz", "-o", "b.npz", "--image-size", "inf", "10"], "--image-size"),
    (["detect", "a.png", "-o", "b.npz", "--every", "0"], "--every"),
    (["detect", "a.png", "-o", "b.npz", "--min-confidence", "2"], "--min-confidence"),
    (["report", "out", "--frames", "-1"], "--frames"),
    (["view", "out", "--port", "70000"], "--port"),
])
def test_numeric_options_are_checked_by_the_parser(argv, option, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}" in err and argv[argv.index(option) + 1] in err


def test_overlay_writing_shows_its_own_progress(tmp_path, capsys):
    obs = _small_fit_input(tmp_path)
    argv = ["fit", "--recipe", "demo", "--input", str(obs), "--set", "stages.1.solver.iterations=1",
            "-o", str(tmp_path / "o"), "--overlays", "0,2"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"overlays: 100%.*\b2/2\b", err), err[-400:]
    assert sorted(p.name for p in (tmp_path / "o" / "overlays").iterdir()) == ["synthetic_000000.png", "synthetic_000002.png"]


DEV_CALIB = Path(__file__).resolve().parents[1] / "datasets" / "pose2sim_multiperson" / "calibration.json"


def test_fit_with_a_calibration_file_uses_its_camera(tmp_path, capsys):
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.io.cameras import read_camera
    from fitkit.io.observations import save_observations

    ex = make_keypoint_example(load_body_model("open", num_betas=10), 2, image_size=(1088, 1920), seed=1)
    obs = tmp_path / "cam02.npz"
    save_observations(obs, ex.observations)
    base = ["fit", "-q", "--recipe", "demo", "--input", str(obs), "--set", "stages.1.solver.iterations=1"]
    assert main(base + ["--camera", str(DEV_CALIB), "-o", str(tmp_path / "no_view")]) == 2
    err = capsys.readouterr().err
    assert "cam01" in err and "cam04" in err  # the views it holds are listed
    assert main(base + ["--view", "cam02", "-o", str(tmp_path / "no_camera")]) == 2
    assert "--camera" in capsys.readouterr().err
    assert main(base + ["--camera", str(DEV_CALIB), "--view", "cam02", "-o", str(tmp_path / "o")]) == 0
    K = np.load(tmp_path / "o" / "result.npz")["intrinsics"]
    np.testing.assert_allclose(K, np.broadcast_to(read_camera(DEV_CALIB, "cam02").K, K.shape), rtol=1e-6)
