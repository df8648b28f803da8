"""Model Diet (seed 004). Placeholder until issue 6 lands: off unless model.diet.groups > 1."""
from __future__ import annotations

from elimnet.compress.base import register_transform


def plan_diet(model, cfg, ctx):
    if cfg["model.diet.groups"] == 1:
        return None
    raise NotImplementedError("model.diet is not implemented yet")


def apply_diet(model, **spec):
    raise NotImplementedError("model.diet is not implemented yet")


register_transform("diet", plan_diet, apply_diet)
