"""Type and range rules for the values of a recipe (file or ``--set`` override alike).

:func:`fitkit.fitting.recipe.recipe_from_dict` calls these checks on every
recipe, after the overrides are applied, so a value given on the command line
goes through exactly the rules of the same value in the file. Every error is a
:class:`RecipeError` whose message reads ``<recipe file>: <key path>: expected
..., got <value>`` (e.g. ``demo.yaml: stages.1.solver.iterations: expected an
integer >= 0, got -1``).

Rules (also in docs/fitting.md, "Recipe validation"):

- A number is an int or a float, never a bool or a string; a string in
  exponent notation such as ``1e-3`` is read as a float (PyYAML reads an
  unquoted ``1e-3`` as a string, YAML 1.2 as a number). NaN and infinities are
  refused everywhere in the ``terms`` and ``stages`` sections.
- Term and stage weights: finite and >= 0.
- Solver options (:data:`SOLVER_RULES`), by name, for the built-in solvers;
  unknown options and unknown solver types are refused here (a plugin solver
  registered with :func:`fitkit.solvers.register_solver` gets the common rules).
- Term options: first the names (:func:`term_option_rule`): ``sigma`` and
  ``*_sigma`` null or > 0; ``scale``, ``*_scale`` and ``*_size`` > 0; ``*_px``
  and ``*_weight`` >= 0; a mapping named ``weights`` maps names to numbers >= 0.
  Then the term class's constructor: unknown options are refused, and an
  option whose annotation (or default) is a plain scalar type (bool, int,
  float, str, optionally None) must have that type. The constructor's own
  checks run when the engine builds the term; their errors are prefixed with
  the recipe file and ``terms.<key>`` there.
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any, Mapping

from fitkit.errors import FitkitError

__all__ = ["RecipeError", "Rule", "SOLVER_RULES", "COMMON_SOLVER_RULES", "number", "check_weight",
           "check_hypotheses", "HYPOTHESES_DEFAULTS", "check_quality", "QUALITY_RULES",
           "check_solver", "check_term_options", "term_option_rule"]


class RecipeError(FitkitError, ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


# a float in exponent notation without a dot, which PyYAML (YAML 1.1) leaves a string
_EXPONENT_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class Rule:
    """A numeric rule: integer or real, bounds (open or closed), None allowed or not.

    ``Rule(lo=0, lo_open=True)`` reads "a finite number > 0".
    """

    def __init__(self, *, integer: bool = False, lo: float | None = None, lo_open: bool = False,
                 hi: float | None = None, hi_open: bool = False, none_ok: bool = False):
        self.integer, self.lo, self.lo_open, self.hi, self.hi_open = integer, lo, lo_open, hi, hi_open
        self.none_ok = none_ok

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            text = f"{kind} in {left}{self.lo:g}, {self.hi:g}{right}"
        elif self.lo is not None:
            text = f"{kind} {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{kind} {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = kind
        return text + (" or null" if self.none_ok else "")

    def check(self, value: Any, where: str):
        """The value as int/float (None where allowed); RecipeError ``where: expected ...``."""
        if value is None and self.none_ok:
            return None
        v = _as_number(value)
        ok = v is not None and math.isfinite(v)
        if ok and self.integer:
            ok = isinstance(v, int)
        if ok and self.lo is not None:
            ok = v > self.lo if self.lo_open else v >= self.lo
        if ok and self.hi is not None:
            ok = v < self.hi if self.hi_open else v <= self.hi
        if not ok:
            raise RecipeError(f"{where}: expected {self.describe()}, got {value!r}")
        return v


def _as_number(value: Any) -> int | float | None:
    """int/float as is, an exponent-notation string as float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if hasattr(value, "dtype") and getattr(value, "shape", None) == ():  # numpy scalars from the API
        return _as_number(value.item())
    if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
        return float(value)
    return None


def number(value: Any, where: str, **rule) -> int | float | None:
    """Check ``value`` against ``Rule(**rule)``; returns the number."""
    return Rule(**rule).check(value, where)


_WEIGHT = Rule(lo=0.0)


def check_weight(value: Any, where: str) -> float:
    """A term or stage weight: a finite number >= 0, returned as float."""
    return float(_WEIGHT.check(value, where))


#: Options every solver has (:class:`fitkit.solvers.base.Solver`).
COMMON_SOLVER_RULES: dict[str, Rule] = {
    "iterations": Rule(integer=True, lo=0),          # 0: evaluate only (the engine skips the solver)
    "max_seconds": Rule(lo=0.0, lo_open=True, none_ok=True),
    "ftol": Rule(lo=0.0, hi=1.0, hi_open=True),
    "patience": Rule(integer=True, lo=1),
}

