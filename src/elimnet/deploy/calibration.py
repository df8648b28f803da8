"""Static INT8 from the train split's images: calibration batches, and the calibration method that scores best."""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches


def calibration_batches(split: TensorSplit, normalize: Normalizer, n: int, seed: int,
                        batch_size: int = 16) -> list:
    """`n` train images in a seeded random order (splits may be class-sorted), normalised, batched.

    All batches have the same size: ONNX Runtime's histogram calibrators (entropy, percentile)
    stack per-batch outputs and fail on a short last batch."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    batch_size = max(b for b in range(1, batch_size + 1) if idx.numel() % b == 0)
    sub = TensorSplit(split.images[idx], split.labels[idx])
    return [x.numpy() for x, _ in iterate_batches(sub, batch_size, normalize)]


def quantize_calibrated(fp32: Path, out: Path, train: TensorSplit, val: TensorSplit, normalize: Normalizer,
                        num_classes: int, *, images: int, seed: int, method: str = "auto", name: str = "model",
                        progress: bool = True) -> dict:
    """INT8 at `out` with the calibration method (or each of METHODS for "auto") that scores best on `val`
    (macro-F1, then top-1 agreement with the fp32 artifact); returns the calibration record of export.json."""
    from elimnet.deploy.evaluate import evaluate_onnx
    from elimnet.deploy.quantize import METHODS, quantize_best

    calib = calibration_batches(train, normalize, images, seed)
    ref = evaluate_onnx(fp32, val, num_classes, normalize=normalize)["y_pred"]
    chosen = quantize_best(
        fp32, out, calib, methods=METHODS if method == "auto" else [method], name=name, progress=progress,
        score=lambda p: {k: v for k, v in evaluate_onnx(p, val, num_classes, normalize=normalize,
                                                        reference=ref).items()
                         if k in ("acc", "macro_f1", "agreement")})
    return {"split": "val", "images": sum(b.shape[0] for b in calib), **chosen}
