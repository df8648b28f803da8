"""ELimNet: remove the top k stages (and the head conv that depends on them), resize the classifier.

Also the classifier transform: every candidate first gets a classifier for its own classes.
"""
from __future__ import annotations

from torch import nn

from elimnet.fields import Field, int_range, num_range
from elimnet.errors import ConfigError
from elimnet.compress.base import register_transform
from elimnet.models.staged import StagedNet, count_params, feature_channels, linears, replace_module


def _new_linear(old: nn.Linear, in_features: int | None = None, out_features: int | None = None) -> nn.Linear:
    return nn.Linear(in_features or old.in_features, out_features or old.out_features, bias=old.bias is not None)


def apply_classifier(model: StagedNet, num_classes: int) -> tuple[StagedNet, dict]:
    last = linears(model.classifier)[-1]
    before = count_params(model)
    if last.out_features != num_classes:
        path = _path_in(model.classifier, last)
        replace_module(model.classifier, path, _new_linear(last, out_features=num_classes))
    return model, {"num_classes": num_classes, "params_before": before, "params_after": count_params(model)}


def _path_in(root: nn.Module, target: nn.Module) -> str:
    return next(n for n, m in root.named_modules() if m is target)


def apply_elim(model: StagedNet, k: int, neck: float = 0) -> tuple[StagedNet, dict]:
    n = len(model.stages)
    if not 0 <= k < n:
        raise ConfigError(f"model.elim={k}: must be an integer in [0, {n - 1}] ({n} stages)")
    before = count_params(model)
    report = {"k": k, "removed_stages": list(range(n - k, n)), "removed_head": False, "neck": neck}
    if k == 0 and not neck:
        return model, {**report, "params_before": before, "params_after": before}
    if k > 0:
        model.stages = nn.ModuleList(list(model.stages)[: n - k])
        report["removed_head"] = not isinstance(model.head, nn.Identity)
        model.head = nn.Identity()  # its input channels came from a removed stage
    if neck:
        c = feature_channels(model)
        width = int(round(neck * c))
        model.neck = nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width),
                                   model.act_layer(inplace=True))
    # The first Linear now sees fewer features (times the pool area, e.g. VGG's 7x7).
    first = linears(model.classifier)[0]
    area = _pool_area(model)
    in_features = feature_channels(model) * area
    if first.in_features != in_features:
        replace_module(model.classifier, _path_in(model.classifier, first), _new_linear(first, in_features=in_features))
    report.update(params_before=before, params_after=count_params(model))
    return model, report


def _pool_area(model: StagedNet) -> int:
    size = getattr(model.pool, "output_size", 1)
    if isinstance(size, int):
        return size * size
    h, w = size
    return (h or 1) * (w or 1)


def plan_classifier(model, cfg, ctx):
    return {"num_classes": ctx.num_classes}


def plan_elim(model, cfg, ctx):
    k, neck = cfg["model.elim"], cfg["model.neck"]
    return {"k": k, "neck": neck} if (k or neck) else None


def check_elim(v: dict, spec) -> None:
    if v["model.elim"] >= spec.num_stages:
        raise ConfigError(f"model.elim={v['model.elim']}: must be an integer in [0, {spec.num_stages - 1}] "
                          f"for arch {spec.name} ({spec.num_stages} stages)")


def label_elim(p: dict) -> str:
    parts = [f"Elim {p['model.elim']}"] if p.get("model.elim") else []
    if p.get("model.neck"):
        parts.append(f"neck {p['model.neck']:g}")
    return " + ".join(parts)


# The classifier resize always runs first: every candidate gets a classifier for its own classes.
register_transform("classifier", plan_classifier, apply_classifier, order=0)
register_transform(
    "elim", plan_elim, apply_elim, order=10, off={"model.elim": 0, "model.neck": 0}, label=label_elim,
    check=check_elim,
    params={"model.elim": Field(2, int_range(0), "ELimNet: number of top stages removed"),
            "model.neck": Field(0, num_range(0.0, 16.0), "fresh 1x1 conv C->r*C after the cut (0 = off)")})


def elim(model: StagedNet, k: int, neck: float = 0) -> tuple[StagedNet, dict]:
    """Pure ELimNet cut: returns a new model and the report; `model` is left untouched."""
    from elimnet.compress.base import TRANSFORMS
    return TRANSFORMS["elim"].apply(model, k=k, neck=neck)


def set_num_classes(model: StagedNet, num_classes: int) -> tuple[StagedNet, dict]:
    """Pure classifier resize (a fresh Linear when the class count changes)."""
    from elimnet.compress.base import TRANSFORMS
    return TRANSFORMS["classifier"].apply(model, num_classes=num_classes)
