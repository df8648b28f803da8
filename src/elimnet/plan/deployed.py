"""Deployed latency of a candidate: export, (quantize,) time on ONNX Runtime, cache the result.

`deployed_file` and `time_deployed` are the only places the plan touches the export and timing
code (deploy/export.py, deploy/quantize.py, bench/latency.py, bench/ort_timing.py): re-pointing the
plan at another runtime or harness means changing these two functions.

A timing is cached under (structure, precision, batch size, threads, hardware fingerprint; the
fingerprint is bench.hardware's, the one the benchmark and LayerPrune's tables use): latency depends on
the graph and the machine, not on the weights, so a candidate whose structure was timed before is never
timed again, whatever its weights or its trial.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from elimnet.io import read_json, write_json

RUNTIME = "onnxruntime"


def deployed_file(model: torch.nn.Module, precision: str, workdir: Path, name: str, image_size: int,
                  calibration: list) -> Path:
    """The ONNX file that ships for `precision`: fp32 export, or its static INT8 QDQ (MinMax ranges)."""
    from elimnet.deploy.export import export_onnx
    from elimnet.deploy.quantize import quantize

    fp32 = export_onnx(model, workdir / f"{name}.onnx", image_size, name=name)
    if precision == "fp32":
        return fp32
    return quantize(fp32, workdir / f"{name}.int8.onnx", calibration, "minmax", name=name)


def time_deployed(files: dict[str, Path], batch_size: int, image_size: int, threads: int | None, *,
                  warmup: int, repeats: int, budget_s: float, seed: int = 0) -> dict[str, float]:
    """Median ms per batch of each file on ONNX Runtime CPU, repeats interleaved across files."""
    from elimnet.bench.latency import bench_input, time_runners
    from elimnet.bench.ort_timing import ort_runner, ort_session

    x = bench_input(batch_size, image_size, seed)
    runners = {n: ort_runner(ort_session(p, threads), x) for n, p in files.items()}
    stats = time_runners(runners, batch_size, warmup=warmup, repeats=repeats, budget_s=budget_s)
    return {n: s["median_ms"] for n, s in stats.items()}


def structure_key(model: torch.nn.Module, image_size: int) -> str:
    """Hash of the module tree and every tensor's shape: equal for equal graphs, blind to weight values."""
    shapes = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    text = json.dumps({"modules": repr(model), "shapes": shapes, "image_size": image_size})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


# Part of every key: raised when what a key means changes, so older entries are never read as new ones
# (2: the fingerprint became bench.hardware's 12-hex id; version-1 keys held a 16-hex id of their own).
CACHE_VERSION = 2


class TimingCache:
    """JSON file: cache key -> {"latency_ms", "reference_ms"} (the full model timed in the same rounds)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict = read_json(self.path) if self.path.is_file() else {}
        self.measured = 0  # timings run by this process (a rerun should add none)

    @staticmethod
    def key(structure: str, precision: str, batch_size: int, threads: int | None, hardware: str) -> str:
        return f"v{CACHE_VERSION}|{structure}|{precision}|bs{batch_size}|t{threads or 'default'}|{hardware}"

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, entry: dict) -> None:
        # Re-read first: other workers on this machine may have added entries since we loaded.
        if self.path.is_file():
            self.entries = {**read_json(self.path), **self.entries}
        self.entries[key] = entry
        self.measured += 1
        write_json(self.path, self.entries)
