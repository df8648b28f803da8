"""pretrained: the backbone's weights (model.arch, model.weights) -> models/pretrained.pt."""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.checkpoint import model_config, save_model
from elimnet.config import Config
from elimnet.models import create_model
from elimnet.models.registry import params_arch_args


def run_pretrained(cfg: Config, out: str | Path) -> dict:
    arch, weights = cfg["model.arch"], cfg["model.weights"]
    torch.manual_seed(cfg["seed"])  # "empty" models: the same random init every run
    arch_args = params_arch_args(arch, cfg)  # e.g. model.experts for simple_effnet_condconv
    model = create_model(arch, pretrained=weights == "imagenet", cache_dir=Path(cfg["data.root"]) / "weights",
                         arch_args=arch_args)
    config = model_config(arch, steps=[], weights=weights, num_classes=1000)
    if arch_args:
        config["arch_args"] = arch_args
    save_model(out, model, config)
    return config
