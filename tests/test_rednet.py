"""RedNet / involution: published param counts, the involution operator, every compression on it,
Model Diet's group-respecting slicing (seed 004's RedNet26 counts), and the weights loader on loopback."""
from __future__ import annotations

import hashlib
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elimnet.bench.model_size import count_macs
from elimnet.checkpoint import load_model, model_config, save_model
from elimnet.compress.diet import diet
from elimnet.compress.elim import set_num_classes
from elimnet.config import ConfigError, load_params
from elimnet.errors import CheckpointError, DownloadError
from elimnet.models import count_params, create_model, get_spec, list_models
from elimnet.models import rednet_weights as RW
from elimnet.models.involution import Involution
from elimnet.models.rednet import build_rednet
from elimnet.compress.build import build_from_params

pytestmark = pytest.mark.usefixtures("one_thread")

# Seed 004 Table 2.1 (from the RedNet paper), millions at 1000 classes.
PUBLISHED = {"rednet26": 9.2, "rednet38": 12.4, "rednet50": 15.5, "rednet101": 25.6, "rednet152": 34.0}
EXACT_1000 = {"rednet26": 9_233_166, "rednet38": 12_386_986, "rednet50": 15_540_806,
              "rednet101": 25_652_950, "rednet152": 33_984_582}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_param_counts_match_the_published_ones(arch):
    with torch.device("meta"):  # counts only: no random init of up to 34M weights
        m1000 = create_model(arch)
        m10 = build_rednet(int(arch[6:]), num_classes=10)
    n = count_params(m1000)
    assert n == EXACT_1000[arch]
    assert abs(n / 1e6 - PUBLISHED[arch]) <= 0.055  # "within rounding": 25.65 is published as 25.6
    assert count_params(m10) == n - 2048 * 990 - 990  # only the fc shrinks


def test_rednet26_ten_classes_is_seed_004s_full_model():
    with torch.device("meta"):
        assert round(count_params(build_rednet(26, num_classes=10)) / 1e6, 2) == 7.20


