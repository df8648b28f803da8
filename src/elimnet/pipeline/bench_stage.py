"""benchmark: CPU (and CUDA when present) latency of baseline and candidate, interleaved."""
from __future__ import annotations

import platform
from pathlib import Path

import torch

from elimnet.bench.latency import cuda_available, measure_latency, paired_reduction
from elimnet.bench.profile import profile
from elimnet.checkpoint import load_model
from elimnet.config import Config
from elimnet.io import write_json


def benchmark_models(models: dict[str, torch.nn.Module], cfg: Config, image_size: int,
                     reference: str | None = "baseline") -> dict:
    """Latency per device and batch size for several models, with reductions vs `reference`."""
    threads = cfg["bench.threads"] or torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict = {"image_size": image_size, "threads": threads, "torch": torch.__version__,
                 "cpu": platform.processor() or platform.machine(),
                 "profile": {n: profile(m, image_size) for n, m in models.items()}}
    devices = ["cpu"] + (["cuda"] if cfg["bench.cuda"] and cuda_available() else [])
    for dev in ("cpu", "cuda"):
        if dev not in devices:
            out[dev] = None  # unavailable, not zero
            continue
        per_bs = {}
        for bs in cfg["bench.batch_sizes"]:
            stats = measure_latency(models, bs, image_size, device=dev, warmup=cfg["bench.warmup"],
                                    repeats=cfg["bench.repeats"], budget_s=cfg["bench.budget_s"], seed=cfg["seed"])
            if reference in stats:
                for name, s in stats.items():
                    if name != reference:
                        s["reduction"] = paired_reduction(stats[reference]["median_ms"], s["median_ms"])
            per_bs[str(bs)] = stats
        out[dev] = per_bs
    if out["cuda"] is None:
        out["cuda_unavailable_reason"] = "bench.cuda=false" if not cfg["bench.cuda"] else "no CUDA device"
    return out


def run_benchmark(cfg: Config, baseline: str | Path, candidate: str | Path, out: str | Path) -> dict:
    models, size = {}, None
    for name, path in (("baseline", baseline), ("candidate", candidate)):
        model, config = load_model(path)
        models[name] = model.eval()
        size = config.get("image_size", cfg["data.image_size"])
    result = benchmark_models(models, cfg, size)
    write_json(out, result)
    return result
