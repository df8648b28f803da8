"""Benchmark: interleaving and budgets, the latency.json schema, memory peaks, ONNX Runtime parity, `elimnet bench`,
LayerPrune's per-block tables on the same harness (eager and ORT), the hardware fingerprint."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from elimnet.bench import BACKENDS
from elimnet.bench.latency import time_runners
from elimnet.bench.memory import peak_forward_bytes
from elimnet.config import load_params
from elimnet.bench.benchmark import SCHEMA_VERSION, benchmark_models

STAT_KEYS = {"median_ms", "p10_ms", "p90_ms", "mean_ms", "cv", "repeats", "images_per_s", "gmacs_per_s",
             "peak_mem_mb"}


def cfg_for(tmp_path, *overrides):
    return load_params(tmp_path / "none.yaml", ["bench.warmup=1", "bench.repeats=4", "bench.budget_s=0.05",
                                                "bench.threads=1", *overrides])


def tiny_net(width: int = 8) -> nn.Module:
    # conv 3->width at 16x16 (27*width MACs per pixel), ReLU (not in place), pool, linear width->4
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, 4)).eval()


def test_time_runners_interleaves_and_respects_count_and_time_budgets():
    log = []
    runners = {"a": lambda: log.append("a"), "b": lambda: log.append("b")}
    res = time_runners(runners, 2, warmup=2, repeats=5, budget_s=60)
    assert log[:4] == ["a", "a", "b", "b"]  # warm-up, per model
    assert log[4:] == ["a", "b"] * 5  # then strictly alternating rounds
    assert res["a"]["repeats"] == res["b"]["repeats"] == 5
    log.clear()
    res = time_runners(runners, 2, warmup=0, repeats=1000, budget_s=1e-9)
    assert res["a"]["repeats"] == 3  # time budget spent at once: the minimum rounds only
    s = res["a"]
    assert s["p10_ms"] <= s["median_ms"] <= s["p90_ms"] and s["cv"] >= 0


def test_peak_forward_bytes_counts_live_activations_not_weights():
    net = tiny_net(8)
    for bs in (1, 3):
        x = torch.randn(bs, 3, 16, 16)
        # conv output and ReLU output are alive together: 2 * bs*8*16*16 float32
        assert peak_forward_bytes(lambda: net(x)) == 2 * bs * 8 * 16 * 16 * 4


def test_benchmark_result_schema_and_derived_figures(tmp_path):
    cfg = cfg_for(tmp_path, "bench.batch_sizes=[1,2]", "bench.ort=true", "bench.cuda=true")
    torch.manual_seed(0)
    models = {"baseline": tiny_net(16), "candidate": tiny_net(8)}
    r = benchmark_models(models, cfg, 16, reference="baseline", progress=False)
    assert r["schema"] == SCHEMA_VERSION and r["threads"] == 1 and r["image_size"] == 16
    if platform.libc_ver()[0] == "glibc":
        assert r["allocator"] == "glibc, keeps freed memory"
    assert r["backends"] == (["cpu", "cuda", "ort"] if torch.cuda.is_available() else ["cpu", "ort"])
    assert set(BACKENDS) <= set(r)
    assert r["compile"] is None and r["unavailable"]["compile"] == "bench.compile=false"
    if not torch.cuda.is_available():
        assert r["cuda"] is None and r["unavailable"]["cuda"] == "no CUDA device"
    p = r["profile"]
    assert p["candidate"]["macs"] == 16 * 16 * 8 * 27 + 8 * 4 and p["baseline"]["macs"] == 16 * 16 * 16 * 27 + 16 * 4
    assert p["candidate"]["params"] == 8 * 27 + 8 * 4 + 4
    assert 0 < p["candidate"]["file_bytes"] < p["baseline"]["file_bytes"]
    assert p["candidate"]["onnx_file_bytes"] > 0
    for backend in r["backends"]:
        assert set(r[backend]) == {"1", "2"}
        for bs, per in r[backend].items():
            b, c = per["baseline"], per["candidate"]
            assert STAT_KEYS <= set(c) and "reduction" not in b
            assert 3 <= c["repeats"] <= 4 and b["repeats"] == c["repeats"]  # interleaved: same rounds
            assert c["reduction"] == pytest.approx(1 - c["median_ms"] / b["median_ms"])
            assert c["images_per_s"] == pytest.approx(int(bs) * 1000 / c["median_ms"])
            assert c["gmacs_per_s"] == pytest.approx(p["candidate"]["macs"] * int(bs) / c["median_ms"] / 1e6)
            if backend == "cpu":
                assert c["peak_mem_mb"] * 2**20 == 2 * int(bs) * 8 * 16 * 16 * 4
            else:
                assert c["peak_mem_mb"] is None


# Bytes glibc holds as free after a 64 MiB tensor is freed (mallinfo2's fordblks), with and
# without keep_freed_memory(): the default gives a block that large back to the kernel at once.
_HELD_AFTER_FREE = """
import ctypes, sys, torch
from elimnet.bench.allocator import keep_freed_memory
state = keep_freed_memory() if sys.argv[1] == "keep" else "default"
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks "
                                                "uordblks fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
