"""Static model size: parameters, MACs, weight layers, modules."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from elimnet.models.staged import count_layers, count_params


@torch.no_grad()
def count_macs(model: torch.nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image (convolutions and matmuls; FLOPs / 2, as torch counts 2 per MAC)."""
    was = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_chans, image_size, image_size))
    finally:
        model.train(was)
    return int(counter.get_total_flops() // 2)


def profile(model: torch.nn.Module, image_size: int) -> dict:
    return {"params": count_params(model), "macs": count_macs(model, image_size),
            "layers": count_layers(model), "modules": sum(1 for _ in model.modules()),
            "image_size": image_size}
