"""Classification metrics with scikit-learn: loss, accuracy, macro-F1, confusion matrix."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    labels = list(range(num_classes))
    return {"acc": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))}


@torch.no_grad()
def predict(model: torch.nn.Module, split: TensorSplit, normalize: Normalizer, batch_size: int,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for a whole split, in eval mode."""
    model.eval()
    outs, ys = [], []
    for x, y in iterate_batches(split, batch_size, normalize):
        outs.append(model(x.to(device)).float().cpu())
        ys.append(y)
    if not outs:
        raise ValueError("cannot evaluate an empty split")
    return torch.cat(outs), torch.cat(ys)


def evaluate(model: torch.nn.Module, split: TensorSplit, normalize: Normalizer, batch_size: int,
             num_classes: int, device: torch.device | str = "cpu") -> dict:
    logits, y = predict(model, split, normalize, batch_size, device)
    pred = logits.argmax(1)
    out = {"loss": float(F.cross_entropy(logits, y)), **classification_metrics(y.numpy(), pred.numpy(), num_classes)}
    out["confusion"] = confusion_matrix(y.numpy(), pred.numpy(), labels=list(range(num_classes))).tolist()
    out["y_true"], out["y_pred"] = y.tolist(), pred.tolist()
    return out


def per_class_f1(y_true, y_pred, num_classes: int) -> list[float]:
    return f1_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0).astype(
        np.float64).tolist()
