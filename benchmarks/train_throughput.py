"""Images/s of the finetune loop vs (a) a compute-only bound and (b) a naive ImageFolder+PIL loop.

Same model (pretrained EfficientNet-Lite0, 4 classes), batch size and image size for all three,
measured side by side in one run on real elpv images. Targets: loop >= 95% of (a), >= 3x (b).

    python benchmarks/train_throughput.py [--image-size 96] [--batch-size 32] [--steps 12] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from elimnet.compress.elim import set_num_classes
from elimnet.data.elpv import elpv_root, elpv_source
from elimnet.data.prepare import decode
from elimnet.data.tensors import Normalizer, TensorSplit
from elimnet.models import create_model, get_spec
from elimnet.train.finetune import TrainRecipe, make_optimizer, seed_everything, train_epoch


def fresh(arch: str, channels_last: bool):
    torch.manual_seed(0)
    model, _ = set_num_classes(create_model(arch, pretrained=True), 4)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def bench_loop(arch, split, recipe, mean, std, steps):
    """The real finetune loop (train_epoch over the uint8 tensor cache)."""
    model = fresh(arch, recipe.channels_last)
    opt = make_optimizer(model, recipe)
    gen = seed_everything(0)
    norm = Normalizer(mean, std, channels_last=recipe.channels_last)
    warm = split.subset(recipe.batch_size * 2)
    train_epoch(model, opt, warm, recipe, norm, gen)
    data = split.subset(recipe.batch_size * steps)
    t0 = time.perf_counter()
    train_epoch(model, opt, data, recipe, norm, gen)
    return len(data) / (time.perf_counter() - t0)


def bench_compute_only(arch, split, recipe, mean, std, steps):
    """The bound: forward/backward/step on batches already normalised and in memory."""
    model = fresh(arch, recipe.channels_last)
    opt = make_optimizer(model, recipe)
    norm = Normalizer(mean, std, channels_last=recipe.channels_last)
    batches = [(norm(split.images[i:i + recipe.batch_size]), split.labels[i:i + recipe.batch_size])
               for i in range(0, recipe.batch_size * steps, recipe.batch_size)]
    model.train()
    for x, y in batches[:2]:
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    t0 = time.perf_counter()
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t0)


def bench_naive(arch, folder, recipe, mean, std, steps, size):
    """What a first script does: ImageFolder + PIL transforms + DataLoader, NCHW."""
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(3), transforms.Resize((size, size)),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    ds = datasets.ImageFolder(folder, tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=recipe.batch_size, shuffle=True, num_workers=0,
                                         generator=torch.Generator().manual_seed(0))
    model = fresh(arch, channels_last=False)
    opt = make_optimizer(model, recipe)
    model.train()
    it = iter(loader)
    x, y = next(it)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = get_spec(args.arch)
    source = elpv_source()
    n = args.batch_size * (args.steps + 2)
    samples = source.samples[:n]
    x, y, _ = decode(samples, args.image_size, source.channels, "decode")
    split = TensorSplit(x, y)
    recipe = TrainRecipe.from_config(None, batch_size=args.batch_size, hflip=True, vflip=True, channels_last=True)
    with tempfile.TemporaryDirectory() as tmp:
        for s in samples:  # an ImageFolder copy of the same images for the naive loop
            d = Path(tmp) / source.classes[s.label]
            d.mkdir(exist_ok=True)
            os.symlink(elpv_root() / s.ref, d / Path(s.ref).name)
        results = {
            "finetune loop": bench_loop(args.arch, split, recipe, spec.mean, spec.std, args.steps),
            "(a) compute-only bound": bench_compute_only(args.arch, split, recipe, spec.mean, spec.std, args.steps),
            "(b) naive ImageFolder+PIL": bench_naive(args.arch, tmp, recipe, spec.mean, spec.std, args.steps,
                                                      args.image_size),
        }
    print(f"{args.arch}, batch {args.batch_size}, {args.image_size}px, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    for name, v in results.items():
        print(f"  {name:28s} {v:8.1f} img/s")
    loop = results["finetune loop"]
    print(f"loop / compute-only = {loop / results['(a) compute-only bound']:.1%}  (target >= 95%)")
    print(f"loop / naive        = {loop / results['(b) naive ImageFolder+PIL']:.2f}x  (target >= 3x)")


if __name__ == "__main__":
    main()
