"""torch-pruning filter baseline: uniform channel ratio, exact replay, L1 keeps the largest channels."""
import pytest
import torch
from torch import nn

from elimnet.compress.base import TRANSFORMS, CompressContext
from elimnet.compress.elim import set_num_classes
from elimnet.compress.filter_prune import filter_prune
from elimnet.config import ConfigError
from elimnet.models import count_params, create_model
from elimnet.models.staged import StagedNet


def ten_class(arch, seed=0):
    torch.manual_seed(seed)
    model, _ = set_num_classes(create_model(arch), 10)
    return model


def widths(model):
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


@pytest.fixture(scope="module")
def resnet18_half():
    full = ten_class("resnet18")
    small, report = filter_prune(full, 0.5)
    return full, small, report


def test_ratio_is_a_uniform_channel_ratio(resnet18_half):
    full, small, report = resnet18_half
    before, after = widths(full), widths(small)
    for name, c in before.items():  # every layer keeps int(C * (1 - r)) channels; the classes stay
        assert after[name] == (c if name == "classifier.0" else int(c * 0.5)), name
    assert small.stem[0].in_channels == 3
    # both sides of most weights shrink: parameters fall by ~1 - (1 - r)^2 = 0.75, within 5%
    reduction = 1 - count_params(small) / count_params(full)
    assert abs(reduction - 0.75) < 0.05
    assert report["params_after"] == count_params(small) and report["params_before"] == 11_181_642
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_history_replays_exact_shapes_on_a_random_init_model(resnet18_half):
    full, small, report = resnet18_half
    other = ten_class("resnet18", seed=7)  # different weights: L1 would choose other channels
    rebuilt, _ = TRANSFORMS["filter"].apply(other, ratio=0.5, importance="l1", history=report["history"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in small.state_dict().items()}
    rebuilt.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt.eval()(x), small.eval()(x))
    assert count_params(other) == 11_181_642  # replay is pure too


def _plain_stack():
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
    return StagedNet(block(3, 8), [nn.Sequential(block(8, 8))], nn.Identity(), nn.Sequential(nn.Linear(8, 4)))


def test_l1_keeps_the_channels_with_the_largest_weights():
    torch.manual_seed(0)
    model = _plain_stack()
    big = [1, 3, 4, 6]
    with torch.no_grad():  # every tensor coupled to stem channels `big` is 10x larger
        for p in model.parameters():
            p.uniform_(0.1, 0.2)
        model.stem[0].weight[big] *= 10
        model.stem[1].weight[big] *= 10
        model.stem[1].bias[big] *= 10
        model.stages[0][0][0].weight[:, big] *= 10
    small, _ = filter_prune(model, 0.5)
    assert torch.equal(small.stem[0].weight, model.stem[0].weight[big])
    # the next conv keeps the matching input columns (its own outputs are ranked separately)
    kept_rows, cols = small.stages[0][0][0].weight, model.stages[0][0][0].weight[:, big]
    assert kept_rows.shape == (4, 4, 3, 3) and all(any(torch.equal(r, c) for c in cols) for r in kept_rows)


def test_taylor_uses_training_batches(tiny_split):
    torch.manual_seed(0)
    model = _plain_stack()
    ctx = CompressContext(arch="plain", image_size=32, num_classes=4, train=tiny_split(n_per_class=4))
    small, report = filter_prune(model, 0.25, "taylor", ctx)
    assert widths(small) == {"stem.0": 6, "stages.0.0.0": 6, "classifier.0": 4}
    assert all(p.grad is None for p in small.parameters()) and all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError, match=r"^model\.filter\.importance=taylor: needs the training split"):
        filter_prune(model, 0.25, "taylor", CompressContext(arch="plain", image_size=32, num_classes=4))


def test_se_blocks_prune_and_hit_the_ratio():
    full = ten_class("mobilenet_v3_small")
    small, _ = filter_prune(full, 0.25)
    assert abs(1 - count_params(small) / count_params(full) - (1 - 0.75 ** 2)) < 0.05
    se = small.stages[0][0].block[1]
    assert (se.fc1.in_channels, se.fc1.out_channels) == (12, 6)
    assert small.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_ratio_out_of_range(ratio):
    with pytest.raises(ConfigError, match=r"^model\.filter\.ratio="):
        filter_prune(_plain_stack(), ratio)