torch.empty(16 << 20).fill_(1.0)  # 64 MiB, freed at once
print(state + "|" + str(libc.mallinfo2().fordblks))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_keep_freed_memory_keeps_a_freed_activation_for_the_next_pass():
    held = {}
    for mode in ("default", "keep"):
        r = subprocess.run([sys.executable, "-c", _HELD_AFTER_FREE, mode], capture_output=True, text=True,
                           check=True)
        state, nbytes = r.stdout.strip().splitlines()[-1].split("|")
        held[mode] = (state, int(nbytes))
    assert held["default"][1] < 64 << 20
    assert held["keep"][0] == "glibc, keeps freed memory" and held["keep"][1] >= 64 << 20


def test_benchmark_records_failed_optional_backend_instead_of_crashing(tmp_path, monkeypatch):
    import elimnet.bench.ort_timing as ob

    def broken(*a, **k):
        raise RuntimeError("exporter exploded\nsecond line")
    monkeypatch.setattr(ob, "export_onnx", broken)  # the ort backend looks it up when it runs
    r = benchmark_models({"baseline": tiny_net(4), "candidate": tiny_net(4)},
                         cfg_for(tmp_path, "bench.batch_sizes=[1]", "bench.ort=true"), 16, progress=False)
    assert r["ort"] is None and "ort" not in r["backends"] and r["cpu"]["1"]["candidate"]["repeats"] >= 3
    assert r["unavailable"]["ort"] == "failed: RuntimeError: exporter exploded"


def _random_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random-init BN statistics make every image give the same logits; spread them so parity means something."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_onnxruntime_matches_pytorch_for_an_elim_model(tmp_path):
    from elimnet.bench.ort_timing import export_onnx, ort_run, ort_session
    from elimnet.models import create_model
    from elimnet.compress.build import build_candidate

    cfg = load_params(tmp_path / "none.yaml", ["model.arch=resnet18", "model.weights=none", "model.elim=2",
                                               "data.image_size=32"])
    torch.manual_seed(0)
    cand, _, full = build_candidate(cfg, create_model("resnet18", pretrained=False), 5)
    assert len(cand.stages) == len(full.stages) - 2  # really the compressed model
    cand = _random_bn(cand)
    path = export_onnx(cand, tmp_path / "cand.onnx", 32)
    sess = ort_session(path, threads=1)
    for bs in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(bs, 3, 32, 32, generator=torch.Generator().manual_seed(bs))
        with torch.no_grad():
            ref = cand(x).numpy()
        out = ort_run(sess, x.numpy())
        assert out.shape == (bs, 5)
        assert np.abs(ref).max() > 1e-2 and (bs == 1 or ref.std(axis=0).max() > 1e-3)  # logits differ per image
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_bench_command_prints_table_and_writes_json(tmp_path, capsys):
    from elimnet.cli import main
    from elimnet.io import read_json

    out = tmp_path / "lat.json"
    rc = main(["bench", "--params", os.devnull, "-S", "model.arch=resnet18", "-S", "model.elim=3",
               "-S", "model.weights=none", "-S", "data.image_size=32", "-S", "bench.batch_sizes=[1,2]",
               "-S", "bench.repeats=3", "-S", "bench.warmup=0", "-S", "bench.budget_s=0.01", "-S", "bench.threads=1",
               "--num-classes", "3", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "samples/s" in text and "ms/step" in text and "GMAC/s" in text
    assert f"allocator: {read_json(out)['allocator']}" in text.splitlines()[0]
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("cpu ")]
    assert [(ln[1], ln[2]) for ln in lines] == [("1", "full"), ("1", "candidate"), ("2", "full"), ("2", "candidate")]
    r = read_json(out)
    assert r["reference"] == "full" and r["arch"] == "resnet18" and r["steps"][0]["name"] == "elim"
    assert r["profile"]["candidate"]["params"] < r["profile"]["full"]["params"]
    assert "reduction" in r["cpu"]["1"]["candidate"] and "reduction" not in r["cpu"]["1"]["full"]


def test_bench_command_rejects_bad_param(tmp_path, capsys):
    from elimnet.cli import main

    assert main(["bench", "--params", os.devnull, "-S", "bench.batch_sizes=[0]"]) == 2
    assert "bench.batch_sizes=[0]: must be a non-empty list of integers >= 1" in capsys.readouterr().err


def test_latency_files_from_before_the_ort_rename_read_as_ort():
    from elimnet.bench.backends import canonical_latency

    old = {"cpu": {"1": {}}, "onnx": {"1": {"candidate": {"median_ms": 2.0}}}, "backends": ["cpu", "onnx"],
           "unavailable": {"compile": "bench.compile=false"}}
    new = canonical_latency(old)
    assert new["ort"] == old["onnx"] and "onnx" not in new and new["backends"] == ["cpu", "ort"]
    assert new["unavailable"] == old["unavailable"] and canonical_latency(new) == new


@pytest.mark.parametrize("old,new", [("latency_onnx_bs1_ms", "latency_ort_bs1_ms"),
                                     ("latency_reduction_onnx_bs64", "latency_reduction_ort_bs64"),
                                     ("reduction_onnx_bs8", "reduction_ort_bs8"),
                                     ("latency_ort_int8_bs1_ms", "latency_ort_int8_bs1_ms"),
                                     ("latency_cpu_bs1_ms", "latency_cpu_bs1_ms"), ("test_macro_f1", "test_macro_f1")])
def test_metric_names_from_before_the_ort_rename_read_as_ort(old, new):
    from elimnet.bench.backends import canonical_metric_name

    assert canonical_metric_name(old) == new


# ----------------------------------------------------------------------------- per-block tables (LayerPrune)
def staged_net():
    from torchvision.models.resnet import BasicBlock

    from elimnet.models.staged import StagedNet
    torch.manual_seed(0)
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    return StagedNet(stem, [nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))], nn.Identity(),
                     nn.Sequential(nn.Linear(8, 4))).eval()