def _reference_involution(inv: Involution, x: torch.Tensor) -> torch.Tensor:
    """Seed 004 eq. 2.1 written with explicit loops over the K*K taps."""
    k, s = inv.kernel_size, inv.stride
    w = inv.span(inv.reduce(F.avg_pool2d(x, s, s) if s > 1 else x))
    b, _, h, wd = w.shape
    xp = F.pad(x, [k // 2] * 4)
    out = torch.zeros(b, inv.channels, h, wd)
    for t in range(k * k):
        u, v = divmod(t, k)
        patch = xp[:, :, u:u + s * (h - 1) + 1:s, v:v + s * (wd - 1) + 1:s]
        for g in range(inv.groups):
            ch = slice(g * inv.group_channels, (g + 1) * inv.group_channels)
            out[:, ch] += w[:, g * k * k + t].unsqueeze(1) * patch[:, ch]
    return out


@pytest.mark.parametrize("stride", [1, 2])
def test_involution_matches_the_equation_and_backpropagates(stride):
    torch.manual_seed(0)
    inv = Involution(32, 3, stride).eval()
    nn.init.normal_(inv.span.weight)
    x = torch.randn(2, 32, 8, 8, requires_grad=True)
    y = inv(x)
    assert y.shape == (2, 32, 8 // stride, 8 // stride)
    assert torch.allclose(y, _reference_involution(inv, x), atol=1e-5)
    assert inv.span.out_channels == 9 * 2 and inv.reduce[0].out_channels == 8
    y.sum().backward()
    assert x.grad is not None and inv.span.weight.grad.abs().sum() > 0


def test_registered_with_the_stage_view_forward_and_backward():
    assert {"rednet26", "rednet38", "rednet50", "rednet101", "rednet152"} <= set(list_models())
    spec = get_spec("rednet26")
    assert spec.num_stages == 4 and spec.stage_names == ("layer1", "layer2", "layer3", "layer4")
    assert spec.has_pretrained and not spec.offline and spec.weights_name == "rednet26-4948f75f.pth"
    torch.manual_seed(0)
    model, _ = set_num_classes(build_rednet(26), 3)
    assert [len(s) for s in model.stages] == [1, 2, 4, 1]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    assert model.stages[3][0].conv2.span.weight.grad is not None


def _candidate(*overrides: str):
    cfg = load_params("no-such-params.yaml", ["model.arch=rednet26", "model.weights=none", "data.image_size=32",
                                              *overrides])
    return build_from_params(cfg, 4)


@pytest.mark.parametrize("overrides, params", [
    (("model.elim=2",), None),
    (("model.elim=0", "model.prune.k=2", "model.prune.criterion=l1"), None),
    (("model.elim=0", "model.diet.groups=2"), None),
    (("model.elim=0", "model.filter.ratio=0.5"), None),
])
def test_every_compression_applies_and_runs(overrides, params):
    torch.manual_seed(0)
    candidate, steps, full = _candidate(*overrides)
    assert count_params(candidate) < count_params(full)
    assert [s["name"] for s in steps][-1] in {"elim", "layerprune", "diet", "filter"}
    candidate.eval()
    with torch.no_grad():
        assert candidate(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_all_four_compose_and_replay(tmp_path):
    cfg = load_params("no-such-params.yaml", ["model.arch=rednet26", "model.weights=none", "data.image_size=32",
                                              "model.elim=1", "model.prune.k=1", "model.diet.groups=2",
                                              "model.diet.keep_early=stem", "model.filter.ratio=0.25"])
    torch.manual_seed(0)
    candidate, steps, full = build_from_params(cfg, 4)
    assert [s["name"] for s in steps] == ["classifier", "elim", "layerprune", "diet", "filter"]
    save_model(tmp_path / "m.pt", candidate, model_config("rednet26", steps))
    loaded, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), candidate.eval()(x))


def test_elim_removes_the_top_stages():
    candidate, _, full = _candidate("model.elim=2")
    assert len(candidate.stages) == 2 and candidate.classifier[-1].in_features == 512


@pytest.fixture(scope="module")
def rednet26_10():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return build_rednet(26, num_classes=10).eval()


def test_diet_reproduces_seed_004_rednet26(rednet26_10):
    """Table 4.3: 7.20 -> 1.84 M with the stem kept at full width (keep_early=stem); every block halved."""
    full = rednet26_10
    small, report = diet(full, 2, keep_early="stem")
    assert count_params(full) == 7_204_656 and count_params(small) == 1_835_542
    assert round(count_params(small) / 1e6, 2) == 1.84
    assert report["unsliced_layers"][:2] == ["stem.0.0", "stem.0.1"]
    # Halve G, keep K*K: every involution past the stem has half its groups and all 49 taps.
    for (name, a), (_, b) in zip(full.named_modules(), small.named_modules()):
        if isinstance(a, Involution) and not name.startswith("stem"):
            assert (b.groups, b.kernel_size, b.channels) == (a.groups // 2, 7, a.channels // 2)
            assert b.span.out_channels == a.span.out_channels // 2
    # Table 4.4's 1.75 -> 0.67 GFLOPs: torch counts conv/linear MACs (1.65 -> 0.61 G, ratio 0.37 vs 0.38).
    assert count_macs(full, 224) == 1_648_803_840 and count_macs(small, 224) == 613_562_368
    with torch.no_grad():
        assert small(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    # every layer halved instead: 1.82 M; stem + layer1 full (keep_early=true, ResNet18's rule): 1.90 M
    assert count_params(diet(full, 2)[0]) == 1_815_721
    assert count_params(diet(full, 2, keep_early=True)[0]) == 1_902_904


def test_diet_slices_whole_kernels(rednet26_10):
    """The kept span rows are whole groups with all K*K taps, in order: tap t of kept group j is
    tap t of original group j + G/2 (select=1), so every generated kernel keeps its spatial layout."""
    full = rednet26_10
    small, report = diet(full, 2, select=1)
    assert report["index"] == 1
    a, b = full.stages[1][1].conv2, small.stages[1][1].conv2  # 128 channels, G = 8, K = 7
    assert (a.groups, b.groups) == (8, 4)
    wa = a.span.weight.detach().view(8, 49, 32)  # (group, tap, reduced channel)
    wb = b.span.weight.detach().view(4, 49, 16)
    assert torch.equal(wb, wa[4:, :, 16:])
    assert torch.equal(b.span.bias.detach().view(4, 49), a.span.bias.detach().view(8, 49)[4:])
    x = torch.randn(1, 64, 6, 6)
    with torch.no_grad():
        assert b(x).shape == (1, 64, 6, 6)


def test_diet_group_count_must_divide_involution_groups(rednet26_10):
    with pytest.raises(ConfigError, match=r"groups=4: does not divide the 2 involution groups of stem\.1"):
        diet(rednet26_10, 4)
    small, _ = diet(rednet26_10, 4, keep_early="stem")  # the stem's G=2 stays whole
    with torch.no_grad():
        assert small(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_diet_replays_from_a_saved_model(tmp_path):
    cfg = load_params("no-such-params.yaml", ["model.arch=rednet26", "model.weights=none", "data.image_size=32",
                                              "model.elim=0", "model.diet.groups=2", "model.diet.keep_early=stem"])
    candidate, steps, _ = build_from_params(cfg, 10)
    assert steps[-1]["spec"]["keep_early"] == "stem"
    save_model(tmp_path / "m.pt", candidate, model_config("rednet26", steps))
    loaded, _ = load_model(tmp_path / "m.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), candidate.eval()(x))
    assert count_params(loaded) == 1_835_542


def test_keep_early_values():
    assert load_params("x.yaml", ["model.diet.keep_early=stem"])["model.diet.keep_early"] == "stem"
    with pytest.raises(ConfigError, match="model.diet.keep_early=layer1: must be true, false or stem"):
        load_params("x.yaml", ["model.diet.keep_early=layer1"])


# ----------------------------------------------------------------------------- weights
def _mmcls_checkpoint(model: nn.Module) -> bytes:
    """The model's weights under the mmcls names the released checkpoints use, in an mmcls wrapper."""
    rename = {}
    for k in model.state_dict():
        m = k.replace("classifier.0.", "head.fc.")
        m = m.replace(".reduce.0.", ".conv1.conv.").replace(".reduce.1.", ".conv1.bn.")
        m = m.replace(".span.", ".conv2.conv.")
        for i in (0, 4):
            m = m.replace(f"stem.{i}.0.", f"stem.{i}.conv.").replace(f"stem.{i}.1.", f"stem.{i}.bn.")
        if m.startswith("stages."):
            _, si, rest = m.split(".", 2)
            m = f"layer{int(si) + 1}.{rest}"
        rename[k] = m if m.startswith("head.") else "backbone." + m
    state = {rename[k]: v for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"meta": {"epoch": 130, "CLASSES": ["tench"]}, "state_dict": state}, buf)
    return buf.getvalue()


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(RW, "DOWNLOAD_OPTIONS", {"retries": 0, "backoff_s": 0.0, "progress": False})


def test_key_map_examples():
    assert RW.map_mmcls_key("backbone.layer3.2.conv2.conv1.bn.running_var") == "stages.2.2.conv2.reduce.1.running_var"
    assert RW.map_mmcls_key("backbone.layer1.0.conv2.conv2.conv.bias") == "stages.0.0.conv2.span.bias"
    assert RW.map_mmcls_key("backbone.stem.1.conv1.conv.weight") == "stem.1.reduce.0.weight"
    assert RW.map_mmcls_key("backbone.stem.4.bn.weight") == "stem.4.1.weight"
    assert RW.map_mmcls_key("backbone.layer2.0.downsample.1.bias") == "stages.1.0.downsample.1.bias"
    assert RW.map_mmcls_key("head.fc.weight") == "classifier.0.weight"
    assert RW.RELEASES["rednet26"].sha256_prefix == "4948f75f" and RW.RELEASES["rednet38"].sha256_prefix is None


def test_download_with_name_hash_loads_and_caches(http_server, monkeypatch, tmp_path, quick):
    torch.manual_seed(3)
    src = build_rednet(26).eval()
    for b in src.buffers():
        if b.is_floating_point():
            b.copy_(torch.rand_like(b) + 0.5)
    payload = _mmcls_checkpoint(src)
    name = f"/rednet26-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    http_server.files[name] = payload
    monkeypatch.setitem(RW.RELEASES, "rednet26", RW.Release(name[1:], http_server.url(name)))
    model = create_model("rednet26", pretrained=True, cache_dir=tmp_path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), src(x))
    create_model("rednet26", pretrained=True, cache_dir=tmp_path)  # cached: no second request
    assert len(http_server.requests) == 1


def test_wrong_name_hash_is_rejected(http_server, monkeypatch, tmp_path, quick):
    http_server.files["/rednet26-00000000.pth"] = b"not the released file"
    monkeypatch.setitem(RW.RELEASES, "rednet26", RW.Release("rednet26-00000000.pth",
                                                            http_server.url("/rednet26-00000000.pth")))
    with pytest.raises(Exception, match="checksum mismatch"):
        create_model("rednet26", pretrained=True, cache_dir=tmp_path)
    assert not (tmp_path / "rednet26-00000000.pth").exists()


def test_trust_on_first_use_records_and_then_verifies(http_server, monkeypatch, tmp_path, quick):
    torch.manual_seed(4)
    src = build_rednet(38).eval()
    http_server.files["/rednet38.pth"] = _mmcls_checkpoint(src)
    monkeypatch.setitem(RW.RELEASES, "rednet38", RW.Release("rednet38.pth", http_server.url("/rednet38.pth")))
    RW.fetch_rednet("rednet38", tmp_path)
    pin = tmp_path / "rednet38.pth.sha256"
    assert pin.read_text().strip() == hashlib.sha256(http_server.files["/rednet38.pth"]).hexdigest()
    (tmp_path / "rednet38.pth").write_bytes(b"tampered")  # a changed cache file is fetched again and checked
    http_server.files["/rednet38.pth"] = b"the server now serves other bytes"
    with pytest.raises(Exception, match="checksum mismatch"):
        RW.fetch_rednet("rednet38", tmp_path)


def test_no_link_needs_the_file_in_the_cache(tmp_path):
    with pytest.raises(DownloadError, match="no direct download link is pinned for rednet50-1c7a7c5d.pth"):
        RW.fetch_rednet("rednet50", tmp_path)
    (tmp_path / "rednet50-1c7a7c5d.pth").write_bytes(b"wrong bytes")
    with pytest.raises(CheckpointError, match="does not start with 1c7a7c5d"):
        RW.fetch_rednet("rednet50", tmp_path)


def test_foreign_checkpoint_is_one_line(http_server, monkeypatch, tmp_path, quick):
    buf = io.BytesIO()
    torch.save({"state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, buf)
    http_server.files["/rednet101.pth"] = buf.getvalue()
    monkeypatch.setitem(RW.RELEASES, "rednet101", RW.Release("rednet101.pth", http_server.url("/rednet101.pth")))
    with torch.device("meta"):
        model = build_rednet(101)
    with pytest.raises(CheckpointError, match="does not fit this RedNet"):
        RW.load_rednet_pretrained("rednet101", model, tmp_path)


def test_offline_weights_none_builds_without_network():
    cfg = load_params("x.yaml", ["model.arch=rednet26", "model.weights=none"])
    assert cfg["model.weights"] == "none"
    assert count_params(create_model("rednet26", pretrained=False)) == EXACT_1000["rednet26"]


def test_diet_rednet_trains_with_the_default_recipe(tiny_split):
    from elimnet.train.finetune import TrainRecipe, finetune
    candidate, _, _ = _candidate("model.elim=0", "model.diet.groups=2", "model.diet.keep_early=stem")
    res = finetune(candidate, tiny_split(4), tiny_split(2, seed=1), TrainRecipe.from_config(epochs=1, batch_size=8),
                   mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4, progress=False)
    assert len(res.history) == 1 and res.best_state
