"""LayerPrune (seed 003). Placeholder until issue 5 lands: off unless model.prune.k > 0."""
from __future__ import annotations

from elimnet.compress.base import register_transform

CRITERIA = {"l1": False, "l2": False, "bn": False, "taylor": True, "activation": True, "imprint": True}


def plan_layerprune(model, cfg, ctx):
    if cfg["model.prune.k"] == 0 and cfg["model.prune.latency_budget"] is None:
        return None
    raise NotImplementedError("model.prune is not implemented yet")


def apply_layerprune(model, **spec):
    raise NotImplementedError("model.prune is not implemented yet")


register_transform("layerprune", plan_layerprune, apply_layerprune)
