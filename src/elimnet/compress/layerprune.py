"""LayerPrune (seed 003): score the removable blocks, replace the least important by identity, in one shot.

Candidates are blocks whose output shape equals their input shape (residual blocks, MBConv
blocks with a skip); blocks that change stride or channels are never removed. Blocks are ranked
by a criterion from the registry in elimnet.compress.criteria (l1, l2, bn, taylor, activation,
imprint = the ICIP 2020 rule, imprint_ablation); higher = more important.

Selection: `model.prune.k` removes the k lowest-scored candidates; `model.prune.latency_budget`
(<= 1: fraction of the full model's latency, > 1: ms) removes candidates in order of least
importance per millisecond until the predicted latency holds the budget. Latencies come from a
per-block table measured once per key (arch, structure, image size, batch size, backend,
threads, hardware fingerprint) and cached in metrics/block_latency.json, so the selection is a
pure function of the scores and that table. The resolved spec is the list of removed block
paths, so a saved model replays without data.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from elimnet.compress.base import CompressContext, register_transform
from elimnet.fields import Field, int_range, is_int, num_range, one_of
from elimnet.compress.criteria import (BATCH_SIZE, CRITERIA, ScoreRequest, get_criterion,  # noqa: F401
                                       list_criteria)
from elimnet.errors import ConfigError
from elimnet.io import read_json, write_json
from elimnet.models.staged import BlockInfo, StagedNet, count_params, replace_module, stage_view

CHECK_SIZE = 64  # candidates must also keep their shape at this input side (apply re-checks there)
BACKENDS = ("eager",)  # latency backends a budget can be measured with (ort once the deploy work lands)
BUDGET_BATCH_SIZES = (1, 8, 64)  # as in seed 003
TABLE_REPEATS, TABLE_BUDGET_S, TABLE_WARMUP = 30, 2.0, 3
CHANCE_MARGIN = 0.05  # warn when the full net's proxy accuracy is within max(this, 2 SE) of chance


# ----------------------------------------------------------------------------- candidates
def candidates(model: StagedNet, image_size: int = CHECK_SIZE) -> list[BlockInfo]:
    """Blocks whose output shape equals their input shape at `image_size` and at CHECK_SIZE."""
    names = [f"stage{i}" for i in range(len(model.stages))]
    view = stage_view(model, names, image_size=image_size)
    if image_size == CHECK_SIZE:
        return view.candidates
    ok = {b.path for b in stage_view(model, names, image_size=CHECK_SIZE).candidates}
    return [b for b in view.candidates if b.path in ok]


# ----------------------------------------------------------------------------- criteria
def _split_ok(split) -> bool:
    return split is not None and len(split) > 0


def check_data(criterion: str, ctx: CompressContext) -> None:
    missing = [s for s in get_criterion(criterion).needs if not _split_ok(getattr(ctx, s))]
    if missing:
        data = ", ".join(c.name for c in CRITERIA.values() if c.needs)
        free = ", ".join(c.name for c in CRITERIA.values() if not c.needs)
        raise ConfigError(f"model.prune.criterion={criterion}: needs a non-empty prepared {' and '.join(missing)} "
                          f"split (criteria that need data: {data}; data-free: {free})")


def score_blocks(model: StagedNet, criterion: str, paths: list[str], ctx: CompressContext, *, batches: int = 4,
                 progress: bool = True, normalization: str | None = None) -> tuple[dict[str, float], dict]:
    """(path -> importance, criterion-specific extras). Higher = more important."""
    c = get_criterion(criterion)
    check_data(criterion, ctx)
    req = ScoreRequest(model, list(paths), ctx, batches=batches, progress=progress)
    if normalization is not None:
        req.normalization = normalization
    return c.score(req)


def chance_warning(criterion: str, extra: dict) -> dict | None:
    """A warning (dict with the numbers) when the full net's proxy accuracy is near chance."""
    acc, chance, n = extra.get("accuracy_full"), extra.get("chance"), extra.get("eval_images")
    if acc is None or chance is None or not n:
        return None
    margin = max(CHANCE_MARGIN, 2 * math.sqrt(chance * (1 - chance) / n))
    if acc >= chance + margin:
        return None
    weight = ", ".join(c.name for c in CRITERIA.values() if not c.needs)
    msg = (f"LayerPrune: the full net's imprinted proxy accuracy {acc:.3f} is within {margin:.3f} of chance "
           f"{chance:.3f} ({n} val images), so the {criterion} ranking is noise; choose model.prune.k by hand "
           f"or use a weight criterion ({weight})")
    return {"message": msg, "accuracy_full": acc, "chance": chance, "margin": margin, "eval_images": n}


