"""Training repeats of the candidate start from different fresh layers (repeat 0 from compress's own draw)."""
from __future__ import annotations

import copy

import pytest
import torch

from elimnet.compress.build import build_from_params
from elimnet.config import load_params
from elimnet.train.classifier import fresh_layers, with_classes
from elimnet.train.finetune import repeat_seed


def _candidate(*over: str):
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "data.image_size=32",
                                            *over])
    return build_from_params(cfg, 5)[0]


def _fresh_names(model) -> set[str]:
    layers = fresh_layers(model)
    return {f"{n}.{p}" for n, m in model.named_modules() if any(m is f for f in layers)
            for p, _ in m.named_parameters(recurse=False)}


def _draw(cand, repeat: int) -> dict[str, torch.Tensor]:
    model, config = with_classes(copy.deepcopy(cand), {"num_classes": 5}, 5, repeat_seed(42, repeat), repeat)
    assert config == {"num_classes": 5}
    return model.state_dict()


def test_repeat_0_keeps_compress_draw_and_later_repeats_redraw_only_the_fresh_layers():
    cand = _candidate("model.elim=1", "model.neck=0.5")
    before = cand.state_dict()
    fresh = _fresh_names(cand)
    assert len(fresh) == 3 and sum(".neck." in n or n.startswith("neck.") for n in fresh) == 1  # Linear w+b, neck conv
    r0, r1, r2 = (_draw(cand, r) for r in range(3))
    assert all(torch.equal(v, before[k]) for k, v in r0.items())  # bit-identical to the single-run candidate
    assert {k for k, v in r1.items() if not torch.equal(v, before[k])} == fresh
    assert {k for k, v in r2.items() if not torch.equal(v, r1[k])} == fresh
    assert all(torch.equal(v, _draw(cand, 1)[k]) for k, v in r1.items())  # seeded by the repeat


@pytest.mark.parametrize("over", [(), ("model.diet.groups=2", "model.elim=0")])
def test_a_redraw_keeps_the_range_of_the_first_draw(over):
    """Diet slices the class layer of a wider fresh Linear: its range stays the wider layer's, not its own."""
    cand = _candidate(*over)
    before, after = cand.state_dict(), _draw(cand, 1)
    for name in (n for n in _fresh_names(cand) if n.endswith("weight")):
        old, new = before[name].abs().max(), after[name].abs().max()
        assert 0.95 * old < new <= old
    layer = fresh_layers(cand)[0]
    if over:  # sliced: the range is the unsliced layer's, narrower than a fresh layer of this width would get
        assert layer.weight.abs().max() < layer.in_features ** -0.5
