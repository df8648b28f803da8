"""Model Diet: the seed's published VGG16-bn counts, group selection, the zero-mask identity, replay."""
import pytest
import torch
from torch import nn

from elimnet.bench.model_size import count_macs
from elimnet.checkpoint import load_model, model_config, save_model
from elimnet.compress import CompressContext, plan_and_apply
from elimnet.compress.diet import diet, group_sums, trace_cuts
from elimnet.compress.elim import set_num_classes
from elimnet.config import ConfigError, load_params
from elimnet.models import count_params, create_model
from elimnet.models.staged import StagedNet


def ten_class(arch, seed=0):
    torch.manual_seed(seed)
    model, _ = set_num_classes(create_model(arch), 10)
    return model


@pytest.fixture(scope="module")
def vgg16_diet():
    """VGG16-bn builds are heavy: build once for the module, skipping the random init of 134M weights."""
    torch.set_num_threads(1)
    with torch.device("meta"):
        full, _ = set_num_classes(create_model("vgg16_bn"), 10)
    full.to_empty(device="cpu")
    with torch.no_grad():  # the values do not matter for counts, only that they are finite
        for name, t in full.state_dict().items():
            t.fill_(1.0 if name.endswith("running_var") else 0.01)
    full_params = count_params(full)
    small, report = diet(full, 2)
    del full
    return full_params, small, report


def test_vgg16_bn_published_counts(vgg16_diet):
    full_params, small, report = vgg16_diet
    assert full_params == 134_309_962 and report["params_before"] == 134_309_962
    assert count_params(small) == 33_593_386 == report["params_after"]  # seed 004 table 4.3
    macs = count_macs(small, 224)
    assert macs == 3_888_238_592  # convs + matmuls; the seed counts 3.93 G with another counter
    assert abs(macs / 1e9 - 3.93) / 3.93 < 0.02
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == 3 and convs[0].out_channels == 32 and convs[-1].out_channels == 256
    fcs = [m for m in small.classifier if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(256 * 49, 2048), (2048, 2048), (2048, 10)]


@pytest.mark.parametrize("keep_early,expected", [(False, 2_801_450), (True, 2_937_546)])
def test_resnet18_counts_and_widths(keep_early, expected):
    full = ten_class("resnet18")
    small, report = diet(full, 2, keep_early=keep_early)
    assert count_params(small) == expected and count_params(full) == 11_181_642  # input untouched
    early = 64 if keep_early else 32
    assert small.stem[0].out_channels == early and small.stages[0][1].conv2.out_channels == early
    b = small.stages[1][0]  # first halved block: reads the kept-width layer1 output
    assert (b.conv1.in_channels, b.conv1.out_channels) == (early, 64)
    assert (b.downsample[0].in_channels, b.downsample[0].out_channels) == (early, 64)
    assert small.stages[3][1].conv2.out_channels == 256 and small.classifier[-1].in_features == 256
    assert small.classifier[-1].out_features == 10 and small.stem[0].in_channels == 3
    assert small(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # keep_early: the stem conv + BN and layer1's 2 blocks x (2 convs + 2 BNs) keep every channel
    assert len(report["unsliced_layers"]) == (10 if keep_early else 0)
    assert all(p.startswith(("stem.", "stages.0.")) for p in report["unsliced_layers"])


def _stack(depthwise=False):
    """stem conv-BN-ReLU (3->8), one stage of conv-BN-ReLU blocks, pool, 8->5 Linear."""
    def block(cin, cout, groups=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, groups=groups), nn.BatchNorm2d(cout), nn.ReLU())
    blocks = [block(8, 8)] + ([block(8, 8, groups=8)] if depthwise else []) + [block(8, 8)]
    return StagedNet(block(3, 8), [nn.Sequential(*blocks)], nn.Identity(), nn.Sequential(nn.Linear(8, 5)))


