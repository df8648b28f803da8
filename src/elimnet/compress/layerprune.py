"""LayerPrune (seed 003): score the removable blocks, replace the least important by identity, in one shot.

Candidates are blocks whose output shape equals their input shape (residual blocks, MBConv
blocks with a skip); blocks that change stride or channels are never removed. Blocks are ranked
by a criterion from the registry in elimnet.compress.criteria (l1, l2, bn, taylor, activation,
imprint = the ICIP 2020 rule, imprint_ablation); higher = more important.

Selection: `model.prune.k` removes the k lowest-scored candidates; `model.prune.latency_budget`
(<= 1: fraction of the full model's latency, > 1: ms) removes candidates in the criterion's
order (`budget_rule: order`, least important first; `per_ms`: least importance per millisecond)
until the predicted latency holds the budget, so the removed set is a prefix of that order.
Latencies come from a per-block table (elimnet.bench.block_table) measured once per key and
cached in metrics/block_latency.json, so the selection is a pure function of the scores and
that table. The resolved spec is the list of removed block paths, so a saved model replays
without data.
"""
from __future__ import annotations

import math
import sys

import torch
from torch import nn

from elimnet.bench.block_table import BUDGET_BATCH_SIZES, TABLE_BACKENDS, block_table, key_id, table_key
from elimnet.compress.base import CompressContext, register_transform
from elimnet.fields import Field, int_range, is_int, num_range, one_of
from elimnet.compress.criteria import (BATCH_SIZE, CRITERIA, DEFAULT_NORMALIZATION, NORMALIZATIONS,  # noqa: F401
                                       ScoreRequest, get_criterion, list_criteria)
from elimnet.compress.imprint import PROXIES
from elimnet.errors import ConfigError
from elimnet.models.staged import BlockInfo, StagedNet, count_params, replace_module, stage_view

CHECK_SIZE = 64  # candidates must also keep their shape at this input side (apply re-checks there)
BUDGET_RULES = ("order", "per_ms")  # model.prune.budget_rule
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
                 progress: bool = True, normalization: str = DEFAULT_NORMALIZATION,
                 imprint_proxy: str = "grid") -> tuple[dict[str, float], dict]:
    """(path -> importance, criterion-specific extras). Higher = more important."""
    c = get_criterion(criterion)
    check_data(criterion, ctx)
    req = ScoreRequest(model, list(paths), ctx, batches=batches, progress=progress, normalization=normalization,
                       imprint_proxy=imprint_proxy)
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


def removal_order(scores: dict[str, float], latency_ms: dict[str, float], rule: str = "order") -> list[str]:
    """The order a budget removes blocks in. `order`: the criterion's ranking, least important
    first (select_k's order). `per_ms`: least importance per millisecond first; blocks whose
    removal the criterion scores below 0 (it gains) lead, lowest score first, as a score below 0
    per ms has no meaning. Scores are never clipped, so no ties are made up."""
    if rule not in BUDGET_RULES:
        raise ConfigError(f"model.prune.budget_rule={rule}: must be one of {', '.join(BUDGET_RULES)}")
    if rule == "order":
        return select_k(scores, len(scores))
    paths = list(scores)

    def key(p):
        s = scores[p]
        return (0, s, -latency_ms[p], paths.index(p)) if s < 0 else (1, s / max(latency_ms[p], 1e-9),
                                                                      -latency_ms[p], paths.index(p))
    return sorted(paths, key=key)


def select_budget(scores: dict[str, float], latency_ms: dict[str, float], model_ms: float,
                  target_ms: float, rule: str = "order") -> tuple[list[str], float]:
    """Remove in removal_order until the predicted latency (model_ms minus the removed blocks'
    contributions) is <= target_ms; returns (removed paths, predicted ms): a prefix of the order."""
    removed, predicted = [], model_ms
    for p in removal_order(scores, latency_ms, rule):
        if predicted <= target_ms:
            break
        removed.append(p)
        predicted -= latency_ms[p]
    return removed, predicted


def select(scores: dict[str, float], table: dict, *, k: int = 0, budget: float | None = None,
           rule: str = "order") -> dict:
    """The selection as a pure function of the scores and a latency table (bench.block_table)."""
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
    removed, predicted = select_budget(scores, blocks, model_ms, target, rule)
    out.update(removed=removed, predicted_ms=predicted, target_ms=target, floor_ms=floor, budget_rule=rule)
    return out