# ----------------------------------------------------------------------------- selection (pure)
def select_k(scores: dict[str, float], k: int) -> list[str]:
    """The k lowest-scored paths (ties: the earlier block first)."""
    paths = list(scores)
    return sorted(paths, key=lambda p: (scores[p], paths.index(p)))[:k]


def removal_order(scores: dict[str, float], latency_ms: dict[str, float]) -> list[str]:
    """Least importance per millisecond first; blocks whose removal costs nothing (score <= 0)
    lead, the slowest of them first."""
    paths = list(scores)
    return sorted(paths, key=lambda p: (max(scores[p], 0.0) / max(latency_ms[p], 1e-9), -latency_ms[p],
                                        paths.index(p)))


def select_budget(scores: dict[str, float], latency_ms: dict[str, float], model_ms: float,
                  target_ms: float) -> tuple[list[str], float]:
    """Remove in removal_order until the predicted latency (model_ms minus the removed blocks'
    contributions) is <= target_ms; returns (removed paths, predicted ms)."""
    removed, predicted = [], model_ms
    for p in removal_order(scores, latency_ms):
        if predicted <= target_ms:
            break
        removed.append(p)
        predicted -= latency_ms[p]
    return removed, predicted


def select(scores: dict[str, float], table: dict, *, k: int = 0, budget: float | None = None) -> dict:
    """The selection as a pure function of the scores and a latency table (see block_table)."""
    blocks = {p: table["blocks"][p]["median_ms"] for p in scores}
    model_ms, ref_ms = table["model"]["median_ms"], table["reference"]["median_ms"]
    out = {"model_ms": model_ms, "reference_ms": ref_ms}
    if k:
        removed = select_k(scores, k)
        out.update(removed=removed, predicted_ms=model_ms - sum(blocks[p] for p in removed))
        return out
    target = budget * ref_ms if budget <= 1 else float(budget)
    floor = model_ms - sum(blocks.values())
    if target < floor:
        bs = table["key"]["batch_size"]
        raise ConfigError(
            f"model.prune.latency_budget={budget:g}: {target:.2f} ms is below {floor:.2f} ms, the table's bs={bs} "
            f"latency with all {len(blocks)} candidates removed (full model {ref_ms:.2f} ms); must be >= "
            f"{floor / ref_ms:.3f} (fraction) or >= {floor:.2f} (ms)")
    removed, predicted = select_budget(scores, blocks, model_ms, target)
    out.update(removed=removed, predicted_ms=predicted, target_ms=target, floor_ms=floor)
    return out


# ----------------------------------------------------------------------------- latency table
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd")


def hardware_fingerprint() -> dict:
    """CPU model, the ISA flags that matter for kernels, cores, torch build; `id` hashes them."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware") and model in ("", platform.machine(), platform.processor()):
                model = val.strip()
            elif key in ("flags", "features"):
                flags |= set(val.split())
    except OSError:
        pass
    fp = {"cpu": model, "flags": sorted(f for f in _FLAGS if f in flags), "cores": os.cpu_count(),
          "machine": platform.machine(), "torch": torch.__version__}
    fp["id"] = hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:12]
    return fp


def table_key(model: StagedNet, arch: str, image_size: int, batch_size: int, backend: str,
              threads: int | None = None) -> dict:
    """What a block's timing depends on. `structure` hashes the block shapes (elim/neck change them)."""
    view = stage_view(model, [f"stage{i}" for i in range(len(model.stages))], image_size=image_size)
    shapes = [[b.path, b.in_shape, b.out_shape, b.params] for b in view.blocks]
    shapes.append([type(model.head).__name__, type(model.neck).__name__])
    return {"arch": arch, "structure": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12],
            "image_size": image_size, "batch_size": batch_size, "backend": backend,
            "threads": threads or torch.get_num_threads(), "hardware": hardware_fingerprint()["id"]}


def key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _stats(samples: list[float], seed: int = 0) -> dict:
    """Median with a 95% bootstrap CI (fixed seed: the same samples give the same CI)."""
    a = np.asarray(samples, dtype=float)
    boots = np.median(np.random.default_rng(seed).choice(a, size=(1000, a.size)), axis=1)
    return {"median_ms": float(np.median(a)), "ci95_ms": [float(np.percentile(boots, 2.5)),
                                                         float(np.percentile(boots, 97.5))],
            "p10_ms": float(np.percentile(a, 10)), "p90_ms": float(np.percentile(a, 90)), "repeats": int(a.size)}


class _Replay(nn.Module):
    """Runs one block on its recorded input, ignoring the benchmark's image."""

    def __init__(self, block: nn.Module, x: torch.Tensor):
        super().__init__()
        self.block = block
        self.register_buffer("x", x)

    def forward(self, _):
        return self.block(self.x)


