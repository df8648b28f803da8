"""Losses: cross-entropy, and Hinton knowledge distillation on top of it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, *,
                      alpha: float, temperature: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).

    T^2 keeps the soft-target gradients on the same scale as the hard ones (Hinton et al. 2015).
    """
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    return (1.0 - alpha) * ce + alpha * t * t * kl
