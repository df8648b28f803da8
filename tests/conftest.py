"""Shared test setup: no network, no telemetry, small thread counts, tiny data."""
from __future__ import annotations

import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from elimnet.data.tensors import TensorSplit  # noqa: E402


@pytest.fixture
def tiny_split():
    """A seeded 4-class split of 32x32 uint8 images whose classes differ by mean brightness."""
    def make(n_per_class: int = 8, size: int = 32, classes: int = 4, channels: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        xs, ys = [], []
        for c in range(classes):
            base = 30 + c * (180 // max(1, classes - 1))
            x = (base + torch.randint(-20, 20, (n_per_class, channels, size, size), generator=g)).clamp(0, 255)
            xs.append(x.to(torch.uint8))
            ys.append(torch.full((n_per_class,), c, dtype=torch.int64))
        return TensorSplit(torch.cat(xs), torch.cat(ys))
    return make
