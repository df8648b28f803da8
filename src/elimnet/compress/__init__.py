"""Compressions over the stage view, composed in a fixed order (see base.ORDER)."""
from __future__ import annotations

from elimnet.compress.base import ORDER, TRANSFORMS, CompressContext, register_transform
# Each module registers its transform on import.
from elimnet.compress import elim  # noqa: F401
from elimnet.compress import layerprune  # noqa: F401
from elimnet.compress import diet  # noqa: F401
from elimnet.compress import filter_prune  # noqa: F401
from elimnet.models.staged import StagedNet


def plan_and_apply(model: StagedNet, cfg, ctx: CompressContext) -> tuple[StagedNet, list[dict]]:
    """Run every enabled transform in ORDER; return the model and the replayable steps."""
    steps = []
    for name in ORDER:
        t = TRANSFORMS[name]
        spec = t.plan(model, cfg, ctx)
        if spec is None:
            continue
        model, report = t.apply(model, **spec)
        steps.append({"name": name, "spec": spec, "report": report})
    return model, steps


def replay(model: StagedNet, steps: list[dict]) -> StagedNet:
    """Rebuild a compressed architecture from saved resolved specs (weights loaded after)."""
    for step in steps:
        if step["name"] not in TRANSFORMS:
            raise ValueError(f"unknown transform {step['name']!r}; known: {', '.join(TRANSFORMS)}")
        model, _ = TRANSFORMS[step["name"]].apply(model, **step["spec"])
    return model


__all__ = ["ORDER", "TRANSFORMS", "CompressContext", "plan_and_apply", "register_transform", "replay"]
