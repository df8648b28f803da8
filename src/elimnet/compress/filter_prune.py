"""Filter-pruning baseline (torch-pruning). Placeholder until issue 6 lands."""
from __future__ import annotations

from elimnet.compress.base import register_transform


def plan_filter(model, cfg, ctx):
    if cfg["model.filter.ratio"] == 0:
        return None
    raise NotImplementedError("model.filter is not implemented yet")


def apply_filter(model, **spec):
    raise NotImplementedError("model.filter is not implemented yet")


register_transform("filter", plan_filter, apply_filter)
