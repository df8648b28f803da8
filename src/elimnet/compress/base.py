"""The transform protocol every compression follows.

A transform has two halves:
- `plan(model, cfg, ctx)` decides, from params (and data, for data-dependent criteria), a
  *resolved spec*: plain JSON that fixes the result exactly (which blocks, which group...),
  or None when the transform is off;
- `apply(model, **spec)` is a pure function: it returns a new model and a small report and
  never touches its input.

A compression is one module that calls `register_transform` with its params section, its off
values, its order and its report label (docs/extending.md); its params and check land in
elimnet.extensions, where config.py finds them. compress/__init__ imports every module of this
package, so nothing else lists compressions.

A saved model stores the resolved specs, so loading replays `apply` on a fresh arch and
then loads the weights: no pickled code, and no data needed to rebuild.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from elimnet import extensions
from elimnet.fields import Field
from elimnet.models.registry import get_spec
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


@dataclass
class Compression:
    """A registered compression: everything the rest of the code needs to know about it.

    - `params`: its section of params.yaml (dotted key -> Field); config.py assembles the schema from these.
    - `off`: the values that switch it off; the full twin of a candidate is "every compression off".
      None means always applied (the classifier resize).
    - `order`: its place in the composition (lower runs first).
    - `label(flat_params)`: its name in reports when it is on ("Elim 2", "Diet g=2").
    - `check(values, spec)`: cross-checks that need other keys or the arch spec (raise ConfigError).
    """
    name: str
    plan_fn: Callable[[StagedNet, Any, CompressContext], dict | None]
    apply_fn: Callable[..., tuple[StagedNet, dict]]
    order: int = 100
    params: dict[str, Field] = field(default_factory=dict)
    off: dict[str, Any] | None = None
    label: Callable[[dict], str] | None = None
    check: Callable[[dict, Any], None] | None = None

    def plan(self, model, cfg, ctx):
        return self.plan_fn(model, cfg, ctx)

    def apply(self, model, **spec):
        return self.apply_fn(copy.deepcopy(model), **spec)

    def is_off(self, flat: dict) -> bool:
        """Off for these flat params (a key missing from `flat` counts as its off value)."""
        return self.off is not None and all(flat.get(k, v) == v for k, v in self.off.items())


TRANSFORMS: dict[str, Compression] = {}


def register_transform(name: str, plan: Callable, apply: Callable, *, order: int, params: dict | None = None,
                       off: dict | None = None, label: Callable[[dict], str] | None = None,
                       check: Callable[[dict, Any], None] | None = None) -> Compression:
    if name in TRANSFORMS:
        raise ValueError(f"transform {name!r} registered twice")
    if any(t.order == order for t in TRANSFORMS.values()):
        raise ValueError(f"transform {name!r}: order {order} is taken")
    params = params or {}
    if off is not None and not set(off) <= set(params):
        raise ValueError(f"transform {name!r}: off values for undeclared params {sorted(set(off) - set(params))}")
    extensions.declare("compression", name, params, None if check is None else _with_arch_spec(check), order)
    TRANSFORMS[name] = Compression(name, plan, apply, order, params, off, label, check)
    return TRANSFORMS[name]


def unregister_transform(name: str) -> None:
    """Forget a transform and its params (tests that register a toy one clean up with it)."""
    TRANSFORMS.pop(name, None)
    extensions.withdraw("compression", name)


def _with_arch_spec(check: Callable[[dict, Any], None]) -> Callable[[dict], None]:
    """A compression's check(values, spec) as the registry's check(values): spec is model.arch's, read after the
    families normalised it (simple_effnet + model.block=se -> simple_effnet_se)."""
    def run(values: dict) -> None:
        check(values, get_spec(values["model.arch"]))
    return run


def ordered() -> list[Compression]:
    """Every registered transform in composition order."""
    return sorted(TRANSFORMS.values(), key=lambda t: t.order)


def all_off() -> dict[str, Any]:
    """The param values that switch every compression off (the full model's twin)."""
    return {k: v for t in ordered() if t.off for k, v in t.off.items()}