#: Per-solver options (besides the common ones): ranges where the solver does what its
#: docstring says. ``damping`` also has to stay below ``max_damping`` (checked apart).
SOLVER_RULES: dict[str, dict[str, Rule]] = {
    "adam": {"lr": Rule(lo=0.0, lo_open=True, hi=10.0),
             "eps": Rule(lo=0.0, lo_open=True, hi=1.0)},
    "lbfgs": {"history": Rule(integer=True, lo=1, hi=1000),
              "lr": Rule(lo=0.0, lo_open=True, hi=1e3),
              "max_line_search": Rule(integer=True, lo=1, hi=100),
              "c1": Rule(lo=0.0, lo_open=True, hi=1.0, hi_open=True),
              "gtol": Rule(lo=0.0)},
    "lm": {"damping": Rule(lo=0.0, lo_open=True, hi=1e6),
           "min_diag": Rule(lo=0.0, lo_open=True, hi=1e6),
           "xtol": Rule(lo=0.0),
           "max_damping": Rule(lo=0.0, lo_open=True, hi=1e30)},
}
_ADAM_BETA = Rule(lo=0.0, hi=1.0, hi_open=True)


def check_solver(spec: Any, where: str) -> dict:
    """A stage's ``solver:`` mapping, checked and with numbers normalised.

    Args:
        spec: ``{'type': name, **options}``.
        where: ``"<file>: stages.<i>.solver"``.
    Returns:
        the mapping to give :func:`fitkit.solvers.make_solver`.
    """
    from fitkit.solvers import SOLVERS

    if not isinstance(spec, Mapping) or "type" not in spec:
        raise RecipeError(f"{where}: a mapping with a 'type' ({', '.join(sorted(SOLVERS))}), got {spec!r}")
    kind = spec["type"]
    if kind not in SOLVERS:
        raise RecipeError(f"{where}.type: unknown solver {kind!r}; choose from {sorted(SOLVERS)}")
    cls = SOLVERS[kind]
    known = {**cls.common, **cls.defaults}
    unknown = sorted(set(spec) - set(known) - {"type"})
    if unknown:
        raise RecipeError(f"{where}: unknown option(s) {unknown} for solver {kind!r}; known: {sorted(known)}")
    rules = {**COMMON_SOLVER_RULES, **SOLVER_RULES.get(kind, {})}
    out = {"type": kind}
    for name, value in spec.items():
        if name == "type":
            continue
        if name in rules:
            out[name] = rules[name].check(value, f"{where}.{name}")
        elif kind == "adam" and name == "betas":
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise RecipeError(f"{where}.betas: expected two numbers in [0, 1), got {value!r}")
            out[name] = tuple(_ADAM_BETA.check(b, f"{where}.betas.{j}") for j, b in enumerate(value))
        else:
            out[name] = _finite_everywhere(value, f"{where}.{name}")
    if kind == "lm":
        damping = out.get("damping", known["damping"])
        top = out.get("max_damping", known["max_damping"])
        if not damping < top:
            raise RecipeError(f"{where}.damping: expected less than max_damping = {top:g} (LM stops as soon "
                              f"as its damping exceeds max_damping), got {damping!r}")
    return out


def _finite_everywhere(value: Any, where: str) -> Any:
    """Refuse NaN/inf floats anywhere inside ``value`` (lists and mappings included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{where}: expected a finite number, got {value!r}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _finite_everywhere(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for j, v in enumerate(value):
            _finite_everywhere(v, f"{where}.{j}")
    return value


# ---------------------------------------------------------------- term options

_SIGMA = Rule(lo=0.0, lo_open=True, none_ok=True)
_POSITIVE = Rule(lo=0.0, lo_open=True)
_NON_NEGATIVE = Rule(lo=0.0)


def term_option_rule(name: str) -> Rule | None:
    """The numeric rule the option's name implies, or None (see the module doc)."""
    if name == "sigma" or name.endswith("_sigma"):
        return _SIGMA
    if name == "scale" or name.endswith("_scale") or name.endswith("_size"):
        return _POSITIVE
    if name.endswith("_px") or name.endswith("_weight"):
        return _NON_NEGATIVE
    return None


_SCALARS = {"bool": bool, "int": int, "float": float, "str": str}