@torch.no_grad()
def measure_block_table(model: StagedNet, paths: list[str], image_size: int, batch_size: int = 1, *,
                        reference: StagedNet | None = None, repeats: int = TABLE_REPEATS,
                        budget_s: float = TABLE_BUDGET_S, warmup: int = TABLE_WARMUP,
                        progress: bool = True) -> dict:
    """Eager CPU timings: the model, the reference (full) model, and each block alone on the input
    it sees inside the model (removing it saves that much); all interleaved, round-robin."""
    from elimnet.bench.latency import bench_input

    x = bench_input(batch_size, image_size)
    inputs: dict[str, torch.Tensor] = {}
    m = copy.deepcopy(model).cpu().eval()
    hooks = [m.get_submodule(p).register_forward_pre_hook(
        lambda mod, inp, p=p: inputs.__setitem__(p, inp[0].detach().clone())) for p in paths]
    m.forward_features(x)
    for h in hooks:
        h.remove()
    runners = {"model": m}
    if reference is not None:
        runners["reference"] = copy.deepcopy(reference).cpu().eval()
    runners.update({p: _Replay(m.get_submodule(p), inputs[p]).eval() for p in paths})
    for r in runners.values():
        for _ in range(warmup):
            r(x)
    samples: dict[str, list[float]] = {n: [] for n in runners}
    deadline = time.perf_counter() + budget_s * len(runners)
    for i in tqdm(range(repeats), desc="block latency", unit="round", disable=not progress, leave=False):
        for name, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            samples[name].append((time.perf_counter() - t0) * 1000.0)
        if i + 1 >= 5 and time.perf_counter() > deadline:
            break
    return {"model": _stats(samples["model"]), "reference": _stats(samples.get("reference", samples["model"])),
            "blocks": {p: _stats(samples[p]) for p in paths}}


@dataclass(frozen=True)
class LatencyCache:
    """Where block tables are cached; `store=False` reads only (elimnet summary must not modify a DVC output)."""
    path: str | Path
    store: bool = True


def block_table(model: StagedNet, paths: list[str], key: dict, path: str | Path | LatencyCache | None = None, *,
                reference: StagedNet | None = None, progress: bool = True) -> tuple[dict, bool]:
    """(table, reused): the cached table for `key` from `path`, else measure it (and store it there)."""
    store = True
    if isinstance(path, LatencyCache):
        path, store = path.path, path.store
    kid = key_id(key)
    doc = read_json(path) if path is not None and Path(path).exists() else {}
    tables = doc.get("tables", {})
    t = tables.get(kid)
    if t is not None and set(paths) <= set(t["blocks"]):
        return t, True
    measured = measure_block_table(model, paths, key["image_size"], key["batch_size"], reference=reference,
                                   progress=progress)
    t = {"key": key, "hardware": hardware_fingerprint(), **measured}
    if path is not None and store:
        tables[kid] = t
        write_json(path, {"tables": dict(sorted(tables.items()))})
    return t, False


def ensure_latency_file(path: str | Path) -> None:
    """Create an empty table file when none exists (the DVC output exists even with LayerPrune off)."""
    if not Path(path).exists():
        write_json(path, {"tables": {}})


def _reference_model(model: StagedNet, cfg, ctx: CompressContext) -> StagedNet | None:
    """The full (uncut) arch when model.elim/neck changed it before LayerPrune; else None (= model)."""
    if not (cfg["model.elim"] or cfg["model.neck"]):
        return None
    from elimnet.compress.elim import apply_classifier
    from elimnet.models import create_model, has_model
    from elimnet.models.registry import params_arch_args
    if not has_model(ctx.arch):  # registered or timm/<name>
        return None
    base = create_model(ctx.arch, pretrained=False, arch_args=params_arch_args(ctx.arch, cfg))  # e.g. model.experts
    full, _ = apply_classifier(base, ctx.num_classes)
    return full