# ----------------------------------------------------------------------------- latency table
def table_threads(cfg) -> int:
    """The benchmark's thread rule (bench.threads, else torch's default), so both time alike."""
    return cfg["bench.threads"] or torch.get_num_threads()


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
def _check_plan_params(cfg, model: StagedNet, ctx: CompressContext) -> list[BlockInfo]:
    """The candidates, after the checks a plan needs before scoring anything."""
    k, budget, criterion = cfg["model.prune.k"], cfg["model.prune.latency_budget"], cfg["model.prune.criterion"]
    if k and budget is not None:
        raise ConfigError(f"model.prune.k={k} with model.prune.latency_budget={budget}: set only one "
                          "(k = blocks to remove, latency_budget = remove until the latency holds)")
    get_criterion(criterion)
    cands = candidates(model, ctx.image_size)
    if k > len(cands):
        raise ConfigError(f"model.prune.k={k}: must be <= {len(cands)}, the removal candidates (blocks whose output "
                          f"shape equals their input shape) of {ctx.arch} after model.elim={cfg['model.elim']}")
    check_data(criterion, ctx)
    return cands


def _candidate_rows(cands: list[BlockInfo], scores: dict, table: dict, order: list[str], removed: list[str],
                    per_block: dict) -> list[dict]:
    ranks = {p: i + 1 for i, p in enumerate(order)}
    return [{"path": b.path, "stage": b.stage, "index": b.index, "params": b.params, "score": scores[b.path],
             "latency_ms": table["blocks"][b.path]["median_ms"], "latency_ci95_ms": table["blocks"][b.path]["ci95_ms"],
             "rank": ranks[b.path], "removed": b.path in removed, "status": "removed" if b.path in removed else "kept",
             **per_block.get(b.path, {})} for b in cands]


def plan_layerprune(model: StagedNet, cfg, ctx: CompressContext, *, progress: bool = True) -> dict | None:
    k, budget, criterion = cfg["model.prune.k"], cfg["model.prune.latency_budget"], cfg["model.prune.criterion"]
    if k == 0 and budget is None:
        return None
    cands = _check_plan_params(cfg, model, ctx)
    paths = [b.path for b in cands]
    scores, extra = score_blocks(model, criterion, paths, ctx, batches=cfg["model.prune.batches"], progress=progress,
                                 normalization=cfg["model.prune.normalize"],
                                 imprint_proxy=cfg["model.prune.imprint_proxy"])
    warning = chance_warning(criterion, extra)
    if warning:
        print(warning["message"], file=sys.stderr)
    key = table_key(model, ctx.arch, ctx.image_size, cfg["model.prune.budget_batch_size"],
                    cfg["model.prune.budget_backend"], table_threads(cfg))
    # "reused" is left out of the report: the model file must not depend on whether the table was cached.
    table, _ = block_table(model, paths, key, getattr(ctx, "latency_table", None),
                           reference=_reference_model(model, cfg, ctx), cfg=cfg, seed=cfg["seed"])
    rule = cfg["model.prune.budget_rule"]
    sel = select(scores, table, k=k, budget=budget, rule=rule)
    removed = sel.pop("removed")
    report = {"criterion": criterion, "normalize": cfg["model.prune.normalize"],
              "imprint_proxy": cfg["model.prune.imprint_proxy"], "mode": "k" if k else "latency_budget", "k": k,
              "latency_budget": budget, "latency_table": {"id": key_id(key), **key}, **sel}
    if warning:
        report["warning"] = warning
    report.update({k_: v for k_, v in extra.items() if k_ != "per_block"})
    lat = {p: table["blocks"][p]["median_ms"] for p in paths}
    order = removal_order(scores, lat, rule if budget is not None else "order")
    report["candidates"] = _candidate_rows(cands, scores, table, order, removed, extra.get("per_block", {}))
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
        "model.prune.normalize": Field(DEFAULT_NORMALIZATION, one_of(NORMALIZATIONS),
                                       "LayerPrune filter criteria: none = the seed's plain mean, depth = rescaled"),
        "model.prune.imprint_proxy": Field("grid", one_of(PROXIES),
                                           "LayerPrune imprint criteria: grid = the authors' ~512-feature grid over "
                                           "the whole train split, gap_l2 = global pool + L2 on batches x 32 images"),
        "model.prune.latency_budget": Field(None, num_range(0.0, optional=True, lo_open=True),
                                            "LayerPrune budget: <=1 fraction of the full model's latency, >1 ms"),
        "model.prune.budget_rule": Field("order", one_of(BUDGET_RULES),
                                         "LayerPrune budget: remove in the criterion's order, or by importance per ms"),
        "model.prune.batches": Field(4, int_range(1), "batches used by data-dependent criteria"),
        "model.prune.budget_batch_size": Field(
            1, lambda v: None if is_int(v) and v in BUDGET_BATCH_SIZES else "one of 1, 8, 64",
            "LayerPrune budget: batch size of the per-block latency table"),
        "model.prune.budget_backend": Field("eager", one_of(tuple(TABLE_BACKENDS)),
                                            "LayerPrune budget: backend the per-block latency table is timed on"),
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
