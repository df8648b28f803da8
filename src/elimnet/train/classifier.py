"""A model's classifier sized to the data's classes (the finetune stage's first step)."""
from __future__ import annotations

import torch

from elimnet.compress.elim import set_num_classes


def with_classes(model, config: dict, num_classes: int, seed: int):
    """The baseline starts from the 1000-class pretrained file: give it this data's classifier."""
    if config.get("num_classes") == num_classes:
        return model, config
    torch.manual_seed(seed)  # same fresh classifier as compress's "full" model
    model, _ = set_num_classes(model, num_classes)
    config = {**config, "num_classes": num_classes,
              "steps": config.get("steps", []) + [{"name": "classifier", "spec": {"num_classes": num_classes}}]}
    return model, config
