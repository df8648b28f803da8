"""Involution (Li et al., CVPR'21; seed 004 section 2.1): a kernel generated per pixel from that pixel.

    kernel generation:  [avg-pool(stride)] -> reduce 1x1 conv (C -> C/4) -> BN -> ReLU
                        -> span 1x1 conv (C/4 -> K*K*G, with bias)
    application:        unfold x into K*K patches (stride s); every channel of group g is
                        multiplied by group g's K*K kernel at its pixel and summed over the taps.

Channels are split into G = C / 16 groups of 16 that share one generated kernel. The span
conv's output is laid out group-major: channel g*K*K + t is tap t of group g's kernel. That
layout is what Model Diet respects: slicing a contiguous run of whole groups keeps every
generated kernel intact (compress/diet.py, `diet_involutions`).

`forward` reads G from the span conv's actual output width, not from the constructor, so a
narrowed copy (Model Diet's tracing and its result) runs without rebuilding the module.
The stride-s average pool uses ceil_mode so its grid equals unfold's on odd sizes too (on even
sizes, every size RedNet sees at 224 px, it is the plain pool of the original).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

GROUP_CHANNELS = 16  # the RedNet paper's channels per group
REDUCTION = 4  # reduce conv: C -> C / 4


class Involution(nn.Module):
    def __init__(self, channels: int, kernel_size: int = 7, stride: int = 1,
                 group_channels: int = GROUP_CHANNELS, reduction: int = REDUCTION):
        super().__init__()
        if channels % group_channels:
            raise ValueError(f"involution: {channels} channels are not a multiple of {group_channels} per group")
        if kernel_size % 2 == 0:
            raise ValueError(f"involution: kernel_size={kernel_size} must be odd")
        self.kernel_size = kernel_size
        self.stride = stride
        self.group_channels = group_channels
        self.channels = channels
        self.groups = channels // group_channels
        self.pool = (nn.AvgPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity())
        self.reduce = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1, bias=False),
                                    nn.BatchNorm2d(channels // reduction), nn.ReLU(inplace=True))
        self.span = nn.Conv2d(channels // reduction, kernel_size * kernel_size * self.groups, 1)

    def sync_width(self) -> None:
        """Update `groups`/`channels` from the span conv (after a compression narrowed it)."""
        self.groups = self.span.out_channels // (self.kernel_size ** 2)
        self.channels = self.groups * self.group_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k2 = self.kernel_size ** 2
        weight = self.span(self.reduce(self.pool(x)))
        b, c, h, w = weight.shape
        groups = c // k2
        if groups * k2 != c or x.shape[1] != groups * self.group_channels:
            raise RuntimeError(f"involution: {x.shape[1]} input channels do not fit {c} generated taps "
                               f"({self.kernel_size}x{self.kernel_size} kernels, {self.group_channels} channels "
                               "per group)")
        patches = F.unfold(x, self.kernel_size, padding=(self.kernel_size - 1) // 2, stride=self.stride)
        patches = patches.view(b, groups, self.group_channels, k2, h, w)
        out = (weight.view(b, groups, 1, k2, h, w) * patches).sum(dim=3)
        return out.reshape(b, groups * self.group_channels, h, w)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}")

    def describe(self) -> str:
        """Operation name for the MAC table (elimnet.bench.mac_table)."""
        return f"Involution ({self.kernel_size}x{self.kernel_size}/{self.stride}, G={self.groups})"


def involution_macs(module: Involution, out_hw: tuple[int, int]) -> int:
    """Multiply-adds of the unfold multiply-add (C * K*K per output pixel) that FLOP counters skip."""
    return module.channels * module.kernel_size ** 2 * out_hw[0] * out_hw[1]
