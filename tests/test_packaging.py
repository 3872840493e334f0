"""The wheel works outside the checkout: it carries the recipes, grids, open weights,
model cards, LICENSE and NOTICE, and `fitkit demo` / `fitkit fit` run from it.

The wheel is built with the dev environment's setuptools (no build isolation, no
network) from a copy of the files the build reads, then installed without
dependencies into a fresh venv whose third-party packages come from the dev
environment through a .pth file. Only `fitkit` itself comes from the wheel.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: what the build reads (pyproject.toml, setup.py and the folders setup.py maps)
BUILD_INPUTS = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "NOTICE", "MANIFEST.in",
                "fitkit", "fitting_configs", "priors", "initializers"]
#: top-level folder -> where setup.py puts it in the wheel
SHIPPED = {"fitting_configs": "fitkit/_shipped/fitting_configs", "priors": "fitkit/_shipped/priors",
           "initializers": "fitkit/_shipped/initializers"}

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pip") is None or importlib.util.find_spec("venv") is None,
    reason="needs pip and venv in the test environment")


def _run(cmd, cwd, env=None, timeout=120):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout's build inputs (so no build/ or egg-info
    is written into the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in BUILD_INPUTS:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=ignore)
        elif p.is_file():
            shutil.copy2(p, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", root / "dist", src], cwd=root)
    wheels = list((root / "dist").glob("fitkit-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no deps); the rest comes from the dev env."""
    root = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=root.parent).strip())
    (site / "fitkit_dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=root.parent)
    return root


@pytest.fixture
def outside(tmp_path) -> tuple[Path, dict]:
    """A working folder outside the checkout and an environment that cannot see the checkout."""
    assert REPO not in tmp_path.resolve().parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FITKIT_PRIORS", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    return tmp_path, env


def test_wheel_carries_the_shipped_files_and_licences(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        assert f"{dist_info}/licenses/LICENSE" in names and f"{dist_info}/licenses/NOTICE" in names
        assert "Apache License" in z.read(f"{dist_info}/licenses/LICENSE").decode()
        assert "CC0" in z.read(f"{dist_info}/licenses/NOTICE").decode()
        # every data file of the three folders, byte for byte, and nothing else in their place
        for folder, target in SHIPPED.items():
            expected = {p.relative_to(REPO / folder).as_posix(): p for p in (REPO / folder).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts}
            shipped = {n[len(target) + 1:] for n in names if n.startswith(target + "/")}
            assert shipped == set(expected), (folder, sorted(shipped ^ set(expected)))
            for rel, p in expected.items():
                assert _sha(z.read(f"{target}/{rel}")) == _sha(p.read_bytes()), rel
        for must in ["fitkit/_shipped/fitting_configs/demo.yaml", "fitkit/_shipped/fitting_configs/grids/small.yaml",
                     "fitkit/_shipped/priors/open_gmm_08.pkl", "fitkit/_shipped/priors/open_gmm_08.md",
                     "fitkit/_shipped/initializers/open_smplr.pt", "fitkit/_shipped/initializers/open_smplr.md",
                     "fitkit/_shipped/initializers/open_smplr.pt.metrics.json",
                     "fitkit/assets/open_body/open_body.npz", "fitkit/assets/pose_data/NOTICE"]:
            assert must in names, must
        metadata = z.read(f"{dist_info}/METADATA").decode()
    import fitkit

    assert f"Version: {fitkit.__version__}" in metadata
    assert "Requires-Dist: matplotlib" in metadata and "License-Expression: Apache-2.0" in metadata


def test_installed_wheel_runs_demo_and_fit_outside_the_checkout(venv, outside):
    from fitkit.body import load_body_model
    from fitkit.eval.synthetic import make_keypoint_example
    from fitkit.io.observations import save_observations
    from fitkit.io.params import load_result

    cwd, env = outside
    python, fitkit_cli = venv / "bin" / "python", venv / "bin" / "fitkit"
    # the package, its recipes and weights are the venv's copies, not the checkout's
    where = _run([python, "-c", "import fitkit, fitkit.shipped as s; print(fitkit.__file__); "
                  "print(s.recipe_path('demo')); print(s.weight_path('priors/open_gmm_08.pkl')); "
                  "print(s.card_path('open_smplr.pt'))"], cwd=cwd, env=env).split()
    assert len(where) == 4
    for p in where:
        assert venv.resolve() in Path(p).resolve().parents, p

    assert "smplify_modified" in _run([fitkit_cli, "fit", "--help"], cwd=cwd, env=env)  # help lists the recipes
    out = _run([fitkit_cli, "demo", "--frames", "2"], cwd=cwd, env=env, timeout=60)
    assert "after" in out and "MPJPE" in out

    model = load_body_model("open", num_betas=10)
    obs = save_observations(cwd / "obs.npz", make_keypoint_example(model, 2, noise_px=1.0, seed=3).observations)
    # --recipe is the option's name today (--config is kept as an alias)
    _run([fitkit_cli, "fit", "--recipe", "smplify_modified", "--prior", "gmm", "--input", obs, "-o", cwd / "OUT",
          "--device", "cpu", "--quiet", "--set", "stages.0.solver.iterations=20",
          "--set", "stages.1.solver.iterations=20"], cwd=cwd, env=env, timeout=60)
    res = load_result(cwd / "OUT" / "result.npz")
    assert res["body_pose"].shape == (2, 69) and np.isfinite(res["body_pose"]).all()
    assert str(res["recipe_name"]) == "smplify_modified" and (res["iterations"] > 0).all()
    assert not (cwd / "fitting_configs").exists() and not (cwd / "priors").exists()
