"""Static model size: parameters, MACs, weight layers, modules."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from elimnet.models.staged import count_layers, count_params, eval_mode


@torch.no_grad()
def count_macs(model: torch.nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-accumulates of one image (convolutions and matmuls; FLOPs / 2, as torch counts 2 per MAC)."""
    with eval_mode(model), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, image_size, image_size))
    return int(counter.get_total_flops() // 2)


def profile(model: torch.nn.Module, image_size: int) -> dict:
    return {"params": count_params(model), "macs": count_macs(model, image_size),
            "layers": count_layers(model), "modules": sum(1 for _ in model.modules()),
            "image_size": image_size}
