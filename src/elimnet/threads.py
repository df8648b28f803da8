"""CPU threads for torch, set once per stage (train.threads); 0/None keeps torch's default."""
from __future__ import annotations


def set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)
