"""The candidate and its full twin from params, and their description (params, MACs, stages).

Library code shared by the compress stage, `elimnet summary|bench` and the MAC table.
"""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.bench.model_size import profile
from elimnet.compress.base import CompressContext, all_off
from elimnet.models import create_model, get_spec, stage_view
from elimnet.models.staged import StagedNet


def describe(model: StagedNet, arch: str, image_size: int) -> dict:
    spec = get_spec(arch)
    view = stage_view(model, spec.stage_names, image_size=image_size)
    out = profile(model, image_size)
    out["stages"] = [{"name": s["name"], "blocks": len(s["blocks"]),
                      "params": sum(b["params"] for b in s["blocks"])} for s in view.to_dict()["stages"]]
    out["head"] = not isinstance(model.head, torch.nn.Identity)
    return out


def build_candidate(cfg, base: StagedNet, num_classes: int, data_dir: str | Path | None = None,
                    latency_table=None) -> tuple[StagedNet, list[dict], StagedNet]:
    """(candidate, its steps, the full twin) from a 1000-class base.

    `latency_table`: where LayerPrune keeps its per-block timings (a path, or bench.block_table.LatencyCache).

    The full twin is the same base with every registered compression switched off, so it gets
    the same fresh classifier as the candidate and nothing else.
    """
    from elimnet.compress import plan_and_apply
    from elimnet.data.prepare import load_prepared

    arch = cfg["model.arch"]
    spec = get_spec(arch)
    train = val = None
    if data_dir is not None:
        data = load_prepared(data_dir, ("train", "val"))
        train, val = data["train"], data["val"]
    ctx = CompressContext(arch=arch, image_size=cfg["data.image_size"], num_classes=num_classes, seed=cfg["seed"],
                          train=train, val=val, mean=spec.mean, std=spec.std, latency_table=latency_table)
    torch.manual_seed(cfg["seed"])
    full, _ = plan_and_apply(base, cfg.replace(**all_off()), ctx)
    torch.manual_seed(cfg["seed"])
    candidate, steps = plan_and_apply(base, cfg, ctx)
    return candidate, steps, full


def build_from_params(cfg, num_classes: int, latency_table=None) -> tuple[StagedNet, list[dict], StagedNet]:
    """Candidate, steps and full twin from params alone: seeded random init, no data, no download."""
    torch.manual_seed(cfg["seed"])
    from elimnet.models.registry import params_arch_args
    base = create_model(cfg["model.arch"], pretrained=False, arch_args=params_arch_args(cfg["model.arch"], cfg))
    return build_candidate(cfg, base, num_classes, data_dir=None, latency_table=latency_table)
