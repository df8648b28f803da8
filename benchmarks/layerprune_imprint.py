"""Wall time of LayerPrune's imprint criterion on ResNet50: every candidate, no retraining.

    python benchmarks/layerprune_imprint.py --size 96 --val 512 --imprint 128 --threads 1

Random-init weights (the cost does not depend on them) and random uint8 images. Prints the
scan's wall time next to one plain forward pass over the same images, so the ratio says how
many forward passes the shared-prefix branching costs (naively: 1 + one per candidate).
"""
from __future__ import annotations

import argparse
import time

import torch

from elimnet.compress import CompressContext
from elimnet.compress.criteria import BATCH_SIZE
from elimnet.compress.imprint import PROXIES
from elimnet.compress.layerprune import candidates, score_blocks
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.models import create_model, get_spec, list_models


def build(arch: str):
    if arch in list_models():
        return create_model(arch), get_spec(arch)
    import torchvision
    from elimnet.models.resnet import resnet_to_staged
    return resnet_to_staged(torchvision.models.resnet50(weights=None)), None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--val", type=int, default=512, help="validation images scored")
    p.add_argument("--imprint", type=int, default=128, help="training images imprinted (class means)")
    p.add_argument("--classes", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--criterion", default="imprint_ablation", choices=["imprint", "imprint_ablation"],
                   help="imprint_ablation branches per candidate; imprint (ICIP) reads the layer-wise curve only")
    p.add_argument("--proxy", default="grid", choices=PROXIES, help="model.prune.imprint_proxy (grid imprints "
                   "all --imprint images, gap_l2 the first model.prune.batches x 32 of them)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, spec = build(a.arch)
    model.eval()
    g = torch.Generator().manual_seed(0)

    def split(n):
        return TensorSplit(torch.randint(0, 256, (n, 3, a.size, a.size), dtype=torch.uint8, generator=g),
                           torch.arange(n) % a.classes)
    train, val = split(a.imprint), split(a.val)
    mean, std = (spec.mean, spec.std) if spec else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ctx = CompressContext(arch=a.arch, image_size=a.size, num_classes=a.classes, train=train, val=val,
                          mean=mean, std=std)
    paths = [b.path for b in candidates(model, a.size)]
    norm = Normalizer(mean, std)

    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for x, _ in iterate_batches(TensorSplit(torch.cat([train.images, val.images]),
                                                torch.cat([train.labels, val.labels])), BATCH_SIZE, norm):
            model(x)
    forward_s, forward_cpu = time.perf_counter() - t0, time.process_time() - c0

    t0, c0 = time.perf_counter(), time.process_time()
    scores, extra = score_blocks(model, a.criterion, paths, ctx, batches=max(1, a.imprint // BATCH_SIZE),
                                 imprint_proxy=a.proxy)
    scan_s, scan_cpu = time.perf_counter() - t0, time.process_time() - c0
    n = a.imprint + a.val
    print(f"{a.arch} {a.size}px, threads={torch.get_num_threads()}, {len(paths)} candidates, "
          f"{extra['imprint_images']} imprinted + {extra['eval_images']} scored images")
    # CPU time too: on a shared machine wall time mostly measures the neighbours
    print(f"one forward pass over {n} images: {forward_s:8.2f} s wall {forward_cpu:8.2f} s CPU")
    print(f"{a.criterion} scan, all candidates:      {scan_s:8.2f} s wall {scan_cpu:8.2f} s CPU "
          f"({scan_cpu / forward_cpu:.1f}x a forward pass; naive re-run per candidate would be {len(paths) + 1}x)")
    print(f"proxy accuracy of the full net: {extra['accuracy_full']:.3f} (random weights, random labels)")


if __name__ == "__main__":
    main()
