"""What a latency figure was measured on: CPU model, the ISA extensions that decide which kernels
run (AVX-512, VNNI for int8, bf16, AMX), threads, library versions, and the machine's measured
fp32 matmul peak, so that every latency can also be read as a share of what the CPU can do."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path

# /proc/cpuinfo flag -> name in the hardware block (amx: any of Intel's AMX tile extensions).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx")
# What makes two timings comparable (machine_description's keys). Threads are left out: every timing
# records them beside the id. The measured peak too: the same machine re-probed is the same machine.
FINGERPRINT_KEYS = ("cpu", "machine", "isa", "cpus", "torch", "onnxruntime")


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(model name, set of flags) of the first CPU; platform's processor string off Linux."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86, arm
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def isa(flags: set[str]) -> dict[str, bool]:
    out = {f: f in flags for f in ISA_FLAGS if f != "amx"}
    out["amx"] = any(f.startswith("amx") for f in flags)
    return out


@functools.lru_cache(maxsize=8)
def peak_fp32_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best of `repeats` torch.mm of two n x n fp32 matrices with `threads` threads, in GFLOP/s.

    A short probe (~1 s on 2 cores): the best repeat approaches the machine's sustained fp32 peak
    without measuring it exhaustively; cached per process."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        torch.mm(a, b)  # warm-up: thread pool, page faults
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2.0 * n ** 3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def machine_description() -> dict:
    """What a timing depends on besides threads: CPU model, ISA, cores, torch and onnxruntime builds."""
    import torch

    from elimnet.bench.ort_timing import onnxruntime_version

    model, flags = cpu_info()
    return {"cpu": model, "machine": platform.machine(), "isa": isa(flags), "cpus": os.cpu_count(),
            "torch": torch.__version__, "onnxruntime": onnxruntime_version()}


def fingerprint_id(desc: dict) -> str:
    """Short hash of a machine description, or of a recorded hardware block (its FINGERPRINT_KEYS; other
    keys such as threads or the peak are ignored): timings with different ids are never mixed."""
    key = {k: desc.get(k) for k in FINGERPRINT_KEYS}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def hardware_fingerprint() -> dict:
    """machine_description() plus `id` (fingerprint_id): the one fingerprint of the machine this process runs on."""
    desc = machine_description()
    return {**desc, "id": fingerprint_id(desc)}


def hardware_block(threads: int, probe: bool = True) -> dict:
    """The `hardware` block of metrics/latency.json."""
    d = machine_description()
    return {"cpu": d["cpu"], "machine": d["machine"], "isa": d["isa"], "threads": threads, "cpus": d["cpus"],
            "torch": d["torch"], "onnxruntime": d["onnxruntime"],
            "peak_fp32_gflops": peak_fp32_gflops(threads) if probe else None}


def pct_of_peak(macs: float, batch_size: int, median_ms: float, peak_gflops: float | None) -> float | None:
    """Share (%) of the fp32 peak one forward pass reaches: 2 FLOPs per MAC."""
    if not peak_gflops or median_ms <= 0:
        return None
    return 100.0 * 2.0 * macs * batch_size / (median_ms / 1000.0) / 1e9 / peak_gflops
