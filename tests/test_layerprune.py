"""LayerPrune: candidates, criteria, one-shot k selection, latency-budget selection, imprinting."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from elimnet.compress import CompressContext, plan_and_apply, replay
from elimnet.compress import layerprune as lp
from elimnet.compress.imprint import imprint_accuracy, imprint_scan
from elimnet.config import ConfigError, defaults
from elimnet.data.tensors import Normalizer, TensorSplit
from elimnet.models.staged import StagedNet, count_params

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
    """Class = orientation of a faint grating (random phase) under a strong random colour tint and noise:
    separable for a trained net, while an untrained net's pooled features mostly see the tint."""
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


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The machine is shared: one intra-op thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture
def fake_latency(monkeypatch):
    """Replaces timing by a fixed table so selection is deterministic: {path: ms}, model/reference ms."""
    table = {"model_ms": 100.0, "reference_ms": 100.0,
             "blocks": {"stages.0.0": 10.0, "stages.0.1": 30.0, "stages.1.1": 20.0, "stages.2.1": 5.0}}

    def fake(model, paths, image_size, **kw):
        assert sorted(paths) == sorted(table["blocks"])
        return {"model_ms": table["model_ms"], "reference_ms": table["reference_ms"],
                "blocks": {p: table["blocks"][p] for p in paths}}
    monkeypatch.setattr(lp, "measure_block_latency", fake)
    return table


def cfg_for(**prune):
    return defaults().replace(**{"model.elim": 0, **{f"model.prune.{k}": v for k, v in prune.items()}})


def ctx_for(train=None, val=None, arch="tiny", num_classes=4):
    return CompressContext(arch=arch, image_size=16, num_classes=num_classes, train=train, val=val,
                           mean=MEAN, std=STD)


def _identity_paths(model):
    return [f"stages.{si}.{bi}" for si, st in enumerate(model.stages) for bi, b in enumerate(st)
            if isinstance(b, nn.Identity)]


# ----------------------------------------------------------------------------- candidates & apply
def test_resnet50_has_12_candidates():
    from elimnet.models import create_model, list_models
    if "resnet50" in list_models():
        model = create_model("resnet50")
    else:
        import torchvision
        from elimnet.models.resnet import resnet_to_staged
        model = resnet_to_staged(torchvision.models.resnet50(weights=None))
    paths = [b.path for b in lp.candidates(model, 64)]
    assert len(paths) == 12  # 16 bottlenecks minus the 4 that change channels or stride
    assert not any(p.endswith(".0") for p in paths)


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
    # the view skips removed blocks, so they are no longer candidates
    assert [b.path for b in lp.candidates(pruned, 16)] == ["stages.0.0", "stages.1.1"]


def test_apply_refuses_a_block_that_changes_shape():
    with pytest.raises(ValueError, match="stages.1.0 not removal candidates"):
        lp.layerprune(tiny_net(), ["stages.1.0"])


# ----------------------------------------------------------------------------- k mode
@pytest.mark.parametrize("criterion", ["l1", "l2", "bn"])
def test_k_removes_exactly_the_k_lowest_scored(criterion, fake_latency):
    model = tiny_net()
    with torch.no_grad():  # make two blocks clearly the least important under every data-free criterion
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
    assert all(r["latency_ms"] == fake_latency["blocks"][r["path"]] for r in rows)
    assert out.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 4)


def test_k_too_large_unknown_criterion_and_both_modes_are_one_line_errors(fake_latency):
    with pytest.raises(ConfigError, match=r"model.prune.k=5: must be <= 4"):
        lp.plan_layerprune(tiny_net(), cfg_for(k=5), ctx_for())
    with pytest.raises(ConfigError, match="model.prune.criterion=fisher: must be one of"):
        lp.score_blocks(tiny_net(), "fisher", TINY_CANDIDATES, ctx_for())
    with pytest.raises(ConfigError, match="model.prune.criterion=fisher"):
        cfg_for(k=1, criterion="fisher")
    with pytest.raises(ConfigError, match="set only one"):
        lp.plan_layerprune(tiny_net(), cfg_for(k=1, latency_budget=0.5), ctx_for())


