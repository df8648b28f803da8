"""Helpers for sources that ship an official split (Imagenette train/val, Fashion-MNIST train/test).

`prepare` keeps a split that every sample carries, so these run inside the source:

    carve(samples, "val", "test", share=0.5, seed=42)   # half of each class's val becomes test
    samples = cap_per_split(samples, max_per_class=50, seed=42)
"""
from __future__ import annotations

import math

import numpy as np

from elimnet.data.sources import Sample


def carve(samples: list[Sample], from_split: str, to_split: str, share: float, seed: int) -> None:
    """Move a stratified `share` of each class's `from_split` samples to `to_split`, in place.

    Each class keeps at least one sample on both sides when it has two or more.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        if s.split == from_split:
            by_class.setdefault(s.label, []).append(s)
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: s.ref)  # independent of listing order
        n = len(group)
        k = min(n - 1, max(1, round(n * share))) if n >= 2 else 0
        for i in rng.permutation(n)[:k]:
            group[i].split = to_split


def cap_per_split(samples: list[Sample], max_per_class: int | None, seed: int) -> list[Sample]:
    """Keep at most `max_per_class` samples per class, shared among the splits in proportion to their
    sizes, at least one per split; so `prepare`'s own cap keeps them all and no split loses a class."""
    if not max_per_class:
        return samples
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.label, s.split or ""), []).append(s)
    kept: list[Sample] = []
    for label in sorted({k[0] for k in groups}):
        splits = sorted(sp for (lb, sp) in groups if lb == label)
        sizes = {sp: len(groups[(label, sp)]) for sp in splits}
        quota = _quotas(sizes, max_per_class)
        for sp in splits:
            group = sorted(groups[(label, sp)], key=lambda s: s.ref)
            kept += [group[i] for i in sorted(rng.permutation(len(group))[:quota[sp]])]
    return kept


def _quotas(sizes: dict[str, int], cap: int) -> dict[str, int]:
    total = sum(sizes.values())
    if total <= cap:
        return dict(sizes)
    exact = {sp: cap * n / total for sp, n in sizes.items()}
    quota = {sp: min(sizes[sp], max(1, math.floor(x))) for sp, x in exact.items()}
    # Largest remainders fill up to the cap; the biggest shares give back if the minimum-one rule overshot.
    for sp in sorted(exact, key=lambda sp: exact[sp] - quota[sp], reverse=True):
        if sum(quota.values()) >= cap:
            break
        if quota[sp] < sizes[sp]:
            quota[sp] += 1
    while sum(quota.values()) > cap and max(quota.values()) > 1:
        quota[max(quota, key=quota.get)] -= 1
    return quota
