"""torchvision MNASNet in the stage view.

torchvision flattens MNASNet into `layers`: [0:8] = the 3x3 conv and the SepConv (our stem),
[8:14] = six stacks of inverted residuals (our stages: widths 24, 40, 80, 96, 192, 320 at
alpha 1.0), [14:17] = the 1x1 conv to 1280 with BN and ReLU (our head). classifier = Dropout-Linear.
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.staged import StagedNet
from elimnet.models.weights import register_torchvision


def mnasnet_to_staged(m: tvm.MNASNet) -> StagedNet:
    layers = list(m.layers)
    stem = nn.Sequential(*layers[:8])
    stages = layers[8:14]
    head = nn.Sequential(*layers[14:])
    return StagedNet(stem, stages, head, m.classifier)


mnasnet0_5 = register_torchvision("mnasnet0_5", family="mnasnet", tv_build=tvm.mnasnet0_5,
                                  to_staged=mnasnet_to_staged, num_stages=6)
mnasnet1_0 = register_torchvision("mnasnet1_0", family="mnasnet", tv_build=tvm.mnasnet1_0,
                                  to_staged=mnasnet_to_staged, num_stages=6)
