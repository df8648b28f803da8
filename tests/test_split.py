"""Deterministic stratified splits and the uint8 cache."""
from collections import Counter

import pytest
import torch
from PIL import Image

from elimnet.data.prepare import DataError, cap_per_class, prepare, stratified_split
from elimnet.data.sources import Sample, SourceData


def test_split_is_stratified_and_identical_across_runs():
    labels = [0] * 100 + [1] * 40 + [2] * 20
    a = stratified_split(labels, 0.15, 0.15, seed=7)
    assert a == stratified_split(labels, 0.15, 0.15, seed=7)
    assert a != stratified_split(labels, 0.15, 0.15, seed=8)
    per = Counter(zip(labels, a))
    assert (per[(0, "test")], per[(1, "test")], per[(2, "test")]) == (15, 6, 3)
    assert (per[(0, "val")], per[(1, "val")], per[(2, "val")]) == (15, 6, 3)


def test_too_small_class_is_named():
    with pytest.raises(DataError, match="class 'rare' has 2 images"):
        stratified_split([0] * 10 + [1] * 2, 0.2, 0.2, seed=0, classes=["common", "rare"])


def test_cap_per_class_is_deterministic():
    samples = [Sample(lambda: None, i % 2, f"img{i:03d}") for i in range(40)]
    a = [s.ref for s in cap_per_class(samples, 5, seed=1)]
    assert a == [s.ref for s in cap_per_class(samples, 5, seed=1)] and len(a) == 10


def test_prepare_writes_uint8_cache_and_skips_corrupt(tmp_path):
    def img(v):
        return lambda: Image.new("L", (40, 30), v)

    def corrupt():
        raise OSError("truncated file")

    samples = [Sample(img(10 * i), i % 2, f"ok{i}") for i in range(20)] + [Sample(corrupt, 0, "bad.png")]
    src = SourceData("toy", ["dark", "light"], samples, channels=1)
    m = prepare(src, tmp_path, image_size=16, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    d = torch.load(tmp_path / "train.pt", weights_only=True)
    assert d["images"].dtype == torch.uint8 and d["images"].shape[1:] == (1, 16, 16)
    assert m["skipped_total"] == 1
    assert sum(s["size"] for s in m["splits"].values()) == 20
