"""The finetune step's speed, side by side: fp32 vs frozen early stages vs bf16 autocast (vs torch.compile).

Every variant trains the same pretrained model on the same real elpv batches, the variants interleaved
round by round, so machine load hits them alike; it prints each variant's median step time, its ratio to
the plain fp32 step, and its share of the fp32 matmul peak. FLOPs per step: 2 per MAC (bench.model_size.count_macs), a forward for the
frozen prefix and forward + two backward products (input and weight gradients) for the rest.

    python benchmarks/train_step.py [--data data/prepared] [--pretrained models/pretrained.pt] [--freeze 3]
        [--rounds 4] [--steps 8] [--threads 2] [--compile]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from elimnet.bench.hardware import cpu_info, peak_fp32_gflops
from elimnet.bench.model_size import count_macs
from elimnet.checkpoint import load_model
from elimnet.data.prepare import load_prepared
from elimnet.data.tensors import Normalizer, iterate_batches
from elimnet.train.classifier import with_classes
from elimnet.train.finetune import freeze_early


def build(pretrained: str, freeze: int, compile_: bool):
    model, config = load_model(pretrained)
    model, config = with_classes(model, config, 4, 0)
    model = model.to(memory_format=torch.channels_last).train()
    frozen = freeze_early(model, freeze)
    for m in frozen:
        m.eval()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    net = torch.compile(model) if compile_ else model
    return net, opt, config


def step(net, opt, x, y, bf16: bool) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
        loss = F.cross_entropy(net(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--pretrained", default="models/pretrained.pt")
    p.add_argument("--freeze", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also torch.compile (frozen variant; slow to compile)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = {"fp32": (0, False, False), f"fp32 freeze {args.freeze}": (args.freeze, False, False),
                f"bf16 freeze {args.freeze}": (args.freeze, True, False)}
    if args.compile:
        variants[f"compile freeze {args.freeze}"] = (args.freeze, False, True)
    built = {name: build(args.pretrained, f, c) for name, (f, _, c) in variants.items()}
    config = next(iter(built.values()))[2]
    train = load_prepared(args.data, ("train",))["train"]
    norm = Normalizer(config["mean"], config["std"], channels_last=True)
    g = torch.Generator().manual_seed(0)
    batches = [b for _, b in zip(range(args.steps), iterate_batches(train, args.batch_size, norm, shuffle=True,
                                                                     generator=g, drop_last=True))]
    flops = {}
    for name, (freeze, bf16, _) in variants.items():
        net, opt, _ = built[name]
        step(net, opt, *batches[0], bf16)  # warm-up (and compilation)
        model = getattr(net, "_orig_mod", net)
        size = train.images.shape[-1]
        prefix = count_macs(torch.nn.Sequential(model.stem, *model.stages[:freeze]), size) if freeze else 0
        flops[name] = 2 * args.batch_size * (3 * count_macs(model, size) - 2 * prefix)
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (_, bf16, _) in variants.items():
            net, opt, _ = built[name]
            for x, y in batches:
                t0 = time.perf_counter()
                step(net, opt, x, y, bf16)
                times[name].append(time.perf_counter() - t0)
    peak = peak_fp32_gflops(args.threads)
    model_name, flags = cpu_info()
    print(f"CPU {model_name}; flags: {' '.join(sorted(f for f in flags if f.startswith(('avx512_bf16', 'avx512_fp16', 'amx'))))}; "
          f"{args.threads} threads; fp32 peak {peak:.0f} GFLOP/s; batch {args.batch_size}, "
          f"{train.images.shape[-1]} px")
    base = statistics.median(times["fp32"])
    for name, ts in times.items():
        med = statistics.median(ts)
        q1, _, q3 = statistics.quantiles(ts, n=4)
        gflops = flops[name] / med / 1e9
        print(f"{name:>18}: median {med * 1000:6.1f} ms/step (IQR {q1 * 1000:.0f}-{q3 * 1000:.0f}), "
              f"{base / med:.2f}x the fp32 step, {flops[name] / 1e9:.2f} GFLOP/step, {gflops:.0f} GFLOP/s = "
              f"{100 * gflops / peak:.0f}% of peak")


if __name__ == "__main__":
    main()
