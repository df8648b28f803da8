"""In-memory uint8 image tensors and the batches training reads from them.

Images are decoded once by `prepare`; training only slices, flips, converts and normalises
whole batches, so no per-image Python work runs inside the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch


@dataclass
class TensorSplit:
    images: torch.Tensor  # uint8 [N, C, S, S], C = 1 or 3
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.numel())

    @classmethod
    def load(cls, path: str | Path) -> "TensorSplit":
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(d["images"], d["labels"])

    def subset(self, n: int) -> "TensorSplit":
        return TensorSplit(self.images[:n], self.labels[:n])


class Normalizer:
    """uint8 [B, C, S, S] -> float [B, 3, S, S], (x/255 - mean) / std, grayscale expanded."""

    def __init__(self, mean, std, channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


def iterate_batches(split: TensorSplit, batch_size: int, normalize: Normalizer, *, shuffle: bool = False,
                    generator: torch.Generator | None = None, hflip: bool = False, vflip: bool = False,
                    drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = split.images[idx]
        if hflip or vflip:
            x = _random_flips(x, generator, hflip, vflip)
        yield normalize(x), split.labels[idx]


def _random_flips(x: torch.Tensor, generator, hflip: bool, vflip: bool) -> torch.Tensor:
    x = x.clone()
    for dim, on in ((3, hflip), (2, vflip)):
        if on:
            mask = torch.rand(x.shape[0], generator=generator) < 0.5
            if mask.any():
                x[mask] = x[mask].flip(dim)
    return x
