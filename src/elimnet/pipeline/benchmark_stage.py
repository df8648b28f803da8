"""benchmark: baseline and candidate through elimnet.bench.benchmark -> metrics/latency.json."""
from __future__ import annotations

import os
from pathlib import Path

from elimnet.bench.benchmark import benchmark_models
from elimnet.checkpoint import load_model
from elimnet.config import Config
from elimnet.io import write_json


def run_benchmark(cfg: Config, baseline: str | Path, candidate: str | Path, out: str | Path) -> dict:
    models, size, sizes = {}, None, {}
    for name, path in (("baseline", baseline), ("candidate", candidate)):
        model, config = load_model(path)
        models[name] = model.eval()
        sizes[name] = os.path.getsize(path)
        size = config.get("image_size", cfg["data.image_size"])
    result = benchmark_models(models, cfg, size, file_bytes=sizes)
    write_json(out, result)
    return result
