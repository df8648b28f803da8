"""Losses: cross-entropy (optionally class-weighted), and Hinton knowledge distillation on top of it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (num_classes * n_c) per class (scikit-learn's "balanced"): every class weighs the same in the mean
    loss. A class absent from `labels` gets weight 0 (it has no images to weigh)."""
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    w = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return w.to(torch.float32)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy, optionally class-weighted (a weighted mean, as F.cross_entropy defines it)."""
    return F.cross_entropy(logits, targets, weight=weight, label_smoothing=label_smoothing)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                      alpha: float, temperature: float, label_smoothing: float = 0.0,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).

    T^2 keeps the soft-target gradients on the same scale as the hard ones (Hinton et al. 2015).
    `weight` (class weights) applies to the hard-label term only.
    """
    ce = classification_loss(student_logits, targets, label_smoothing=label_smoothing, weight=weight)
    if alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - alpha) * ce + alpha * t * t * kl
