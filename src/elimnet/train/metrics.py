"""Classification metrics with scikit-learn: loss, accuracy, macro-F1, confusion matrix.

Macro-F1 averages over the classes present in the truth or the predictions: a class absent from
both (possible in a small split) has no defined F1 and would otherwise drag the mean down as a 0.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches


MIN_CLASS_IMAGES = 20  # below this, one image moves a class's F1 by several points


def present_labels(y_true, y_pred) -> list[int]:
    return np.union1d(np.asarray(y_true), np.asarray(y_pred)).astype(int).tolist()


def classification_metrics(y_true, y_pred, num_classes: int) -> dict:
    labels = present_labels(y_true, y_pred)  # num_classes kept for callers; absent classes don't count
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


def per_class_f1(y_true, y_pred, num_classes: int) -> list[float | None]:
    """F1 of every class; None for a class absent from both truth and predictions (undefined)."""
    f1 = f1_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0)
    present = set(present_labels(y_true, y_pred))
    return [float(v) if i in present else None for i, v in enumerate(f1)]


def support(y_true, num_classes: int) -> list[int]:
    """Images per class in the truth."""
    return np.bincount(np.asarray(y_true, dtype=np.int64), minlength=num_classes).tolist()


def warn_small_classes(y_true, classes: list[str], split: str = "test",
                       min_images: int = MIN_CLASS_IMAGES) -> list[str]:
    """One stderr line naming the classes with fewer than `min_images` images; returns their names."""
    counts = support(y_true, len(classes))
    small = [c for c, n in zip(classes, counts) if n < min_images]
    if small:
        listed = ", ".join(f"{c} ({n})" for c, n in zip(classes, counts) if n < min_images)
        print(f"warning: {split} classes with fewer than {min_images} images: {listed}; one image moves their "
              f"F1 by several points, so read macro-F1 with its CI", file=sys.stderr)
    return small
