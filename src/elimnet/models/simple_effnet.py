"""Simplified EfficientNet (seed 002): a small inverted-residual net for 56x56 inputs, optional SE.

Layout (seed 002, Table 1): a stride-1 3x3 stem to 16 channels, five stages, a 1x1 head to
1280, global average pool, linear. Each stage is the seed's "residual block" group: `repeats`
shape-preserving blocks (ID=True) at the stage's input width, then one transition block
(ID=False) to the next width with the stage's stride:

    widths  16 -> 24 -> 40 -> 80 -> 160 -> 320,  repeats 1, 1, 2, 3, 4,  strides 1, 2, 2, 2, 1

so at 56 px the stages run at 56, 56->28, 28->14, 14->7, 7 px and the head sees 320x7x7.

A block is 1x1 expand (Ne = 4 Ni) -> 3x3 depthwise (stride S) -> [SE, rank reduction 4]
-> 1x1 project, BN after each conv, ReLU after the first two, identity skip when ID=True.
Block [C] (`experts` = M > 0) makes those three convs CondConvs of M experts, mixed per image
by one routing function (GAP -> FC -> sigmoid) on the block's input, with SE kept.
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
from elimnet.fields import Field, int_range, one_of
from elimnet.models.registry import register_family, register_model
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
    "experts": 0,  # > 0: block [C], CondConv with this many experts (SE included)
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


class CondConv2d(nn.Module):
    """Conditionally parameterised conv (CondConv, seed 002 Figure 4): M expert weights mixed per image.

    W(x) = sum_m r_m(x) W_m, where r(x) in (0, 1)^M comes from the block's routing function.
    The mixing is one matmul (B x M) @ (M x numel(W_m)), so torch's FLOP counter, and the MAC
    table, count it; the per-image kernels then run as one grouped conv over the batch.
    `groups == channels` gives the depthwise case (the seed's "3D" weights).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, experts: int = 4):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = cin, cout, kernel
        self.stride, self.groups, self.experts = stride, groups, experts
        self.kernel_shape = (cout, cin // groups, kernel, kernel)
        # (M, numel): flat experts, so channels_last conversion (4D tensors only) leaves them alone
        self.weight = nn.Parameter(torch.empty(experts, cout * (cin // groups) * kernel * kernel))
        with torch.no_grad():
            for m in range(experts):  # each expert initialised like a plain conv
                nn.init.kaiming_normal_(self.weight[m].view(self.kernel_shape), mode="fan_out")

    def experts_weight(self) -> torch.Tensor:
        """(M, cout, cin/groups, k, k)."""
        return self.weight.view(self.experts, *self.kernel_shape)

    def mixed_weight(self, routing: torch.Tensor) -> torch.Tensor:
        """(B, M) routing weights -> (B, cout, cin/groups, k, k) per-image kernels."""
        return (routing @ self.weight).view(routing.shape[0], *self.kernel_shape)

    def forward(self, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weight = self.mixed_weight(routing).reshape(-1, *self.kernel_shape[1:])
        y = nn.functional.conv2d(x.reshape(1, b * c, h, w), weight, None, self.stride, self.kernel_size // 2,
                                 groups=b * self.groups)
        return y.reshape(b, self.out_channels, y.shape[-2], y.shape[-1])


class Routing(nn.Module):
    """CondConv routing: global average pool -> FC (C -> M) -> sigmoid, one set per image and block."""

    def __init__(self, channels: int, experts: int):
        super().__init__()
        self.fc = nn.Linear(channels, experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(x.mean((2, 3))))


class CondConvResidual(nn.Module):
    """Block [C] of seed 002: the inverted residual of block [B] (SE included) with every conv a
    CondConv of M experts; one routing function on the block's input serves its three convs."""

    def __init__(self, cin: int, cout: int, expand: int = 4, kernel: int = 3, stride: int = 1,
                 experts: int = 4, depthwise: bool = True):
        super().__init__()
        mid = cin * expand
        self.routing = Routing(cin, experts)
        self.expand = CondConv2d(cin, mid, 1, experts=experts)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv = CondConv2d(mid, mid, kernel, stride, groups=mid if depthwise else 1, experts=experts)
        self.bn2 = nn.BatchNorm2d(mid)
        self.se = SqueezeExcite(mid)
        self.project = CondConv2d(mid, cout, 1, experts=experts)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.identity = stride == 1 and cin == cout
        self.label = (f"Block (Ne={expand}Ni, F={kernel}, S={stride}, ID={self.identity}, SE, CondConv M={experts}"
                      f"{'' if depthwise else ', dense'})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.routing(x)
        y = self.act(self.bn1(self.expand(x, r)))
        y = self.se(self.act(self.bn2(self.conv(y, r))))
        y = self.bn3(self.project(y, r))
        return x + y if self.identity else y

    def describe(self) -> str:
        return self.label


def condconv_params(cin: int, cout: int, expand: int = 4, kernel: int = 3, experts: int = 4) -> int:
    """Parameters of one CondConvResidual (depthwise 3x3): M x the convs, + routing, SE and BN."""
    mid = cin * expand
    convs = cin * mid + mid * kernel * kernel + mid * cout
    return experts * convs + (cin * experts + experts) + se_params(mid) + 2 * (2 * mid + cout)


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
    if not (isinstance(g["experts"], int) and g["experts"] >= 0):
        raise ConfigError(f"arch_args.experts={g['experts']}: must be an integer >= 0 (0 = no CondConv)")
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
        kw = dict(expand=g["expand"][i], kernel=g["kernel"][i], depthwise=g["depthwise"])
        if g["experts"]:
            block, kw = CondConvResidual, dict(kw, experts=g["experts"])
        else:
            block, kw = InvertedResidual, dict(kw, se=g["se"])
        blocks = [block(cin, cin, stride=1, **kw) for _ in range(g["repeats"][i])]
        blocks.append(block(cin, cout, stride=g["strides"][i], **kw))
        stages.append(nn.Sequential(*blocks))
    head = conv_bn_relu(widths[-1], g["head"], 1)
    model = StagedNet(stem, stages, head, nn.Sequential(nn.Linear(g["head"], num_classes)), act_layer=nn.ReLU)
    _init_weights(model)
    return model


_COMMON = dict(family="simple_effnet", num_stages=NUM_STAGES, stage_names=STAGE_NAMES)
# model.block picks the variant: the family's check maps (simple_effnet, se) onto simple_effnet_se.
_BLOCKS = {"standard": "simple_effnet", "se": "simple_effnet_se", "condconv": "simple_effnet_condconv"}


def _pick_block_variant(values: dict) -> None:
    """model.block picks the arch's block variant; an explicit variant arch wins. Normalised here, once, when
    the config is validated, so every stage sees the same arch."""
    arch_block = {arch: block for block, arch in _BLOCKS.items()}.get(values["model.arch"])
    if arch_block is not None:
        block = arch_block if arch_block != "standard" else values["model.block"]
        values["model.arch"], values["model.block"] = _BLOCKS[block], block
    elif values["model.block"] != "standard":
        raise ConfigError(f"model.block={values['model.block']}: must be standard for arch {values['model.arch']} "
                          f"(block variants exist for {', '.join(sorted(_BLOCKS.values()))})")


register_family("simple_effnet", check=_pick_block_variant, params={
    "model.block": Field("standard", one_of(list(_BLOCKS)), "simple_effnet block type"),
    "model.experts": Field(4, int_range(1, 64), "CondConv experts per layer (model.block=condconv)"),
})


@register_model("simple_effnet", meta={"block": "standard", "blocks": _BLOCKS}, **_COMMON)
def simple_effnet() -> StagedNet:
    return build_simple_effnet()


@register_model("simple_effnet_se", meta={"block": "se", "blocks": _BLOCKS}, **_COMMON)
def simple_effnet_se() -> StagedNet:
    return build_simple_effnet(se=True)


@register_model("simple_effnet_condconv", meta={"block": "condconv", "blocks": _BLOCKS, "arch_args": True,
                                               "params": {"experts": "model.experts"}}, **_COMMON)
def simple_effnet_condconv(experts: int = 4) -> StagedNet:
    """Block [C]: SE + CondConv; `model.experts` reaches the builder as arch_args (saved in the model file)."""
    return build_simple_effnet(experts=experts)


@register_model("searched_mbconv", meta={"arch_args": True}, **_COMMON)
def searched_mbconv(**genome) -> StagedNet:
    """The search space's parametric net; without a genome it is the seed's layout."""
    return build_simple_effnet(**genome)
