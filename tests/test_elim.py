"""ELimNet: exact published parameter counts, removed stages gone, forward shapes."""
import pytest
import torch
from torch import nn

from elimnet.compress.elim import elim, set_num_classes
from elimnet.models import count_params, create_model, stage_view


def six_class(arch):
    torch.manual_seed(0)
    model, _ = set_num_classes(create_model(arch), 6)
    return model


@pytest.mark.parametrize("arch,k,expected", [
    ("resnet18", 0, 11_179_590), ("resnet18", 2, 683_846),
    ("efficientnet_b0", 0, 4_015_234), ("efficientnet_b0", 2, 852_486), ("efficientnet_b0", 3, 309_146),
])
def test_published_param_counts(arch, k, expected):
    model, _ = elim(six_class(arch), k)
    assert count_params(model) == expected


@pytest.mark.parametrize("k,expected", [(2, 932_454), (3, 350_906)])
def test_neck_variant_counts(k, expected):
    model, _ = elim(six_class("efficientnet_b0"), k, neck=6)
    assert count_params(model) == expected
    assert isinstance(model.neck[0], nn.Conv2d) and model.neck[0].out_channels == 6 * model.neck[0].in_channels


def test_elim_removes_exactly_the_top_stages_and_head():
    full = six_class("efficientnet_lite0")
    cut, report = elim(full, 3)
    assert len(cut.stages) == 4 and len(full.stages) == 7  # the input is untouched
    assert report["removed_stages"] == [4, 5, 6] and report["removed_head"]
    assert isinstance(cut.head, nn.Identity)
    assert not any(p is q for p in cut.parameters() for q in full.parameters())
    # The kept stages keep their weights; the classifier sees the last kept stage's 80 channels.
    assert torch.equal(cut.stages[3][0].project[0].weight, full.stages[3][0].project[0].weight)
    assert cut.classifier[-1].in_features == 80 and cut.classifier[-1].out_features == 6
    assert cut(torch.zeros(2, 3, 64, 64)).shape == (2, 6)
    view = stage_view(cut, ["s"] * 4)
    assert max(b.stage for b in view.blocks) == 3


def test_elim_zero_is_identity_transform():
    full = six_class("resnet18")
    same, report = elim(full, 0)
    assert count_params(same) == count_params(full) and report["removed_stages"] == []


@pytest.mark.parametrize("k", [-1, 4, 9])
def test_elim_out_of_range(k):
    with pytest.raises(ValueError, match=r"model.elim=.*\[0, 3\]"):
        elim(six_class("resnet18"), k)


def test_lite0_pretrained_weights_load_and_differ_from_random():
    pre = create_model("efficientnet_lite0", pretrained=True)
    torch.manual_seed(0)
    rnd = create_model("efficientnet_lite0")
    assert count_params(pre) == count_params(rnd) == 4_652_008
    assert not torch.equal(pre.stem[0].weight, rnd.stem[0].weight)
    # Trained BN statistics, not the init values.
    assert not torch.allclose(pre.stem[1].running_var, torch.ones(32))
