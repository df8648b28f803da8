"""torchvision ResNets in the stage view: stages = layer1..layer4 (ELimNet's conv2_x..conv5_x).

stem = conv1-bn1-relu-maxpool, no head conv (the last stage feeds the pool), classifier = fc.
Blocks are the BasicBlock / Bottleneck modules; all but the first of each stage keep their shape.
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.staged import StagedNet
from elimnet.models.weights import register_torchvision


def resnet_to_staged(m: tvm.ResNet) -> StagedNet:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    return StagedNet(stem, stages, nn.Identity(), nn.Sequential(m.fc))


_NAMES = ("layer1", "layer2", "layer3", "layer4")

resnet18 = register_torchvision("resnet18", family="resnet", tv_build=tvm.resnet18, to_staged=resnet_to_staged,
                                num_stages=4, stage_names=_NAMES)
resnet34 = register_torchvision("resnet34", family="resnet", tv_build=tvm.resnet34, to_staged=resnet_to_staged,
                                num_stages=4, stage_names=_NAMES)
resnet50 = register_torchvision("resnet50", family="resnet", tv_build=tvm.resnet50, to_staged=resnet_to_staged,
                                num_stages=4, stage_names=_NAMES)
