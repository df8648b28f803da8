"""torchvision EfficientNet-B0 in the stage view: the 7 MBConv stages, head = 1x1 conv to 1280.

stem = features[0] (3x3 conv, stride 2), stages = features[1..7], head = features[8]
(the 1x1 conv to 1280 that ELimNet removes with the top stage), classifier = Dropout-Linear.
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.staged import StagedNet
from elimnet.models.weights import register_torchvision


def efficientnet_to_staged(m: tvm.EfficientNet) -> StagedNet:
    f = m.features
    stages = [f[i] for i in range(1, len(f) - 1)]
    return StagedNet(f[0], stages, f[-1], m.classifier, act_layer=nn.SiLU)


efficientnet_b0 = register_torchvision("efficientnet_b0", family="efficientnet", tv_build=tvm.efficientnet_b0,
                                       to_staged=efficientnet_to_staged, num_stages=7)
