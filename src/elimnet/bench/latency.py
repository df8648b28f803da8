"""Latency: warm-up, then timed repeats interleaved across models so machine drift hits all.

Anything callable can be timed (an eager module, a compiled one, an ONNX Runtime session), as a
zero-argument "runner" that does one forward pass on a fixed batch. CUDA is timed with events
after synchronising; when no GPU is present it is recorded as unavailable (None), never as zero.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

import numpy as np
import torch

Runner = Callable[[], Any]


def latency_stats(samples_ms: list[float], batch_size: int, ci95: bool = False) -> dict:
    """Median, p10/p90, mean, coefficient of variation and throughput of per-batch times
    (`ci95`: also a bootstrap 95% CI of the median, `ci95_ms`)."""
    a = np.asarray(samples_ms, dtype=float)
    med = float(np.median(a))
    out = {"median_ms": med, "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)),
           "mean_ms": float(a.mean()), "cv": float(a.std() / a.mean()) if a.mean() > 0 else 0.0,
           "repeats": int(a.size), "images_per_s": batch_size * 1000.0 / med if med > 0 else None}
    if ci95:
        out["ci95_ms"] = median_ci95(a)
    return out


def median_ci95(samples_ms, seed: int = 0, resamples: int = 1000) -> list[float]:
    """95% bootstrap CI of the median (fixed seed: the same samples give the same CI)."""
    a = np.asarray(samples_ms, dtype=float)
    boots = np.median(np.random.default_rng(seed).choice(a, size=(resamples, a.size)), axis=1)
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def time_runners(runners: dict[str, Runner], batch_size: int, *, device: str = "cpu", warmup: int = 3,
                 repeats: int = 20, budget_s: float = 3.0, min_repeats: int = 3,
                 noisy_cv: float | None = None, ci95: bool = False) -> dict[str, dict]:
    """Time each runner, round-robin: repeat i of every runner before repeat i+1 of any.

    Stops after `repeats` rounds or once `budget_s` per runner is spent (but never before
    `min_repeats` rounds, so a median means something). With `noisy_cv`, each result gets
    `noisy: true` when its coefficient of variation is still above it at the end (a loaded
    machine: the median may be off, the report warns). `ci95` adds each median's bootstrap CI.
    """
    dev = torch.device(device)
    for run in runners.values():
        for _ in range(warmup):
            run()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    deadline = time.perf_counter() + budget_s * len(runners)
    for i in range(repeats):
        for name, run in runners.items():
            samples[name].append(_time_once(run, dev))
        if i + 1 >= min_repeats and time.perf_counter() > deadline:
            break
    out = {name: latency_stats(s, batch_size, ci95) for name, s in samples.items()}
    if noisy_cv is not None:
        for st in out.values():
            st["noisy"] = st["cv"] > noisy_cv
    return out


def bench_input(batch_size: int, image_size: int, seed: int = 0, in_chans: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, in_chans, image_size, image_size, generator=g)


def torch_runner(model: torch.nn.Module, x: torch.Tensor, *, amp: bool = False) -> Runner:
    """One no-grad forward of `model` on `x` (both already on the device and in the memory format)."""
    autocast = (torch.autocast("cuda", dtype=torch.float16) if amp and x.device.type == "cuda"
                else contextlib.nullcontext())

    def run():
        with torch.no_grad(), autocast:
            return model(x)
    return run


@torch.no_grad()
def measure_latency(models: dict[str, torch.nn.Module], batch_size: int, image_size: int, *, device: str = "cpu",
                    warmup: int = 3, repeats: int = 20, budget_s: float = 3.0, channels_last: bool = True,
                    seed: int = 0, amp: bool = False) -> dict[str, dict]:
    """Median/p10/p90 ms per forward pass of each eager model at one batch size, repeats interleaved."""
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last and dev.type == "cpu" else torch.contiguous_format
    x = bench_input(batch_size, image_size, seed).to(dev).contiguous(memory_format=fmt)
    prepared = {name: m.eval().to(dev).to(memory_format=fmt) for name, m in models.items()}
    try:
        return time_runners({n: torch_runner(m, x, amp=amp) for n, m in prepared.items()}, batch_size,
                            device=device, warmup=warmup, repeats=repeats, budget_s=budget_s)
    finally:
        for m in prepared.values():
            m.to("cpu").to(memory_format=torch.contiguous_format)


def _time_once(run: Runner, dev: torch.device) -> float:
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize(dev)
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1000.0


def cuda_available() -> bool:
    return torch.cuda.is_available()


def paired_reduction(baseline_ms: float, candidate_ms: float) -> float:
    """Latency reduction as a fraction of the baseline (0.3 = 30% faster)."""
    return 1.0 - candidate_ms / baseline_ms if baseline_ms > 0 else float("nan")

