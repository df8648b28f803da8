"""The finetune loop (plain or distilled), in torchvision-references style.

One entry point, a fixed seed, cosine LR per step, channels_last on CPU, per-epoch
train/val loss, accuracy and macro-F1, and the best state by val macro-F1.
"""
from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.train.losses import distillation_loss
from elimnet.train.metrics import classification_metrics, evaluate


@dataclass
class TrainRecipe:
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-5
    label_smoothing: float = 0.0
    warmup_epochs: int = 0
    hflip: bool = True
    vflip: bool = True
    channels_last: bool = True
    eval_batch_size: int = 128
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    seed: int = 42

    @classmethod
    def from_config(cls, cfg) -> "TrainRecipe":
        t = cfg.section("train")
        return cls(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
                   momentum=t["momentum"], weight_decay=t["weight_decay"], label_smoothing=t["label_smoothing"],
                   warmup_epochs=t["warmup_epochs"], hflip=t["hflip"], vflip=t["vflip"],
                   channels_last=t["channels_last"], eval_batch_size=t["eval_batch_size"],
                   kd_alpha=t["kd"]["alpha"], kd_temperature=t["kd"]["temperature"], seed=cfg["seed"])


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict | None = None


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: torch.nn.Module, r: TrainRecipe) -> torch.optim.Optimizer:
    # No weight decay on BN and biases (standard for finetuning small nets).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.momentum > 0)
    return torch.optim.AdamW(groups, lr=r.lr)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * progress))


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               recipe: TrainRecipe, teacher: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (plain CE, or distillation when a teacher and kd_alpha > 0)."""
    logits = model(x)
    if teacher is not None and recipe.kd_alpha > 0:
        with torch.no_grad():
            t_logits = teacher(x)
        loss = distillation_loss(logits, t_logits, y, alpha=recipe.kd_alpha, temperature=recipe.kd_temperature,
                                 label_smoothing=recipe.label_smoothing)
    else:
        loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: TensorSplit, recipe: TrainRecipe,
                normalize: Normalizer, gen: torch.Generator, *, teacher: torch.nn.Module | None = None,
                device: torch.device | str = "cpu", drop_last: bool = True, start_step: int = 0,
                lr_fn=None, on_step=None, batches=iterate_batches
                ) -> tuple[float, list[torch.Tensor], list[torch.Tensor], int]:
    """One pass over the in-memory split; returns (loss sum, predictions, labels, next step).

    `batches` has iterate_batches' signature (DDP passes one that yields this rank's slice).
    """
    model.train()
    loss_sum, preds, ys, step = 0.0, [], [], start_step
    for x, y in batches(train, recipe.batch_size, normalize, shuffle=True, generator=gen,
                        hflip=recipe.hflip, vflip=recipe.vflip, drop_last=drop_last):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if lr_fn is not None:
            for g in opt.param_groups:
                g["lr"] = lr_fn(step)
        loss, logits = train_step(model, opt, x, y, recipe, teacher)
        step += 1
        loss_value = float(loss)
        loss_sum += loss_value * len(y)
        preds.append(logits.argmax(1).cpu())
        ys.append(y.cpu())
        if on_step is not None:
            on_step(loss_value)
    return loss_sum, preds, ys, step


def finetune(model: torch.nn.Module, train: TensorSplit, val: TensorSplit, recipe: TrainRecipe, *,
             mean, std, num_classes: int, teacher: torch.nn.Module | None = None,
             device: torch.device | str = "cpu", progress: bool = True, desc: str = "finetune",
             ddp=None) -> TrainResult:
    """`ddp` (train.distributed.DDPContext) trains this rank's slice of every global batch; only its
    main rank validates and returns history and best state (the others return an empty result)."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"finetune needs non-empty train and val splits (got {len(train)} and {len(val)} images)")
    gen = seed_everything(recipe.seed)
    device = torch.device(device)
    use_cl = recipe.channels_last and device.type == "cpu"
    model = model.to(device)
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        if use_cl:
            teacher = teacher.to(memory_format=torch.channels_last)
    normalize = Normalizer(mean, std, channels_last=use_cl)
    net = ddp.wrap(model, recipe.seed) if ddp is not None else model  # forward/backward go through `net`
    main = ddp is None or ddp.is_main
    progress = progress and main
    opt = make_optimizer(model, recipe)
    drop_last = len(train) > recipe.batch_size  # avoid a 1-image BN batch
    steps_per_epoch = len(train) // recipe.batch_size if drop_last else 1
    total = steps_per_epoch * recipe.epochs
    warmup = steps_per_epoch * recipe.warmup_epochs

    history: list[dict] = []
    best_f1, best_epoch, best_state, step = -1.0, 0, None, 0
    bar = tqdm(total=total, desc=desc, unit="step", disable=not progress, mininterval=1.0)
    for epoch in range(1, recipe.epochs + 1):
        def on_step(loss: float, epoch=epoch) -> None:
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")

        loss_sum, preds, ys, step = train_epoch(net, opt, train, recipe, normalize, gen, teacher=teacher,
                                                device=device, drop_last=drop_last, start_step=step,
                                                lr_fn=lambda i: lr_at(i, total, warmup, recipe.lr), on_step=on_step,
                                                batches=ddp.batches if ddp is not None else iterate_batches)
        if ddp is not None:
            loss_sum, preds, ys = ddp.gather_epoch(loss_sum, preds, ys)
            if not main:
                continue  # rank 0 validates and keeps the history; weights are identical on every rank
        y_all, p_all = torch.cat(ys).numpy(), torch.cat(preds).numpy()
        train_m = classification_metrics(y_all, p_all, num_classes)
        val_m = evaluate(model, val, normalize, recipe.eval_batch_size, num_classes, device)
        row = {"epoch": epoch, "lr": lr_at(step - 1, total, warmup, recipe.lr),
               "train_loss": loss_sum / len(y_all), "train_acc": train_m["acc"], "train_macro_f1": train_m["macro_f1"],
               "val_loss": val_m["loss"], "val_acc": val_m["acc"], "val_macro_f1": val_m["macro_f1"]}
        history.append(row)
        if val_m["macro_f1"] > best_f1:  # first best wins ties: deterministic
            best_f1, best_epoch = val_m["macro_f1"], epoch
            best_state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
        bar.write(f"{desc} epoch {epoch}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
                  f"f1 {row['train_macro_f1']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
                  f"f1 {row['val_macro_f1']:.3f}") if progress else None
    bar.close()
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(best_state, best_epoch, history, copy.deepcopy(opt.state_dict()))
