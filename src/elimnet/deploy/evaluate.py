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


def evaluate_artifacts(model_path: str | Path, deploy_dir: str | Path, data_dir: str | Path, batch_size: int,
                       split: str = "test") -> dict:
    """acc/macro-F1 of the torch model and of every artifact in `deploy_dir` on `split`, with each
    artifact's delta against torch and its top-1 agreement with torch (docs/deploy.md)."""
    from elimnet.checkpoint import load_model
    from elimnet.data.prepare import load_meta
    from elimnet.deploy.artifacts import artifacts
    from elimnet.train.metrics import evaluate

    model, config = load_model(model_path)
    num_classes = len(load_meta(data_dir)["classes"])
    data = TensorSplit.load(Path(data_dir) / f"{split}.pt")
    normalize = Normalizer(config["mean"], config["std"])
    ref = evaluate(model, data, normalize, batch_size, num_classes)
    out = {"split": split, "images": len(data), "torch": {k: ref[k] for k in ("acc", "macro_f1")}}
    for precision, path in artifacts(deploy_dir).items():
        m = evaluate_onnx(path, data, num_classes, batch_size=batch_size, normalize=normalize,
                          reference=ref["y_pred"])
        out[precision] = {"acc": m["acc"], "macro_f1": m["macro_f1"], "agreement": m["agreement"],
                          "delta_acc": m["acc"] - ref["acc"], "delta_macro_f1": m["macro_f1"] - ref["macro_f1"]}
    return out
