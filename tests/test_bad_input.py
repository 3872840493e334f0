"""A corpus of bad inputs: every one must stop with a clear error and leave nothing behind.

Each row of :data:`CASES` builds its bad input in a fresh folder, runs it
through ``fitkit.cli.main([...])`` in-process (or calls the API), and checks:

- the exit status is 2 (CLI) or the exception has the expected type (API);
- the message names the file and the field / key path at fault;
- the folder holds nothing new and nothing changed (no output, no partial file);
- no payload ran: malicious pickles (``__reduce__`` calling ``os.system``) and
  YAML tags (``!!python/object/apply:os.system``) would create a marker file.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from fitkit.body import load_body_model
from fitkit.body.synthetic import synthetic_smpl_arrays
from fitkit.cli import main
from fitkit.errors import FitkitError, ModelFileError, ObservationError
from fitkit.eval.synthetic import make_keypoint_example
from fitkit.io.observations import save_observations

RECIPE = """\
name: tiny
body: {model: open, gender: neutral, num_betas: 10}
camera: {mode: full, focal: auto}
init: {transl: auto}
terms:
  torso: {type: keypoints2d, sigma: null, confidence_power: 0, scale_by_size: true,
          only: [right_shoulder, left_shoulder, right_hip, left_hip]}
  keypoints: {type: keypoints2d, weight: 1.0, sigma: 100, confidence_power: 1, scale_by_size: true}
  shape: {type: shape_l2, weight: 1.0}
  near_init: {type: init_l2, weight: 0.001, params: {body_pose: 1.0}}
stages:
  - name: camera
    free: [global_orient, transl]
    terms: {torso: 1.0}
    solver: {type: lm, iterations: 1}
  - name: body
    free: [global_orient, body_pose, betas, transl]
    terms: {keypoints: 1.0, shape: 1.0, near_init: 0.001}
    solver: {type: lbfgs, iterations: 1}
"""


class Payload:
    """Unpickling this runs ``touch marker`` -- unless the loader refuses it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def yaml_bomb(marker: Path) -> str:
    return f"!!python/object/apply:os.system [\"touch {marker}\"]\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good inputs shared by every case: 2 frames of observations, an init, a tiny recipe."""
    root = tmp_path_factory.mktemp("bad_input_world")
    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, 2, seed=7)
    obs = save_observations(root / "obs.npz", ex.observations)
    init = root / "init.npz"
    np.savez(init, **{k: v.numpy() for k, v in ex.init.items()})
    recipe = root / "tiny.yaml"
    recipe.write_text(RECIPE)
    return {"root": root, "obs": obs, "init": init, "recipe": recipe, "init_arrays": {k: v.numpy() for k, v in
                                                                                      ex.init.items()}}


@dataclass
class Ctx:
    """What a case builder sees: the shared world, its own folder and the marker path."""

    world: dict
    tmp: Path

    @property
    def marker(self) -> Path:
        return self.tmp / "PAYLOAD_RAN"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def fit(self, *extra, recipe=None):
        return ["fit", "--recipe", str(recipe or self.world["recipe"]), "--input", str(self.world["obs"]),
                "--output", str(self.out), "--device", "cpu", "--quiet", *extra]

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def init_with(self, name: str, **changes) -> Path:
        arrays = {k: v for k, v in self.world["init_arrays"].items()}
        for k, v in changes.items():
            if v is None:
                arrays.pop(k)
            else:
                arrays[k] = v
        path = self.tmp / name
        if name.endswith(".json"):
            path.write_text(json.dumps({k: np.asarray(v).tolist() for k, v in arrays.items()}))
        else:
            np.savez(path, **arrays)
        return path

    def smpl_dir(self, mutate=None, *, pkl_payload=False) -> Path:
        folder = self.tmp / "models" / "smpl"
        folder.mkdir(parents=True)
        arrays = synthetic_smpl_arrays(300)
        if pkl_payload:
            with open(folder / "SMPL_NEUTRAL.pkl", "wb") as f:
                pickle.dump({**arrays, "v_template": Payload(self.marker)}, f)
        else:
            if mutate is not None:
                mutate(arrays)
            np.savez(folder / "SMPL_NEUTRAL.npz", **arrays)
        return self.tmp / "models"

    def grid(self, **changes) -> Path:
        grid = {"benchmark": {"frames": 2, "difficulty": "medium", "seed": 0, "image_size": [64, 64],
                              "cues": ["keypoints"]},
                "inits": ["benchmark"], "data_terms": {"tiny": str(self.world["recipe"])},
                "priors": ["recipe"], "solvers": {"recipe": None}, "output": str(self.tmp / "cmp")}
        for k, v in changes.items():
            if isinstance(v, dict) and isinstance(grid.get(k), dict):
                grid[k] = {**grid[k], **v}
            else:
                grid[k] = v
        return self.write("grid.yaml", json.dumps(grid))  # JSON is YAML

    def densepose(self, boxes, name="dp.pkl") -> Path:
        path = self.tmp / name
        iuv = [np.zeros((3, 8, 8), np.float32) for _ in range(len(boxes))]
        with open(path, "wb") as f:
            pickle.dump([{"pred_boxes_XYXY": np.asarray(boxes, np.float32), "pred_densepose": iuv}], f)
        return path