# ----------------------------------------------------------------------------- plan / apply
def plan_layerprune(model: StagedNet, cfg, ctx: CompressContext, *, progress: bool = True) -> dict | None:
    k, budget, criterion = cfg["model.prune.k"], cfg["model.prune.latency_budget"], cfg["model.prune.criterion"]
    if k == 0 and budget is None:
        return None
    if k and budget is not None:
        raise ConfigError(f"model.prune.k={k} with model.prune.latency_budget={budget}: set only one "
                          "(k = blocks to remove, latency_budget = remove until the latency holds)")
    get_criterion(criterion)
    cands = candidates(model, ctx.image_size)
    paths = [b.path for b in cands]
    if k > len(paths):
        raise ConfigError(f"model.prune.k={k}: must be <= {len(paths)}, the removal candidates (blocks whose output "
                          f"shape equals their input shape) of {ctx.arch} after model.elim={cfg['model.elim']}")
    check_data(criterion, ctx)
    scores, extra = score_blocks(model, criterion, paths, ctx, batches=cfg["model.prune.batches"],
                                 progress=progress)
    warning = chance_warning(criterion, extra)
    if warning:
        print(warning["message"], file=sys.stderr)
    key = table_key(model, ctx.arch, ctx.image_size, cfg["model.prune.budget_batch_size"],
                    cfg["model.prune.budget_backend"])
    # "reused" is left out of the report: the model file must not depend on whether the table was cached.
    table, _ = block_table(model, paths, key, getattr(ctx, "latency_table", None),
                           reference=_reference_model(model, cfg, ctx), progress=progress)
    sel = select(scores, table, k=k, budget=budget)
    removed = sel.pop("removed")
    report = {"criterion": criterion, "mode": "k" if k else "latency_budget", "k": k, "latency_budget": budget,
              "latency_table": {"id": key_id(key), **key}, **sel}
    if warning:
        report["warning"] = warning
    report.update({k_: v for k_, v in extra.items() if k_ != "per_block"})
    lat = {p: table["blocks"][p]["median_ms"] for p in paths}
    order = removal_order(scores, lat) if budget is not None else select_k(scores, len(paths))
    ranks = {p: i + 1 for i, p in enumerate(order)}
    per_block = extra.get("per_block", {})
    report["candidates"] = [
        {"path": b.path, "stage": b.stage, "index": b.index, "params": b.params, "score": scores[b.path],
         "latency_ms": lat[b.path], "latency_ci95_ms": table["blocks"][b.path]["ci95_ms"], "rank": ranks[b.path],
         "removed": b.path in removed, "status": "removed" if b.path in removed else "kept",
         **per_block.get(b.path, {})}
        for b in cands]
    # Model order keeps the spec readable; the set is what fixes the architecture.
    return {"removed": [p for p in paths if p in removed], "importance": report}


def apply_layerprune(model: StagedNet, removed: list[str], importance: dict | None = None
                     ) -> tuple[StagedNet, dict]:
    """Replace each block in `removed` by nn.Identity (each must be a candidate)."""
    ok = {b.path for b in candidates(model)}
    bad = [p for p in removed if p not in ok]
    if bad:
        raise ConfigError(f"model.prune: {', '.join(bad)} not removal candidates (must be one of "
                         f"{', '.join(sorted(ok)) or 'none'})")
    before = count_params(model)
    for p in removed:
        replace_module(model, p, nn.Identity())
    report = {"removed": list(removed), "blocks_removed": len(removed), "params_before": before,
              "params_after": count_params(model)}
    if importance is not None:
        report["importance"] = importance
    return model, report


def label_layerprune(p: dict) -> str:
    crit = p.get("model.prune.criterion", "")
    if p.get("model.prune.latency_budget") is not None:
        return f"LayerPrune budget={p['model.prune.latency_budget']:g} ({crit})"
    return f"LayerPrune k={p['model.prune.k']} ({crit})"


register_transform(
    "layerprune", plan_layerprune, apply_layerprune, order=20, label=label_layerprune,
    off={"model.prune.k": 0, "model.prune.latency_budget": None},
    params={
        "model.prune.k": Field(0, int_range(0), "LayerPrune: blocks removed (0 = off)"),
        "model.prune.criterion": Field("l1", one_of(list_criteria), "LayerPrune block ranking (compress/criteria.py)"),
        "model.prune.latency_budget": Field(None, num_range(0.0, optional=True, lo_open=True),
                                            "LayerPrune budget: <=1 fraction of the full model's latency, >1 ms"),
        "model.prune.batches": Field(4, int_range(1), "batches used by data-dependent criteria"),
        "model.prune.budget_batch_size": Field(
            1, lambda v: None if is_int(v) and v in BUDGET_BATCH_SIZES else "one of 1, 8, 64",
            "LayerPrune budget: batch size of the per-block latency table"),
        "model.prune.budget_backend": Field("eager", one_of(BACKENDS), "LayerPrune budget: latency backend of the table"),
    })


def layerprune(model: StagedNet, removed: list[str]) -> tuple[StagedNet, dict]:
    """Pure block removal: returns a new model and the report; `model` is left untouched."""
    from elimnet.compress.base import TRANSFORMS
    return TRANSFORMS["layerprune"].apply(model, removed=removed)


def importance_file(steps: list[dict]) -> dict | list:
    """metrics/layer_importance.json content from plan_and_apply's steps.

    With LayerPrune off it is an empty list: `dvc plots show` draws an empty plot from it, where an
    object holding an empty list made it warn "'nonetype' object has no attribute 'keys'"."""
    for s in steps:
        if s["name"] == "layerprune":
            return s["spec"]["importance"]
    return []
