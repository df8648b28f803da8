"""Simplified EfficientNet (seed 002): layout, SE parameters, the Table 4 MAC table, empty baselines."""
import re

import pytest
import torch

from elimnet.bench.mac_table import format_mac_table, mac_table
from elimnet.bench.model_size import count_macs
from elimnet.checkpoint import load_model
from elimnet.config import ConfigError, load_params
from elimnet.models import count_params, create_model, get_spec, stage_view
from elimnet.models.simple_effnet import SEED_GENOME, build_simple_effnet, se_params

# Seed 002, Table 4: (MACs, filters) per row; its linear row counts the 1280x100 matmul at all 7x7 positions.
SEED_TABLE4 = [(1354752, 16), (122028032, 144), (123633664, 152), (274563072, 216), (75264000, 232),
               (381337600, 720), (52684800, 400), (572006400, 2160), (52684800, 800), (762675200, 5760),
               (195686400, 1600), (20070400, 1280), (6272000, 100)]
SEED_REPEATS = [1, 1, 1, 1, 1, 2, 1, 3, 1, 4, 1, 1, 1]


@pytest.mark.parametrize("arch,size", [("simple_effnet", 56), ("simple_effnet_se", 56), ("simple_effnet", 224)])
def test_output_shape(arch, size):
    torch.manual_seed(0)
    model = create_model(arch).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.zeros(1, 3, size, size))
        # Overall stride 8 (stride-1 stem, three stride-2 stages): 56 px -> 7x7 at the head, as in Table 1.
        assert feats.shape == (1, 1280, size // 8, size // 8)
        assert model.classifier(model.pool(feats).flatten(1)).shape == (1, 1000)


def test_stage_view_matches_table1():
    model = create_model("simple_effnet")
    spec = get_spec("simple_effnet")
    view = stage_view(model, spec.stage_names, image_size=56)
    assert spec.num_stages == 5 and not spec.has_pretrained
    assert [len(view.stage_blocks(i)) for i in range(5)] == [2, 2, 3, 4, 5]  # repeats + the transition
    assert len(view.candidates) == 1 + 1 + 2 + 3 + 4  # the ID=True blocks
    last = view.stage_blocks(4)[-1]
    assert (last.in_shape, last.out_shape) == ([160, 7, 7], [320, 7, 7])
    assert [b.stride for b in view.blocks if not b.removable] == [1, 2, 2, 2, 1]


def test_se_variant_adds_exactly_the_se_layers():
    std, se = create_model("simple_effnet"), create_model("simple_effnet_se")
    widths, repeats = SEED_GENOME["widths"], SEED_GENOME["repeats"]
    mids = [4 * widths[i] for i in range(5) for _ in range(repeats[i] + 1)]  # Ne = 4 Ni in every block
    expected = sum(2 * m * (m // 4) + m // 4 + m for m in mids)  # C->C/4 and C/4->C 1x1 convs with bias
    assert expected == sum(se_params(m) for m in mids)
    assert count_params(se) - count_params(std) == expected > 0


def test_mac_table_rows_sum_to_the_printed_total():
    model = create_model("simple_effnet_se")
    table = mac_table(model, 32)
    assert sum(r["macs"] for r in table["rows"]) == table["total_macs"] == count_macs(model, 32)
    assert sum(r["params"] for r in table["rows"]) == table["total_params"] == count_params(model)
    text = format_mac_table(table)
    total = int(re.search(r"^Total.*?([\d,]{9,})", text, re.M).group(1).replace(",", ""))
    rows = [int(m.replace(",", "")) for m in re.findall(r"x\d+\s+([\d,]+)\s+[\d,]+$", text, re.M)]
    assert len(rows) == len(table["rows"]) == 13 and sum(rows) == total


def test_dense_variant_reproduces_seed_table4():
    model = build_simple_effnet(num_classes=100, depthwise=False)
    rows = mac_table(model, 56)["rows"]
    assert [r["repeat"] for r in rows] == SEED_REPEATS
    assert [(r["macs"], r["filters"]) for r in rows[:-1]] == SEED_TABLE4[:-1]
    assert rows[-1]["filters"] == 100 and rows[-1]["macs"] * 49 == SEED_TABLE4[-1][0]  # linear after pooling
    assert sum(r["filters"] for r in rows) == 13580
    assert sum(r["macs"] for r in rows) == 2_640_261_120 - 6_272_000 + 128_000


def test_mac_table_on_other_archs_sums_to_model_macs():
    model = create_model("resnet18")
    table = mac_table(model, 32)
    assert table["total_macs"] == count_macs(model, 32)
    assert any(r["repeat"] > 1 for r in table["rows"])  # resnet's identical BasicBlocks merge


def test_summary_cli_prints_mac_table(tmp_path, monkeypatch, capsys):
    from elimnet.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["summary", "-S", "model.arch=simple_effnet", "-S", "model.weights=none", "-S", "model.elim=1",
            "-S", "data.image_size=32", "--num-classes", "100", "--mac-table"]
    assert main(args) == 0
    out = capsys.readouterr().out
    blocks = [line for line in out.splitlines() if line.startswith("Block (")]
    assert len(blocks) == 8 and "80x8x8" in blocks[-1]  # s160 removed: the last row is s80's transition
    assert re.search(r"^Global Avg Pool, Linear, Bias\s+1\s+160x4x4\s+16,000\s+100$", out, re.M)
    candidate_macs = re.search(r"^candidate\s+[\d,]+\s+([\d,]+)", out, re.M).group(1)
    assert re.search(r"^Total\s+_\s+([\d,]+)", out, re.M).group(1) == candidate_macs  # same count as summary


def test_block_param_maps_to_the_se_arch():
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "model.block=se"])
    assert (cfg["model.arch"], cfg["model.block"]) == ("simple_effnet_se", "se")
    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet_se", "model.weights=none"])
    assert cfg["model.block"] == "se"
    with pytest.raises(ConfigError, match=r"^model.block=se: must be standard for arch efficientnet_lite0"):
        load_params("/nonexistent.yaml", ["model.block=se"])
    with pytest.raises(ConfigError, match=r"^model.weights=imagenet: arch simple_effnet has no pretrained"):
        load_params("/nonexistent.yaml", ["model.arch=simple_effnet"])


@pytest.mark.parametrize("arch", ["simple_effnet_se", "efficientnet_lite0"])
def test_empty_baseline_is_a_seeded_random_init(tmp_path, arch):
    from elimnet.pipeline.pretrained_stage import run_pretrained

    def make(name, seed):
        cfg = load_params("/nonexistent.yaml", [f"model.arch={arch}", "model.weights=none", f"seed={seed}"])
        conf = run_pretrained(cfg, tmp_path / name)
        return load_model(tmp_path / name), conf

    (a, conf), (b, _), (c, _) = make("a.pt", 1), make("b.pt", 1), make("c.pt", 2)
    assert conf["weights"] == "none" and conf["arch"] == arch
    sa, sb, sc = a[0].state_dict(), b[0].state_dict(), c[0].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed: the same "empty" model every run
    assert not torch.equal(sa["stem.0.weight"], sc["stem.0.weight"])


def test_elim_cuts_simple_effnet_stages():
    from elimnet.compress.build import build_candidate

    cfg = load_params("/nonexistent.yaml", ["model.arch=simple_effnet", "model.weights=none", "model.elim=2",
                                            "data.image_size=56"])
    cand, steps, full = build_candidate(cfg, create_model("simple_effnet"), 6)
    assert len(cand.stages) == 3 and isinstance(cand.head, torch.nn.Identity)
    assert cand(torch.zeros(2, 3, 56, 56)).shape == (2, 6)
    assert cand.classifier[-1].in_features == 80  # the s40 stage ends in its 40->80 transition
    assert count_params(cand) < count_params(full)
