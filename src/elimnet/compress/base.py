"""The transform protocol every compression follows.

A transform has two halves:
- `plan(model, cfg, ctx)` decides, from params (and data, for data-dependent criteria), a
  *resolved spec*: plain JSON that fixes the result exactly (which blocks, which group...),
  or None when the transform is off;
- `apply(model, **spec)` is a pure function: it returns a new model and a small report and
  never touches its input.

A saved model stores the resolved specs, so loading replays `apply` on a fresh arch and
then loads the weights: no pickled code, and no data needed to rebuild.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from elimnet.models.staged import StagedNet


@dataclass
class CompressContext:
    """What planning may look at besides the model: the arch, the data, a device."""
    arch: str
    image_size: int
    num_classes: int
    seed: int = 0
    train: Any = None  # elimnet.data.TensorSplit or None (data-free planning)
    val: Any = None
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    latency_table: Any = None  # LayerPrune's cached per-block timings (metrics/block_latency.json); None = keep none


class Transform(Protocol):
    name: str

    def plan(self, model: StagedNet, cfg, ctx: CompressContext) -> dict | None: ...

    def apply(self, model: StagedNet, **spec) -> tuple[StagedNet, dict]: ...


@dataclass
class FunctionTransform:
    name: str
    plan_fn: Callable[[StagedNet, Any, CompressContext], dict | None]
    apply_fn: Callable[..., tuple[StagedNet, dict]]

    def plan(self, model, cfg, ctx):
        return self.plan_fn(model, cfg, ctx)

    def apply(self, model, **spec):
        return self.apply_fn(copy.deepcopy(model), **spec)


TRANSFORMS: dict[str, Transform] = {}
# The fixed composition order: classifier resize, then elim -> prune -> diet -> filter.
ORDER = ("classifier", "elim", "layerprune", "diet", "filter")


def register_transform(name: str, plan: Callable, apply: Callable) -> Transform:
    if name not in ORDER:
        raise ValueError(f"transform {name!r} has no place in ORDER {ORDER}")
    TRANSFORMS[name] = FunctionTransform(name, plan, apply)
    return TRANSFORMS[name]
