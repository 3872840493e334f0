"""`fitkit fit` with the shipped recipes, and `fitkit demo --json`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.camera import project
from fitkit.cli import main
from fitkit.eval.metrics import err2d
from fitkit.eval.synthetic import make_keypoint_example, sample_body_poses
from fitkit.io.observations import save_observations
from fitkit.io.params import load_result
from fitkit.priors.gmm import fit_gmm, save_gmm_pickle


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """Observations, init and a stand-in gmm_08.pkl (fitted on the fly: the real one is licensed)."""
    root = tmp_path_factory.mktemp("fitcli")
    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, 3, noise_px=1.0, seed=11)
    obs_path = save_observations(root / "obs.npz", ex.observations)
    init_path = root / "init.npz"
    np.savez(init_path, **{k: v.numpy() for k, v in ex.init.items()})
    _, poses = sample_body_poses(2000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gmm = fit_gmm(poses.numpy(), num_components=8, iterations=30, seed=0)
    gmm_path = save_gmm_pickle(root / "gmm_08.pkl", gmm)
    return root, obs_path, init_path, gmm_path, ex


@pytest.mark.parametrize("recipe", ["spin_default", "smplify_modified"])
def test_shipped_recipes_run_through_fitkit_fit(example, recipe, monkeypatch):
    root, obs_path, init_path, gmm_path, ex = example
    monkeypatch.setenv("FITKIT_PRIORS", str(gmm_path.parent))
    out = root / recipe
    assert main(["fit", "--config", recipe, "--input", str(obs_path), "--init", str(init_path),
                 "--output", str(out), "--device", "cpu", "--quiet", "--overlays", "--meshes",
                 "--json", str(out / "summary.json")]) == 0
    res = load_result(out / "result.npz")
    assert res["body_pose"].shape == (3, 69) and res["intrinsics"].shape == (3, 3, 3)
    assert set(str(s) for s in res["stage_names"]) == {"camera", "body"}
    assert res["iterations"].shape == (3, 2) and (res["iterations"] > 0).all()
    assert np.isfinite(res["energy_total"]).all() and "energy_pose" in res
    assert str(res["recipe_name"]) == recipe
    # the fit explains the keypoints better than the init did (same camera for both in full mode)
    summary = json.loads((out / "summary.json").read_text())
    model = load_body_model("open", num_betas=10)
    init_kp = model(*(ex.init[k] for k in ("global_orient", "body_pose", "betas", "transl")),
                    keypoints="body25").keypoints
    before = err2d(project(init_kp, ex.observations.intrinsics), ex.observations.keypoints).mean()
    assert summary["err2d_px_mean"] < 0.5 * float(before)
    np.testing.assert_allclose(res["err2d_px"].mean(), summary["err2d_px_mean"], rtol=1e-6)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == [f"synthetic_00000{i}.png" for i in range(3)]
    assert len(list((out / "meshes").glob("*.obj"))) == 3
    assert not [p for p in out.rglob("*.tmp")]


def test_missing_gmm_file_is_a_clear_error(example, monkeypatch, tmp_path, capsys):
    root, obs_path, init_path, gmm_path, ex = example
    monkeypatch.setenv("FITKIT_PRIORS", str(tmp_path / "nowhere"))
    assert main(["fit", "--config", "smplify_modified", "--input", str(obs_path), "--output", str(tmp_path / "o"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "fitkit fit: error:" in err and str(tmp_path / "nowhere" / "gmm_08.pkl") in err
    assert not (tmp_path / "o" / "result.npz").exists()


def test_init_frame_count_mismatch_names_both_files(example, tmp_path, capsys):
    root, obs_path, init_path, gmm_path, ex = example
    bad = tmp_path / "short_init.npz"
    np.savez(bad, body_pose=np.zeros((2, 69)))
    assert main(["fit", "--config", "demo", "--input", str(obs_path), "--init", str(bad),
                 "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert "short_init.npz has 2 frames but" in capsys.readouterr().err


def test_unreadable_observation_file_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"not a zip")
    assert main(["fit", "--config", "demo", "--input", str(bad), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    assert str(bad) in capsys.readouterr().err


def test_demo_json(tmp_path):
    path = tmp_path / "demo.json"
    assert main(["demo", "--frames", "4", "--json", str(path)]) == 0
    d = json.loads(path.read_text())
    for key in ("before", "after"):
        assert set(d[key]) >= {"mpjpe", "pa_mpjpe", "err2d_px"}
        assert all(np.isfinite(v) for v in d[key].values())
    assert d["seconds"] > 0
    assert d["after"]["err2d_px"] < d["before"]["err2d_px"]
    assert d["after"]["pa_mpjpe"] < d["before"]["pa_mpjpe"]


def test_interrupted_run_resumes_from_saved_chunks(example, tmp_path, monkeypatch):
    root, obs_path, init_path, gmm_path, ex = example
    out = tmp_path / "run"
    args = ["fit", "--config", "demo", "--input", str(obs_path), "--init", str(init_path),
            "--output", str(out), "--batch-size", "2", "--quiet"]
    import fitkit.commands.fit as fit_command

    real_fit, calls = fit_command.fit_with_hypotheses, []

    def crash_on_second_chunk(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(fit_command, "fit_with_hypotheses", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not (out / "result.npz").exists()
    assert [p.name for p in sorted((out / "chunks").iterdir())] == ["frames_00000000_00000001.npz"]

    calls.clear()
    monkeypatch.setattr(fit_command, "fit_with_hypotheses", lambda *a, **k: (calls.append(1), real_fit(*a, **k))[1])
    assert main(args + ["--resume"]) == 0
    assert len(calls) == 1  # only the chunk that was lost is fitted again
    resumed = load_result(out / "result.npz")
    assert main(["fit", "--config", "demo", "--input", str(obs_path), "--init", str(init_path),
                 "--output", str(tmp_path / "fresh"), "--batch-size", "2", "--quiet"]) == 0
    fresh = load_result(tmp_path / "fresh" / "result.npz")
    for key in ("body_pose", "betas", "transl", "energy_total", "iterations"):
        np.testing.assert_array_equal(resumed[key], fresh[key])

    # chunks of another run are refused, not mixed in
    assert main(args[:-1] + ["--set", "stages.1.solver.iterations=3", "--quiet", "--resume"]) == 2


def test_resume_with_another_batch_size_is_refused(example, tmp_path):
    root, obs_path, init_path, gmm_path, ex = example
    out = tmp_path / "run"
    args = ["fit", "--recipe", "demo", "--input", str(obs_path), "--init", str(init_path), "-o", str(out),
            "-q", "--set", "stages.1.solver.iterations=2"]
    assert main(args + ["--batch-size", "2"]) == 0
    before = sorted(p.name for p in (out / "chunks").iterdir())
    result = (out / "result.npz").read_bytes()
    assert main(args + ["--batch-size", "3", "--resume"]) == 2
    assert main(args + ["--batch-size", "2"]) == 2  # without --resume an earlier run's chunks are never overwritten
    assert sorted(p.name for p in (out / "chunks").iterdir()) == before  # nothing refitted or mixed in
    assert (out / "result.npz").read_bytes() == result
    assert main(args + ["--batch-size", "2", "--resume"]) == 0  # the same size resumes (every chunk reused)


def test_a_second_writer_is_refused_and_a_stale_lock_is_replaced(example, tmp_path, capsys):
    import json
    import os
    import socket
    import subprocess
    import sys

    from fitkit.io.lock import LOCK_NAME

    root, obs_path, init_path, gmm_path, ex = example
    out = tmp_path / "run"
    out.mkdir()
    lock = out / LOCK_NAME
    args = ["fit", "--recipe", "demo", "--input", str(obs_path), "-o", str(out), "-q",
            "--set", "stages.1.solver.iterations=2"]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": 0}))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and str(out) in err
        assert not (out / "result.npz").exists() and lock.exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next writer takes over
    assert main(args) == 0
    assert (out / "result.npz").exists()
    assert not lock.exists()  # released at the end
    assert os.listdir(out)  # sanity: the result is there


def test_output_that_is_a_file_is_refused(example, tmp_path, capsys):
    root, obs_path, init_path, gmm_path, ex = example
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    assert main(["fit", "--recipe", "demo", "--input", str(obs_path), "-o", str(target), "-q"]) == 2
    assert "taken.txt" in capsys.readouterr().err and target.read_text() == "not a folder"


def test_flow_from_the_frames_of_a_video(tmp_path):
    """--flow dis reads '<video>#<index>' image paths (what fitkit detect writes for a video) frame by frame."""
    import cv2

    from fitkit.commands.fit import _attach_flow
    from fitkit.fitting.recipe import load_recipe
    from fitkit.io.observations import Observations
    from fitkit.io.optical_flow import compute_flow

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8), (0, 0), 2)
    frames = [np.roll(base, 2 * t, axis=1) for t in range(3)]  # texture moving right by 2 px a frame
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 72))
    for f in frames:
        writer.write(f)
    writer.release()
    decoded = []
    cap = cv2.VideoCapture(str(video))
    for _ in frames:
        decoded.append(cap.read()[1][..., ::-1])
    cap.release()
    obs = Observations.from_arrays(np.zeros((3, 25, 3)), "body25", (96, 72), track_ids=["clip"] * 3,
                                   frame_numbers=[0, 1, 2], image_paths=[f"{video}#{i}" for i in range(3)])
    flowed = _attach_flow(obs, "dis", load_recipe("video_flow"))
    got = flowed.dense["flow"].numpy()
    want = compute_flow(np.stack(decoded), method="dis")
    np.testing.assert_allclose(got[:2], want[:2], atol=1e-5)
    assert np.nanmedian(got[0, 10:-10, 10:-10, 0]) == pytest.approx(2.0, abs=0.5)  # it sees the motion


def test_the_video_recipe_writes_its_hypothesis_choices(tmp_path):
    """fitkit fit runs a recipe's hypotheses: section and records what was chosen per frame."""
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.io.observations import save_observations

    ex = make_keypoint_example(load_body_model("open", num_betas=10), 3, keypoint_format="blazepose33",
                               image_size=(256, 256), seed=2)
    obs_path = tmp_path / "obs.npz"
    save_observations(obs_path, ex.observations)
    out = tmp_path / "o"
    assert main(["fit", "-q", "--recipe", "video", "--input", str(obs_path), "-o", str(out),
                 "--set", "stages.1.solver.iterations=2", "--set", "stages.2.solver.iterations=2"]) == 0
    r = np.load(out / "result.npz")
    assert r["hypothesis_yaw_deg"].shape == (3,) and r["swap_upper"].dtype == bool
    assert set(r["hypothesis_yaw_deg"].tolist()) <= {0.0, 90.0, 180.0, 270.0}
    assert r["hypothesis_energies"].shape[0] == 3 and np.isfinite(r["hypothesis_energies"]).any()


