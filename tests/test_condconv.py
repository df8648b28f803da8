"""Seed 002 block [C]: SE + CondConv (M experts, routing GAP -> FC -> sigmoid) in simple_effnet."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elimnet.bench.mac_table import mac_table
from elimnet.checkpoint import load_model, model_config, save_model
from elimnet.config import ConfigError, load_params
from elimnet.models import count_params, create_model, get_spec
from elimnet.models.simple_effnet import (CondConv2d, CondConvResidual, InvertedResidual, Routing,
                                          build_simple_effnet, condconv_params)
from elimnet.compress.build import build_from_params
from elimnet.pipeline.pretrained_stage import run_pretrained

pytestmark = pytest.mark.usefixtures("one_thread")


def test_block_param_resolves_to_the_condconv_arch_with_experts():
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "model.block=condconv"])
    assert (cfg["model.arch"], cfg["model.block"], cfg["model.experts"]) == ("simple_effnet_condconv", "condconv", 4)
    with pytest.raises(ConfigError, match=r"^model.experts=0: must be"):
        load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.block=condconv", "model.experts=0"])
    with pytest.raises(ConfigError, match=r"^model.block=condconv: must be standard for arch efficientnet_lite0"):
        load_params("/nonexistent.yaml", ["model.block=condconv"])
    assert not get_spec("simple_effnet_condconv").has_pretrained


def test_routing_weights_shape_and_range():
    torch.manual_seed(0)
    r = Routing(16, 4)
    w = r(torch.randn(3, 16, 8, 8) * 10)
    assert w.shape == (3, 4)
    assert bool(((w > 0) & (w < 1)).all())  # sigmoid, not softmax: they need not sum to 1


def test_two_images_get_two_different_mixed_kernels():
    torch.manual_seed(0)
    block = CondConvResidual(16, 24, experts=4).eval()
    x = torch.stack([torch.zeros(16, 8, 8), torch.randn(16, 8, 8) * 3])
    r = block.routing(x)
    assert not torch.allclose(r[0], r[1])
    k = block.conv.mixed_weight(r)
    assert k.shape == (2, 64, 1, 3, 3)  # depthwise: per-image (C, 1, 3, 3) kernels ("3D" weights)
    assert not torch.allclose(k[0], k[1])
    # the mixed kernel is the routing-weighted sum of the experts
    assert torch.allclose(k[1], torch.einsum("m,mcikl->cikl", r[1], block.conv.experts_weight()), atol=1e-6)


def test_condconv_equals_per_image_convolution():
    torch.manual_seed(1)
    conv = CondConv2d(8, 12, 3, stride=2, experts=3)
    x, r = torch.randn(2, 8, 9, 9), torch.rand(2, 3)
    y = conv(x, r)
    w = conv.mixed_weight(r)
    for i in range(2):
        assert torch.allclose(y[i:i + 1], F.conv2d(x[i:i + 1], w[i], stride=2, padding=1), atol=1e-5)


def test_model_forward_backward_and_params_above_se():
    torch.manual_seed(0)
    m = build_simple_effnet(num_classes=100, experts=4)
    se = build_simple_effnet(num_classes=100, se=True)
    blocks = [b for s in m.stages for b in s]
    assert all(isinstance(b, CondConvResidual) for b in blocks) and len(blocks) == 16
    assert count_params(m) == 7_715_468 and count_params(se) == 3_316_684
    # = the SE model + (M - 1) x every block's three convs + the routing FCs (arithmetic in docs/simple_effnet.md)
    # each block: M x its three convs + routing + the same SE and BN as block [B]
    assert count_params(blocks[0]) == condconv_params(16, 16)
    out = m(torch.randn(2, 3, 32, 32))
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert blocks[0].routing.fc.weight.grad.abs().sum() > 0 and blocks[-1].project.weight.grad is not None


def test_mac_table_rows_count_routing_and_mixing():
    torch.manual_seed(0)
    cond = mac_table(build_simple_effnet(num_classes=100, experts=4), 56)
    se = mac_table(build_simple_effnet(num_classes=100, se=True), 56)
    assert [r["repeat"] for r in cond["rows"]] == [r["repeat"] for r in se["rows"]]
    assert cond["rows"][1]["op"] == "Block (Ne=4Ni, F=3, S=1, ID=True, SE, CondConv M=4)"
    # first block (16 -> 16 at 56 px, Ne = 64): the SE block's MACs + mixing M * (16*64 + 64*9 + 64*16)
    # + routing 16*4; filters: the three convs, SE's two and the routing FC's 4 outputs
    assert cond["rows"][1]["macs"] == se["rows"][1]["macs"] + 4 * (16 * 64 + 64 * 9 + 64 * 16) + 16 * 4
    assert cond["rows"][1]["filters"] == se["rows"][1]["filters"] + 4
    assert cond["total_macs"] == sum(r["macs"] for r in cond["rows"]) == 201_042_016
    assert se["total_macs"] == 195_178_816


def test_experts_reach_the_saved_model(tmp_path):
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "model.block=condconv",
                                            "model.experts=2", "model.elim=1", "data.image_size=32"])
    config = run_pretrained(cfg, tmp_path / "pre.pt")
    assert config["arch_args"] == {"experts": 2}
    model, _ = load_model(tmp_path / "pre.pt")
    assert model.stages[0][0].expand.weight.shape[0] == 2
    cand, steps, full = build_from_params(cfg, 5)
    assert cand.stages[0][0].routing.fc.out_features == 2 and len(cand.stages) == 4
    save_model(tmp_path / "c.pt", cand, model_config("simple_effnet_condconv", steps, arch_args={"experts": 2}))
    loaded, _ = load_model(tmp_path / "c.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), cand.eval()(x))


def test_diet_refuses_condconv_in_one_line():
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "model.block=condconv",
                                            "model.elim=0", "model.diet.groups=2", "data.image_size=32"])
    with pytest.raises(ConfigError, match="cannot slice .*CondConv2d"):
        build_from_params(cfg, 5)


def test_standard_and_se_blocks_are_unchanged():
    m = create_model("simple_effnet")
    assert all(isinstance(b, InvertedResidual) for s in m.stages for b in s)


def test_trains_with_the_default_recipe(tiny_split):
    """One epoch of the pipeline's finetune loop (channels_last on, as in params.yaml)."""
    from elimnet.compress.elim import set_num_classes
    from elimnet.train.finetune import TrainRecipe, finetune
    torch.manual_seed(0)
    model, _ = set_num_classes(build_simple_effnet(experts=2), 4)
    before = model.stages[0][0].expand.weight.detach().clone()
    # freeze_stages=0: about CondConv's experts learning, not freezing (the default 3 freezes stage 0 below)
    recipe = TrainRecipe.from_config(epochs=1, batch_size=8, freeze_stages=0)
    res = finetune(model, tiny_split(4), tiny_split(2, seed=1), recipe,
                   mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4, progress=False)
    assert len(res.history) == 1 and res.best_state
    assert not torch.equal(model.stages[0][0].expand.weight.detach(), before)