@dataclass
class Case:
    """``build(ctx)`` -> CLI argv (a list) or an API call (a callable); ``needles`` must all be in the
    message (``{tmp}`` / ``{recipe}`` / ``{obs}`` are filled in); ``error``: the API's exception type."""

    id: str
    build: Callable[[Ctx], object]
    needles: list[str]
    error: type = FitkitError
    payload: bool = False
    owner: str = ""  # "cli": the CLI engineer's part of issue 16 (see the report)
    extra: dict = field(default_factory=dict)


def _set(*overrides):
    return lambda c: c.fit(*[a for o in overrides for a in ("--set", o)])


def _nan_first(key):
    def mutate(arrays):
        arrays[key] = arrays[key].astype(np.float64)
        arrays[key].flat[0] = np.nan
    return mutate


def _scale(key, factor):
    def mutate(arrays):
        arrays[key] = arrays[key] * factor
    return mutate


def _api_fit_bad_init_l2(c):
    from fitkit.api import fit
    from fitkit.fitting.recipe import recipe_from_dict
    import yaml

    data = yaml.safe_load(RECIPE)
    data["terms"]["near_init"]["params"] = {"pose": 1.0}
    recipe = recipe_from_dict(data, "api_recipe.yaml")
    model = load_body_model("open", num_betas=10)
    ex = make_keypoint_example(model, 2, seed=7)
    return lambda: fit(model, ex.observations, recipe, ex.init)


