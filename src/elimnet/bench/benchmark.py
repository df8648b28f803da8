"""Latency of several models (the benchmark stage: baseline and candidate; `elimnet bench`: full and
candidate) per backend and batch size, repeats interleaved, reductions against a reference model.

Backends (elimnet.bench.BACKENDS): eager PyTorch on CPU (threads fixed and recorded), eager CUDA
(events, optional AMP) when a GPU is present, ONNX Runtime CPU (bench.onnx) and torch.compile on
CPU (bench.compile). A backend that is off or unavailable is recorded as null with its reason in
`unavailable`, never as zero. Schema of metrics/latency.json:

    latency[backend][str(batch_size)][model] = {median_ms, p10_ms, p90_ms, mean_ms, cv, repeats,
        images_per_s, gmacs_per_s, peak_mem_mb, reduction (vs the reference model, paired medians),
        noisy (CV above bench.noisy_cv after the budget), pct_of_peak (of hardware.peak_fp32_gflops; CPU)}
    latency["profile"][model] = {params, macs, layers, modules, image_size, file_bytes[, onnx_file_bytes,
        int8_file_bytes]}
    latency["hardware"] = {cpu, machine, isa: {avx2, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx},
        threads, cpus, torch, onnxruntime, peak_fp32_gflops}          (elimnet.bench.hardware)
Backend ort_int8 (deploy.precision=int8): static QDQ INT8 ONNX Runtime, as the export stage ships it.
"""
from __future__ import annotations

import io
import platform
import tempfile
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from elimnet import errors
from elimnet.bench.backends import REGISTRY, Backend, unavailable_backends
from elimnet.bench.allocator import allocator_state
from elimnet.bench.hardware import hardware_block, pct_of_peak
from elimnet.bench.latency import bench_input, paired_reduction, time_runners
from elimnet.bench.memory import max_rss_bytes, peak_forward_bytes
from elimnet.bench.ort_timing import onnxruntime_version
from elimnet.bench.model_size import profile
from elimnet.config import Config

SCHEMA_VERSION = 2


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Size of the model's weights as torch.save writes them (the model file size without a file)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buf)
    return buf.tell()


def benchmark_models(models: dict[str, torch.nn.Module], cfg: Config, image_size: int,
                     reference: str | None = "baseline", file_bytes: dict[str, int] | None = None,
                     progress: bool = True) -> dict:
    """Latency per backend and batch size for several models, with reductions vs `reference`."""
    threads = cfg["bench.threads"] or torch.get_num_threads()
    torch.set_num_threads(threads)
    allocator = allocator_state(cfg["bench.keep_freed_memory"])
    batch_sizes = cfg["bench.batch_sizes"]
    unavailable = unavailable_backends(cfg)
    file_bytes = file_bytes or {}
    prof = {n: {**profile(m, image_size), "file_bytes": file_bytes[n] if n in file_bytes else state_dict_bytes(m)}
            for n, m in models.items()}
    out: dict = {"schema": SCHEMA_VERSION, "image_size": image_size, "threads": threads, "allocator": allocator,
                 "torch": torch.__version__,
                 "onnxruntime": onnxruntime_version(), "processor": platform.processor() or platform.machine(),
                 "reference": reference, "batch_sizes": batch_sizes, "amp": cfg["bench.amp"],
                 "backends": [b for b in REGISTRY if b not in unavailable], "profile": prof,
                 "hardware": hardware_block(threads)}
    todo = [(b, bs) for b in out["backends"] for bs in batch_sizes]
    bar = tqdm(total=len(todo), desc="benchmark", unit="run", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="elimnet-bench-") as tmp:
        for name, backend in REGISTRY.items():
            if name in unavailable:
                out[name] = None
                continue
            per_bs: dict | None = {}
            try:
                with backend.prepare(models, cfg, image_size, threads, Path(tmp), prof) as make_runners:
                    for bs in batch_sizes:
                        bar.set_postfix_str(f"{name} bs={bs}")
                        runners = make_runners(bench_input(bs, image_size, cfg["seed"]))
                        stats = time_runners(runners, bs, device=backend.device, warmup=cfg["bench.warmup"],
                                             repeats=cfg["bench.repeats"], budget_s=cfg["bench.budget_s"],
                                             noisy_cv=cfg["bench.noisy_cv"])
                        _add_derived(stats, runners, prof, bs, backend, reference)
                        for n, st in stats.items():  # the fp32 peak is a CPU yardstick, not a CUDA one
                            st["pct_of_peak"] = (pct_of_peak(prof[n]["macs"], bs, st["median_ms"],
                                                             out["hardware"]["peak_fp32_gflops"])
                                                 if backend.device == "cpu" else None)
                        per_bs[str(bs)] = stats
                        bar.update(1)
            except Exception as e:  # noqa: BLE001 - an optional backend (compile, onnx) must not sink the stage
                if not backend.optional:
                    raise
                unavailable[name] = f"failed: {type(e).__name__}: {errors.one_line(e)[:200]}"
                out["backends"].remove(name)
                per_bs = None
            out[name] = per_bs
    bar.close()
    out["unavailable"] = unavailable
    if "cuda" in unavailable:
        out["cuda_unavailable_reason"] = unavailable["cuda"]  # schema 1 readers
    out["max_rss_mb"] = max_rss_bytes() / 2**20
    return out


def _add_derived(stats: dict, runners: dict[str, Callable], prof: dict, bs: int, backend: Backend,
                 reference: str | None) -> None:
    for name, s in stats.items():
        med_s = s["median_ms"] / 1000.0
        s["gmacs_per_s"] = prof[name]["macs"] * bs / med_s / 1e9 if med_s > 0 else None
        # Allocator-level peaks exist for eager PyTorch only (ONNX Runtime and compiled graphs manage their own).
        peak = peak_forward_bytes(runners[name], backend.device) if backend.allocator_peak else None
        s["peak_mem_mb"] = peak / 2**20 if peak is not None else None
    if reference in stats:
        for name, s in stats.items():
            if name != reference:
                s["reduction"] = paired_reduction(stats[reference]["median_ms"], s["median_ms"])
