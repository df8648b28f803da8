"""torchvision MobileNetV2 / V3 in the stage view.

stem = features[0] (3x3 conv, stride 2); stages = the inverted-residual blocks grouped into
runs of equal output width -- the rows of the papers' architecture tables (V3-Large: 16, 24,
40, 80, 112, 160 -> 6 stages; V3-Small: 16, 24, 40, 48, 96 -> 5; V2: 16 ... 320 -> 7);
head = the last 1x1 conv (to 960 / 576 / 1280), which ELimNet removes with the top stage;
classifier = V3's Linear-Hardswish-Dropout-Linear (its first Linear is resized after a cut)
or V2's Dropout-Linear.
"""
from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from elimnet.models.staged import StagedNet
from elimnet.models.weights import register_torchvision


def group_by_width(blocks: list[nn.Module]) -> list[nn.Sequential]:
    """Consecutive blocks with the same `out_channels` form one stage."""
    stages: list[list[nn.Module]] = []
    width = None
    for b in blocks:
        if b.out_channels != width:
            stages.append([])
            width = b.out_channels
        stages[-1].append(b)
    return [nn.Sequential(*s) for s in stages]


def mobilenet_to_staged(m: tvm.MobileNetV3 | tvm.MobileNetV2, act_layer: type[nn.Module]) -> StagedNet:
    f = m.features
    stages = group_by_width([f[i] for i in range(1, len(f) - 1)])
    return StagedNet(f[0], stages, f[-1], m.classifier, act_layer=act_layer)


def _v3(m: tvm.MobileNetV3) -> StagedNet:
    return mobilenet_to_staged(m, nn.Hardswish)


def _v2(m: tvm.MobileNetV2) -> StagedNet:
    return mobilenet_to_staged(m, nn.ReLU6)


mobilenet_v3_large = register_torchvision("mobilenet_v3_large", family="mobilenet", tv_build=tvm.mobilenet_v3_large,
                                          to_staged=_v3, num_stages=6)
mobilenet_v3_small = register_torchvision("mobilenet_v3_small", family="mobilenet", tv_build=tvm.mobilenet_v3_small,
                                          to_staged=_v3, num_stages=5)
mobilenet_v2 = register_torchvision("mobilenet_v2", family="mobilenet", tv_build=tvm.mobilenet_v2,
                                    to_staged=_v2, num_stages=7)