CASES = [
    # ---- recipe values, from --set (parsed as YAML, then the recipe's own checks)
    Case("weight_nan", _set("terms.keypoints.weight=.nan"), ["{recipe}", "terms.keypoints.weight", "nan"]),
    Case("stage_weight_nan", _set("stages.1.terms.keypoints=.nan"), ["{recipe}", "stages.1.terms.keypoints", "nan"]),
    Case("stage_weight_negative", _set("stages.1.terms.shape=-1"), ["{recipe}", "stages.1.terms.shape", "-1"]),
    Case("weight_string", _set("terms.shape.weight=heavy"), ["{recipe}", "terms.shape.weight", "heavy"]),
    Case("iterations_negative", _set("stages.1.solver.iterations=-1"),
         ["{recipe}", "stages.1.solver.iterations", "-1"]),
    Case("iterations_text", _set("stages.1.solver.iterations=abc"), ["{recipe}", "stages.1.solver.iterations", "abc"]),
    Case("iterations_fraction", _set("stages.0.solver.iterations=2.5"),
         ["{recipe}", "stages.0.solver.iterations", "integer"]),
    Case("iterations_bool", _set("stages.0.solver.iterations=true"), ["{recipe}", "stages.0.solver.iterations"]),
    Case("sigma_nan_text", _set("terms.keypoints.sigma=nan"), ["{recipe}", "terms.keypoints.sigma", "nan"]),
    Case("sigma_nan", _set("terms.keypoints.sigma=.nan"), ["{recipe}", "terms.keypoints.sigma", "nan"]),
    Case("sigma_zero", _set("terms.keypoints.sigma=0"), ["{recipe}", "terms.keypoints.sigma", "> 0"]),
    Case("sigma_inf", _set("terms.keypoints.sigma=.inf"), ["{recipe}", "terms.keypoints.sigma", "inf"]),
    Case("reference_size_negative", _set("terms.keypoints.reference_size=-224"),
         ["{recipe}", "terms.keypoints.reference_size"]),
    Case("bool_option_number", _set("terms.keypoints.scale_by_size=3"), ["{recipe}", "terms.keypoints.scale_by_size"]),
    Case("term_option_misspelt", _set("terms.keypoints.sigmaa=50"), ["{recipe}", "terms.keypoints", "sigmaa"]),
    Case("term_option_nan_nested", _set("terms.near_init.params.body_pose=.nan"),
         ["{recipe}", "terms.near_init.params.body_pose"]),
    Case("term_constructor_check", _set("terms.near_init.params={pose: 1.0}"),
         ["{recipe}", "terms.near_init", "pose"]),
    Case("damping_huge", _set("stages.0.solver.damping=1e30"), ["{recipe}", "stages.0.solver.damping", "1e30"]),
    Case("damping_above_max", _set("stages.0.solver.damping=10.0", "stages.0.solver.max_damping=1.0"),
         ["{recipe}", "stages.0.solver.damping", "max_damping"]),
    Case("lr_zero", _set("stages.1.solver.lr=0"), ["{recipe}", "stages.1.solver.lr"]),
    Case("ftol_negative", _set("stages.1.solver.ftol=-1.0"), ["{recipe}", "stages.1.solver.ftol"]),
    Case("patience_zero", _set("stages.1.solver.patience=0"), ["{recipe}", "stages.1.solver.patience"]),
    Case("max_seconds_zero", _set("stages.1.solver.max_seconds=0"), ["{recipe}", "stages.1.solver.max_seconds"]),
    Case("solver_unknown", _set("stages.1.solver.type=sgd"), ["{recipe}", "stages.1.solver.type", "sgd"]),
    Case("solver_option_of_another", _set("stages.1.solver.damping=1.0"),
         ["{recipe}", "stages.1.solver", "damping", "lbfgs"]),
    Case("free_unknown", _set("stages.1.free=[pose]"), ["{recipe}", "stages.1.free", "pose"]),
    Case("rotation_unknown", _set("stages.1.rotation=quaternion"), ["{recipe}", "stages.1.rotation", "quaternion"]),
    Case("chunk_too_small", _set("sequence.chunk=1"), ["{recipe}", "sequence.chunk"]),
    Case("override_without_value", _set("stages.1.solver.iterations"), ["{recipe}", "stages.1.solver.iterations"]),
    Case("override_bad_index", _set("stages.7.solver.iterations=3"), ["{recipe}", "stages.7"]),
    Case("unknown_top_key", _set("solver=lm"), ["{recipe}", "solver"]),
    Case("plugin_missing", _set("plugins=[no_such_plugin_module_xyz]"), ["{recipe}", "plugins", "no_such_plugin"]),
    # ---- recipe files
    Case("recipe_yaml_tag", lambda c: c.fit(recipe=c.write("tagged.yaml", yaml_bomb(c.marker))),
         ["tagged.yaml", "python/object/apply"], payload=True),
    Case("recipe_missing", lambda c: c.fit(recipe=c.tmp / "nope.yaml"), ["nope.yaml", "not found"]),
    Case("recipe_in_file_nan", lambda c: c.fit(recipe=c.write("nan.yaml", RECIPE.replace(
        "keypoints: 1.0, shape", "keypoints: .nan, shape"))), ["nan.yaml", "stages.1.terms.keypoints"]),
    # ---- init files
    Case("init_misspelt_key", lambda c: c.fit("--init", str(c.init_with("init.npz", body_poses=np.zeros((2, 69)),
                                                                       body_pose=None))),
         ["init.npz", "body_poses", "body_pose"]),
    Case("init_misspelt_key_json", lambda c: c.fit("--init", str(c.init_with("init.json", betaz=np.zeros((2, 10)),
                                                                            betas=None))),
         ["init.json", "betaz", "betas"]),
    Case("init_pickled_object", lambda c: c.fit("--init", str(c.init_with(
        "init.npz", body_pose=np.array([Payload(c.marker)], dtype=object)))), ["init.npz"], payload=True),
    Case("init_raw_pickle", lambda c: c.fit("--init", str(_dump(c.tmp / "init.pkl", {"body_pose": Payload(c.marker)}))),
         ["init.pkl"], payload=True),
    Case("init_nan", lambda c: c.fit("--init", str(c.init_with("init.npz", betas=np.full((2, 10), np.nan)))),
         ["init.npz", "betas", "NaN"]),
    Case("init_frame_count", lambda c: c.fit("--init", str(c.init_with("init.npz", **{
        k: v[:1] for k, v in c.world["init_arrays"].items()}))), ["init.npz", "frames"]),
    Case("init_text_field", lambda c: c.fit("--init", str(c.write("init.json", json.dumps({"body_pose": "zero"})))),
         ["init.json", "body_pose"]),
    # ---- observation files
    Case("obs_pickled_object", lambda c: ["fit", "--recipe", str(c.world["recipe"]), "--input",
                                          str(_npz(c.tmp / "obs.npz", keypoints=np.array([Payload(c.marker)],
                                                                                        dtype=object))),
                                          "--output", str(c.out), "--quiet"], ["obs.npz"], payload=True),
    Case("obs_missing", lambda c: ["fit", "--recipe", str(c.world["recipe"]), "--input", str(c.tmp / "none.npz"),
                                   "--output", str(c.out), "--quiet"], ["none.npz"]),
    # ---- model files (fitkit fit --model smpl)
    Case("model_v_template_huge", lambda c: c.fit("--model", "smpl", "--model-dir", str(c.smpl_dir(
        _scale("v_template", 1e30)))), ["SMPL_NEUTRAL.npz", "v_template"]),
    Case("model_shapedirs_nan", lambda c: c.fit("--model", "smpl", "--model-dir", str(c.smpl_dir(
        _nan_first("shapedirs")))), ["SMPL_NEUTRAL.npz", "shapedirs", "NaN"]),
    Case("model_not_smpl_mesh", lambda c: c.fit("--model", "smpl", "--model-dir", str(c.smpl_dir())),
         ["SMPL_NEUTRAL.npz", "300 vertices", "6890"]),
    Case("model_pickle_payload", lambda c: c.fit("--model", "smpl", "--model-dir", str(c.smpl_dir(pkl_payload=True))),
         ["SMPL_NEUTRAL.pkl"], payload=True),
    # ---- fitkit compare grids
    Case("grid_frames_zero", lambda c: ["compare", "--grid", str(c.grid(benchmark={"frames": 0}))],
         ["grid.yaml", "benchmark.frames"]),
    Case("grid_unknown_solver", lambda c: ["compare", "--grid", str(c.grid(solvers={"fast": {"type": "sgd"}}))],
         ["grid.yaml", "solvers.fast", "sgd"]),
    Case("grid_bad_override", lambda c: ["compare", "--grid", str(c.grid(set=["stages.1.solver.iterations=-1"]))],
         ["grid.yaml", "stages.1.solver.iterations"]),
    Case("grid_damping_huge", lambda c: ["compare", "--grid", str(c.grid(solvers={"lm": {"type": "lm",
                                                                                          "damping": 1e30}}))],
         ["grid.yaml", "solvers", "damping"]),
    Case("grid_bad_difficulty", lambda c: ["compare", "--grid", str(c.grid(benchmark={"difficulty": "brutal"}))],
         ["grid.yaml", "benchmark", "brutal"]),
    Case("grid_yaml_tag", lambda c: ["compare", "--grid", str(c.write("grid.yaml", yaml_bomb(c.marker)))],
         ["grid.yaml", "python/object/apply"], payload=True),
    # ---- fitkit import
    Case("import_pickle_payload", lambda c: ["import", str(_dump(c.tmp / "pred.pkl", {"pred_pose": Payload(c.marker)})),
                                             "-o", str(c.tmp / "init_out.npz"), "--image-size", "64", "64"],
         ["pred.pkl"], payload=True),
    Case("import_missing", lambda c: ["import", str(c.tmp / "absent.npz"), "-o", str(c.tmp / "init_out.npz"),
                                      "--image-size", "64", "64"], ["absent.npz"]),
    # ---- fitkit demo
    Case("demo_bad_override", lambda c: ["demo", "--frames", "2", "-o", str(c.out), "--set",
                                         "stages.1.solver.iterations=-1"], ["demo.yaml", "stages.1.solver.iterations"]),
    Case("demo_frames_negative", lambda c: ["demo", "--frames", "-3", "-o", str(c.out)], ["--frames"], owner="cli"),
    Case("demo_noise_huge", lambda c: ["demo", "--frames", "2", "--noise-px", "1e30", "-o", str(c.out)],
         ["--noise-px"], owner="cli"),
    # ---- fitkit fit options (the CLI engineer's part)
    Case("batch_size_zero", lambda c: c.fit("--batch-size", "0"), ["--batch-size"], owner="cli"),
    Case("batch_size_negative", lambda c: c.fit("--batch-size", "-4"), ["--batch-size"], owner="cli"),
    Case("output_is_a_file", lambda c: c.fit() if c.write("out", "not a folder") else None, ["{tmp}/out"],
         owner="cli"),
    # ---- API
    Case("api_recipe_weight_nan", lambda c: lambda: _recipe_from_dict_with("terms.shape.weight", float("nan")),
         ["api.yaml", "terms.shape.weight"]),
    Case("api_recipe_iterations_float", lambda c: lambda: _recipe_from_dict_with("stages.1.solver.iterations", 2.0),
         ["api.yaml", "stages.1.solver.iterations"]),
    Case("api_load_params_misspelt", lambda c: _calls("fitkit.io.params", "load_params", c.init_with(
        "i.npz", global_orientation=np.zeros((2, 3)))), ["i.npz", "global_orientation"]),
    Case("api_term_constructor", _api_fit_bad_init_l2, ["api_recipe.yaml", "terms.near_init", "pose"]),
    Case("api_densepose_nan_box", lambda c: _calls("fitkit.io.iuv_readers", "read_densepose_results",
                                                   c.densepose([[np.nan, 0, 8, 8]])),
         ["dp.pkl", "pred_boxes_XYXY", "nan"], error=ObservationError),
    Case("api_densepose_huge_box", lambda c: _calls("fitkit.io.iuv_readers", "read_densepose_results",
                                                    c.densepose([[0, 0, 1e30, 8]])),
         ["dp.pkl", "pred_boxes_XYXY"], error=ObservationError),
    Case("api_densepose_inverted_box", lambda c: _calls("fitkit.io.iuv_readers", "read_densepose_results",
                                                        c.densepose([[8, 0, 0, 8]])),
         ["dp.pkl", "pred_boxes_XYXY", "x1 >= x0"], error=ObservationError),
    Case("api_densepose_payload", lambda c: _calls("fitkit.io.iuv_readers", "read_densepose_results", _dump(
        c.tmp / "dp.pkl", [{"pred_boxes_XYXY": Payload(c.marker), "pred_densepose": []}])),
         ["dp.pkl"], error=ObservationError, payload=True),
    Case("api_paste_nan_box", lambda c: _calls("fitkit.io.iuv_readers", "paste_box_iuv", (16, 16),
                                               [[0, 0, np.nan, 4]], [np.zeros((3, 4, 4))]),
         ["paste_box_iuv", "boxes"], error=ObservationError),
    Case("api_model_posedirs_huge", lambda c: _calls("fitkit.body.model_files", "load_model_arrays", c.smpl_dir(
        _scale("posedirs", 1e9)) / "smpl" / "SMPL_NEUTRAL.npz"), ["SMPL_NEUTRAL.npz", "posedirs"],
         error=ModelFileError),
    Case("api_load_recipe_tag", lambda c: _calls("fitkit.fitting.recipe", "load_recipe",
                                                 c.write("t.yaml", yaml_bomb(c.marker))),
         ["t.yaml"], payload=True),
    Case("api_load_grid_tag", lambda c: _calls("fitkit.eval.compare", "load_grid",
                                               c.write("g.yaml", yaml_bomb(c.marker))),
         ["g.yaml", "cannot read the grid"], payload=True),
]


