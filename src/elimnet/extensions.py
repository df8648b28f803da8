"""The one registry of declared params: every extension point's entries land here when they register.

The five extension points (docs/extending.md) each have their own registry next to their code
(`register_transform`, `register_backend`, `register_criterion`, `register_source`, `register_family`);
each of those calls `declare(kind, name, params, check)`, so config.py builds the schema from this
module alone. A leaf (fields and errors only): importing it imports no extension, and `discover()`
imports the extension packages when the schema is first needed. Each package imports all of its own
modules (`import_package_modules`), so a new extension is a new module, listed nowhere.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from elimnet.fields import Field

# Also the order cross-checks run in: a family may normalise model.arch before the others read it.
KINDS = ("family", "source", "compression", "criterion", "backend")
# Importing these imports every extension module (each package discovers its own modules).
# Models first: the schema lists the families' model keys before the compressions' (params.yaml's order).
EXTENSION_PACKAGES = ("elimnet.models", "elimnet.data", "elimnet.compress", "elimnet.bench.backends")


@dataclass(frozen=True)
class Extension:
    """One registered entry's params section and cross-check."""
    kind: str
    name: str
    params: dict[str, Field] = field(default_factory=dict)
    # check(values): cross-checks over all flat values (raise ConfigError); it may normalise them in place
    check: Callable[[dict[str, Any]], None] | None = None
    order: int = 0  # its place among its kind (a compression's composition order, a backend's column)


_DECLARED: dict[tuple[str, str], Extension] = {}


def declare(kind: str, name: str, params: dict[str, Field] | None = None,
            check: Callable[[dict[str, Any]], None] | None = None, order: int = 0) -> Extension:
    """Record an entry's params; a key declared twice (by any two entries) is a programming error."""
    if kind not in KINDS:
        raise ValueError(f"extension kind {kind!r}: must be one of {', '.join(KINDS)}")
    if (kind, name) in _DECLARED:
        raise ValueError(f"{kind} {name!r} registered twice")
    params = dict(params or {})
    for other in _DECLARED.values():
        clash = sorted(set(params) & set(other.params))
        if clash:
            raise ValueError(f"{kind} {name!r} declares params that {other.kind} {other.name!r} declares: {clash}")
    _DECLARED[(kind, name)] = ext = Extension(kind, name, params, check, order)
    return ext


def withdraw(kind: str, name: str) -> None:
    """Forget an entry (tests that register a toy extension clean up with it)."""
    _DECLARED.pop((kind, name), None)


def declared(kind: str | None = None) -> list[Extension]:
    """Entries in KINDS order, each kind by its order, then in registration order."""
    kinds = [kind] if kind else KINDS
    return [e for k in kinds for e in sorted((e for e in _DECLARED.values() if e.kind == k), key=lambda e: e.order)]


def names(kind: str) -> list[str]:
    return [e.name for e in declared(kind)]


def discover() -> None:
    """Import every extension package (cheap after the first call: Python caches modules)."""
    for package in EXTENSION_PACKAGES:
        importlib.import_module(package)


def import_package_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of a package: call it as `import_package_modules(__name__, __path__)`."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