def test_max_and_min_pick_the_group_with_the_largest_and_smallest_sum():
    torch.manual_seed(0)
    model = _stack()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
        w = model.stages[0][0][0].weight  # 8x8x3x3, 4 groups of 2 channels
        w[4:6, 4:6] += 1.0  # group 2's diagonal block: the largest sum
        w[2:4, 2:4] -= 1.0  # group 1: the smallest
    sums = group_sums(trace_cuts(model, 4), 4)
    assert sums.index(max(sums)) == 2 and sums.index(min(sums)) == 1
    # group 2 gets exactly 2*2*9 * 1.0 more than group 0 (all the rest is symmetric)
    assert sums[2] - sums[0] == pytest.approx(36.0)
    small, report = diet(model, 4, "max")
    assert report["index"] == 2
    conv = small.stages[0][0][0]
    assert torch.equal(conv.weight, w[4:6, 4:6]) and conv.weight.shape == (2, 2, 3, 3)
    assert small.stem[0].weight.shape == (2, 3, 3, 3)  # the image's 3 channels stay
    assert torch.equal(small.classifier[0].weight, model.classifier[0].weight[:, 4:6])
    assert diet(model, 4, "min")[1]["index"] == 1 and diet(model, 4, 3)[1]["index"] == 3


@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("index", [0, 1])
def test_forward_equals_the_original_with_other_groups_zeroed(depthwise, index):
    torch.manual_seed(1)
    model = _stack(depthwise).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial eval statistics
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    small, report = diet(model, 2, index)
    assert report["index"] == index
    small.eval()
    mask = torch.zeros(1, 8, 1, 1)
    mask[:, index * 4:(index + 1) * 4] = 1

    def zero_other_groups(mod, inp, out):
        return out * mask
    hooks = [m.register_forward_hook(zero_other_groups) for m in model.modules() if isinstance(m, nn.ReLU)]
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        got = small(x)
    for h in hooks:
        h.remove()
    assert count_params(small) < count_params(model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if depthwise:
        dw = small.stages[0][1][0]
        assert dw.groups == dw.in_channels == dw.out_channels == 4


def test_groups_not_dividing_channels_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"^model\.diet\.groups=3: does not divide the 64 output channels of "
                                          r"stem\.0 \(Conv2d\)[^\n]*$"):
        diet(ten_class("resnet18"), 3)


def test_se_blocks_and_depthwise_convs_are_sliced_consistently():
    b0 = diet(ten_class("efficientnet_b0"), 2)[0]
    se = b0.stages[0][0].block[1]  # stage 1's SE: 32 -> 8 -> 32, halved on both sides
    assert (se.fc1.in_channels, se.fc1.out_channels, se.fc2.out_channels) == (16, 4, 16)
    dw = b0.stages[0][0].block[0][0]
    assert dw.groups == dw.in_channels == dw.out_channels == 16
    assert b0.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    v3, report = diet(ten_class("mobilenet_v3_small"), 2)
    se = v3.stages[0][0].block[1]  # V3's SE squeezes 16 -> 8: halved to 8 -> 4
    assert (se.fc1.in_channels, se.fc1.out_channels) == (8, 4)
    assert report["params_after"] < report["params_before"] / 3
    assert v3.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_keep_early_refuses_a_residual_stream_that_crosses_the_first_stage():
    with pytest.raises(ConfigError, match=r"^model\.diet\.keep_early=true: .*must be false$"):
        diet(ten_class("simple_effnet"), 2, keep_early=True)


def test_plan_composes_after_elim_and_the_spec_replays_on_a_random_init_model(tmp_path):
    cfg = load_params(tmp_path / "none.yaml", ["model.arch=resnet18", "model.weights=none", "model.elim=1",
                                               "model.diet.groups=2", "model.diet.keep_early=true"])
    ctx = CompressContext(arch="resnet18", image_size=32, num_classes=10)
    torch.manual_seed(3)
    model, steps = plan_and_apply(create_model("resnet18"), cfg, ctx)
    assert [s["name"] for s in steps] == ["classifier", "elim", "diet"]
    spec = steps[-1]["spec"]
    assert set(spec) == {"groups", "index", "keep_early"} and spec["groups"] == 2 and spec["keep_early"]
    assert len(model.stages) == 3 and model.classifier[-1].in_features == 128
    path = tmp_path / "m.pt"
    save_model(path, model, model_config("resnet18", [{"name": s["name"], "spec": s["spec"]} for s in steps]))
    loaded, _ = load_model(path)  # replays classifier -> elim -> diet on a fresh random init
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
