"""LayerPrune criteria: a small registry, one entry per way of ranking blocks.

A criterion declares its name, the prepared splits it reads (none = data-free), a one-line
help, and a `score` function. Adding one is one `register_criterion(...)` call here (or in any
module imported by elimnet.compress); the check of model.prune.criterion (layerprune.py) allows
exactly what the registry holds.

Filter criteria (l1, l2, bn, taylor, activation) give one value per weight/BN/activation layer,
the mean over its filters of a per-filter score, and a block's score is the mean over its layers
(`model.prune.normalize`, `normalize_layers`):
- `none` (seed 003's plain mean, the default): l1 = the filter's L1 norm sum|w|, l2 its L2 norm;
- `depth` (a rescaling across depth): l1/l2 per filter are mean|w| / RMS w times sqrt(fan_in)
  (He/Kaiming init and training keep weights at a scale of about 1/sqrt(fan_in), so plain
  values shift with depth as layers widen), and every layer's value is divided by the
  model-wide mean of its layer type (conv kxk, depthwise kxk, linear, bn, act), so depthwise
  and pointwise layers weigh alike in a block.
taylor is Molchanov's per-filter sum of (w * dL/dw)^2, as the LayerPrune authors' code computes it.
Imprint criteria give accuracies (one unit across depth) and are not normalised.

Data-dependent criteria score with a fitted head: taylor differentiates the loss of a copy of
the model whose classifier is imprinted from the training images (`imprint.fit_head`), never a
freshly initialised classifier; activation reads feature maps after each nonlinearity, which
no classifier can change; imprint fits its own per-layer heads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elimnet.compress.imprint import blocks_of, fit_head, imprint_scan, preceding
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet import extensions
from elimnet.errors import ConfigError
from elimnet.fields import Field
from elimnet.models.staged import StagedNet, eval_mode

BATCH_SIZE = 32  # images per batch for data-dependent criteria (model.prune.batches of them)
WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
BN_LAYERS = (nn.modules.batchnorm._BatchNorm,)
# Nonlinearities whose output `activation` reads (gates such as Sigmoid/Hardsigmoid are not features).
ACT_LAYERS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish)
NORMALIZATIONS = ("none", "depth")  # model.prune.normalize
DEFAULT_NORMALIZATION = "none"  # the seed's definition (docs/layerprune.md)


@dataclass
class ScoreRequest:
    """What a criterion may read: the model, the candidates to score, every block (the model-wide
    reference for normalisation), the data and the number of batches."""
    model: StagedNet
    paths: list[str]
    ctx: object  # elimnet.compress.base.CompressContext
    batches: int = 4
    progress: bool = True
    normalization: str = DEFAULT_NORMALIZATION
    imprint_proxy: str = "grid"  # imprint.PROXIES

    @property
    def blocks(self) -> list[str]:
        return [p for p, b in blocks_of(self.model) if not isinstance(b, nn.Identity)]

    @property
    def normalize(self) -> Normalizer:
        return Normalizer(self.ctx.mean, self.ctx.std)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class Criterion:
    name: str
    needs: tuple[str, ...]  # prepared splits read: () = data-free
    help: str
    score: Callable[[ScoreRequest], tuple[dict[str, float], dict]]  # (path -> importance, extras)
    proxy: bool = False  # scores are proxy accuracies (the chance check applies)


CRITERIA: dict[str, Criterion] = {}


def register_criterion(c: Criterion, params: dict[str, Field] | None = None) -> Criterion:
    """Register a criterion; `params` is its own section of params.yaml (e.g. model.prune.<name>.*)."""
    extensions.declare("criterion", c.name, params)
    CRITERIA[c.name] = c
    return c


def unregister_criterion(name: str) -> None:
    """Forget a criterion and its params (tests that register a toy one clean up with it)."""
    CRITERIA.pop(name, None)
    extensions.withdraw("criterion", name)


def list_criteria() -> list[str]:
    return list(CRITERIA)


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise ConfigError(f"model.prune.criterion={name}: must be one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


# ----------------------------------------------------------------------------- per-layer values
def layer_type(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        k = "x".join(map(str, m.kernel_size))
        return f"dw{k}" if m.groups > 1 and m.groups == m.in_channels else f"conv{k}"
    if isinstance(m, nn.Linear):
        return "linear"
    if isinstance(m, BN_LAYERS):
        return "bn"
    return "act"


def fan_in(m: nn.Module) -> int:
    return int(m.weight[0].numel())


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else float("nan")


LayerValues = dict[str, list[tuple[str, float]]]  # block path -> [(layer type, value), ...]


def normalize_layers(per_block: LayerValues, method: str = DEFAULT_NORMALIZATION) -> dict[str, float]:
    """Block score = mean over its layers of the layer value (`depth`: each value divided by the
    model-wide mean of its layer type first)."""
    if method not in NORMALIZATIONS:
        raise ValueError(f"normalization {method!r}: must be one of {', '.join(NORMALIZATIONS)}")
    ref: dict[str, float] = {}
    if method == "depth":
        by_type: dict[str, list[float]] = {}
        for layers in per_block.values():
            for t, v in layers:
                by_type.setdefault(t, []).append(v)
        ref = {t: _mean(vs) for t, vs in by_type.items()}
    scale = (lambda t, v: v / ref[t] if ref[t] > 0 else 0.0) if ref else (lambda t, v: v)  # noqa: E731
    return {p: _mean(scale(t, v) for t, v in layers) for p, layers in per_block.items()}


def _layers(block: nn.Module, kinds) -> list[nn.Module]:
    return [m for m in block.modules() if isinstance(m, kinds)]


def weight_norm_values(model: StagedNet, blocks: list[str], p: int = 1,
                       normalization: str = DEFAULT_NORMALIZATION) -> LayerValues:
    """Per weight layer: mean over filters of the filter's L1 (p=1) or L2 (p=2) norm; with
    `depth`, of mean|w| / RMS w times sqrt(fan_in) instead (see the module docstring)."""
    out = {}
    for path in blocks:
        vals = []
        for m in _layers(model.get_submodule(path), WEIGHT_LAYERS):
            w = m.weight.detach().flatten(1).float()  # one row per filter
            if normalization == "depth":
                f = (w.abs().mean(1) if p == 1 else w.pow(2).mean(1).sqrt()) * math.sqrt(fan_in(m))
            else:
                f = w.abs().sum(1) if p == 1 else w.pow(2).sum(1).sqrt()
            vals.append((layer_type(m), float(f.mean())))
        out[path] = vals
    return out


def bn_values(model: StagedNet, blocks: list[str], paths: list[str]) -> LayerValues:
    out = {}
    for path in blocks:
        bns = [m for m in _layers(model.get_submodule(path), BN_LAYERS) if m.weight is not None]
        if not bns and path in paths:
            raise ConfigError(f"model.prune.criterion=bn: block {path} has no affine BatchNorm; use "
                              f"{', '.join(c for c in CRITERIA if c != 'bn')}")
        out[path] = [("bn", float(m.weight.detach().abs().mean())) for m in bns]
    return out


def taylor_values(model: StagedNet, blocks: list[str], split: TensorSplit, normalize: Normalizer, *,
                  batches: int, batch_size: int = BATCH_SIZE, seed: int = 0, progress: bool = True) -> LayerValues:
    """Per weight layer: mean over filters of sum((w * dL/dw)^2) (Molchanov's first-order term, as
    the LayerPrune authors' code sums it), averaged over batches; `model` should carry a fitted
    head (see fit_head)."""
    layers = {path: _layers(model.get_submodule(path), WEIGHT_LAYERS) for path in blocks}
    params = [m.weight for ls in layers.values() for m in ls]
    acc = [torch.zeros(w.shape[0]) for w in params]
    device = next(model.parameters()).device
    n = 0
    with eval_mode(model):  # frozen BN statistics: planning must not change the model
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
                    a += (w.detach() * g).flatten(1).pow(2).sum(1).float().cpu()
            n += 1
    out, i = {}, 0
    for path, ls in layers.items():
        out[path] = [(layer_type(m), float(acc[i + j].mean()) / max(n, 1)) for j, m in enumerate(ls)]
        i += len(ls)
    return out


@torch.no_grad()
def activation_values(model: StagedNet, blocks: list[str], split: TensorSplit, normalize: Normalizer, *,
                      batches: int, batch_size: int = BATCH_SIZE, progress: bool = True) -> LayerValues:
    """Per nonlinearity in the block: mean over channels of the mean feature map after it (a block
    with none, e.g. functional ReLUs only, is read at its output)."""
    sums: dict[tuple[str, int], torch.Tensor] = {}
    calls: dict[tuple[str, int], int] = {}
    hooks = []
    for path in blocks:
        block = model.get_submodule(path)
        for j, m in enumerate(_layers(block, ACT_LAYERS) or [block]):
            def hook(mod, inp, out, key=(path, j)):
                v = out.detach().abs().float().mean(dim=(0, 2, 3) if out.dim() == 4 else 0).cpu() * out.shape[0]
                sums[key] = sums[key] + v if key in sums else v
                calls[key] = calls.get(key, 0) + out.shape[0]  # a module called twice (BasicBlock.relu) counts twice
            hooks.append(m.register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        with eval_mode(model):
            for x, _ in tqdm(iterate_batches(split.subset(batches * batch_size), batch_size, normalize),
                             desc="activation", unit="batch", disable=not progress, leave=False):
                model.forward_features(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    return {path: [("act", float(v.mean()) / calls[key]) for key, v in sums.items() if key[0] == path]
            for path in blocks}


# ----------------------------------------------------------------------------- the criteria
def _imprint_source(req: ScoreRequest) -> TensorSplit:
    """Imprinting images: the train split (else val); all of it for the `grid` proxy (the authors
    imprint from the whole training set), `batches * BATCH_SIZE` of it (seeded) otherwise."""
    ctx = req.ctx
    source = ctx.train if ctx.train is not None and len(ctx.train) else ctx.val
    n = req.batches * BATCH_SIZE
    if req.imprint_proxy != "grid" and len(source) > n:
        idx = torch.randperm(len(source), generator=torch.Generator().manual_seed(ctx.seed))[:n].sort().values
        source = TensorSplit(source.images[idx], source.labels[idx])
    return source


def _weight(p: int):
    def score(req: ScoreRequest):
        scores = normalize_layers(weight_norm_values(req.model, req.blocks, p, req.normalization),
                                  req.normalization)
        return {q: scores[q] for q in req.paths}, {}
    return score


def _bn(req: ScoreRequest):
    scores = normalize_layers(bn_values(req.model, req.blocks, req.paths), req.normalization)
    return {q: scores[q] for q in req.paths}, {}


def _taylor(req: ScoreRequest):
    ctx = req.ctx
    fitted = fit_head(req.model, _imprint_source(req), req.normalize, ctx.num_classes, device=req.device)
    vals = taylor_values(fitted, req.blocks, ctx.train, req.normalize, batches=req.batches, seed=ctx.seed,
                         progress=req.progress)
    scores = normalize_layers(vals, req.normalization)
    return {q: scores[q] for q in req.paths}, {"head": "imprinted"}


def _activation(req: ScoreRequest):
    vals = activation_values(req.model, req.blocks, req.ctx.val, req.normalize, batches=req.batches,
                             progress=req.progress)
    scores = normalize_layers(vals, req.normalization)
    return {q: scores[q] for q in req.paths}, {"read": "after each nonlinearity"}


def _scan(req: ScoreRequest, ablation: bool):
    ctx = req.ctx
    return imprint_scan(req.model, _imprint_source(req), ctx.val, req.normalize, req.paths,
                        num_classes=ctx.num_classes, batch_size=BATCH_SIZE, ablation=ablation, device=req.device,
                        progress=req.progress, proxy=req.imprint_proxy)


def _scan_extra(r) -> dict:
    return {"accuracy_full": r.full, "accuracy_full_raw": r.full_raw, "chance": r.chance,
            "imprint_images": r.imprint_images, "eval_images": r.eval_images, "class_means": "normalized"}


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties); nan when either side is constant."""
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2
            i = j + 1
        return torch.tensor(r)
    ra, rb = ranks(a), ranks(b)
    if len(a) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def _imprint(req: ScoreRequest):
    """ICIP 2020: a block's importance is the imprinted accuracy it adds over the preceding layer."""
    r = _scan(req, ablation=False)
    prev = {p: preceding(req.model, p) for p in req.paths}
    gain = {p: r.after[p] - r.after[prev[p]] for p in req.paths}
    gain_raw = {p: r.after_raw[p] - r.after_raw[prev[p]] for p in req.paths}
    extra = _scan_extra(r)
    extra["spearman_normalized_vs_raw"] = spearman([gain[p] for p in req.paths], [gain_raw[p] for p in req.paths])
    extra["per_block"] = {p: {"preceding": prev[p], "accuracy_before": r.after[prev[p]], "accuracy_after": r.after[p],
                              "gain": gain[p], "accuracy_before_raw": r.after_raw[prev[p]],
                              "accuracy_after_raw": r.after_raw[p], "gain_raw": gain_raw[p]} for p in req.paths}
    return gain, extra


def _imprint_ablation(req: ScoreRequest):
    """The full net's imprinted accuracy minus that with the block skipped."""
    r = _scan(req, ablation=True)
    extra = _scan_extra(r)
    extra["per_block"] = {p: {"accuracy_without": r.without[p], "accuracy_after": r.after.get(p),
                              "accuracy_without_raw": r.without_raw[p]} for p in req.paths}
    return {p: r.full - r.without[p] for p in req.paths}, extra


register_criterion(Criterion("l1", (), "L1 norm per filter, averaged per layer then per block (normalize=depth: x sqrt(fan-in) / layer-type mean)", _weight(1)))
register_criterion(Criterion("l2", (), "L2 norm per filter, averaged per layer then per block (normalize=depth: x sqrt(fan-in) / layer-type mean)", _weight(2)))
register_criterion(Criterion("bn", (), "mean |gamma| of the block's BatchNorms, normalised", _bn))
register_criterion(Criterion("taylor", ("train",), "sum (w.dL/dw)^2 per filter with an imprinted head (the authors' form)", _taylor))
register_criterion(Criterion("activation", ("val",), "mean feature map after each nonlinearity", _activation))
register_criterion(Criterion("imprint", ("val",), "ICIP 2020: imprinted accuracy gained over the preceding layer",
                             _imprint, proxy=True))
register_criterion(Criterion("imprint_ablation", ("val",), "imprinted accuracy lost when the block is skipped",
                             _imprint_ablation, proxy=True))
