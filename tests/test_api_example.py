"""examples/fit_from_python.py runs, its outcomes are real, and docs/api.md shows its code.

The example is run once per module (from a folder that is not the checkout, to
show it does not depend on the current folder) and its returned values are
checked against independent computations: a numpy projection for the 2D
error, the written files read back with numpy and a plain-text .obj parser,
and ``fitkit fit`` on the same files for the result file.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fit_from_python.py"
DOC = REPO / "docs" / "api.md"
#: the first line of a docs/api.md code block that the example does not contain
NOT_RUN = "# not run by the example"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("fit_from_python", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    elsewhere = tmp_path_factory.mktemp("cwd")
    out = tmp_path_factory.mktemp("example") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(elsewhere)
            got = module.main([str(out)])
    finally:
        torch.set_num_threads(threads)
    assert not any(elsewhere.iterdir()), "the example wrote into the current folder"
    return got


def test_the_fit_lowers_the_error_against_the_ground_truth(run):
    m = run["metrics"]
    start, fitted = m["start: init file"], m["fit from init file"]
    assert fitted["mpjpe_mm"] < 0.5 * start["mpjpe_mm"]
    assert fitted["pve_mm"] < 0.5 * start["pve_mm"]
    assert fitted["pa_mpjpe_mm"] < 0.7 * start["pa_mpjpe_mm"]
    assert fitted["err2d_px"] < 0.2 * start["err2d_px"]
    for name in ("fit from default start", "fit from SMPLR", "fit from init file, cnf"):
        assert np.isfinite(list(m[name].values())).all()
        assert m[name]["mpjpe_mm"] < 0.8 * start["mpjpe_mm"], name
        assert m[name]["err2d_px"] < 10.0, name
    # the OpenPose folder carries no camera; the default one is the synthetic camera, so the fit is the same
    assert m["fit of OpenPose folder"]["mpjpe_mm"] == pytest.approx(fitted["mpjpe_mm"], abs=0.5)


def test_the_three_readers_give_the_same_keypoints(run):
    obs = run["observations"]
    for other in ("openpose", "npy"):
        assert obs[other].keypoint_format == "body25"
        assert torch.allclose(obs[other].keypoints, obs["npz"].keypoints, atol=1e-4)
        assert obs[other].intrinsics is None  # neither format stores a camera
    assert obs["openpose"].frame_ids == obs["npz"].frame_ids
    assert obs["npz"].intrinsics.shape == (8, 3, 3)


def test_flags_and_arrays_have_one_row_per_frame(run):
    n = 8
    for name, flag in run["flags"].items():
        assert flag.shape == (n,) and flag.dtype == torch.bool, name
    assert not run["flags"]["nan"].any() and not run["flags"]["no_evidence"].any()
    a = run["arrays"]
    shapes = {"global_orient": (n, 3), "body_pose": (n, 69), "betas": (n, 10), "transl": (n, 3),
              "intrinsics": (n, 3, 3), "image_size": (n, 2), "iterations": (n, 2), "err2d_px": (n,),
              "reproj_err_crop_px": (n,), "energy_total": (n,), "energy_keypoints": (n,), "frame_ids": (n,)}
    for k, shape in shapes.items():
        assert a[k].shape == shape, k
    for k in ("converged", "nan", "no_evidence", "quality_ok", "quality_reprojection_ok", "quality_prior_ok"):
        assert a[k].shape == (n,) and a[k].dtype == bool, k
    np.testing.assert_array_equal(a["quality_ok"], a["quality_reprojection_ok"] & a["quality_prior_ok"]
                                  & ~a["no_evidence"] & ~a["nan"])
    terms = a["energy_keypoints"] + a["energy_pose"] + a["energy_shape"]
    np.testing.assert_allclose(a["energy_total"], terms, rtol=1e-5)


def test_err2d_matches_a_numpy_projection(run):
    from fitkit.body import load_body_model

    a = run["arrays"]
    model = load_body_model("open", num_betas=10)
    p = {k: torch.as_tensor(a[k]) for k in ("global_orient", "body_pose", "betas", "transl")}
    kp = model(**p, keypoints="body25").keypoints.numpy().astype(np.float64)  # (N, 25, 3) camera frame
    uvw = np.einsum("nij,nkj->nki", a["intrinsics"].astype(np.float64), kp)
    uv = uvw[..., :2] / uvw[..., 2:]
    obs = run["observations"]["npz"].keypoints.numpy().astype(np.float64)
    seen = obs[..., 2] > 0
    dist = np.linalg.norm(uv - obs[..., :2], axis=-1)
    expected = (dist * seen).sum(1) / seen.sum(1)
    np.testing.assert_allclose(a["err2d_px"], expected, rtol=1e-4, atol=1e-3)


def test_the_written_files_load_back(run):
    params = run["params"]
    with np.load(run["result_file"], allow_pickle=False) as saved:
        for k, v in params.items():
            np.testing.assert_array_equal(saved[k], v)
        assert str(saved["schema"]) == "fitkit.result/1"
        assert str(saved["recipe_name"]) == "demo" and str(saved["body_model"]) == "open"
        assert str(saved["keypoint_format"]) == "body25"
        assert saved["stage_names"].tolist() == ["camera", "body"]
        assert saved["frame_ids"].tolist() == run["observations"]["npz"].frame_ids
    for k, v in params.items():
        np.testing.assert_array_equal(run["loaded"][k], v)
        np.testing.assert_allclose(run["loaded_as_init"][k], v)
    # plain smplx poses the saved parameters into the same mesh as fitkit
    assert torch.allclose(run["smplx_vertices"], run["vertices"], atol=1e-5)
    text = Path(run["mesh_file"]).read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:]] for line in text if line.startswith("v ")])
    f = [line for line in text if line.startswith("f ")]
    np.testing.assert_allclose(v, run["vertices"][0].numpy(), atol=2e-6)
    assert len(f) == 27420


def test_save_fit_writes_what_fitkit_fit_writes(run, tmp_path):
    """The same files through the command line: the same entries, the same numbers."""
    from fitkit.cli import main

    out = Path(run["output"])
    code = main(["fit", "--recipe", "demo", "--set", "stages.1.solver.iterations=40", "--input",
                 str(out / "observations.npz"), "--init", str(out / "regressor_init.npz"), "-o",
                 str(tmp_path / "cli"), "--device", "cpu"])
    assert code == 0
    with np.load(tmp_path / "cli" / "result.npz") as c, np.load(run["result_file"]) as a:
        cli, api = dict(c), dict(a)
    # fit_seconds: wall time of the command, which a Python caller measures itself
    assert set(cli) - set(api) <= {"fit_seconds"}
    assert set(api) <= set(cli)
    for k in api:
        if k in ("stage_seconds",):
            assert api[k].shape == cli[k].shape
        elif api[k].dtype.kind in "fc":
            np.testing.assert_allclose(api[k], cli[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(api[k], cli[k], err_msg=k)


def _code_lines(text: str) -> list[str]:
    """The code of each line (comments after two spaces and '#' dropped), blank and comment lines left out."""
    out = []
    for line in text.splitlines():
        code = line.split("  #")[0].strip()
        if code and not code.startswith("#"):
            out.append(code)
    return out


def test_docs_api_md_shows_the_example_code():
    doc = DOC.read_text(encoding="utf-8")
    example = set(_code_lines(EXAMPLE.read_text(encoding="utf-8")))
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    checked = [b for b in blocks if not b.startswith(NOT_RUN)]
    assert len(checked) >= 6, "docs/api.md lost its code blocks"
    missing = [line for b in checked for line in _code_lines(b) if line not in example]
    assert not missing, f"lines of docs/api.md not in examples/fit_from_python.py: {missing}"
    for link in ("fitting.md", "observations.md", "priors.md", "init.md"):
        assert f"({link}" in doc, link
