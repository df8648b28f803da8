"""LayerPrune (seed 003): score the removable blocks, replace the least important by identity, in one shot.

Candidates are blocks whose output shape equals their input shape (residual blocks, MBConv
blocks with a skip); blocks that change stride or channels are never removed. A block's
score follows the seed: a filter criterion is computed per filter, averaged over the
filters of each weight layer, then over the block's layers (higher = more important):

- l1 / l2       per-filter weight norm, divided by the filter size (mean |w|, RMS w) so that
                layers with different fan-in compare on one scale; within a layer the ranking
                is that of the plain norm;
- bn            mean |gamma| of each BatchNorm;
- taylor        |sum_f w * dL/dw| per filter (first-order loss change), averaged over
                model.prune.batches training batches;
- activation    mean |feature map| per channel after each BatchNorm, on validation images;
- imprint       accuracy drop of an imprinted proxy classifier (elimnet.compress.imprint) when
                the block is skipped: nothing is trained.

Selection: `model.prune.k` removes the k lowest-scored candidates; `model.prune.latency_budget`
(<= 1: fraction of the full model's bs=1 CPU latency, > 1: ms) removes candidates in order of
least importance per measured millisecond until the predicted latency holds the budget.
The resolved spec is the list of removed block paths, so a saved model replays without data.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elimnet.compress.base import CompressContext, register_transform
from elimnet.errors import ConfigError
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.models.staged import BlockInfo, StagedNet, count_params, replace_module, stage_view

# name -> needs data (config.py lists the keys as the allowed model.prune.criterion values)
CRITERIA = {"l1": False, "l2": False, "bn": False, "taylor": True, "activation": True, "imprint": True}
# which prepared split each data-dependent criterion reads
NEEDS = {"taylor": ("train",), "activation": ("val",), "imprint": ("val",)}
BATCH_SIZE = 32  # images per batch for data-dependent criteria (model.prune.batches of them)
CHECK_SIZE = 64  # candidates must also keep their shape at this input side (apply re-checks there)
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


# ----------------------------------------------------------------------------- candidates
def candidates(model: StagedNet, image_size: int = CHECK_SIZE) -> list[BlockInfo]:
    """Blocks whose output shape equals their input shape at `image_size` and at CHECK_SIZE."""
    names = [f"stage{i}" for i in range(len(model.stages))]
    view = stage_view(model, names, image_size=image_size)
    if image_size == CHECK_SIZE:
        return view.candidates
    ok = {b.path for b in stage_view(model, names, image_size=CHECK_SIZE).candidates}
    return [b for b in view.candidates if b.path in ok]


def _layers(block: nn.Module, kinds) -> list[nn.Module]:
    return [m for m in block.modules() if isinstance(m, kinds)]


def _bns(block: nn.Module) -> list[nn.Module]:
    return [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


# ----------------------------------------------------------------------------- criteria
def weight_norm_scores(model: StagedNet, paths: list[str], p: int = 1) -> dict[str, float]:
    out = {}
    for path in paths:
        per_layer = []
        for m in _layers(model.get_submodule(path), WEIGHT_LAYERS):
            w = m.weight.detach().flatten(1).float()  # one row per filter
            f = w.abs().mean(1) if p == 1 else w.pow(2).mean(1).sqrt()
            per_layer.append(float(f.mean()))
        out[path] = _mean(per_layer)
    return out


def bn_scores(model: StagedNet, paths: list[str]) -> dict[str, float]:
    out = {}
    for path in paths:
        bns = [m for m in _bns(model.get_submodule(path)) if m.weight is not None]
        if not bns:
            raise ConfigError(f"model.prune.criterion=bn: block {path} has no affine BatchNorm; use l1, l2, taylor, "
                              "activation or imprint")
        out[path] = _mean(float(m.weight.detach().abs().mean()) for m in bns)
    return out


def taylor_scores(model: StagedNet, paths: list[str], split: TensorSplit, normalize: Normalizer, *,
                  batches: int, batch_size: int = BATCH_SIZE, seed: int = 0,
                  progress: bool = True) -> dict[str, float]:
    """Per filter |sum(w * dL/dw)| (Molchanov's first-order term), averaged over batches."""
    layers = {path: _layers(model.get_submodule(path), WEIGHT_LAYERS) for path in paths}
    params = [m.weight for ls in layers.values() for m in ls]
    acc = [torch.zeros(w.shape[0]) for w in params]
    device = next(model.parameters()).device
    was = model.training
    model.eval()  # frozen BN statistics: planning must not change the model
    n = 0
    try:
        gen = torch.Generator().manual_seed(seed)
        it = iterate_batches(split, batch_size, normalize, shuffle=True, generator=gen)
        for x, y in tqdm(it, total=min(batches, math.ceil(len(split) / batch_size)), desc="taylor",
                         unit="batch", disable=not progress, leave=False):
            if n == batches:
                break
            with torch.enable_grad():
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
            for a, w, g in zip(acc, params, grads):
                if g is not None:
                    a += (w.detach() * g).flatten(1).sum(1).abs().float().cpu()
            n += 1
    finally:
        model.train(was)
    out, i = {}, 0
    for path, ls in layers.items():
        out[path] = _mean(float(acc[i + j].mean()) / max(n, 1) for j in range(len(ls)))
        i += len(ls)
    return out


@torch.no_grad()
def activation_scores(model: StagedNet, paths: list[str], split: TensorSplit, normalize: Normalizer, *,
                      batches: int, batch_size: int = BATCH_SIZE, progress: bool = True) -> dict[str, float]:
    """Mean |feature map| per channel after each BatchNorm (each conv where a block has none)."""
    sums: dict[tuple[str, int], torch.Tensor] = {}
    hooks = []
    for path in paths:
        block = model.get_submodule(path)
        for j, m in enumerate(_bns(block) or _layers(block, nn.Conv2d)):
            def hook(mod, inp, out, key=(path, j)):
                v = out.detach().abs().float().mean(dim=(0, 2, 3) if out.dim() == 4 else 0).cpu() * out.shape[0]
                sums[key] = sums[key] + v if key in sums else v
            hooks.append(m.register_forward_hook(hook))
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    seen = 0
    try:
        for x, _ in tqdm(iterate_batches(split.subset(batches * batch_size), batch_size, normalize),
                         desc="activation", unit="batch", disable=not progress, leave=False):
            model.forward_features(x.to(device))
            seen += len(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {path: _mean(float(v.mean()) / seen for (p, _), v in sums.items() if p == path) for path in paths}


def imprint_scores(model: StagedNet, paths: list[str], train: TensorSplit | None, val: TensorSplit,
                   normalize: Normalizer, *, num_classes: int, imprint_images: int, seed: int = 0,
                   progress: bool = True) -> tuple[dict[str, float], dict]:
    """Score = proxy accuracy of the whole net minus that with the block skipped (the drop)."""
    from elimnet.compress.imprint import imprint_scan

    source = train if train is not None and len(train) else val
    if len(source) > imprint_images:
        idx = torch.randperm(len(source), generator=torch.Generator().manual_seed(seed))[:imprint_images].sort().values
        source = TensorSplit(source.images[idx], source.labels[idx])
    r = imprint_scan(model, source, val, normalize, paths, num_classes=num_classes, batch_size=BATCH_SIZE,
                     device=next(model.parameters()).device, progress=progress)
    scores = {p: r.full - r.without[p] for p in paths}
    extra = {"accuracy_full": r.full, "imprint_images": r.imprint_images, "eval_images": r.eval_images,
             "per_block": {p: {"accuracy_without": r.without[p], "accuracy_after": r.after.get(p)} for p in paths}}
    return scores, extra


def _split_ok(split) -> bool:
    return split is not None and len(split) > 0


def check_data(criterion: str, ctx: CompressContext) -> None:
    missing = [s for s in NEEDS.get(criterion, ()) if not _split_ok(getattr(ctx, s))]
    if missing:
        data = ", ".join(c for c, d in CRITERIA.items() if d)
        free = ", ".join(c for c, d in CRITERIA.items() if not d)
        raise ConfigError(f"model.prune.criterion={criterion}: needs a non-empty prepared {' and '.join(missing)} "
                          f"split (criteria that need data: {data}; data-free: {free})")


def score_blocks(model: StagedNet, criterion: str, paths: list[str], ctx: CompressContext, *, batches: int = 4,
                 progress: bool = True) -> tuple[dict[str, float], dict]:
    """(path -> importance, criterion-specific extras). Higher = more important."""
    if criterion not in CRITERIA:
        raise ConfigError(f"model.prune.criterion={criterion}: must be one of {', '.join(CRITERIA)}")
    check_data(criterion, ctx)
    norm = Normalizer(ctx.mean, ctx.std)
    if criterion in ("l1", "l2"):
        return weight_norm_scores(model, paths, p=1 if criterion == "l1" else 2), {}
    if criterion == "bn":
        return bn_scores(model, paths), {}
    if criterion == "taylor":
        return taylor_scores(model, paths, ctx.train, norm, batches=batches, seed=ctx.seed, progress=progress), {}
    if criterion == "activation":
        return activation_scores(model, paths, ctx.val, norm, batches=batches, progress=progress), {}
    return imprint_scores(model, paths, ctx.train, ctx.val, norm, num_classes=ctx.num_classes,
                          imprint_images=batches * BATCH_SIZE, seed=ctx.seed, progress=progress)


# ----------------------------------------------------------------------------- selection
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


# ----------------------------------------------------------------------------- latency
class _Replay(nn.Module):
    """Runs one block on its recorded input, ignoring the benchmark's image (see measure_latency)."""

    def __init__(self, block: nn.Module, x: torch.Tensor):
        super().__init__()
        self.block = block
        self.register_buffer("x", x)

    def forward(self, _):
        return self.block(self.x)


def measure_block_latency(model: StagedNet, paths: list[str], image_size: int, *,
                          reference: StagedNet | None = None, repeats: int = 20,
                          budget_s: float = 1.0) -> dict:
    """bs=1 CPU medians: the model, the reference (full) model, and each block on its own input.

    A block's contribution is its own time on the input it sees inside the model: removing it
    saves that much. Timed interleaved with the whole model (elimnet.bench.latency)."""
    from elimnet.bench.latency import measure_latency

    inputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(p).register_forward_pre_hook(
        lambda m, inp, p=p: inputs.__setitem__(p, inp[0].detach().cpu().clone())) for p in paths]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.forward_features(torch.randn(1, 3, image_size, image_size,
                                               generator=torch.Generator().manual_seed(0)).to(
                next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    models = {"model": copy.deepcopy(model).cpu()}
    if reference is not None:
        models["reference"] = copy.deepcopy(reference).cpu()
    models.update({p: _Replay(copy.deepcopy(model.get_submodule(p)).cpu(), inputs[p]) for p in paths})
    stats = measure_latency(models, 1, image_size, device="cpu", repeats=repeats, budget_s=budget_s)
    model_ms = stats["model"]["median_ms"]
    return {"model_ms": model_ms, "reference_ms": stats["reference"]["median_ms"] if reference is not None
            else model_ms, "blocks": {p: stats[p]["median_ms"] for p in paths}}


def _reference_model(model: StagedNet, cfg, ctx: CompressContext) -> StagedNet | None:
    """The full (uncut) arch when model.elim/neck changed it before LayerPrune; else None (= model)."""
    if not (cfg["model.elim"] or cfg["model.neck"]):
        return None
    from elimnet.compress.elim import apply_classifier
    from elimnet.models import create_model, has_model
    if not has_model(ctx.arch):  # registered or timm/<name>
        return None
    full, _ = apply_classifier(create_model(ctx.arch, pretrained=False), ctx.num_classes)
    return full


# ----------------------------------------------------------------------------- plan / apply
def plan_layerprune(model: StagedNet, cfg, ctx: CompressContext, *, progress: bool = True) -> dict | None:
    k, budget, criterion = cfg["model.prune.k"], cfg["model.prune.latency_budget"], cfg["model.prune.criterion"]
    if k == 0 and budget is None:
        return None
    if k and budget is not None:
        raise ConfigError(f"model.prune.k={k} with model.prune.latency_budget={budget}: set only one "
                          "(k = blocks to remove, latency_budget = remove until the latency holds)")
    if criterion not in CRITERIA:
        raise ConfigError(f"model.prune.criterion={criterion}: must be one of {', '.join(CRITERIA)}")
    cands = candidates(model, ctx.image_size)
    paths = [b.path for b in cands]
    if k > len(paths):
        raise ConfigError(f"model.prune.k={k}: must be <= {len(paths)}, the removal candidates (blocks whose output "
                          f"shape equals their input shape) of {ctx.arch} after model.elim={cfg['model.elim']}")
    check_data(criterion, ctx)
    scores, extra = score_blocks(model, criterion, paths, ctx, batches=cfg["model.prune.batches"],
                                 progress=progress)
    reference = _reference_model(model, cfg, ctx) if budget is not None else None
    # k mode times only for the report, so briefly; budget mode decides on these numbers.
    timing = {"repeats": 20, "budget_s": 1.0} if budget is not None else {"repeats": 5, "budget_s": 0.25}
    lat = measure_block_latency(model, paths, ctx.image_size, reference=reference, **timing)
    report = {"criterion": criterion, "mode": "k" if k else "latency_budget", "k": k, "latency_budget": budget,
              "model_ms": lat["model_ms"], "reference_ms": lat["reference_ms"]}
    if k:
        removed = select_k(scores, k)
        predicted = lat["model_ms"] - sum(lat["blocks"][p] for p in removed)
    else:
        target = budget * lat["reference_ms"] if budget <= 1 else float(budget)
        floor = lat["model_ms"] - sum(lat["blocks"].values())
        if target < floor:
            raise ConfigError(
                f"model.prune.latency_budget={budget}: {target:.2f} ms is below {floor:.2f} ms, the predicted bs=1 "
                f"latency with all {len(paths)} candidates removed (full model {lat['reference_ms']:.2f} ms); "
                f"must be >= {floor / lat['reference_ms']:.3f} (fraction) or >= {floor:.2f} (ms)")
        removed, predicted = select_budget(scores, lat["blocks"], lat["model_ms"], target)
        report["target_ms"] = target
    report["predicted_ms"] = predicted
    report.update({k_: v for k_, v in extra.items() if k_ != "per_block"})
    ranks = {p: i + 1 for i, p in enumerate(removal_order(scores, lat["blocks"]) if budget is not None
                                           else select_k(scores, len(paths)))}
    per_block = extra.get("per_block", {})
    report["candidates"] = [
        {"path": b.path, "stage": b.stage, "index": b.index, "params": b.params, "score": scores[b.path],
         "latency_ms": lat["blocks"][b.path], "rank": ranks[b.path], "removed": b.path in removed,
         "status": "removed" if b.path in removed else "kept", **per_block.get(b.path, {})}
        for b in cands]
    # Model order keeps the spec readable; the set is what fixes the architecture.
    return {"removed": [p for p in paths if p in removed], "importance": report}


def apply_layerprune(model: StagedNet, removed: list[str], importance: dict | None = None
                     ) -> tuple[StagedNet, dict]:
    """Replace each block in `removed` by nn.Identity (each must be a candidate)."""
    ok = {b.path for b in candidates(model)}
    bad = [p for p in removed if p not in ok]
    if bad:
        raise ValueError(f"model.prune: {', '.join(bad)} not removal candidates (must be one of "
                         f"{', '.join(sorted(ok)) or 'none'})")
    before = count_params(model)
    for p in removed:
        replace_module(model, p, nn.Identity())
    report = {"removed": list(removed), "blocks_removed": len(removed), "params_before": before,
              "params_after": count_params(model)}
    if importance is not None:
        report["importance"] = importance
    return model, report


register_transform("layerprune", plan_layerprune, apply_layerprune)


def layerprune(model: StagedNet, removed: list[str]) -> tuple[StagedNet, dict]:
    """Pure block removal: returns a new model and the report; `model` is left untouched."""
    from elimnet.compress.base import TRANSFORMS
    return TRANSFORMS["layerprune"].apply(model, removed=removed)


def importance_file(steps: list[dict]) -> dict:
    """metrics/layer_importance.json content from plan_and_apply's steps (empty when LayerPrune is off)."""
    for s in steps:
        if s["name"] == "layerprune":
            return s["spec"]["importance"]
    return {"criterion": None, "mode": "off", "candidates": []}
