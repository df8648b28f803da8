"""LayerPrune's per-block latency table: CIs per block, and what caching it does to budget selections.

    nice -n 10 python benchmarks/layerprune_latency_table.py --threads 1 --batch-sizes 1 8 64

EfficientNet-Lite0 (random init: timing does not depend on the weights), model.elim=0, 96 px. For each
batch size the table is measured twice from scratch (two "moments"); each block's median and 95%
bootstrap CI are printed side by side, then the l1 selection at a few budgets from either table.
The same table always gives the same selection (layerprune.select is a pure function); two
measurements can disagree, which is why the pipeline measures once per key and keeps the table.
"""
from __future__ import annotations

import argparse

import torch

from elimnet.compress import CompressContext
from elimnet.compress.elim import apply_classifier
from elimnet.compress.layerprune import (candidates, hardware_fingerprint, measure_block_table, score_blocks,
                                         select)
from elimnet.errors import ConfigError
from elimnet.models import create_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.95, 0.9, 0.85, 0.8])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, _ = apply_classifier(create_model(a.arch, pretrained=False), 4)
    paths = [b.path for b in candidates(model, a.size)]
    scores, _ = score_blocks(model, "l1", paths, CompressContext(arch=a.arch, image_size=a.size, num_classes=4))
    fp = hardware_fingerprint()
    print(f"{a.arch} {a.size}px, threads={a.threads}, {fp['cpu']} ({' '.join(fp['flags'])}), {fp['cores']} cores")
    for bs in a.batch_sizes:
        tables = []
        for _ in range(2):
            t = measure_block_table(model, paths, a.size, bs, progress=False)
            t["key"] = {"batch_size": bs}
            tables.append(t)
        print(f"\nbs={bs}: model {' / '.join(_fmt(t['model']) for t in tables)}")
        print("| block | run 1 median ms [95% CI] | run 2 median ms [95% CI] |")
        print("|---|---|---|")
        for q in paths:
            print(f"| `{q}` | {_fmt(tables[0]['blocks'][q])} | {_fmt(tables[1]['blocks'][q])} |")
        for b in a.budgets:
            picks = []
            for t in tables:
                try:
                    picks.append(", ".join(x.removeprefix("stages.") for x in select(scores, t, budget=b)["removed"])
                                 or "none")
                except ConfigError:
                    picks.append("below the floor")
            again = select(scores, tables[0], budget=b) if picks[0] != "below the floor" else None
            same = again is None or ", ".join(x.removeprefix("stages.") for x in again["removed"]) in (picks[0],)
            print(f"budget {b}: run 1 removes [{picks[0]}], run 2 removes [{picks[1]}]"
                  f"{'' if same else ' (run 1 table not reproducible!)'}")


def _fmt(s: dict) -> str:
    lo, hi = s["ci95_ms"]
    return f"{s['median_ms']:.3f} [{lo:.3f}, {hi:.3f}] (n={s['repeats']})"


if __name__ == "__main__":
    main()
