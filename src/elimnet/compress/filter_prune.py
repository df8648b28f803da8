"""Filter-pruning baseline with torch-pruning (DepGraph): the width pruning users would pick instead.

`model.filter.ratio` r is a *channel* ratio, applied uniformly: every prunable channel group
(the convs/linears DepGraph couples, e.g. all layers feeding one residual sum) keeps
int(C * (1 - r)) of its C channels, chosen by `model.filter.importance` (l1: L1 filter norm,
MagnitudeImportance(p=1); taylor: first-order Taylor |w * dL/dw| from a few training batches).
Because both sides of most weights shrink, parameters and MACs fall by roughly 1 - (1 - r)^2.
The image's 3 input channels and the class Linear's outputs are never pruned.

The resolved spec records torch-pruning's pruning history (root layer, out/in, removed indices),
so replay on a random-init model reproduces the exact shapes without data or importance scores.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from elimnet.compress.base import register_transform
from elimnet.fields import Field, num_range, one_of
from elimnet.errors import CheckpointError, ConfigError
from elimnet.models.staged import StagedNet, count_params, eval_mode, linears

TRACE_SIZE = 64  # px of the dummy input DepGraph traces with
TAYLOR_BATCHES = 4  # training batches whose gradients score channels for importance=taylor
TAYLOR_BATCH_SIZE = 32


def _example(in_chans: int = 3, image_size: int = TRACE_SIZE) -> torch.Tensor:
    return torch.zeros(1, in_chans, image_size, image_size)


def _importance(name: str):
    import torch_pruning as tp
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "taylor":
        return tp.importance.TaylorImportance()
    raise ConfigError(f"model.filter.importance={name}: must be l1 or taylor")


def _accumulate_taylor_grads(model: nn.Module, ctx) -> None:
    """Gradients of the CE loss on a few training batches: what Taylor importance multiplies the weights by."""
    from elimnet.data.tensors import Normalizer, iterate_batches
    if ctx is None or ctx.train is None or len(ctx.train) == 0:
        raise ConfigError("model.filter.importance=taylor: needs the training split (prepare it first) or use l1")
    model.train()  # BN in train mode as when finetuning; batches of >= 2 images
    model.zero_grad(set_to_none=True)
    norm = Normalizer(ctx.mean, ctx.std)
    gen = torch.Generator().manual_seed(ctx.seed)
    for i, (x, y) in enumerate(iterate_batches(ctx.train, TAYLOR_BATCH_SIZE, norm, shuffle=True, generator=gen)):
        if i == TAYLOR_BATCHES:
            break
        F.cross_entropy(model(x), y).backward()
    model.eval()


def involution_layers(model: nn.Module) -> list[nn.Module]:
    """Convs DepGraph must not narrow around an involution: its kernel-generating convs and the conv
    that produces its input. Their channels are reshaped into (groups, 16, K*K) inside the module,
    which DepGraph cannot follow; the residual stream and the 1x1 convs around them stay prunable."""
    from elimnet.models.involution import Involution
    order: list[nn.Module] = []
    keep: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp: order.append(mod))
             for m in model.modules() if isinstance(m, (nn.Conv2d, Involution))]
    try:
        with torch.no_grad():
            model(_example())
    finally:
        for h in hooks:
            h.remove()
    for i, m in enumerate(order):
        if isinstance(m, Involution):
            producer = next((p for p in reversed(order[:i]) if isinstance(p, nn.Conv2d)), None)
            keep += [c for c in m.modules() if isinstance(c, nn.Conv2d)] + ([producer] if producer else [])
    return keep


def prune_history(model: StagedNet, ratio: float, importance: str = "l1", ctx=None) -> list[list]:
    """Run torch-pruning on a copy of `model`; return its pruning history as plain JSON."""
    import torch_pruning as tp
    if not 0 < ratio < 1:
        raise ConfigError(f"model.filter.ratio={ratio}: must be in (0, 1) to prune (0 = off)")
    work = copy.deepcopy(model).eval()
    imp = _importance(importance)
    if importance == "taylor":
        _accumulate_taylor_grads(work, ctx)
    pruner = tp.pruner.MetaPruner(work, _example(), importance=imp, pruning_ratio=ratio, global_pruning=False,
                                  ignored_layers=[linears(work.classifier)[-1]] + involution_layers(work))
    try:
        pruner.step()
        with torch.no_grad():
            work(_example())  # DepGraph can leave layers it does not follow at their old widths
    except (RuntimeError, IndexError, TypeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise ConfigError(f"model.filter.ratio={ratio}: torch-pruning cannot narrow this model consistently "
                          f"({type(e).__name__}: {first}){_unknown_layers(model)}; must be 0 for this arch "
                          "(model.diet / model.prune / model.elim still apply)") from None
    return [[name, bool(out), [int(i) for i in idxs]] for name, out, idxs in pruner.pruning_history()]


_KNOWN = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


def _unknown_layers(model: nn.Module, n: int = 3) -> str:
    """The first layers with weights of a type DepGraph has no rule for (e.g. timm's LayerNorm2d)."""
    def known(m):  # subclasses that only add an activation (timm's BatchNormAct2d) prune like their base
        own = {k for k, p in m._parameters.items() if p is not None}
        return type(m) in _KNOWN or (isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and own <= {"weight", "bias"})
    odd = [f"{path} ({type(m).__name__})" for path, m in model.named_modules()
           if any(p is not None for p in m._parameters.values()) and not known(m)]
    return f"; layers it may not follow: {', '.join(odd[:n])}" + (f" and {len(odd) - n} more" if len(odd) > n
                                                                       else "") if odd else ""


def apply_filter(model: StagedNet, ratio: float, importance: str, history: list[list]) -> tuple[StagedNet, dict]:
    """Replay a recorded pruning history: exact shapes and, on the planning model, the kept channels."""
    import torch_pruning as tp
    before = count_params(model)
    with eval_mode(model):
        dg = tp.DependencyGraph().build_dependency(model, _example())
        try:
            dg.load_pruning_history([(name, out, list(idxs)) for name, out, idxs in history])
        except AttributeError as e:  # a layer named in the history is not in this model
            raise CheckpointError(f"model.filter: the saved pruning history does not fit this model ({e})") from None
    for p in model.parameters():  # torch-pruning leaves stale .grad tensors of the old shapes behind
        p.grad = None
    return model, {"params_before": before, "params_after": count_params(model),
                   "pruned_channels": sum(len(idxs) for _, out, idxs in history if out)}


def plan_filter(model, cfg, ctx):
    ratio = cfg["model.filter.ratio"]
    if ratio == 0:
        return None
    importance = cfg["model.filter.importance"]
    return {"ratio": ratio, "importance": importance, "history": prune_history(model, ratio, importance, ctx)}


register_transform(
    "filter", plan_filter, apply_filter, order=40, off={"model.filter.ratio": 0.0},
    label=lambda p: f"Filter {p['model.filter.ratio']:g}",
    params={
        "model.filter.ratio": Field(0.0, num_range(0.0, 0.95), "torch-pruning channel ratio (0 = off)"),
        "model.filter.importance": Field("l1", one_of(["l1", "taylor"]), "torch-pruning importance"),
    })


def filter_prune(model: StagedNet, ratio: float, importance: str = "l1", ctx=None) -> tuple[StagedNet, dict]:
    """Pure filter pruning: a new, narrower model; `model` is untouched."""
    from elimnet.compress.base import TRANSFORMS
    spec = {"ratio": ratio, "importance": importance, "history": prune_history(model, ratio, importance, ctx)}
    new, report = TRANSFORMS["filter"].apply(model, **spec)
    return new, {**spec, **report}
