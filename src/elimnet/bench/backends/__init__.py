"""Latency backends: one registry entry each, measured and reported in their declared order.

A backend is one module of this package that calls `register_backend` with its device, its order,
its params section (e.g. its `bench.<name>` switch), why it is not measured for given params (or
None), and `prepare`: a context manager that readies the models and yields `make_runners(x)` ->
{model name: zero-argument runner}. This package imports all its modules, so a new backend is one
new module plus its line in params.yaml (docs/extending.md). torch and onnxruntime are imported
inside the functions, so report code can list the backends without them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

from elimnet import extensions
from elimnet.fields import Field


@dataclass(frozen=True)
class Backend:
    name: str
    device: str  # "cpu" or "cuda": how time_runners synchronises
    unavailable: Callable[[Any], str | None]  # cfg -> why it is not measured, or None
    prepare: Callable[..., ContextManager[Callable]]  # (models, cfg, image_size, threads, workdir, prof)
    order: int = 100  # its place in the measurement and in the report's columns (lower first)
    optional: bool = True  # a failure is recorded under `unavailable`, not raised
    allocator_peak: bool = False  # peak memory measurable by torch's allocator hooks (eager only)
    help: str = ""


REGISTRY: dict[str, Backend] = {}  # in measurement order
# Names older metrics/latency.json files (and MLflow runs) used: old name -> current name.
LEGACY_NAMES = {"onnx": "ort"}


def register_backend(name: str, prepare: Callable[..., ContextManager[Callable]], *, device: str, order: int,
                     unavailable: Callable[[Any], str | None] | None = None, params: dict[str, Field] | None = None,
                     optional: bool = True, allocator_peak: bool = False, help: str = "") -> Backend:
    if name in REGISTRY:
        raise ValueError(f"backend {name!r} registered twice")
    if any(b.order == order for b in REGISTRY.values()):
        raise ValueError(f"backend {name!r}: order {order} is taken")
    extensions.declare("backend", name, params, order=order)
    backend = Backend(name, device, unavailable or (lambda cfg: None), prepare, order, optional, allocator_peak, help)
    entries = sorted([*REGISTRY.values(), backend], key=lambda b: b.order)
    REGISTRY.clear()
    REGISTRY.update((b.name, b) for b in entries)
    return backend


def unregister_backend(name: str) -> None:
    """Forget a backend and its params (tests that register a toy one clean up with it)."""
    REGISTRY.pop(name, None)
    extensions.withdraw("backend", name)


def switched_off(key: str) -> Callable[[Any], str | None]:
    """`unavailable` for a backend that a boolean param switches on: "bench.x=false" while it is off."""
    return lambda cfg: None if cfg[key] else f"{key}=false"


def unavailable_backends(cfg) -> dict[str, str]:
    """Backend -> why it is not measured (backends absent from the result are measured)."""
    return {name: why for name, b in REGISTRY.items() if (why := b.unavailable(cfg))}


def backend_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def canonical_backend(name: str) -> str:
    """A backend's current name, for a name read from an older file ("onnx" -> "ort")."""
    return LEGACY_NAMES.get(name, name)


def canonical_latency(latency: dict) -> dict:
    """A metrics/latency.json dict with older backend names renamed (top-level keys, `backends`,
    `unavailable`), so readers handle files written before the rename."""
    out = {canonical_backend(k): v for k, v in latency.items()}
    if isinstance(out.get("backends"), list):
        out["backends"] = [canonical_backend(b) for b in out["backends"]]
    if isinstance(out.get("unavailable"), dict):
        out["unavailable"] = {canonical_backend(b): why for b, why in out["unavailable"].items()}
    return out


def canonical_metric_name(key: str) -> str:
    """A per-backend metric name read from an older record, with the backend's current name:
    latency_onnx_bs1_ms -> latency_ort_bs1_ms, latency_reduction_onnx_bs64 -> latency_reduction_ort_bs64."""
    for prefix in ("latency_reduction_", "latency_", "reduction_"):
        m = re.fullmatch(rf"{prefix}(?P<backend>.+?)(?P<rest>_bs\d+.*)", key)
        if m:
            return f"{prefix}{canonical_backend(m['backend'])}{m['rest']}"
    return key


# Last, so that each backend module finds register_backend defined.
extensions.import_package_modules(__name__, __path__)

BACKENDS = backend_names()  # the built-in ones, as report code lists them
