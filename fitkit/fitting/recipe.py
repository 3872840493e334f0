"""Fitting recipes: YAML files that say what to fit, with what, in which order.

A recipe is data only; the engine stays generic. Layout::

    name: smplify_modified
    description: ...
    plugins: [my_package.my_terms]     # optional: modules that register extra terms
    body: {model: open, gender: neutral, num_betas: 10}
    camera: {mode: full, focal: auto}  # see fitkit.fitting.camera_setup
    init: {type: file, transl: auto}   # file | mean | smplr | danet (fitkit.init); auto | keep | torso
    quality: {max_reproj_crop_px: 10}  # optional: pseudo-GT flags (fitkit.eval.quality)
    terms:                             # every term used by any stage, by key
      keypoints: {type: keypoints2d, weight: 5.0, sigma: 100, scale_by_size: true}
      pose:      {type: gmm, weight: 22.85, path: ${FITKIT_PRIORS}/gmm_08.pkl}
    stages:
      - name: camera
        free: [global_orient, transl]
        terms: {keypoints: 1.0}        # key: weight (overrides the term's weight);
                                       # a list of keys keeps the terms' weights
        solver: {type: lm, iterations: 20}
        rotation: axis_angle           # or rot6d (gradient solvers only)
        sequence: false                # true: fit chunks of frames together (below)

A stage with ``sequence: true`` optimizes chunks of consecutive frames of one
track together, with one shape per track, and may use temporal terms (see
:mod:`fitkit.fitting.sequence`); the optional top-level section
``sequence: {chunk: 64, overlap: 8}`` sets the chunking. Temporal terms in a
per-frame stage are refused.

A term's ``type`` is a registered name (:func:`fitkit.terms.base.register_term`);
every other key of a term except ``weight`` goes to its constructor. Weights
scale energies (SPIN's ``pose_prior_weight = 4.78`` is ``weight: 22.85``).
Overrides from the command line use dotted paths with YAML values:
``stages.1.solver.iterations=50``, ``terms.pose.path=/data/gmm_08.pkl``.

Every value is typed and range-checked once, after the overrides, by the rules
of :mod:`fitkit.fitting.recipe_schema` (so an override meets exactly the rules
of the file); errors name the file, the key path and the value. A stage with
``iterations: 0`` only evaluates: it keeps its start and reports its energies.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from fitkit import shipped
from fitkit.fitting.recipe_schema import RecipeError, check_hypotheses, check_solver, check_term_options, check_weight
from fitkit.shipped import NotShippedError

__all__ = ["Recipe", "StageSpec", "RecipeError", "UnknownRecipeError", "load_recipe", "recipe_from_dict",
           "apply_overrides"]

_TOP_KEYS = {"name", "description", "plugins", "body", "camera", "init", "terms", "stages", "quality",
             "sequence", "hypotheses"}
_STAGE_KEYS = {"name", "free", "terms", "solver", "rotation", "sequence"}
_SEQUENCE_KEYS = {"chunk", "overlap"}


class UnknownRecipeError(RecipeError, NotShippedError):
    """No recipe file at that path and no shipped recipe of that name; the message lists the shipped ones."""


@dataclass
class StageSpec:
    """One stage: free parameters, term weights by key, solver spec, rotation form."""

    name: str
    free: list[str]
    terms: dict[str, float]
    solver: dict[str, Any]
    rotation: str = "axis_angle"
    sequence: bool = False


@dataclass
class Recipe:
    name: str
    description: str
    body: dict[str, Any]
    camera: dict[str, Any]
    init: dict[str, Any]
    terms: dict[str, dict[str, Any]]
    stages: list[StageSpec]
    plugins: list[str] = field(default_factory=list)
    source: str = "<dict>"
    sequence: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    #: the checked ``hypotheses:`` section ({} without one; :mod:`fitkit.fitting.hypotheses`)
    hypotheses: dict[str, Any] = field(default_factory=dict)

    def term_args(self, key: str) -> tuple[str, float, dict[str, Any]]:
        """(type, default weight, constructor kwargs) of term ``key``."""
        spec = dict(self.terms[key])
        kind = spec.pop("type")
        weight = float(spec.pop("weight", 1.0))
        return kind, weight, spec

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.data, sort_keys=False)


def _resolve(path_or_name: str | Path) -> Path:
    """A recipe file that exists, else the shipped recipe of that name (``demo``, ``demo.yaml``,
    ``fitting_configs/demo.yaml``, :func:`fitkit.shipped.recipe_path`)."""
    p = Path(path_or_name)
    if p.exists():
        return p
    if not p.is_absolute():
        try:
            return shipped.recipe_path(str(path_or_name))
        except NotShippedError:
            pass
    names = shipped.recipe_names()
    raise UnknownRecipeError(f"{path_or_name}: recipe file not found (shipped recipes: {names})",
                             name=str(path_or_name), shipped=names)


def apply_overrides(data: dict, overrides: Sequence[str], source: str = "<overrides>") -> dict:
    """Set dotted keys (``a.b.0.c=value``, value parsed as YAML) in a copy of ``data``."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source}: override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                try:
                    j = int(part)
                    node[j]
                except (ValueError, IndexError):
                    raise RecipeError(f"{source}: override {key!r}: {part!r} is not an index of a "
                                      f"list of {len(node)}") from None
                if last:
                    node[j] = value
                else:
                    node = node[j]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise RecipeError(f"{source}: override {key!r}: cannot descend into {part!r}")
    return data