BLOCKS = ["stages.0.0", "stages.0.1"]


@pytest.mark.parametrize("backend", ["eager", "ort"])
def test_block_table_times_model_reference_and_every_block_with_a_ci(tmp_path, backend):
    from elimnet.bench.block_table import measure_block_table
    if backend == "ort":
        pytest.importorskip("onnxruntime")
    cfg = cfg_for(tmp_path)
    t = measure_block_table(staged_net(), BLOCKS, 16, 2, backend=backend, cfg=cfg, threads=1, repeats=6,
                            budget_s=0.05, reference=staged_net())
    assert set(t["blocks"]) == set(BLOCKS) and set(t) == {"model", "reference", "blocks"}
    for s in [t["model"], t["reference"], *t["blocks"].values()]:
        lo, hi = s["ci95_ms"]
        assert 0 < lo <= s["median_ms"] <= hi and 5 <= s["repeats"] <= 6 and "cv" in s


def test_block_replay_runs_the_block_on_its_recorded_input_and_stays_a_graph_in_ort(tmp_path):
    from elimnet.bench.block_table import BlockReplay, record_block_inputs
    from elimnet.bench.latency import bench_input
    net = staged_net()
    image = bench_input(2, 16)
    x = record_block_inputs(net, BLOCKS, image)["stages.0.1"]
    with torch.no_grad():
        want = net.stages[0][1](x)
        assert torch.equal(BlockReplay(net.stages[0][1], x)(image), want)
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from elimnet.deploy.export import export_onnx
    path = export_onnx(BlockReplay(net.stages[0][1], x), tmp_path / "block.onnx", 16)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: image.numpy()})[0]
    assert np.allclose(out, want.numpy(), atol=1e-5)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert sum("Conv" in op for op in ops) == 2  # the block's two convs survive constant folding


def test_one_hardware_fingerprint_describes_the_machine_and_hashes_it():
    from elimnet.bench.hardware import hardware_block, hardware_fingerprint
    fp = hardware_fingerprint()
    assert fp == hardware_fingerprint() and len(fp["id"]) == 12
    block = hardware_block(1, probe=False)
    assert {k: v for k, v in fp.items() if k != "id"} == {k: block[k] for k in fp if k != "id"}
    assert list(block) == ["cpu", "machine", "isa", "threads", "cpus", "torch", "onnxruntime", "peak_fp32_gflops"]


def test_a_recorded_hardware_block_gets_the_machines_own_fingerprint():
    """One fingerprint: the benchmark's block, compare's machine id and the plan's cache key all read
    bench.hardware.fingerprint_id; threads and the probed peak do not change it, a library version does."""
    import elimnet.plan.deployed as deployed
    from elimnet.bench.hardware import fingerprint_id, hardware_block, hardware_fingerprint
    from elimnet.report.records import machine_id, machine_label

    fp = hardware_fingerprint()["id"]
    block = hardware_block(2, probe=False)
    assert fingerprint_id(block) == fp == fingerprint_id({**block, "threads": 1, "peak_fp32_gflops": 99.0})
    assert fingerprint_id({**block, "onnxruntime": "0.0.1"}) != fp
    assert machine_id(block) == f"{fp}/t2" and machine_id({**block, "threads": 1}) == f"{fp}/t1"
    assert machine_label(block) == f"{block['cpu']}, 2 threads [{fp}]" and machine_id(None) is None
    assert not hasattr(deployed, "hardware_fingerprint")
    assert deployed.TimingCache.key("s", "int8", 1, 2, fp) == f"v{deployed.CACHE_VERSION}|s|int8|bs1|t2|{fp}"


def test_bench_imports_nothing_from_compress():
    import ast
    from pathlib import Path

    import elimnet.bench
    for f in Path(elimnet.bench.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("elimnet.compress"), f"{f.name} imports {node.module}"
