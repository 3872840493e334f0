"""Pseudo-ground-truth quality flags (fitkit.eval.quality) and their place in `fitkit fit` results."""
import numpy as np
import pytest

from fitkit.errors import FitkitError
from fitkit.eval.quality import quality_flags, quality_settings


def _case():
    observed = np.zeros((4, 3, 3))
    observed[:, :, :2] = [[0, 0], [100, 0], [100, 60]]  # box: longest side 100 px
    observed[:, :, 2] = 1.0
    observed[2, :, 2] = 0.0  # sample 2: nothing observed
    observed[3, 0, 2] = 0.0  # sample 3: one point unobserved (its huge error must not count)
    fitted = observed[..., :2] + np.array([3.0, 4.0])  # 5 px everywhere
    fitted[3, 0] += 1000.0
    return observed, fitted


def test_reprojection_error_in_crop_pixels_and_thresholds():
    observed, fitted = _case()
    energies = {"pose": np.array([1.0, 500.0, 1.0, 1.0]), "total": np.zeros(4)}
    no_evidence = np.array([False, False, True, False])
    nan = np.zeros(4, bool)
    flags = quality_flags(observed, fitted, energies, no_evidence, nan,
                          quality_settings({"max_reproj_crop_px": 10, "max_energy": {"pose": 300}}))
    expected = 5.0 * 224.0 / (1.2 * 100.0)  # 9.33: the mean error if the 1.2x box were a 224-px crop
    np.testing.assert_allclose(flags["reproj_err_crop_px"][[0, 1]], expected)
    # sample 3: the unobserved point is ignored; the box of the two observed points is 60 px
    np.testing.assert_allclose(flags["reproj_err_crop_px"][3], 5.0 * 224.0 / (1.2 * 60.0))
    assert np.isnan(flags["reproj_err_crop_px"][2])
    assert flags["quality_reprojection_ok"].tolist() == [True, True, False, False]
    assert flags["quality_prior_ok"].tolist() == [True, False, True, True]
    assert flags["quality_ok"].tolist() == [True, False, False, False]
    strict = quality_flags(observed, fitted, energies, no_evidence, nan, quality_settings({"max_reproj_crop_px": 9}))
    assert not strict["quality_reprojection_ok"][0] and strict["quality_prior_ok"].all()


def test_bad_quality_settings_name_the_key():
    with pytest.raises(FitkitError, match=r"r.yaml: quality: unknown key\(s\) \['max_err'\]"):
        quality_settings({"max_err": 3}, "r.yaml")
    with pytest.raises(FitkitError, match=r"quality.max_reproj_crop_px: expected a finite number > 0"):
        quality_settings({"max_reproj_crop_px": -1})
    observed, fitted = _case()
    with pytest.raises(FitkitError, match="names 'pose', which is not a term"):
        quality_flags(observed, fitted, {"total": np.zeros(4)}, np.zeros(4, bool), np.zeros(4, bool),
                      quality_settings({"max_energy": {"pose": 1}}))


def test_fit_results_carry_the_flags(tmp_path):
    from fitkit.body import load_body_model
    from fitkit.cli import main
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.io.observations import save_observations
    from fitkit.io.params import load_result

    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, 3, seed=2)
    obs = save_observations(tmp_path / "obs.npz", ex.observations)
    out = tmp_path / "fit"
    assert main(["fit", "--config", "demo", "--input", str(obs), "--output", str(out), "--quiet",
                 "--set", "quality={max_reproj_crop_px: 1000, max_energy: {pose: 1.0e9}}"]) == 0
    res = load_result(out / "result.npz")
    assert res["quality_ok"].dtype == bool and res["quality_ok"].all()
    assert np.isfinite(res["reproj_err_crop_px"]).all()
    assert main(["fit", "--config", "demo", "--input", str(obs), "--output", str(tmp_path / "bad"), "--quiet",
                 "--set", "quality={max_energy: {prior: 1}}"]) == 2  # not a term: refused before fitting
    assert not (tmp_path / "bad" / "result.npz").exists()


# ---------------------------------------------------------------- the 3D, motion, facing and swap checks

from fitkit.eval.quality import (QUALITY_DEFAULTS, facing_numbers, keypoints3d_error_mm, motion_numbers,  # noqa: E402
                                 swap_margin, track_neighbours, track_quality)

NAMES = ["left_hip", "right_hip", "left_shoulder", "right_shoulder", "nose"]
#: a standing torso facing -z (towards a camera at the origin looking along +z), meters
TORSO = np.array([[0.1, 0.0, 3.0], [-0.1, 0.0, 3.0], [0.18, -0.5, 3.0], [-0.18, -0.5, 3.0], [0.0, -0.7, 2.9]])


