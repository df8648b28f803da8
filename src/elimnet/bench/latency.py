"""Latency: warm-up, then timed repeats interleaved across models so machine drift hits all.

CUDA is timed with events after synchronising; when no GPU is present it is recorded as
unavailable (None), never as zero.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def _stats(samples_ms: list[float], batch_size: int) -> dict:
    a = np.asarray(samples_ms)
    med = float(np.median(a))
    return {"median_ms": med, "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "cv": float(a.std() / a.mean()) if a.mean() > 0 else 0.0,
            "repeats": int(a.size), "images_per_s": batch_size * 1000.0 / med if med > 0 else None}


@torch.no_grad()
def measure_latency(models: dict[str, torch.nn.Module], batch_size: int, image_size: int, *, device: str = "cpu",
                    warmup: int = 3, repeats: int = 20, budget_s: float = 3.0, channels_last: bool = True,
                    seed: int = 0) -> dict[str, dict]:
    """Median/p10/p90 ms per forward pass of each model at one batch size, repeats interleaved."""
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last and dev.type == "cpu" else torch.contiguous_format
    x = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed))
    x = x.to(dev).contiguous(memory_format=fmt)
    prepared = {name: m.eval().to(dev).to(memory_format=fmt) for name, m in models.items()}
    for m in prepared.values():
        for _ in range(warmup):
            m(x)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    samples: dict[str, list[float]] = {name: [] for name in prepared}
    start = time.perf_counter()
    # Budget per model and batch size; at least 3 repeats so a median means something.
    deadline = start + budget_s * len(prepared)
    for i in range(repeats):
        for name, m in prepared.items():
            samples[name].append(_time_once(m, x, dev))
        if i >= 2 and time.perf_counter() > deadline:
            break
    for m in prepared.values():
        m.to("cpu").to(memory_format=torch.contiguous_format)
    return {name: _stats(s, batch_size) for name, s in samples.items()}


def _time_once(model: torch.nn.Module, x: torch.Tensor, dev: torch.device) -> float:
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        model(x)
        end.record()
        torch.cuda.synchronize(dev)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    model(x)
    return (time.perf_counter() - t0) * 1000.0


def cuda_available() -> bool:
    return torch.cuda.is_available()


def paired_reduction(baseline_ms: float, candidate_ms: float) -> float:
    """Latency reduction as a fraction of the baseline (0.3 = 30% faster)."""
    return 1.0 - candidate_ms / baseline_ms if baseline_ms > 0 else float("nan")


def median(values: list[float]) -> float:
    return statistics.median(values)