def test_the_2d_error_is_measured_on_the_labels_the_fit_chose(monkeypatch):
    """A frame whose left/right labels the hypotheses swapped is scored against the swapped keypoints."""
    import fitkit.commands.fit as fit_command
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.fitting.hypotheses import swap_labels

    ex = make_keypoint_example(load_body_model("open", num_betas=10), 2, keypoint_format="blazepose33", seed=4)
    swapped = swap_labels(ex.observations, [True, False], [True, False])  # frame 0 as a detector that swapped it
    got = fit_command._as_fitted(swapped, {"swap_upper": np.array([True, False]),
                                           "swap_lower": np.array([True, False])})
    assert torch.equal(got.keypoints, ex.observations.keypoints)  # swapping back restores the true labels
    same = fit_command._as_fitted(swapped, {"swap_upper": np.zeros(2, bool), "swap_lower": np.zeros(2, bool)})
    assert same is swapped


def test_the_body_model_type_is_recorded_and_guards_resume(example, tmp_path):
    """open_real differs from open only in its BlazePose points: the result must say which was used,
    and --resume must not mix chunks of the two."""
    root, obs_path, init_path, gmm_path, ex = example
    out = tmp_path / "run"
    args = ["fit", "-q", "--recipe", "demo", "--input", str(obs_path), "-o", str(out), "--batch-size", "2",
            "--set", "stages.1.solver.iterations=1"]
    assert main(args + ["--model", "open_real"]) == 0
    assert str(load_result(out / "result.npz")["body_model"]) == "open_real"
    assert main(args + ["--model", "open", "--resume"]) == 2  # chunks of another body model are refused