def _turned(deg: float) -> np.ndarray:
    """TORSO turned by ``deg`` about the vertical (camera y) axis through the hip mid-point."""
    a = np.radians(deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    root = TORSO[:2].mean(0)
    return (TORSO - root) @ R.T + root


def _flags(fitted_3d, **kw):
    n = len(fitted_3d)
    observed = np.zeros((n, len(NAMES), 3))
    observed[..., 2] = 1.0
    settings = quality_settings(kw.pop("quality", {}))
    return quality_flags(observed, observed[..., :2], {"total": np.zeros(n)}, np.zeros(n, bool), np.zeros(n, bool),
                         settings, fitted_3d=fitted_3d, keypoint_names=NAMES, **kw)


def test_facing_flip_is_flagged_at_the_frames_around_it():
    # one track, 6 frames, turning 5 degrees a frame except a 120-degree flip into frame 3
    yaw = [0, 5, 10, 130, 135, 140]
    fitted = np.stack([_turned(d) for d in yaw])
    flags = _flags(fitted, track_ids=["a"] * 6, frame_numbers=list(range(6)),
                   quality={"max_facing_change_deg": 30})
    np.testing.assert_allclose(flags["quality_facing_change_deg"], [5, 5, 120, 120, 5, 5], atol=1e-9)
    assert flags["quality_facing_ok"].tolist() == [True, True, False, False, True, True]
    assert flags["quality_ok"].tolist() == flags["quality_facing_ok"].tolist()
    off = _flags(fitted, track_ids=["a"] * 6, quality={"max_facing_change_deg": None})
    assert off["quality_facing_ok"].all()


def test_neighbours_follow_tracks_and_frame_numbers():
    # two interleaved tracks; track b skips frame 2 (a gap is no neighbour)
    prev, nxt = track_neighbours(["a", "b", "a", "b", "a", "b"], [0, 0, 1, 1, 2, 3], 6)
    assert prev.tolist() == [-1, -1, 0, 1, 2, -1]
    assert nxt.tolist() == [2, 3, 4, -1, -1, -1]
    prev, nxt = track_neighbours(["a"] * 3, None, 3)  # one track, no frame numbers: rows in order
    assert prev.tolist() == [-1, 0, 1] and nxt.tolist() == [1, 2, -1]
    prev, nxt = track_neighbours(None, None, 3)  # neither: independent images
    assert (prev == -1).all() and (nxt == -1).all()


def test_velocity_spike_is_flagged_and_matches_a_hand_computation():
    fitted = np.stack([TORSO] * 5)
    fitted[2, 4] += [0.0, 0.0, 0.25]  # the nose jumps 250 mm in frame 2 only
    fitted += np.arange(5)[:, None, None] * np.array([0.5, 0, 0])  # the whole body walks: root motion is ignored
    flags = _flags(fitted, track_ids=["a"] * 5, quality={"max_joint_accel_mm": 60, "max_joint_speed_mm": None})
    # root-relative: only the nose moves; speed 250 mm over 5 keypoints at frames 1-3
    np.testing.assert_allclose(flags["quality_joint_speed_mm"], [0, 50, 50, 50, 0], atol=1e-9)
    np.testing.assert_allclose(flags["quality_joint_accel_mm"][1:4], [50, 100, 50], atol=1e-9)
    assert np.isnan(flags["quality_joint_accel_mm"][[0, 4]]).all()  # the track's ends have no acceleration
    assert flags["quality_motion_ok"].tolist() == [True, True, False, True, True]
    fast = _flags(fitted, track_ids=["a"] * 5, quality={"max_joint_speed_mm": 40, "max_joint_accel_mm": None})
    assert fast["quality_motion_ok"].tolist() == [True, False, False, False, True]


def test_3d_disagreement_uses_the_terms_alignment():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(0)
    fitted = TORSO[None] + rng.normal(0, 0.05, (3, 5, 3))
    k3 = np.zeros((3, 5, 4))
    root = fitted[:, :2].mean(1, keepdims=True)
    k3[..., :3] = 0.8 * (fitted - root)  # frame 0: the same skeleton, smaller, origin at the hips
    k3[..., 3] = [1.0, 0.5, 1.0, 0.7, 0.9]
    k3[1, 4, :3] += [0.0, 0.3, 0.0]  # frame 1: the nose disagrees by 300 mm
    k3[2, 0, 3] = 0.0  # frame 2: a hip missing: no root, no number
    flags = _flags(fitted, keypoints3d=k3, quality={"max_keypoints3d_mm": 40})
    e = flags["quality_keypoints3d_err_mm"]
    assert e[0] < 1e-9 and np.isnan(e[2])
    # oracle: the weighted least-squares scale found numerically, then the weighted mean distance
    m = fitted[1] - fitted[1, :2].mean(0)
    o = k3[1, :, :3] - k3[1, :2, :3].mean(0)
    w = k3[1, :, 3]
    s = minimize_scalar(lambda s: (w * ((m - s * o) ** 2).sum(-1)).sum(), bounds=(0.1, 10), method="bounded",
                        options={"xatol": 1e-12}).x
    expected = 1000 * (w * np.linalg.norm(m - s * o, axis=-1)).sum() / w.sum()
    np.testing.assert_allclose(e[1], expected, rtol=1e-6)
    assert expected > 40
    assert flags["quality_3d_ok"].tolist() == [True, False, True]
    assert np.isnan(keypoints3d_error_mm(fitted, None, (0, 1))).all()


def test_tied_swap_labellings_are_flagged():
    inf = np.inf
    energies = np.array([[10.0, 10.1, inf, inf], [10.0, 20.0, 30.0, 40.0], [inf] * 4, [5.0, inf, inf, inf]])
    margin = swap_margin(energies, 4)
    np.testing.assert_allclose(margin[:2], [np.log(10.1 / 10.0), np.log(2.0)])
    assert np.isinf(margin[2:]).all()  # fewer than two labellings tried: nothing to be ambiguous about
    flags = _flags(np.stack([TORSO] * 4), swap_energies=energies, quality={"min_swap_margin": 0.02})
    assert flags["quality_swap_ok"].tolist() == [False, True, True, True]
    assert flags["quality_ok"].tolist() == [False, True, True, True]
    assert np.isinf(swap_margin(None, 2)).all()


def test_thresholds_come_from_the_recipe_and_are_validated():
    import yaml

    from fitkit.fitting.recipe import load_recipe
    from fitkit.fitting.recipe_schema import RecipeError, check_quality

    recipe = load_recipe("video")
    settings = quality_settings(recipe.data.get("quality"), recipe.source)
    written = yaml.safe_load(open(recipe.source))["quality"]
    for key, value in written.items():
        assert settings[key] == value
    assert settings["max_energy"] == {}
    off = load_recipe("video", ["quality.max_facing_change_deg=null", "quality.min_swap_margin=1e-1"])
    s = quality_settings(off.data["quality"], off.source)
    assert s["max_facing_change_deg"] is None and s["min_swap_margin"] == 0.1
    assert quality_settings(None) == {**QUALITY_DEFAULTS, "keypoints3d_rotation": "camera"}  # no 3D term: camera
    for bad, match in (({"max_keypoints3d_mm": -1},
                        r"r.yaml: quality.max_keypoints3d_mm: expected a finite number >= 0"),
                       ({"max_joint_accel_mm": "fast"}, r"quality.max_joint_accel_mm: expected"),
                       ({"min_swap_margin": True}, r"quality.min_swap_margin: expected"),
                       ({"max_energy": {"pose": "x"}}, r"quality.max_energy.pose: expected"),
                       ({"max_facing_deg": 3}, r"unknown key\(s\) \['max_facing_deg'\]"),
                       ([1, 2], r"quality: expected a mapping")):
        with pytest.raises(RecipeError, match=match):
            check_quality(bad, "r.yaml: quality")


def test_track_quality_on_assembled_batches_equals_one_batch():
    """Batches that cut a track: the track checks redone on the assembled arrays match the whole-track ones."""
    import torch

    from fitkit.body import load_body_model
    from fitkit.body.keypoint_formats import get_format
    from fitkit.io.observations import Observations

    model = load_body_model("open", num_betas=10)
    n = 8
    rng = np.random.default_rng(1)
    arrays = {"global_orient": np.tile([np.pi, 0, 0], (n, 1)) + rng.normal(0, 0.3, (n, 3)),
              "body_pose": rng.normal(0, 0.2, (n, 69)), "betas": np.zeros((n, 10)),
              "transl": np.tile([0, 0, 3.0], (n, 1)), "no_evidence": np.zeros(n, bool), "nan": np.zeros(n, bool)}
    fmt = get_format("blazepose33")
    obs = Observations(keypoints=torch.ones(n, len(fmt.names), 3), keypoint_format="blazepose33",
                       image_size=torch.full((n, 2), 1000.0),
                       track_ids=["t"] * n, frame_numbers=list(range(n)))
    settings = quality_settings({"max_facing_change_deg": 20, "max_joint_accel_mm": 50})
    whole = track_quality(model, obs, arrays, settings)
    with torch.no_grad():
        kp = model(*(torch.as_tensor(arrays[k], dtype=model.dtype) for k in ("global_orient", "body_pose", "betas",
                                                                             "transl")),
                   keypoints="blazepose33").keypoints.double().numpy()
    names = list(fmt.names)
    hips = (names.index("left_hip"), names.index("right_hip"))
    prev, nxt = track_neighbours(["t"] * n, None, n)
    np.testing.assert_allclose(whole["quality_facing_change_deg"], facing_numbers(kp, names, prev, nxt), atol=1e-6)
    np.testing.assert_allclose(whole["quality_joint_accel_mm"], motion_numbers(kp, hips, prev, nxt)[1], atol=1e-6)
    # the first batch alone (frames 0-3) has no neighbour for frame 3; the assembled arrays do
    half = _flags_for_rows(kp[:4], names)
    assert np.isnan(half["quality_joint_accel_mm"][3]) and np.isfinite(whole["quality_joint_accel_mm"][3])
    assert whole["quality_ok"].tolist() == (whole["quality_motion_ok"] & whole["quality_facing_ok"]).tolist()
    assert not whole["quality_facing_ok"].all()  # random turns of 0.3 rad: some frames turn > 20 degrees


def _flags_for_rows(kp, names):
    n = len(kp)
    observed = np.ones((n, len(names), 3))
    return quality_flags(observed, observed[..., :2], {"total": np.zeros(n)}, np.zeros(n, bool), np.zeros(n, bool),
                         quality_settings({}), fitted_3d=kp, keypoint_names=names)


def test_shipped_thresholds_flag_large_3d_errors_on_the_dev_set():
    """The video recipe on 30 frames of one dev-set view (P1, cam04): the frames the shipped thresholds
    flag have a larger mean error against the triangulated reference than the frames they pass."""
    import importlib.util
    from pathlib import Path

    from fitkit.body import load_body_model
    from fitkit.fitting.recipe import load_recipe

    path = Path(__file__).resolve().parents[1] / "tools" / "quality_real.py"
    spec = importlib.util.spec_from_file_location("quality_real", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    arrays = tool.fit_view(load_body_model("open", num_betas=10), 1, "cam04", load_recipe("video"), frames=30)
    err, ok = arrays["err_hip_mm"], arrays["quality_ok"]
    scored = np.isfinite(err)
    assert scored.sum() >= 25 and 0 < (~ok[scored]).sum() < scored.sum()
    assert err[scored & ~ok].mean() > 1.3 * err[scored & ok].mean()
    assert not ok[np.nanargmax(err)]  # the worst frame is flagged

def test_3d_disagreement_follows_the_terms_rotation():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    fitted = TORSO[None] + rng.normal(0, 0.05, (2, 5, 3))
    root = fitted[:, :2].mean(1, keepdims=True)
    turn = Rotation.from_euler("y", 150, degrees=True).as_matrix()  # the cue faces another way
    k3 = np.ones((2, 5, 4))
    k3[..., :3] = 0.9 * (fitted - root) @ turn.T
    k3[1, 4, :3] += [0.0, 0.3, 0.0]  # frame 1: the nose disagrees too
    camera = keypoints3d_error_mm(fitted, k3, (0, 1), "camera")
    kabsch = keypoints3d_error_mm(fitted, k3, (0, 1), "kabsch")
    yaw = keypoints3d_error_mm(fitted, k3, (0, 1), "yaw")
    assert camera[0] > 50 and kabsch[0] < 1e-6 and yaw[0] < 1e-6  # a turn about y only: both undo it
    assert kabsch[1] > 10  # a wrong pose still counts
    # the recipe's keypoints3d term decides the alignment unless the quality section names one
    terms = {"k": {"type": "keypoints2d"}, "k3": {"type": "keypoints3d", "rotation": "kabsch"}}
    assert quality_settings({}, terms=terms)["keypoints3d_rotation"] == "kabsch"
    assert quality_settings({}, terms={})["keypoints3d_rotation"] == "camera"
    assert quality_settings({"keypoints3d_rotation": "camera"}, terms=terms)["keypoints3d_rotation"] == "camera"
    flags = _flags(fitted, keypoints3d=k3, quality={"max_keypoints3d_mm": 40, "keypoints3d_rotation": "kabsch"})
    np.testing.assert_allclose(flags["quality_keypoints3d_err_mm"], kabsch)
    with pytest.raises(FitkitError, match=r"r.yaml: quality.keypoints3d_rotation: expected camera, yaw"):
        quality_settings({"keypoints3d_rotation": "full"}, "r.yaml")
    with pytest.raises(ValueError, match="rotation must be"):
        keypoints3d_error_mm(fitted, k3, (0, 1), "full")
