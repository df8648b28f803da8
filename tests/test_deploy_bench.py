"""The benchmark measures what ships: hardware block, ort_int8 backend, % of peak, noisy flag, timm CSV."""
from __future__ import annotations

import csv
import io
import os

import pytest
import torch
from torch import nn

from elimnet.config import load_params


def tiny_net(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 4)).eval()


def test_cpu_info_reads_model_and_isa_flags(tmp_path):
    from elimnet.bench.hardware import cpu_info, isa

    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_tile\n\n"
                 "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    model, flags = cpu_info(f)
    assert model == "Test CPU 9000" and flags == {"fpu", "avx2", "avx512f", "avx512_vnni", "amx_tile"}
    assert isa(flags) == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False,
                          "avx512_bf16": False, "amx": True}


def test_pct_of_peak_counts_two_flops_per_mac():
    from elimnet.bench.hardware import pct_of_peak

    # 1 GMAC per image, batch 4, 40 ms -> 8 GFLOP / 0.04 s = 200 GFLOP/s = 50% of 400
    assert pct_of_peak(1e9, 4, 40.0, 400.0) == pytest.approx(50.0)
    assert pct_of_peak(1e9, 4, 40.0, None) is None


def test_noisy_flag_follows_the_cv_threshold():
    from elimnet.bench.latency import time_runners

    runners = {"a": lambda: sum(range(100))}
    always = time_runners(runners, 1, warmup=0, repeats=4, budget_s=0.01, noisy_cv=0.0)
    never = time_runners(runners, 1, warmup=0, repeats=4, budget_s=0.01, noisy_cv=1e9)
    assert always["a"]["noisy"] is True and never["a"]["noisy"] is False
    assert "noisy" not in time_runners(runners, 1, warmup=0, repeats=3, budget_s=0.01)["a"]


def test_latency_json_has_hardware_block_and_ort_int8_with_pct_of_peak(tmp_path, one_thread):
    from elimnet.bench.hardware import ISA_FLAGS
    from elimnet.bench.benchmark import benchmark_models
    from elimnet.cli.bench import CSV_FIELDS, TIMM_FIELDS, bench_csv, format_bench

    cfg = load_params(tmp_path / "none.yaml", ["bench.warmup=1", "bench.repeats=3", "bench.budget_s=0.01",
                                               "bench.threads=1", "bench.batch_sizes=[1,2]", "bench.ort=true",
                                               "bench.cuda=false", "deploy.precision=int8", "bench.noisy_cv=1000"])
    torch.manual_seed(0)
    r = benchmark_models({"baseline": tiny_net(16), "candidate": tiny_net(8)}, cfg, 16, progress=False)
    hw = r["hardware"]
    assert set(hw["isa"]) == set(ISA_FLAGS) and hw["threads"] == 1 and hw["peak_fp32_gflops"] > 0
    assert hw["torch"] == torch.__version__ and hw["onnxruntime"] and hw["cpu"]
    assert r["backends"] == ["cpu", "ort", "ort_int8"] and "ort_int8" not in r["unavailable"]
    assert 0 < r["profile"]["candidate"]["int8_file_bytes"]
    for backend in r["backends"]:
        for bs, per in r[backend].items():
            for name, s in per.items():
                assert s["noisy"] is False
                assert s["pct_of_peak"] == pytest.approx(
                    100 * 2 * r["profile"][name]["macs"] * int(bs) / (s["median_ms"] / 1000) / 1e9
                    / hw["peak_fp32_gflops"])
    assert r["ort_int8"]["2"]["candidate"]["reduction"] == pytest.approx(
        1 - r["ort_int8"]["2"]["candidate"]["median_ms"] / r["ort_int8"]["2"]["baseline"]["median_ms"])
    # fp32 precision: ort_int8 is not measured, and says why
    r32 = benchmark_models({"baseline": tiny_net(16)}, cfg.replace(**{"deploy.precision": "fp32",
                                                                      "bench.ort": False}), 16, progress=False)
    assert r32["ort_int8"] is None and r32["unavailable"]["ort_int8"] == "deploy.precision=fp32"
    # timm's benchmark CSV fields, one row per backend, batch size and model
    rows = list(csv.DictReader(io.StringIO(bench_csv({**r, "arch": "tiny"}))))
    assert tuple(rows[0])[:len(TIMM_FIELDS)] == TIMM_FIELDS and tuple(rows[0]) == CSV_FIELDS
    assert len(rows) == 3 * 2 * 2
    row = next(x for x in rows if x["backend"] == "ort_int8" and x["infer_batch_size"] == "2"
               and x["role"] == "candidate")
    s = r["ort_int8"]["2"]["candidate"]
    assert row["model"] == "tiny-candidate" and row["infer_img_size"] == "16"
    assert float(row["infer_samples_per_sec"]) == pytest.approx(s["images_per_s"], abs=0.01)
    assert float(row["infer_step_time"]) == pytest.approx(s["median_ms"], abs=1e-3)
    assert float(row["param_count"]) == round(r["profile"]["candidate"]["params"] / 1e6, 2)
    assert float(row["infer_gmacs"]) == round(r["profile"]["candidate"]["macs"] / 1e9, 3)
    text = format_bench(r)
    assert "%peak" in text and f"{hw['peak_fp32_gflops']:.0f} GFLOP/s" in text and "NOISY" not in text
    noisy = {**r, "cpu": {"1": {n: {**s, "noisy": True} for n, s in r["cpu"]["1"].items()}}}
    assert "warning: noisy timings" in format_bench(noisy) and "cpu bs=1 baseline" in format_bench(noisy)


def test_bench_command_writes_timm_csv(tmp_path, capsys):
    from elimnet.cli import main

    out = tmp_path / "bench.csv"
    rc = main(["bench", "--params", os.devnull, "-S", "model.arch=resnet18", "-S", "model.elim=3",
               "-S", "model.weights=none", "-S", "data.image_size=32", "-S", "bench.batch_sizes=[1]",
               "-S", "bench.repeats=3", "-S", "bench.warmup=0", "-S", "bench.budget_s=0.01", "-S", "bench.threads=1",
               "-S", "bench.cuda=false", "--num-classes", "3", "--csv", str(out), "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    # eager PyTorch (cpu) and ONNX Runtime (ort, on by default: the runtime that ships), both models each
    assert [(r["model"], r["backend"], r["infer_batch_size"]) for r in rows] == [
        ("resnet18-full", "cpu", "1"), ("resnet18-candidate", "cpu", "1"),
        ("resnet18-full", "ort", "1"), ("resnet18-candidate", "ort", "1")]
    assert all(float(r["infer_samples_per_sec"]) > 0 for r in rows)