def _scalar_types(param: inspect.Parameter) -> tuple[set, bool] | None:
    """(allowed scalar type names, None allowed) of a constructor parameter, or None when its
    annotation is not made of plain scalars only (then nothing is checked)."""
    ann = param.annotation
    if ann is inspect.Parameter.empty:
        default = param.default
        if default is inspect.Parameter.empty or default is None:
            return None
        name = type(default).__name__
        return ({name}, False) if name in _SCALARS else None
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    tokens = set(re.findall(r"[A-Za-z_][A-Za-z_0-9.]*", text))
    none_ok = "None" in tokens or param.default is None
    tokens.discard("None")
    if not tokens or not tokens <= set(_SCALARS):
        return None
    return tokens, none_ok


def _has_type(value: Any, allowed: set) -> bool:
    if isinstance(value, bool):
        return "bool" in allowed
    if isinstance(value, int):
        return bool(allowed & {"int", "float"})
    if isinstance(value, float):
        return "float" in allowed
    if isinstance(value, str):
        return "str" in allowed or ("float" in allowed and _as_number(value) is not None)
    return False


def check_term_options(cls: type, options: Mapping[str, Any], where: str) -> dict:
    """A term's constructor options (its spec without ``type`` and ``weight``), checked.

    Args:
        cls: the registered term class.
        options: name -> value from the recipe.
        where: ``"<file>: terms.<key>"``.
    Returns:
        the options with numbers normalised (exponent-notation strings -> float).
    """
    open_kwargs = False
    if cls.__init__ is object.__init__:  # a term without a constructor takes no options
        params = {}
    else:
        try:
            params = dict(inspect.signature(cls.__init__).parameters)
        except (TypeError, ValueError):  # no introspectable signature: name rules only
            params, open_kwargs = {}, True
    params.pop("self", None)
    open_kwargs = open_kwargs or any(p.kind == p.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not open_kwargs:
        raise RecipeError(f"{where}: unknown option(s) {unknown} for term type {cls.name!r}; "
                          f"accepted: {accepted or 'none'}")
    out = {}
    for name, value in options.items():
        path = f"{where}.{name}"
        param = params.get(name)
        scalar = None if param is None else _scalar_types(param)
        numeric = scalar is None or bool(scalar[0] & {"int", "float"})  # e.g. not scale_by_size (a bool)
        rule = term_option_rule(name)
        if rule is not None and numeric and not isinstance(value, (Mapping, list, tuple)):
            value = rule.check(value, path)
        elif name == "weights" and isinstance(value, Mapping):
            value = {k: check_weight(v, f"{path}.{k}") for k, v in value.items()}
        else:
            _finite_everywhere(value, path)
        if scalar is not None:
            allowed, none_ok = scalar
            if not ((value is None and none_ok) or (value is not None and _has_type(value, allowed))):
                want = " or ".join(sorted(allowed)) + (" or null" if none_ok else "")
                raise RecipeError(f"{path}: expected {want}, got {value!r}")
            if isinstance(value, str) and "str" not in allowed:
                value = float(value)
        out[name] = value
    return out


# ---------------------------------------------------------------- hypotheses

#: Defaults of a recipe's ``hypotheses:`` section (:mod:`fitkit.fitting.hypotheses`).
HYPOTHESES_DEFAULTS: dict[str, Any] = {"yaw": [0.0, 90.0, 180.0, 270.0], "smplr": "auto", "stages": 2,
                                       "iterations": 15, "start_margin": 0.05, "yaw_switch_cost": None,
                                       "swap": {}, "keep_start": None}
_SWAP_DEFAULTS: dict[str, Any] = {"upper": True, "lower": True, "switch_cost": 0.5, "swapped_cost": 0.1,
                                  "facing_cost": 0.0, "cue_facing_cost": 0.0}


def check_hypotheses(spec: Any, num_stages: int, where: str) -> dict:
    """A recipe's ``hypotheses:`` section, checked and completed with the defaults.

    Args:
        spec: the section (None or absent: no hypotheses, returns ``{}``).
        num_stages: the recipe's number of stages (``stages`` may not exceed it).
        where: ``"<file>: hypotheses"``.
    Returns:
        ``{yaw: [degrees], smplr: 'auto'|True|False, stages: int, iterations: int|None, start_margin: float,
        yaw_switch_cost: float|None, swap: {upper, lower, switch_cost, swapped_cost, facing_cost, cue_facing_cost} or
        False}``.
    """
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: expected a mapping with keys {sorted(HYPOTHESES_DEFAULTS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(HYPOTHESES_DEFAULTS))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known: {sorted(HYPOTHESES_DEFAULTS)}")
    out = {**HYPOTHESES_DEFAULTS, **spec}
    yaw = out["yaw"]
    if not isinstance(yaw, (list, tuple)) or not yaw:
        raise RecipeError(f"{where}.yaw: expected a non-empty list of angles in degrees, got {yaw!r}")
    out["yaw"] = [float(Rule().check(a, f"{where}.yaw.{j}")) for j, a in enumerate(yaw)]
    if out["smplr"] not in ("auto", True, False):
        raise RecipeError(f"{where}.smplr: expected auto, true or false, got {out['smplr']!r}")
    out["stages"] = Rule(integer=True, lo=1, hi=num_stages).check(out["stages"], f"{where}.stages")
    out["iterations"] = Rule(integer=True, lo=1, none_ok=True).check(out["iterations"], f"{where}.iterations")
    out["yaw_switch_cost"] = Rule(lo=0.0, none_ok=True).check(out["yaw_switch_cost"], f"{where}.yaw_switch_cost")
    out["start_margin"] = float(Rule(lo=0.0).check(out["start_margin"], f"{where}.start_margin"))
    out["keep_start"] = Rule(lo=0.0, none_ok=True).check(out["keep_start"], f"{where}.keep_start")
    swap = out["swap"]
    if swap is False or swap is None:
        out["swap"] = False
    elif isinstance(swap, Mapping):
        bad = sorted(set(swap) - set(_SWAP_DEFAULTS))
        if bad:
            raise RecipeError(f"{where}.swap: unknown key(s) {bad}; known: {sorted(_SWAP_DEFAULTS)}")
        swap = {**_SWAP_DEFAULTS, **swap}
        for key in ("upper", "lower"):
            if not isinstance(swap[key], bool):
                raise RecipeError(f"{where}.swap.{key}: expected true or false, got {swap[key]!r}")
        for key in ("switch_cost", "swapped_cost", "facing_cost", "cue_facing_cost"):
            swap[key] = float(_NON_NEGATIVE.check(swap[key], f"{where}.swap.{key}"))
        out["swap"] = swap if (swap["upper"] or swap["lower"]) else False
    else:
        raise RecipeError(f"{where}.swap: expected a mapping ({sorted(_SWAP_DEFAULTS)}) or false, got {swap!r}")
    return out


# ---------------------------------------------------------------- quality

#: Rules of a recipe's ``quality:`` thresholds (:mod:`fitkit.eval.quality` has the defaults
#: and the meaning; null turns a check off). ``max_energy`` maps term keys to numbers.
QUALITY_RULES: dict[str, Rule] = {"max_reproj_crop_px": Rule(lo=0.0, lo_open=True),
                                  "max_keypoints3d_mm": Rule(lo=0.0, none_ok=True),
                                  "max_joint_speed_mm": Rule(lo=0.0, none_ok=True),
                                  "max_joint_accel_mm": Rule(lo=0.0, none_ok=True),
                                  "max_facing_change_deg": Rule(lo=0.0, none_ok=True),
                                  "min_swap_margin": Rule(lo=0.0, none_ok=True)}


def check_quality(spec: Any, where: str) -> dict:
    """A recipe's ``quality:`` section checked (the keys it gives, as numbers; no defaults added).

    ``where``: ``"<file>: quality"``. Unknown keys, non-numbers and out-of-range values
    raise :class:`RecipeError` naming the key.
    """
    if spec is None:
        return {}
    known = sorted([*QUALITY_RULES, "max_energy", "keypoints3d_rotation"])
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: expected a mapping with keys {known}, got {spec!r}")
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; known: {known}")
    out = {}
    for key, value in spec.items():
        if key == "max_energy":
            if not isinstance(value, Mapping):
                raise RecipeError(f"{where}.max_energy: expected a mapping term key -> threshold, got {value!r}")
            out[key] = {str(k): float(Rule().check(v, f"{where}.max_energy.{k}")) for k, v in value.items()}
        elif key == "keypoints3d_rotation":  # how the 3D-cue check aligns the cue; null: as the keypoints3d term
            if value not in (None, "camera", "yaw", "kabsch"):
                raise RecipeError(f"{where}.keypoints3d_rotation: expected camera, yaw, kabsch or null, got {value!r}")
            out[key] = value
        else:
            v = QUALITY_RULES[key].check(value, f"{where}.{key}")
            out[key] = None if v is None else float(v)
    return out
