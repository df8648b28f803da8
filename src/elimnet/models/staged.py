"""The one stage view every backbone is seen through.

A `StagedNet` is stem -> ordered stages (each an nn.Sequential of blocks) -> head -> neck
-> pool -> classifier. Arch families convert their models into it (sharing the weight
tensors), and every compression (elim, layerprune, diet, filter) works on this view only,
so no code outside `models/` knows an arch-specific attribute name.
"""
from __future__ import annotations

import contextlib

from dataclasses import asdict, dataclass, field
from typing import Iterator

import torch
from torch import nn


class StagedNet(nn.Module):
    def __init__(self, stem: nn.Module, stages: list[nn.Sequential], head: nn.Module,
                 classifier: nn.Sequential, pool: nn.Module | None = None,
                 act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.act_layer = act_layer  # used by layers added later (e.g. the ELimNet neck)
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head  # channel-mixing conv that depends on the last stage (Identity if none)
        self.neck = nn.Identity()  # optional fresh 1x1 conv added after an ELimNet cut
        self.pool = pool if pool is not None else nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier  # nn.Sequential; its last module is the class Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.neck(self.head(x))

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.forward_features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_pooled(x))


# ----------------------------------------------------------------------------- helpers
def linears(classifier: nn.Module) -> list[nn.Linear]:
    return [m for m in classifier.modules() if isinstance(m, nn.Linear)]


def replace_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """model.eval() for the block; the model's training flag comes back as it was, even on error."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def feature_channels(model: StagedNet, image_size: int = 64, in_chans: int = 3) -> int:
    """Channels entering the pool (after head and neck)."""
    with torch.no_grad(), eval_mode(model):
        y = model.forward_features(torch.zeros(1, in_chans, image_size, image_size))
    return int(y.shape[1])


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_layers(model: nn.Module) -> int:
    """Weight layers: convolutions and linears (what 'depth' means for a CNN)."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


# ----------------------------------------------------------------------------- the view
@dataclass
class BlockInfo:
    path: str  # module path in the StagedNet, e.g. "stages.3.1"
    stage: int
    index: int
    in_shape: list[int]
    out_shape: list[int]
    params: int

    @property
    def in_channels(self) -> int:
        return self.in_shape[0]

    @property
    def out_channels(self) -> int:
        return self.out_shape[0]

    @property
    def stride(self) -> int:
        return max(1, round(self.in_shape[1] / self.out_shape[1]))

    @property
    def removable(self) -> bool:
        """Output shape equals input shape: the block can become an identity."""
        return self.in_shape == self.out_shape

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(in_channels=self.in_channels, out_channels=self.out_channels,
                 stride=self.stride, removable=self.removable)
        return d


@dataclass
class StageView:
    stage_names: list[str]
    blocks: list[BlockInfo] = field(default_factory=list)

    def stage_blocks(self, stage: int) -> list[BlockInfo]:
        return [b for b in self.blocks if b.stage == stage]

    @property
    def candidates(self) -> list[BlockInfo]:
        return [b for b in self.blocks if b.removable]

    def to_dict(self) -> dict:
        return {"stages": [{"name": n, "blocks": [b.to_dict() for b in self.stage_blocks(i)]}
                           for i, n in enumerate(self.stage_names)]}


def stage_view(model: StagedNet, stage_names: list[str], image_size: int = 64,
               in_chans: int = 3) -> StageView:
    """Shapes of every block, found with hooks on one dummy forward pass."""
    view = StageView(stage_names=list(stage_names[:len(model.stages)]))
    shapes: dict[str, tuple[list[int], list[int]]] = {}
    hooks = []
    for si, stage in enumerate(model.stages):
        for bi, block in enumerate(stage):
            path = f"stages.{si}.{bi}"

            def hook(mod, inp, out, path=path):
                shapes[path] = (list(inp[0].shape[1:]), list(out.shape[1:]))
            hooks.append(block.register_forward_hook(hook))
    try:
        with torch.no_grad(), eval_mode(model):
            model.forward_features(torch.zeros(1, in_chans, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    for si, stage in enumerate(model.stages):
        for bi, block in enumerate(stage):
            path = f"stages.{si}.{bi}"
            if isinstance(block, nn.Identity):  # removed by layerprune
                continue
            i, o = shapes[path]
            view.blocks.append(BlockInfo(path, si, bi, i, o, count_params(block)))
    return view
