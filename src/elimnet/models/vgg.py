"""torchvision VGGs in the stage view: stages = the conv groups between max-pools.

No stem and no head conv. Each stage is its conv blocks (conv-BN-ReLU, or conv-ReLU without
BN) followed by the group's MaxPool as a last, non-removable block; so a conv whose input and
output widths match is a removal candidate (LayerPrune on VGG19-BN). pool = torchvision's
AdaptiveAvgPool2d(7); classifier = the 3-Linear MLP, whose first Linear (512*7*7 inputs) is
resized to width*49 after an ELimNet cut.
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.staged import StagedNet
from elimnet.models.weights import register_torchvision

_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")


def vgg_stages(features: nn.Sequential) -> list[nn.Sequential]:
    stages, blocks, block = [], [], []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*blocks, layer))
            blocks = []
        elif isinstance(layer, nn.Conv2d) and block:
            raise ValueError("VGG features: a conv follows a conv without its activation")
        else:
            block.append(layer)
            if isinstance(layer, nn.ReLU):  # a conv block ends with its activation
                blocks.append(nn.Sequential(*block))
                block = []
    if blocks or block:
        raise ValueError("VGG features: layers after the last max-pool")
    return stages


def vgg_to_staged(m: tvm.VGG) -> StagedNet:
    return StagedNet(nn.Identity(), vgg_stages(m.features), nn.Identity(), m.classifier, pool=m.avgpool)


vgg16_bn = register_torchvision("vgg16_bn", family="vgg", tv_build=tvm.vgg16_bn, to_staged=vgg_to_staged,
                                num_stages=5, stage_names=_NAMES)
vgg19_bn = register_torchvision("vgg19_bn", family="vgg", tv_build=tvm.vgg19_bn, to_staged=vgg_to_staged,
                                num_stages=5, stage_names=_NAMES)
