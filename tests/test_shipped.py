"""fitkit.shipped: the names it knows are the files in the repository's data folders;
unknown names list the shipped ones; the module stays free of heavy imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fitkit import shipped
from fitkit.errors import FitkitError, ModelFileError
from fitkit.fitting.recipe import RecipeError, UnknownRecipeError, load_recipe
from fitkit.priors.files import PriorFileNotFoundError, resolve_weight_path

REPO = Path(__file__).resolve().parents[1]


def test_names_are_the_files_in_the_data_folders():
    # the oracle: a plain listing of the checkout's folders (the editable install maps them)
    assert shipped.recipe_names() == sorted(p.stem for p in (REPO / "fitting_configs").glob("*.yaml"))
    assert shipped.grid_names() == sorted(p.stem for p in (REPO / "fitting_configs" / "grids").glob("*.yaml"))
    assert shipped.weight_names() == sorted(f"{p.parent.name}/{p.name}" for folder in ("priors", "initializers")
                                            for p in (REPO / folder).iterdir() if p.suffix in (".pt", ".pkl"))
    assert "smplify_modified" in shipped.recipe_names() and "priors/open_gmm_08.pkl" in shipped.weight_names()


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "fitting_configs/demo.yaml"])
def test_recipe_path_spellings(name):
    p = shipped.recipe_path(name)
    assert p.read_bytes() == (REPO / "fitting_configs" / "demo.yaml").read_bytes()


@pytest.mark.parametrize("name", ["small", "small.yaml", "grids/small.yaml", "fitting_configs/grids/small.yaml"])
def test_grid_path_spellings(name):
    assert shipped.grid_path(name).read_bytes() == (REPO / "fitting_configs" / "grids" / "small.yaml").read_bytes()


@pytest.mark.parametrize("name", ["priors/open_gmm_08.pkl", "open_gmm_08.pkl", "open_gmm_08"])
def test_weight_path_spellings(name):
    assert shipped.weight_path(name).read_bytes() == (REPO / "priors" / "open_gmm_08.pkl").read_bytes()
    assert shipped.card_path(name).read_text() == (REPO / "priors" / "open_gmm_08.md").read_text()


def test_initializer_weights_and_cards():
    assert shipped.weight_path("initializers/open_smplr.pt").stat().st_size == \
        (REPO / "initializers" / "open_smplr.pt").stat().st_size
    assert shipped.card_path("open_danet.pt").name == "open_danet.md"


@pytest.mark.parametrize("call, name, listed", [
    (shipped.recipe_path, "smplify_modifed", "smplify_modified"),
    (shipped.grid_path, "no_grid", "seed001_good_init"),
    (shipped.weight_path, "priors/open_smplr.pt", "initializers/open_smplr.pt"),  # right file, wrong folder
    (shipped.weight_path, "gmm_08.pkl", "priors/open_gmm_08.pkl"),
    (shipped.card_path, "open_vposr.pt", "priors/open_vposer.pt"),
])
def test_unknown_names_list_the_shipped_ones(call, name, listed):
    with pytest.raises(shipped.NotShippedError) as err:
        call(name)
    assert isinstance(err.value, FitkitError) and isinstance(err.value, LookupError)
    assert str(err.value).startswith(f"{name}: ") and listed in str(err.value)
    assert listed in err.value.shipped and err.value.name == name


def test_unknown_recipe_in_load_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownRecipeError, match=r"smplify_modifed: recipe file not found \(shipped recipes: "
                                                r"\[.*'smplify_modified'") as err:
        load_recipe("smplify_modifed")
    assert isinstance(err.value, RecipeError) and isinstance(err.value, shipped.NotShippedError)
    with pytest.raises(UnknownRecipeError, match="mine/demo.yaml: recipe file not found"):
        load_recipe("mine/demo.yaml")              # a path that does not exist is not a shipped name
    assert load_recipe("fitting_configs/demo.yaml").name == "demo"   # the repository spelling works anywhere


def test_resolve_weight_path_cwd_first_then_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_weight_path("priors/open_gmm_08.pkl", "GMM") == shipped.weight_path("open_gmm_08.pkl").resolve()
    (tmp_path / "priors").mkdir()
    own = tmp_path / "priors" / "open_gmm_08.pkl"
    own.write_bytes(b"mine")
    assert resolve_weight_path("priors/open_gmm_08.pkl", "GMM") == own.resolve()
    with pytest.raises(PriorFileNotFoundError) as err:
        resolve_weight_path("priors/open_gmm_80.pkl", "GMM weights", hint="train one")
    msg = str(err.value)
    assert msg.startswith("priors/open_gmm_80.pkl: GMM weights not found") and "priors/open_gmm_08.pkl" in msg
    assert str(tmp_path) in msg and msg.endswith("; train one")
    assert isinstance(err.value, ModelFileError) and isinstance(err.value, FileNotFoundError)


def test_shipped_imports_only_the_standard_library():
    """The command line builds its help from fitkit.shipped before importing torch or numpy."""
    code = ("import json, sys, fitkit.shipped as s; s.recipe_names(); s.weight_names(); s.grid_names(); "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {m for m in json.loads(out) if m not in sys.stdlib_module_names}
    # fitkit itself, and the editable install's import hooks (setuptools' finder, distutils shim)
    third_party = {m for m in loaded - {"__main__", "fitkit", "_distutils_hack"} if not m.startswith("__editable__")}
    assert not third_party, third_party
    assert "fitkit" in loaded


def test_compare_finds_shipped_grids_by_name(tmp_path, monkeypatch):
    from fitkit.eval.compare import load_grid

    monkeypatch.chdir(tmp_path)
    assert Path(load_grid("small").source) == shipped.grid_path("small")
    with pytest.raises(FitkitError, match=r"smal: no shipped grid .*'small'.*no grid file smal in"):
        load_grid("smal")
