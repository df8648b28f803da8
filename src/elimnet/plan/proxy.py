"""The accuracy proxy: imprint the classifier, then score the deployed file on validation images.

No training. The classifier's weights become the L2-normalised class means of the pooled features
of up to `images` training images (weight imprinting, compress/imprint.py); the candidate's ONNX
file (fp32 or INT8, the one that is timed) then predicts the validation images and the proxy is
their macro-F1. So the proxy sees what compression and quantization did to the pretrained
features, which is what the full finetune starts from; docs/plan.md measures how well it ranks.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from elimnet.compress.imprint import HEAD_SCALE, fit_head
from elimnet.data.tensors import Normalizer, TensorSplit
from elimnet.models.staged import StagedNet, linears


def sample_split(split: TensorSplit, n: int | None, seed: int) -> TensorSplit:
    """`n` images in a seeded random order (prepared splits may be sorted by class); all if n is None."""
    if n is None or n >= len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorSplit(split.images[idx], split.labels[idx])


@torch.no_grad()
def imprinted(model: StagedNet, train: TensorSplit, normalize: Normalizer, num_classes: int) -> StagedNet:
    """A copy of `model` that predicts with imprinted class means, in the model's own classifier.

    argmax(W f) = argmax(W f/|f|) for a positive |f|, so a bias-free Linear holding the normalised
    means predicts exactly like the cosine head and keeps the deployed graph unchanged. A classifier
    with several Linears (an MLP) cannot hold it: then the cosine head replaces it."""
    fitted = fit_head(model, train, normalize, num_classes)
    layers = linears(model.classifier)
    if len(layers) != 1:
        return fitted
    out = copy.deepcopy(model)
    last = linears(out.classifier)[0]
    last.weight.copy_(HEAD_SCALE * fitted.classifier[0].weight)
    if last.bias is not None:
        last.bias.zero_()
    return out


def proxy_macro_f1(onnx_file: Path, val: TensorSplit, normalize: Normalizer, num_classes: int,
                   threads: int | None = None) -> float:
    from elimnet.deploy.evaluate import evaluate_onnx

    return float(evaluate_onnx(onnx_file, val, num_classes, normalize=normalize, threads=threads)["macro_f1"])
