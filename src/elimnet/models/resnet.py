"""torchvision ResNets in the stage view: stages = layer1..layer4 (ELimNet's conv2_x..conv5_x)."""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet


def resnet_to_staged(m: tvm.ResNet) -> StagedNet:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    return StagedNet(stem, stages, nn.Identity(), nn.Sequential(m.fc))


_NAMES = ("layer1", "layer2", "layer3", "layer4")


@register_model("resnet18", family="resnet", num_stages=4, stage_names=_NAMES)
def resnet18() -> StagedNet:
    return resnet_to_staged(tvm.resnet18(weights=None))
