"""Simplified EfficientNet (seed 002): a small inverted-residual net for 56x56 inputs, optional SE.

Layout (seed 002, Table 1): a stride-1 3x3 stem to 16 channels, five stages, a 1x1 head to
1280, global average pool, linear. Each stage is the seed's "residual block" group: `repeats`
shape-preserving blocks (ID=True) at the stage's input width, then one transition block
(ID=False) to the next width with the stage's stride:

    widths  16 -> 24 -> 40 -> 80 -> 160 -> 320,  repeats 1, 1, 2, 3, 4,  strides 1, 2, 2, 2, 1

so at 56 px the stages run at 56, 56->28, 28->14, 14->7, 7 px and the head sees 320x7x7.

A block is 1x1 expand (Ne = 4 Ni) -> 3x3 depthwise (stride S) -> [SE, rank reduction 4]
-> 1x1 project, BN after each conv, ReLU after the first two, identity skip when ID=True.
The seed's MAC table counts that 3x3 as a dense Ne->Ne convolution; `depthwise=False`
builds that variant so its figures can be reproduced exactly (docs/simple_effnet.md).

The same builder takes a genome (`widths`, `repeats`, `strides`, `expand`, `kernel`, `se`,
`head`), which is how the NAS search (elimnet.search) builds and saves its models:
`searched_mbconv` is this builder with the genome stored as `arch_args` in the model file.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from elimnet.errors import ConfigError
from elimnet.models.efficientnet_lite import _init_weights
from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet

SE_REDUCTION = 4  # seed 002: "internal rank reduction ratio R = 4"
NUM_STAGES = 5
STAGE_NAMES = ("s16", "s24", "s40", "s80", "s160")  # named by the width each stage works at

# The seed's Table 1 as a genome.
SEED_GENOME: dict = {
    "widths": [16, 24, 40, 80, 160, 320],  # stem width, then each stage's output width
    "repeats": [1, 1, 2, 3, 4],  # ID=True blocks before each stage's transition
    "strides": [1, 2, 2, 2, 1],  # stride of each stage's transition block
    "expand": [4, 4, 4, 4, 4],  # Ne = expand * Ni
    "kernel": [3, 3, 3, 3, 3],
    "se": False,
    "head": 1280,
    "depthwise": True,
}


def conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Per-channel gating from globally pooled features: C -> C/r -> C, sigmoid (seed 002, Figure 3)."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


def se_params(channels: int, reduction: int = SE_REDUCTION) -> int:
    """Parameters one SqueezeExcite adds (two 1x1 convs with bias)."""
    hidden = max(1, channels // reduction)
    return 2 * channels * hidden + hidden + channels


class InvertedResidual(nn.Module):
    """1x1 expand -> kxk (depthwise) conv -> optional SE -> 1x1 project; skip when ID=True."""

    def __init__(self, cin: int, cout: int, expand: int = 4, kernel: int = 3, stride: int = 1,
                 se: bool = False, depthwise: bool = True):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn_relu(cin, mid, 1)
        self.conv = conv_bn_relu(mid, mid, kernel, stride, groups=mid if depthwise else 1)
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.project = conv_bn_relu(mid, cout, 1, act=False)
        self.identity = stride == 1 and cin == cout
        self.label = (f"Block (Ne={expand}Ni, F={kernel}, S={stride}, ID={self.identity}"
                      f"{', SE' if se else ''}{'' if depthwise else ', dense'})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.conv(self.expand(x))))
        return x + y if self.identity else y

    def describe(self) -> str:
        """The seed's Table 4 operation name (elimnet.bench.mac_table)."""
        return self.label


def _check_genome(g: dict) -> None:
    for key, n in (("widths", NUM_STAGES + 1), ("repeats", NUM_STAGES), ("strides", NUM_STAGES),
                   ("expand", NUM_STAGES), ("kernel", NUM_STAGES)):
        v = g[key]
        if not (isinstance(v, (list, tuple)) and len(v) == n and all(isinstance(x, int) and x >= 0 for x in v)):
            raise ConfigError(f"arch_args.{key}={v}: must be a list of {n} non-negative integers")
    if min(g["widths"]) < 1 or min(g["expand"]) < 1 or min(g["strides"]) < 1:
        raise ConfigError(f"arch_args: widths, expand and strides must be >= 1 (got {g})")
    if any(k % 2 == 0 for k in g["kernel"]):
        raise ConfigError(f"arch_args.kernel={g['kernel']}: must be odd sizes")


def build_simple_effnet(num_classes: int = 1000, **genome) -> StagedNet:
    unknown = set(genome) - set(SEED_GENOME)
    if unknown:
        raise ConfigError(f"arch_args: unknown keys {sorted(unknown)}; allowed: {', '.join(SEED_GENOME)}")
    g = {**SEED_GENOME, **genome}
    _check_genome(g)
    widths: Sequence[int] = g["widths"]
    stem = conv_bn_relu(3, widths[0], 3, 1)
    stages = []
    for i in range(NUM_STAGES):
        cin, cout = widths[i], widths[i + 1]
        kw = dict(expand=g["expand"][i], kernel=g["kernel"][i], se=g["se"], depthwise=g["depthwise"])
        blocks = [InvertedResidual(cin, cin, stride=1, **kw) for _ in range(g["repeats"][i])]
        blocks.append(InvertedResidual(cin, cout, stride=g["strides"][i], **kw))
        stages.append(nn.Sequential(*blocks))
    head = conv_bn_relu(widths[-1], g["head"], 1)
    model = StagedNet(stem, stages, head, nn.Sequential(nn.Linear(g["head"], num_classes)), act_layer=nn.ReLU)
    _init_weights(model)
    return model


_COMMON = dict(family="simple_effnet", num_stages=NUM_STAGES, stage_names=STAGE_NAMES)
# model.block picks the variant: config.py maps (simple_effnet, se) onto simple_effnet_se.
_BLOCKS = {"standard": "simple_effnet", "se": "simple_effnet_se"}


@register_model("simple_effnet", meta={"block": "standard", "blocks": _BLOCKS}, **_COMMON)
def simple_effnet() -> StagedNet:
    return build_simple_effnet()


@register_model("simple_effnet_se", meta={"block": "se", "blocks": _BLOCKS}, **_COMMON)
def simple_effnet_se() -> StagedNet:
    return build_simple_effnet(se=True)


@register_model("searched_mbconv", meta={"arch_args": True}, **_COMMON)
def searched_mbconv(**genome) -> StagedNet:
    """The search space's parametric net; without a genome it is the seed's layout."""
    return build_simple_effnet(**genome)
