"""Accuracy of a deployed artifact: run the .onnx through onnxruntime on a TensorSplit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.deploy.export import ort_run, ort_session, read_metadata
from elimnet.train.metrics import classification_metrics


def onnx_logits(path_or_session, split: TensorSplit, normalize: Normalizer, batch_size: int = 128,
                threads: int | None = None) -> np.ndarray:
    """Logits [N, classes] of the ONNX model for every image of `split`, in order."""
    sess = ort_session(path_or_session, threads) if isinstance(path_or_session, (str, Path)) else path_or_session
    outs = [ort_run(sess, x.numpy()) for x, _ in iterate_batches(split, batch_size, normalize)]
    if not outs:
        raise ValueError("cannot evaluate an empty split")
    return np.concatenate(outs).astype(np.float32)


def normalizer_for(path: str | Path) -> Normalizer:
    """The input normalisation stored in the artifact's metadata at export."""
    meta = read_metadata(path)
    if "mean" not in meta or "std" not in meta:
        raise ValueError(f"{path}: no mean/std in the ONNX metadata (export it with elimnet.deploy.export)")
    return Normalizer(meta["mean"], meta["std"])


def evaluate_onnx(path: str | Path, split: TensorSplit, num_classes: int, *, batch_size: int = 128,
                  normalize: Normalizer | None = None, threads: int | None = None,
                  reference: np.ndarray | None = None) -> dict:
    """acc and macro-F1 of the artifact on `split` (plus `agreement`: share of images whose top-1
    equals `reference` predictions, when given), and its predictions."""
    normalize = normalize or normalizer_for(path)
    logits = onnx_logits(path, split, normalize, batch_size, threads)
    pred = logits.argmax(1)
    y = split.labels.numpy()
    out = {**classification_metrics(y, pred, num_classes), "images": int(len(split)),
           "loss": float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), split.labels))}
    if reference is not None:
        out["agreement"] = float((pred == np.asarray(reference)).mean())
    out["y_pred"] = pred.tolist()
    return out
