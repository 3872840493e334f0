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
