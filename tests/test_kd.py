"""Knowledge distillation: the Hinton loss by hand, alpha=0 is plain CE, a distilled finetune runs."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elimnet.models.staged import StagedNet
from elimnet.train.finetune import TrainRecipe, finetune
from elimnet.train.losses import distillation_loss


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _hand_kd(s, t, y, alpha, temp):
    """(1 - alpha) * CE + alpha * T^2 * KL(p_teacher || p_student), both softened by T; one sample."""
    ce = -math.log(_softmax(s)[y])
    ps, pt = _softmax([x / temp for x in s]), _softmax([x / temp for x in t])
    kl = sum(p * (math.log(p) - math.log(q)) for p, q in zip(pt, ps))
    return (1 - alpha) * ce + alpha * temp * temp * kl


def test_kd_loss_equals_the_hand_computed_value():
    s, t = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 1.0, 3.0]])
    got = distillation_loss(s, t, torch.tensor([1]), alpha=0.5, temperature=2.0)
    assert float(got) == pytest.approx(1.1497316321368194, rel=1e-6)  # 0.5*0.40761 + 0.5*4*0.47296
    # a batch averages the per-sample values (KL "batchmean", CE "mean")
    s2, t2 = [0.5, -1.0, 0.25], [2.0, 0.0, -1.0]
    batch = distillation_loss(torch.tensor([[1.0, 2.0, 0.0], s2]), torch.tensor([[0.0, 1.0, 3.0], t2]),
                              torch.tensor([1, 0]), alpha=0.3, temperature=4.0)
    expected = (_hand_kd([1.0, 2.0, 0.0], [0.0, 1.0, 3.0], 1, 0.3, 4.0) + _hand_kd(s2, t2, 0, 0.3, 4.0)) / 2
    assert float(batch) == pytest.approx(expected, rel=1e-6)


def test_alpha_zero_is_plain_cross_entropy_and_teacher_agreement_costs_nothing():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert torch.equal(distillation_loss(s, t, y, alpha=0.0, temperature=3.0), F.cross_entropy(s, y))
    # alpha=1 with a teacher identical to the student: KL = 0
    assert float(distillation_loss(s, s.clone(), y, alpha=1.0, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)


def _tiny_net(seed):
    torch.manual_seed(seed)
    stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    return StagedNet(stem, [nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())], nn.Identity(),
                     nn.Sequential(nn.Linear(8, 4)))


def test_tiny_finetune_with_a_teacher(tiny_split):
    train, val = tiny_split(n_per_class=4, size=16), tiny_split(n_per_class=2, size=16, seed=1)
    teacher = _tiny_net(1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    kw = dict(mean=(0.5,) * 3, std=(0.5,) * 3, num_classes=4, progress=False)

    def run(alpha, with_teacher):
        recipe = TrainRecipe.from_config(None, epochs=2, batch_size=8, kd_alpha=alpha, kd_temperature=4.0,
                                         channels_last=False)
        return finetune(_tiny_net(0), train, val, recipe, teacher=teacher if with_teacher else None, **kw)
    plain = run(0.0, False)
    alpha0 = run(0.0, True)  # alpha = 0 ignores the teacher: the same run as plain finetuning
    distilled = run(0.7, True)
    assert [r["train_loss"] for r in alpha0.history] == [r["train_loss"] for r in plain.history]
    assert distilled.history[0]["train_loss"] != plain.history[0]["train_loss"]
    assert all(math.isfinite(r["train_loss"]) for r in distilled.history) and len(distilled.history) == 2
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # the teacher is frozen
