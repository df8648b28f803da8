"""LayerPrune's per-block latency table against the benchmark stage, side by side in one process.

    nice -n 10 python benchmarks/layerprune_latency_table.py --threads 2 --batch-sizes 1 --backends eager ort

EfficientNet-Lite0 (random init: timing does not depend on the weights), model.elim=0, 96 px. For
each backend and batch size, in one process with the same threads and input: the benchmark stage's
`benchmark_models` on the model, then `bench.block_table.measure_block_table` on the same model
(model, every candidate block alone), then the benchmark again. Both go through the backend
registry and `time_runners`, so the table's full-model median should sit within the benchmark's
spread; the printout gives both medians with p10/p90, and each block's median with its 95% CI.
"""
from __future__ import annotations

import argparse

import torch

from elimnet.bench.block_table import measure_block_table, table_backend
from elimnet.bench.hardware import hardware_fingerprint
from elimnet.compress.elim import apply_classifier
from elimnet.compress.layerprune import candidates
from elimnet.config import defaults
from elimnet.models import create_model
from elimnet.bench.benchmark import benchmark_models


def _fmt(s: dict) -> str:
    ci = s.get("ci95_ms")
    ci = f" CI [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return f"{s['median_ms']:.3f} (p10 {s['p10_ms']:.3f}, p90 {s['p90_ms']:.3f}, n={s['repeats']}){ci}"


def bench_median(model, cfg, size: int, backend: str, bs: int) -> dict:
    """The benchmark stage's figure for `model` on the registry backend a table name maps to."""
    name = table_backend(backend).name
    out = benchmark_models({"model": model}, cfg.replace(**{"bench.batch_sizes": [bs]}), size, reference=None,
                           progress=False)
    return out[name][str(bs)]["model"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1])
    p.add_argument("--backends", nargs="+", default=["eager", "ort"])
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    model, _ = apply_classifier(create_model(a.arch, pretrained=False), 4)
    model.eval()
    paths = [b.path for b in candidates(model, a.size)]
    # Only the timed backends on; the benchmark's own bench.* settings otherwise (repeats, budget, warm-up).
    cfg = defaults().replace(**{"bench.threads": a.threads, "bench.cuda": False, "bench.ort": "ort" in a.backends,
                                "bench.compile": False, "deploy.precision": "fp32"})
    fp = hardware_fingerprint()
    print(f"{a.arch} {a.size}px, threads={a.threads}, {fp['cpu']}, {fp['cpus']} cpus, fingerprint {fp['id']}")
    for backend in a.backends:
        for bs in a.batch_sizes:
            before = bench_median(model, cfg, a.size, backend, bs)
            t = measure_block_table(model, paths, a.size, bs, backend=backend, cfg=cfg, threads=a.threads,
                                    seed=cfg["seed"])
            after = bench_median(model, cfg, a.size, backend, bs)
            print(f"\n{backend} bs={bs}")
            print(f"- benchmark, before the table: {_fmt(before)}")
            print(f"- block table, full model:     {_fmt(t['model'])}")
            print(f"- benchmark, after the table:  {_fmt(after)}")
            blocks = sum(s["median_ms"] for s in t["blocks"].values())
            print(f"- the {len(paths)} candidates alone: {blocks:.3f} ms together")
            print("\n| block | median ms [95% CI] |\n|---|---|")
            for q in paths:
                s = t["blocks"][q]
                print(f"| `{q}` | {s['median_ms']:.3f} [{s['ci95_ms'][0]:.3f}, {s['ci95_ms'][1]:.3f}] |")


if __name__ == "__main__":
    main()
