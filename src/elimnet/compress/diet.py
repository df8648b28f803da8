"""Model Diet (seed 004, Algorithm 2): keep one contiguous channel group everywhere.

Every conv / BN / linear tensor's channels are split into g contiguous groups; group j's
score is the sum of the weights (and biases) that survive when group j is kept, summed over
every tensor whose shape changes. One global group (`select`: max as the seed, min, or an
explicit index) is kept in every layer, so residual additions, SE gates and depthwise convs
stay consistent. Untouched: the image's 3 input channels, the class Linear's outputs, and
(with `keep_early`) every layer of the stem and the first stage (`stem`: the stem only).

Which dims of a layer are sliced is found by one dummy forward pass, each conv/BN/linear
temporarily running a sliced copy of itself: a layer's input is sliced exactly when the
width that reaches it is 1/g of what it expects. So no arch-specific wiring is needed, and
the resolved spec {groups, index, keep_early} rebuilds the same shapes on a random-init
model (replay). The result is a plain smaller model (new modules holding the kept slices).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from elimnet.compress.base import register_transform
from elimnet.fields import Field, int_range, is_int
from elimnet.errors import ConfigError
from elimnet.models.staged import StagedNet, count_params, eval_mode, linears, replace_module

SLICEABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
TRACE_SIZE = 64  # px of the dummy image; adaptive pools make the widths size-independent


@dataclass
class Cut:
    """How one layer is sliced: its input and/or output channels keep only the chosen group."""
    path: str
    module: nn.Module
    in_sliced: bool
    out_sliced: bool


def _fail(groups: int, what: str) -> ConfigError:
    return ConfigError(f"model.diet.groups={groups}: {what}")


def _channels(m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Conv2d):
        return m.in_channels, m.out_channels
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.num_features, m.num_features


def _decide(path: str, m: nn.Module, width: int, groups: int, keep: bool, is_final: bool) -> Cut:
    cin, cout = _channels(m)
    if width == cin:
        in_sliced = False
    elif width * groups == cin:
        in_sliced = True
    else:
        raise _fail(groups, f"{path} ({type(m).__name__}) expects {cin} input channels but gets {width}; "
                            f"the model's channel wiring cannot be split into {groups} groups")
    if isinstance(m, nn.BatchNorm2d) or (isinstance(m, nn.Conv2d) and m.groups > 1):
        out_sliced = in_sliced  # per-channel / grouped layers follow their input
    else:
        out_sliced = not (keep or is_final)
    for n, sliced, side in ((cin, in_sliced, "input"), (cout, out_sliced, "output")):
        if sliced and n % groups:
            raise _fail(groups, f"does not divide the {n} {side} channels of {path} ({type(m).__name__}); "
                                "groups must divide every sliced layer's channels")
    if isinstance(m, nn.Conv2d) and m.groups > 1 and in_sliced and m.groups % groups:
        raise _fail(groups, f"does not divide the {m.groups} conv groups of {path}")
    return Cut(path, m, in_sliced, out_sliced)


def _chunk(n: int, groups: int, index: int, sliced: bool) -> slice:
    size = n // groups if sliced else n
    return slice(index * size, (index + 1) * size) if sliced else slice(None)


def _tensor_dims(cut: Cut) -> dict[str, tuple[int, ...]]:
    """For each parameter/buffer name: the dims that are sliced by channel group."""
    m = cut.module
    if isinstance(m, nn.BatchNorm2d):
        dims = (0,) if cut.in_sliced else ()
        return {n: dims for n in ("weight", "bias", "running_mean", "running_var")}
    w_dims = ((0,) if cut.out_sliced else ())
    # dim 1 of a grouped conv holds in/groups channels per group: it never changes
    if cut.in_sliced and not (isinstance(m, nn.Conv2d) and m.groups > 1):
        w_dims += (1,)
    return {"weight": w_dims, "bias": (0,) if cut.out_sliced else ()}


def _slice_tensor(t: torch.Tensor, dims: tuple[int, ...], groups: int, index: int) -> torch.Tensor:
    for d in dims:
        size = t.shape[d] // groups
        t = t.narrow(d, index * size, size)
    return t


def _sliced_module(cut: Cut, groups: int, index: int, clone: bool) -> nn.Module:
    m = cut.module
    dims = _tensor_dims(cut)
    tensors = {n: t for n, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
               if n in dims and t is not None}
    # deepcopy everything but the (possibly huge) tensors we are about to slice
    new = copy.deepcopy(m, memo={id(t): None for t in tensors.values()})
    new.__dict__.pop("forward", None)  # the tracing patch, when called while tracing
    for n, t in tensors.items():
        s = _slice_tensor(t.detach(), dims[n], groups, index)
        s = s.clone() if clone else s
        if n in m._parameters:
            new._parameters[n] = nn.Parameter(s, requires_grad=t.requires_grad)
        else:
            new._buffers[n] = s
    cin, cout = _channels(m)
    cin = cin // groups if cut.in_sliced else cin
    cout = cout // groups if cut.out_sliced else cout
    if isinstance(m, nn.Conv2d):
        new.in_channels, new.out_channels = cin, cout
        if m.groups > 1 and cut.in_sliced:
            new.groups = m.groups // groups
    elif isinstance(m, nn.Linear):
        new.in_features, new.out_features = cin, cout
    else:
        new.num_features = cin
    return new


def trace_cuts(model: StagedNet, groups: int, keep_early: bool | str = False,
               image_size: int = TRACE_SIZE, in_chans: int = 3) -> list[Cut]:
    """Every conv/BN/linear reached by a forward pass, in execution order, with what it slices."""
    if groups < 2:
        raise _fail(groups, "must be >= 2 to slice (1 = off)")
    final = linears(model.classifier)[-1]

    def keep(path: str) -> bool:  # keep_early: the stem (and, when true, the first stage) stay at full width
        early = ("stem.",) if keep_early == "stem" else ("stem.", "stages.0.")
        return bool(keep_early) and (path == "stem" or path.startswith(early))
    for path, m in model.named_modules():
        if not isinstance(m, SLICEABLE) and any(True for _ in m.parameters(recurse=False)):
            raise _fail(groups, f"cannot slice {path} ({type(m).__name__}): only Conv2d, BatchNorm2d and Linear")
    cuts: dict[str, Cut] = {}
    patched = []
    spans = _patch_involutions(model, groups, patched)  # the involution branch, below
    for path, m in model.named_modules():
        if isinstance(m, SLICEABLE):
            def forward(x, path=path, m=m):
                width = x.shape[-1] if isinstance(m, nn.Linear) else x.shape[1]
                if path in cuts:
                    raise _fail(groups, f"{path} is called twice in one forward pass; shared layers are unsupported")
                cut = _decide(path, m, width, groups, keep(path) or path in spans, m is final)
                if path in spans:
                    cut = _decide_span(cut, spans[path], groups)
                cuts[path] = cut
                return _sliced_module(cut, groups, 0, clone=False)(x)  # only the shape matters here
            m.forward = forward  # an instance attribute shadows the class's forward until deleted
            patched.append(m)
    try:
        with torch.no_grad(), eval_mode(model):
            model(torch.zeros(1, in_chans, image_size, image_size))
    except RuntimeError as e:  # e.g. an addition of a full-width and a sliced tensor
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if keep_early:
            raise ConfigError(f"model.diet.keep_early={str(keep_early).lower()}: this arch adds a full-width output "
                              f"to a sliced later layer ({first}); must be false") from None
        raise _fail(groups, f"the sliced model does not run ({first})") from None
    finally:
        for m in patched:
            del m.forward  # back to the class's forward
    return list(cuts.values())


def group_sums(cuts: list[Cut], groups: int) -> list[float]:
    """Seed Algorithm 2: per group, the sum of every weight that survives when it is kept."""
    sums = torch.zeros(groups, dtype=torch.float64)
    for cut in cuts:
        dims = _tensor_dims(cut)
        for name, p in cut.module.named_parameters(recurse=False):  # weights and biases, not BN statistics
            d = dims.get(name, ())
            if not d:
                continue  # same shape in every group: adds the same to each score
            t = p.detach()
            # split each sliced dim into (group, size) and sum all but the group axes
            shape, group_axes = [], []
            for i, n in enumerate(t.shape):
                if i in d:
                    group_axes.append(len(shape))
                    shape += [groups, n // groups]
                else:
                    shape.append(n)
            t = t.reshape(shape)
            t = t.sum(dim=[i for i in range(t.ndim) if i not in group_axes]).double()
            sums += t.diagonal() if t.ndim == 2 else t  # the same group on both sides of a weight
    return sums.tolist()


def select_group(sums: list[float], select: str | int) -> int:
    if select == "max":
        return int(torch.tensor(sums).argmax())
    if select == "min":
        return int(torch.tensor(sums).argmin())
    if isinstance(select, int) and 0 <= select < len(sums):
        return select
    raise ConfigError(f"model.diet.select={select}: must be max, min or a group index in [0, {len(sums) - 1}]")


def apply_diet(model: StagedNet, groups: int, index: int, keep_early: bool | str = False
               ) -> tuple[StagedNet, dict]:
    if not 0 <= index < groups:
        raise ConfigError(f"model.diet.select={index}: must be a group index in [0, {groups - 1}]")
    before = count_params(model)
    cuts = trace_cuts(model, groups, keep_early)
    sums = group_sums(cuts, groups)
    for cut in cuts:
        if cut.in_sliced or cut.out_sliced:
            replace_module(model, cut.path, _sliced_module(cut, groups, index, clone=True))
    _sync_involutions(model)
    kept_full = [c.path for c in cuts if not (c.in_sliced or c.out_sliced)]
    return model, {"group_sums": sums, "params_before": before, "params_after": count_params(model),
                   "sliced_layers": len(cuts) - len(kept_full), "unsliced_layers": kept_full}


# ----------------------------------------------------------------------------- the involution branch
# An involution's span conv (models/involution.py) emits K*K*G channels laid out group-major
# (channel g*K*K + t = tap t of group g's kernel), and the kernel of group g multiplies input
# channels 16g..16g+15. So the span's output is sliced exactly when the involution's input is
# (never by the keep/final rule of a plain conv), its contiguous g-th chunk is whole groups with
# all K*K taps (halve G, keep K*K), and g must divide G, not merely K*K*G. The reduce conv inside
# is an ordinary conv. After slicing, each Involution re-reads G from its span conv.

def _involution_type():
    from elimnet.models.involution import Involution  # lazy: compress/ needs no arch at import
    return Involution


def _patch_involutions(model: nn.Module, groups: int, patched: list) -> dict[str, tuple]:
    """{span conv path: (involution path, module, [input sliced?])}; each Involution records its input width."""
    spans: dict[str, tuple] = {}
    for path, m in model.named_modules():
        if isinstance(m, _involution_type()):
            state: list[bool] = []

            def forward(x, m=m, state=state, cls_forward=type(m).forward):
                state[:] = [x.shape[1] != m.channels]  # narrower than built: its input is sliced
                return cls_forward(m, x)
            m.forward = forward
            patched.append(m)
            spans[f"{path}.span" if path else "span"] = (path, m, state)
    return spans


def _decide_span(cut: Cut, span: tuple, groups: int) -> Cut:
    path, inv, state = span
    in_sliced = bool(state and state[0])
    if in_sliced and inv.groups % groups:
        raise _fail(groups, f"does not divide the {inv.groups} involution groups of {path} "
                            f"({inv.kernel_size}x{inv.kernel_size} kernels of {inv.group_channels} channels each); "
                            "Diet keeps whole groups with all their kernel taps")
    return Cut(cut.path, cut.module, cut.in_sliced, in_sliced)


def _sync_involutions(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, _involution_type()):
            m.sync_width()


def plan_diet(model, cfg, ctx):
    groups = cfg["model.diet.groups"]
    if groups == 1:
        return None
    keep_early = cfg["model.diet.keep_early"]
    sums = group_sums(trace_cuts(model, groups, keep_early), groups)
    return {"groups": groups, "index": select_group(sums, cfg["model.diet.select"]), "keep_early": keep_early}


def check_diet(v: dict, spec) -> None:
    g = v["model.diet.groups"]
    if is_int(v["model.diet.select"]) and v["model.diet.select"] >= g:
        raise ConfigError(f"model.diet.select={v['model.diet.select']}: must be max, min or a group "
                          f"index in [0, {g - 1}] for model.diet.groups={g}")


register_transform(
    "diet", plan_diet, apply_diet, order=30, off={"model.diet.groups": 1}, check=check_diet,
    label=lambda p: f"Diet g={p['model.diet.groups']}",
    params={
        "model.diet.groups": Field(1, int_range(1), "Model Diet channel groups (1 = off)"),
        "model.diet.select": Field("max", lambda v: None if v in ("max", "min") or (is_int(v) and v >= 0)
                                   else "max, min or a group index >= 0", "which group is kept"),
        "model.diet.keep_early": Field(False, lambda v: None if v in (True, False, "stem") else "true, false or stem",
                                       "Diet: keep stem and first stage (stem: the stem only) at full width"),
    })


def diet(model: StagedNet, groups: int, select: str | int = "max", keep_early: bool | str = False
         ) -> tuple[StagedNet, dict]:
    """Pure Model Diet: the chosen group's slices in a new, smaller model; `model` is untouched."""
    from elimnet.compress.base import TRANSFORMS
    index = select_group(group_sums(trace_cuts(model, groups, keep_early), groups), select)
    new, report = TRANSFORMS["diet"].apply(model, groups=groups, index=index, keep_early=keep_early)
    return new, {"groups": groups, "index": index, "keep_early": keep_early, **report}