def test_result_arrays_scores_against_the_chosen_labels():
    """fitkit.api.result_arrays (what fit and save_fit write) measures the 2D error on the labels the
    hypotheses chose, so a frame fitted on swapped labels is not scored against the detector's."""
    from fitkit.api import result_arrays
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.fitting.engine import fit
    from fitkit.fitting.hypotheses import swap_labels
    from fitkit.fitting.recipe import load_recipe

    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, 2, keypoint_format="blazepose33", seed=5)
    recipe = load_recipe("demo", ["stages.1.solver.iterations=1"])
    res = fit(model, ex.observations, recipe, ex.init)
    plain = result_arrays(model, ex.observations, recipe, res)["err2d_px"]
    res.info["hypotheses"] = {"names": ["yaw0"], "yaw_deg": [0.0], "energies": np.ones((1, 2)),
                              "yaw_index": np.zeros(2, np.int64), "swap_upper": np.array([True, False]),
                              "swap_lower": np.array([False, False]), "swap_energies": np.ones((4, 2))}
    chosen = result_arrays(model, ex.observations, recipe, res)["err2d_px"]
    res.info.pop("hypotheses")
    by_hand = result_arrays(model, swap_labels(ex.observations, [True, False], [False, False]), recipe, res)
    np.testing.assert_array_equal(chosen, by_hand["err2d_px"])
    assert chosen[0] != plain[0] and chosen[1] == plain[1]