@pytest.mark.parametrize("criterion,split", [("taylor", "train"), ("activation", "val"), ("imprint", "val")])
def test_data_criteria_without_data_say_which_need_data(criterion, split, data, fake_latency):
    empty = TensorSplit(torch.zeros(0, 3, 16, 16, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    for ctx in (ctx_for(), ctx_for(train=empty, val=empty)):
        with pytest.raises(ConfigError) as e:
            lp.plan_layerprune(tiny_net(), cfg_for(k=1, criterion=criterion), ctx)
        msg = str(e.value)
        assert "\n" not in msg and f"non-empty prepared {split} split" in msg
        assert "criteria that need data: taylor, activation, imprint" in msg


def test_data_criteria_score_without_changing_the_model(data, fake_latency):
    train, val = data
    model = tiny_net().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for criterion in ("taylor", "activation"):
        spec = lp.plan_layerprune(model, cfg_for(k=1, criterion=criterion, batches=2), ctx_for(train, val))
        scores = [r["score"] for r in spec["importance"]["candidates"]]
        assert len(scores) == 4 and all(math.isfinite(s) and s > 0 for s in scores)
        assert spec["removed"] == [min(spec["importance"]["candidates"], key=lambda r: r["score"])["path"]]
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- latency budget
def test_select_budget_orders_by_importance_per_ms_and_stops_when_it_holds():
    scores = {"a": 1.0, "b": 2.0, "c": 0.5, "d": -0.1}
    ms = {"a": 10.0, "b": 40.0, "c": 1.0, "d": 2.0}
    # d costs nothing (score <= 0) -> first; then b (0.05/ms), a (0.1/ms), c (0.5/ms)
    assert lp.removal_order(scores, ms) == ["d", "b", "a", "c"]
    assert lp.select_budget(scores, ms, 100.0, 60.0) == (["d", "b"], 58.0)
    assert lp.select_budget(scores, ms, 100.0, 100.0) == ([], 100.0)  # already within budget


@pytest.mark.parametrize("budget", [0.7, 70.0])  # a fraction of the full model, or ms
def test_budget_mode_removes_only_candidates_until_the_budget_holds(budget, fake_latency):
    model = tiny_net()
    spec = lp.plan_layerprune(model, cfg_for(latency_budget=budget, criterion="l1"), ctx_for())
    imp = spec["importance"]
    assert set(spec["removed"]) <= set(TINY_CANDIDATES)
    assert imp["target_ms"] == pytest.approx(70.0)
    lat = fake_latency["blocks"]
    predicted = 100.0 - sum(lat[p] for p in spec["removed"])
    assert imp["predicted_ms"] == pytest.approx(predicted) and predicted <= 70.0
    # it stopped as soon as the budget held: without the last removed block it did not hold yet
    order = lp.removal_order({r["path"]: r["score"] for r in imp["candidates"]}, lat)
    assert order[:len(spec["removed"])] == [p for p in order if p in spec["removed"]]
    last = order[len(spec["removed"]) - 1]
    assert predicted + lat[last] > 70.0
    out, _ = lp.layerprune(model, spec["removed"])
    assert sorted(_identity_paths(out)) == sorted(spec["removed"])


def test_budget_below_what_removing_everything_reaches_is_an_error_with_numbers(fake_latency):
    # all candidates removed: 100 - 65 = 35 ms; asking for 30 ms cannot be met
    with pytest.raises(ConfigError, match=r"latency_budget=0.3: 30.00 ms is below 35.00 ms.*>= 0.350"):
        lp.plan_layerprune(tiny_net(), cfg_for(latency_budget=0.3), ctx_for())


def test_measured_block_latency_covers_every_candidate():
    lat = lp.measure_block_latency(tiny_net(), TINY_CANDIDATES, 16, repeats=3, budget_s=0.1)
    assert set(lat["blocks"]) == set(TINY_CANDIDATES)
    assert lat["model_ms"] > 0 and all(v > 0 for v in lat["blocks"].values())


# ----------------------------------------------------------------------------- imprinting
def test_imprint_accuracy_on_hand_made_embeddings():
    e = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [0.2, 1.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert imprint_accuracy(e, y, e, y) == 1.0
    assert imprint_accuracy(e, y, e, 1 - y) == 0.0


def test_imprint_is_high_at_late_layers_of_a_trained_net_and_near_chance_untrained(data, trained):
    train, val = data
    norm = Normalizer(MEAN, STD)
    good = imprint_scan(trained, train, val, norm, TINY_CANDIDATES, progress=False)
    assert good.after["stages.2.1"] >= 0.9 and good.full >= 0.9
    assert good.after["stages.0.0"] < good.after["stages.2.1"]
    raw = imprint_scan(tiny_net(), train, val, norm, TINY_CANDIDATES, progress=False)
    assert max(raw.after.values()) <= 0.45 and raw.full <= 0.45  # chance = 0.25
    assert good.eval_images == len(val) and good.imprint_images == len(train)


def test_imprint_criterion_removes_the_block_whose_skip_costs_least(data, trained, fake_latency):
    train, val = data
    spec = lp.plan_layerprune(trained, cfg_for(k=1, criterion="imprint", batches=4), ctx_for(train, val))
    imp = spec["importance"]
    rows = {r["path"]: r for r in imp["candidates"]}
    drops = {p: imp["accuracy_full"] - r["accuracy_without"] for p, r in rows.items()}
    assert all(r["score"] == pytest.approx(drops[p]) for p, r in rows.items())
    assert spec["removed"] == [min(drops, key=lambda p: (drops[p], TINY_CANDIDATES.index(p)))]
    # replaying the spec needs no data and reproduces the architecture
    out, _ = lp.layerprune(trained, spec["removed"])
    assert _identity_paths(out) == spec["removed"]


# ----------------------------------------------------------------------------- composition & replay
def test_composes_with_elim_and_replays_from_the_spec(fake_latency, monkeypatch):
    from elimnet.models import create_model
    monkeypatch.setattr(lp, "measure_block_latency", lambda m, paths, size, **kw: {
        "model_ms": 10.0, "reference_ms": 10.0, "blocks": {p: 1.0 for p in paths}})
    cfg = defaults().replace(**{"model.arch": "resnet18", "model.elim": 1, "model.prune.k": 2})
    ctx = CompressContext(arch="resnet18", image_size=32, num_classes=3)
    model, steps = plan_and_apply(create_model("resnet18"), cfg, ctx)
    assert [s["name"] for s in steps] == ["classifier", "elim", "layerprune"]
    removed = steps[-1]["spec"]["removed"]
    # resnet18 after elim=1 keeps layer1..3: candidates stages.0.0, 0.1, 1.1, 2.1
    assert len(removed) == 2 and set(removed) <= {"stages.0.0", "stages.0.1", "stages.1.1", "stages.2.1"}
    rebuilt = replay(create_model("resnet18"), [{"name": s["name"], "spec": s["spec"]} for s in steps])
    assert _identity_paths(rebuilt) == _identity_paths(model) == sorted(removed)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_importance_file_is_empty_when_layerprune_is_off():
    assert lp.importance_file([{"name": "elim", "spec": {"k": 1}, "report": {}}])["candidates"] == []
