"""Per-operation MAC table of a StagedNet, in the form of seed 002's Table 4.

One row per operation (stem, each block, head, neck, pool + classifier); consecutive blocks
with the same operation, input shape and cost are merged into one row with a repeat count,
whose MACs and filters are the totals over the repeats. MACs come from torch's FlopCounterMode
run on each segment in turn (FLOPs / 2, as bench.model_size counts), so the rows sum exactly to
the whole model's count. "Filters" counts output channels of every conv and linear layer.

    elimnet summary -S model.arch=simple_effnet -S model.weights=none -S model.elim=0 \
        -S data.image_size=56 --num-classes 100 --mac-table
    python -m elimnet.bench.mac_table --dense      # reproduces the seed's own figures
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from elimnet.models.staged import StagedNet, count_params, eval_mode


@dataclass
class MacRow:
    op: str
    repeat: int
    input: list[int]  # C, H, W of one repeat's input (the first one's)
    macs: int  # total over the repeats
    filters: int  # total over the repeats
    params: int  # total over the repeats

    @property
    def unit(self) -> tuple:
        return (self.op, tuple(self.input), self.macs // self.repeat, self.filters // self.repeat)


def _filters(module: nn.Module) -> int:
    # a CondConv (`experts` > 0) counts its mixed kernel's filters once, like the conv it replaces
    return sum(m.out_features if isinstance(m, nn.Linear) else m.out_channels
               for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or hasattr(m, "experts"))


def _part(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        (kh, kw), s = m.kernel_size, m.stride[0]
        dw = ", dw" if m.groups > 1 and m.groups == m.in_channels else ""
        return f"Conv ({kh}x{kw}/{s}{dw})"
    if isinstance(m, nn.BatchNorm2d):
        return "Batch Norm"
    if isinstance(m, nn.Linear):
        return "Linear, Bias" if m.bias is not None else "Linear"
    if isinstance(m, nn.MaxPool2d):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        return f"Max Pool ({k}x{k}/{s})"
    return type(m).__name__


def describe(module: nn.Module, in_shape: list[int], out_shape: list[int]) -> str:
    """The operation's name: the module's own `describe()`, a Sequential's layers, or class + stride/ID."""
    if hasattr(module, "describe"):
        return module.describe()
    if isinstance(module, nn.Sequential):
        return ", ".join(_part(m) for m in module if not isinstance(m, nn.Dropout)) or "Identity"
    stride = max(1, round(in_shape[1] / out_shape[1])) if len(in_shape) == 3 and len(out_shape) == 3 else 1
    return f"{type(module).__name__} (S={stride}, ID={in_shape == out_shape})"


def _segments(model: StagedNet):
    """(module, forward) pairs in the order StagedNet.forward runs them."""
    yield model.stem, model.stem
    for stage in model.stages:
        for block in stage:
            if not isinstance(block, nn.Identity):  # a block removed by layerprune costs nothing
                yield block, block
    for m in (model.head, model.neck):
        if not isinstance(m, nn.Identity):
            yield m, m
    yield model.classifier, lambda x: model.classifier(torch.flatten(model.pool(x), 1))


@torch.no_grad()
def mac_table(model: StagedNet, image_size: int, in_chans: int = 3) -> dict:
    """{"rows": [MacRow as dict], "total_macs", "total_filters", "total_params", "image_size"}."""
    rows: list[MacRow] = []
    x = torch.zeros(1, in_chans, image_size, image_size)
    with eval_mode(model):
        for module, fwd in _segments(model):
            with FlopCounterMode(display=False) as counter:
                y = fwd(x)
            in_shape, out_shape = list(x.shape[1:]), list(y.shape[1:])
            op = describe(module, in_shape, out_shape)
            if module is model.classifier:
                op = "Global Avg Pool, " + op
            row = MacRow(op, 1, in_shape, int(counter.get_total_flops() // 2), _filters(module), count_params(module))
            if rows and rows[-1].unit == row.unit:
                last = rows[-1]
                last.repeat += 1
                last.macs += row.macs
                last.filters += row.filters
                last.params += row.params
            else:
                rows.append(row)
            x = y
    return {"image_size": image_size, "rows": [asdict(r) for r in rows],
            "total_macs": sum(r.macs for r in rows), "total_filters": sum(r.filters for r in rows),
            "total_params": sum(r.params for r in rows)}


def format_mac_table(table: dict) -> str:
    rows = table["rows"]
    w = max([len("Operation")] + [len(r["op"]) for r in rows])
    lines = [f"{'Operation':<{w}}  {'Rep':>3}  {'Input':>12}  {'MACs':>15}  {'Filters':>8}"]
    for r in rows:
        shape = "x".join(map(str, r["input"]))
        lines.append(f"{r['op']:<{w}}  {r['repeat']:>3}  {shape:>12}  {r['macs']:>15,}  {r['filters']:>8,}")
    lines.append(f"{'Total':<{w}}  {'_':>3}  {'':>12}  {table['total_macs']:>15,}  {table['total_filters']:>8,}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from elimnet.models.simple_effnet import build_simple_effnet

    p = argparse.ArgumentParser(description="MAC table of simple_effnet (seed 002, Table 4)")
    p.add_argument("--dense", action="store_true", help="dense 3x3 middle conv, as the seed's table counts it")
    p.add_argument("--se", action="store_true", help="SE-enhanced blocks")
    p.add_argument("--condconv", type=int, default=0, metavar="M",
                   help="block [C]: SE + CondConv with M experts (routing and expert mixing counted)")
    p.add_argument("--image-size", type=int, default=56)
    p.add_argument("--num-classes", type=int, default=100)
    args = p.parse_args(argv)
    model = build_simple_effnet(num_classes=args.num_classes, se=args.se, depthwise=not args.dense,
                                experts=args.condconv)
    print(format_mac_table(mac_table(model, args.image_size)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