def _calls(module: str, name: str, *args):
    """The deferred call ``module.name(*args)`` (its inputs already written)."""
    import importlib

    fn = getattr(importlib.import_module(module), name)
    return lambda: fn(*args)


def _recipe_from_dict_with(key: str, value):
    """recipe_from_dict on the tiny recipe with one entry (a dotted path) replaced."""
    import yaml

    from fitkit.fitting.recipe import recipe_from_dict

    data = yaml.safe_load(RECIPE)
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return recipe_from_dict(data, "api.yaml")


def _dp():
    from fitkit.io import iuv_readers

    return iuv_readers


def _dump(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> content hash of every file under ``folder`` (folders as '<dir>')."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
    return out


def test_the_corpus_is_large_and_named():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_good_inputs_fit(world, tmp_path):
    """The world's inputs are fine: each case fails for its own bad input only."""
    out = tmp_path / "out"
    assert main(["fit", "--recipe", str(world["recipe"]), "--input", str(world["obs"]), "--init", str(world["init"]),
                 "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    assert (out / "result.npz").is_file()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative path anything writes lands where the snapshot sees it
    ctx = Ctx(world, tmp_path)
    action = case.build(ctx)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    if callable(action):
        with pytest.raises(case.error) as info:
            action()
        message = str(info.value)
    else:
        try:
            rc = main(list(action))
        except SystemExit as exc:  # argparse refuses an option value (exit status 2, usage on stderr)
            rc = exc.code
        captured = capsys.readouterr()
        message = captured.err + captured.out
        assert rc == 2, f"exit status {rc}, output:\n{message}"
    needles = [n.format(tmp=tmp_path, recipe=world["recipe"], obs=world["obs"]) for n in case.needles]
    missing = [n for n in needles if n.lower() not in message.lower()]
    assert not missing, f"{missing} not in the message:\n{message}"
    assert "Traceback" not in message
    assert not ctx.marker.exists(), "the payload ran"
    after = _snapshot(tmp_path)
    assert after == before, f"files left or changed: {sorted(set(after.items()) ^ set(before.items()))}"
