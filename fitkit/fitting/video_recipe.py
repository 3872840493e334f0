"""Switching a recipe's optical-flow terms on, for ``fitkit fit --flow``.

The flow terms (``vertex_flow``, ``photometric_flow``) read the dense cue
``flow``; a term is only built when some stage gives it a weight > 0, and then
its observations must have that cue. ``fitting_configs/video.yaml`` therefore
lists them in its sequence stage with weight 0 (never built, no cue needed),
and keeps their working weights in the ``terms`` section. With a flow cue,
:func:`with_flow` returns the recipe with those stage weights set to the
terms' own weights, so one recipe serves both runs::

    recipe = load_recipe("video")
    if args.flow:                      # after attaching the flow to the observations
        recipe = with_flow(recipe)

The same can be done by hand with overrides:
``--set stages.2.terms.vertex_flow=0.1 --set stages.2.terms.photometric=10000``.
"""
from __future__ import annotations

import copy
import logging

from fitkit.fitting.recipe import Recipe, recipe_from_dict

__all__ = ["FLOW_TERM_TYPES", "with_flow", "flow_switches"]

log = logging.getLogger(__name__)

#: term types that read the dense cue ``flow``
FLOW_TERM_TYPES = ("vertex_flow", "photometric_flow")


def flow_switches(recipe: Recipe) -> list[tuple[int, str, float]]:
    """(stage index, term key, weight) of every flow term a stage lists with weight 0,
    the weight being the term's own (``terms.<key>.weight``, default 1)."""
    out = []
    for i, st in enumerate(recipe.stages):
        for key, w in st.terms.items():
            spec = recipe.terms[key]
            if spec["type"] in FLOW_TERM_TYPES and w == 0:
                out.append((i, key, float(spec.get("weight", 1.0))))
    return out


def with_flow(recipe: Recipe) -> Recipe:
    """The recipe with its zero-weight flow terms switched on (see the module docstring);
    the recipe itself when it has none."""
    switches = flow_switches(recipe)
    if not switches:
        return recipe
    data = copy.deepcopy(recipe.data)
    for i, key, w in switches:
        terms = data["stages"][i]["terms"]
        if isinstance(terms, list):  # a list keeps the terms' weights: cannot be a 0 there
            continue
        terms[key] = w
    log.info("flow terms switched on: %s", ", ".join(f"stages.{i}.terms.{k}={w:g}" for i, k, w in switches))
    return recipe_from_dict(data, recipe.source)
