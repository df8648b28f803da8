"""RedNet-26/38/50/101/152 (Li et al., CVPR'21) in the stage view: ResNet with involution.

Every bottleneck's 3x3 conv is a 7x7 involution (stride on the first block of stages 2-4);
the 1x1 convs and the plain strided 1x1 downsample stay. The stem is 3x3/2 conv (32) ->
3x3 involution -> BN -> ReLU -> 3x3 conv (64) -> 3x3/2 max pool. Stages are layer1..layer4
with (1,2,4,1), (2,3,5,2), (3,4,6,3), (3,4,23,3), (3,8,36,3) blocks, no head conv, classifier = fc.

Param counts at 1000 classes: 9.23 / 12.39 / 15.54 / 25.65 / 33.99 M (seed 004 Table 2.1:
9.2 / 12.4 / 15.5 / 25.6 / 34.0; tests/test_rednet.py).

ImageNet weights: the authors' released mmcls checkpoints, mapped onto these module names
(`map_mmcls_keys`); see `models/rednet_weights.py`.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from elimnet.models.involution import Involution
from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet

DEPTHS: dict[int, tuple[int, int, int, int]] = {26: (1, 2, 4, 1), 38: (2, 3, 5, 2), 50: (3, 4, 6, 3),
                                                 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
EXPANSION = 4
INVOLUTION_KERNEL = 7


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class RedBottleneck(nn.Module):
    """1x1 conv -> BN -> ReLU -> 7x7 involution (stride) -> BN -> ReLU -> 1x1 conv -> BN, + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        mid = cout // EXPANSION
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = Involution(mid, INVOLUTION_KERNEL, stride)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def build_rednet(depth: int, num_classes: int = 1000, stem_channels: int = 64, base_channels: int = 64) -> StagedNet:
    if depth not in DEPTHS:
        raise ValueError(f"RedNet depth {depth}: must be one of {sorted(DEPTHS)}")
    half = stem_channels // 2
    stem = nn.Sequential(conv_bn_relu(3, half, 3, 2), Involution(half, 3, 1), nn.BatchNorm2d(half),
                         nn.ReLU(inplace=True), conv_bn_relu(half, stem_channels, 3, 1),
                         nn.MaxPool2d(3, 2, padding=1))
    stages, cin, cout = [], stem_channels, base_channels * EXPANSION
    for i, n in enumerate(DEPTHS[depth]):
        stride = 1 if i == 0 else 2
        blocks = [RedBottleneck(cin, cout, stride)] + [RedBottleneck(cout, cout) for _ in range(n - 1)]
        stages.append(nn.Sequential(*blocks))
        cin, cout = cout, cout * 2
    model = StagedNet(stem, stages, nn.Identity(), nn.Sequential(nn.Linear(cin, num_classes)))
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    """mmcls's RedNet init: kaiming convs, BN = 1/0, last BN of each block zero (zero_init_residual)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, RedBottleneck):
            nn.init.zeros_(m.bn3.weight)


def _register(depth: int):
    name = f"rednet{depth}"

    def build() -> StagedNet:
        return build_rednet(depth)

    def load_pretrained(cache_dir: Path) -> StagedNet:
        from elimnet.models.rednet_weights import load_rednet_pretrained
        return load_rednet_pretrained(name, build(), cache_dir)

    from elimnet.models.rednet_weights import RELEASES
    release = RELEASES.get(name)
    build.__name__ = name
    kwargs = {}
    if release is not None:
        kwargs = dict(load_pretrained=load_pretrained, weights_name=release.filename, weights_url=release.url,
                      meta={"manual_weights": release.url is None})
    register_model(name, family="rednet", num_stages=4, stage_names=STAGE_NAMES, **kwargs)(build)
    return build


rednet26 = _register(26)
rednet38 = _register(38)
rednet50 = _register(50)
rednet101 = _register(101)
rednet152 = _register(152)
