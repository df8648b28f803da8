"""torchvision EfficientNet-B0 in the stage view: the 7 MBConv stages, head = 1x1 conv to 1280."""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet


def efficientnet_to_staged(m: tvm.EfficientNet) -> StagedNet:
    f = m.features
    stages = [f[i] for i in range(1, len(f) - 1)]
    return StagedNet(f[0], stages, f[-1], m.classifier, act_layer=nn.SiLU)


@register_model("efficientnet_b0", family="efficientnet", num_stages=7)
def efficientnet_b0() -> StagedNet:
    return efficientnet_to_staged(tvm.efficientnet_b0(weights=None))