def _import_plugin(name: str, source: str) -> None:
    try:
        if name.endswith(".py"):
            path = Path(name)
            if not path.is_absolute() and source not in ("<dict>", "<overrides>"):
                path = Path(source).parent / path
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or not path.exists():
                raise ImportError(f"no such file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    except ImportError as exc:
        raise RecipeError(f"{source}: plugins: cannot import {name!r}: {exc}") from exc


def recipe_from_dict(data: dict, source: str = "<dict>") -> Recipe:
    """Validate a parsed recipe; errors name the source and the key."""
    from fitkit.fitting.params import PARAM_NAMES, ROTATIONS
    from fitkit.terms.base import get_term_class  # late: registers the built-ins

    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping, got {type(data).__name__}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise RecipeError(f"{source}: unknown top-level key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    for plugin in data.get("plugins") or []:
        _import_plugin(str(plugin), source)
    terms = data.get("terms") or {}
    if not isinstance(terms, dict) or not terms:
        raise RecipeError(f"{source}: 'terms' must be a non-empty mapping of key -> {{type: ..., ...}}")
    checked_terms = {}
    for key, spec in terms.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise RecipeError(f"{source}: terms.{key} needs a 'type' (a registered term name)")
        try:
            cls = get_term_class(spec["type"])
        except ValueError as exc:
            raise RecipeError(f"{source}: terms.{key}.type: {exc}") from None
        options = {k: v for k, v in spec.items() if k not in ("type", "weight")}
        checked = {"type": spec["type"]}
        if "weight" in spec:
            checked["weight"] = check_weight(spec["weight"], f"{source}: terms.{key}.weight")
        checked.update(check_term_options(cls, options, f"{source}: terms.{key}"))
        checked_terms[key] = checked
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise RecipeError(f"{source}: 'stages' must be a non-empty list")
    stages = []
    for i, st in enumerate(raw_stages):
        where = f"{source}: stages.{i}"
        if not isinstance(st, dict):
            raise RecipeError(f"{where} must be a mapping")
        unknown = set(st) - _STAGE_KEYS
        if unknown:
            raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_STAGE_KEYS)}")
        st_terms = st.get("terms")
        if isinstance(st_terms, list):
            st_terms = {k: None for k in st_terms}
        if not isinstance(st_terms, dict) or not st_terms:
            raise RecipeError(f"{where}.terms: a non-empty mapping key -> weight (or a list of keys)")
        weights = {}
        for k, w in st_terms.items():
            if k not in terms:
                raise RecipeError(f"{where}.terms: {k!r} is not defined under the recipe's 'terms' "
                                  f"(defined: {sorted(terms)})")
            w = checked_terms[k].get("weight", 1.0) if w is None else check_weight(w, f"{where}.terms.{k}")
            weights[k] = float(w)
        free = st.get("free")
        if not isinstance(free, list) or not free:
            raise RecipeError(f"{where}.free: a non-empty list of parameter names ({list(PARAM_NAMES)})")
        unknown = [f for f in free if f not in PARAM_NAMES]
        if unknown or len(set(free)) != len(free):
            raise RecipeError(f"{where}.free: unknown or repeated parameter(s) {unknown or free}; "
                              f"choose from {list(PARAM_NAMES)}")
        rotation = st.get("rotation", "axis_angle")
        if rotation not in ROTATIONS:
            raise RecipeError(f"{where}.rotation: expected one of {list(ROTATIONS)}, got {rotation!r}")
        solver = check_solver(st.get("solver"), f"{where}.solver")
        seq = st.get("sequence", False)
        if not isinstance(seq, bool):
            raise RecipeError(f"{where}.sequence: true or false, got {seq!r}")
        if not seq:
            temporal = [k for k in weights if weights[k] > 0 and get_term_class(terms[k]["type"]).temporal]
            if temporal:
                raise RecipeError(f"{where}.terms: {temporal} couple frames (temporal terms); they need a "
                                  "sequence stage (sequence: true)")
        stages.append(StageSpec(name=str(st.get("name", f"stage{i}")), free=[str(f) for f in free],
                                terms=weights, solver=solver, rotation=rotation, sequence=seq))
    sequence = data.get("sequence") or {}
    if not isinstance(sequence, dict) or set(sequence) - _SEQUENCE_KEYS:
        raise RecipeError(f"{source}: sequence: a mapping with keys {sorted(_SEQUENCE_KEYS)}, got {sequence!r}")
    from fitkit.fitting.sequence import DEFAULT_CHUNK, DEFAULT_OVERLAP

    sequence = {"chunk": DEFAULT_CHUNK, "overlap": DEFAULT_OVERLAP, **sequence}
    chunk, overlap = sequence["chunk"], sequence["overlap"]
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 2:
        raise RecipeError(f"{source}: sequence.chunk: an integer >= 2 (frames per chunk), got {chunk!r}")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < chunk:
        raise RecipeError(f"{source}: sequence.overlap: an integer in [0, chunk={chunk}), got {overlap!r}")
    return Recipe(name=str(data.get("name", Path(source).stem)), description=str(data.get("description", "")),
                  body=dict(data.get("body") or {}), camera=dict(data.get("camera") or {}),
                  init=dict(data.get("init") or {}), terms=checked_terms,
                  stages=stages, plugins=list(data.get("plugins") or []), source=source, data=data,
                  sequence=sequence,
                  hypotheses=check_hypotheses(data.get("hypotheses"), len(stages), f"{source}: hypotheses"))


def load_recipe(path_or_name: str | Path, overrides: Sequence[str] = (), prior: str | None = None) -> Recipe:
    """Read a recipe file (or a shipped recipe by name), swap its pose prior for the
    preset ``prior`` (:mod:`fitkit.priors.presets`; None keeps the recipe's), then
    apply ``key.path=value`` overrides."""
    path = _resolve(path_or_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc}") from exc
    if prior is not None:
        from fitkit.priors.presets import with_prior  # late: presets imports this module

        data = with_prior(data, prior, str(path))
    data = apply_overrides(data, overrides, str(path))
    return recipe_from_dict(data, str(path))
