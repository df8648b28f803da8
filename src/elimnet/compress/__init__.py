"""Compressions over the stage view, composed in their declared order (compress/base.py).

Every module of this package is imported here, and each registers its transform (or LayerPrune
criterion) on import: a new compression is a new module, found without editing this file.
"""
from __future__ import annotations

from elimnet.compress.base import (TRANSFORMS, CompressContext, all_off, ordered, register_transform,
                                   unregister_transform)
from elimnet.errors import CheckpointError
from elimnet.extensions import import_package_modules
from elimnet.models.staged import StagedNet

def plan_and_apply(model: StagedNet, cfg, ctx: CompressContext) -> tuple[StagedNet, list[dict]]:
    """Run every enabled transform in order; return the model and the replayable steps."""
    steps = []
    for t in ordered():
        spec = t.plan(model, cfg, ctx)
        if spec is None:
            continue
        model, report = t.apply(model, **spec)
        steps.append({"name": t.name, "spec": spec, "report": report})
    return model, steps


def replay(model: StagedNet, steps: list[dict]) -> StagedNet:
    """Rebuild a compressed architecture from saved resolved specs (weights loaded after)."""
    for step in steps:
        if step["name"] not in TRANSFORMS:
            raise CheckpointError(f"unknown transform {step['name']!r} in a saved model; known: {', '.join(TRANSFORMS)}")
        model, _ = TRANSFORMS[step["name"]].apply(model, **step["spec"])
    return model


# Last, so that a module may use plan_and_apply while it is imported.
import_package_modules(__name__, __path__)

__all__ = ["TRANSFORMS", "CompressContext", "all_off", "ordered", "plan_and_apply", "register_transform", "replay",
           "unregister_transform"]
