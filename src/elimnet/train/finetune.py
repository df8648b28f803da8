"""The finetune loop (plain or distilled), in torchvision-references style.

One entry point, a fixed seed, linear warm-up then cosine LR per step (torch's LambdaLR),
channels_last on CPU, per-epoch train/val loss, accuracy and macro-F1, the best state by val
macro-F1, and optionally a checkpoint after every epoch that a rerun resumes from
(train/resume.py).
"""
from __future__ import annotations

import copy
import functools
import math
import random
import sys
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.train.losses import balanced_class_weights, classification_loss, distillation_loss
from elimnet.train.metrics import classification_metrics, evaluate
from elimnet.train.resume import EpochCheckpoint, get_rng_state, set_rng_state


# Recipe field -> schema key. The values (and their defaults) live only in config.SCHEMA.
RECIPE_KEYS = {
    "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr", "optimizer": "train.optimizer",
    "momentum": "train.momentum", "weight_decay": "train.weight_decay",
    "label_smoothing": "train.label_smoothing", "warmup_epochs": "train.warmup_epochs", "hflip": "train.hflip",
    "vflip": "train.vflip", "channels_last": "train.channels_last", "eval_batch_size": "train.eval_batch_size",
    "kd_alpha": "train.kd.alpha", "kd_temperature": "train.kd.temperature", "class_weights": "train.class_weights",
    "sampler": "train.sampler", "freeze_stages": "train.freeze_stages", "ema": "train.ema", "seed": "seed",
}


@dataclass
class TrainRecipe:
    """What the loop needs from `train.*`. No defaults here: build it with from_config (schema defaults)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    label_smoothing: float
    warmup_epochs: int
    hflip: bool
    vflip: bool
    channels_last: bool
    eval_batch_size: int
    kd_alpha: float
    kd_temperature: float
    class_weights: str
    sampler: str
    freeze_stages: int
    ema: float
    seed: int

    @classmethod
    def from_config(cls, cfg=None, **overrides) -> "TrainRecipe":
        """From a validated Config (None = the schema's defaults); keyword overrides win (tests, benchmarks)."""
        if cfg is None:
            from elimnet.config import defaults
            cfg = defaults()
        unknown = set(overrides) - set(RECIPE_KEYS)
        if unknown:
            raise TypeError(f"unknown TrainRecipe fields: {sorted(unknown)}")
        recipe = cls(**{name: overrides[name] if name in overrides else cfg[key]
                        for name, key in RECIPE_KEYS.items()})
        if cfg.flat().get("model.weights") == "none" and "freeze_stages" not in overrides:
            recipe.freeze_stages = 0  # random-init ("empty") models: their early stages are no features to keep
        return recipe


@dataclass
class TrainResult:
    best_state: dict
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    optimizer_state: dict | None = None


# Repeat r trains with seed + REPEAT_SEED_STRIDE * r: repeat 0 is the single run of old, and a seed sweep
# (42, 43, 44) never reuses another experiment's repeat unless it has a thousand of them.
REPEAT_SEED_STRIDE = 1000


def repeat_seed(seed: int, repeat: int) -> int:
    """The training seed of repeat `repeat` (init of new layers, data order, flips); the split keeps its own."""
    if repeat < 0:
        raise ValueError(f"repeat={repeat}: must be >= 0")
    return seed + REPEAT_SEED_STRIDE * repeat


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


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak LR at optimiser step `step` (0-based): linear warm-up, then half a cosine to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(opt: torch.optim.Optimizer, total: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule; the scheduler sets the LR of step 0 itself and is stepped after every optimiser step.

    One LambdaLR rather than LinearLR + CosineAnnealingLR in a SequentialLR: those update the LR
    recursively, which drifts from the closed form by float rounding, and a resumed run must see
    the very same LR values. LambdaLR's base * factor equals the former hand-written
    0.5 * base * (1 + cos) bit for bit (scaling by 0.5 is exact), tested over whole schedules.
    """
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, total, warmup))


def balanced_batches(split: TensorSplit, batch_size: int, normalize: Normalizer, *, generator=None,
                     shuffle: bool = True, **kw) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """iterate_batches over len(split) images drawn with replacement, each class equally likely
    (train.sampler=balanced); same signature, same generator for the draw and the flips. The draws are
    already in random order, so `shuffle` has nothing left to do."""
    counts = torch.bincount(split.labels).to(torch.float64)
    idx = torch.multinomial(1.0 / counts[split.labels], len(split), replacement=True, generator=generator)
    yield from iterate_batches(TensorSplit(split.images[idx], split.labels[idx]), batch_size, normalize,
                               generator=generator, **kw)


def freeze_early(model: torch.nn.Module, stages: int) -> list[torch.nn.Module]:
    """Freeze the stem and the first `stages` stages of a StagedNet (no grads, BN statistics fixed); returns the
    frozen modules, which train_epoch puts back in eval mode after every model.train(). 0 = nothing frozen.
    A model with fewer stages (a deep ELimNet cut) freezes all of them: its head and classifier still train."""
    if stages == 0:
        return []
    if not hasattr(model, "stages"):
        raise ValueError(f"train.freeze_stages={stages}: {type(model).__name__} has no stage view; set 0")
    frozen = [model.stem, *model.stages[:stages]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               recipe: TrainRecipe, teacher: torch.nn.Module | None = None,
               class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (plain CE, or distillation when a teacher and kd_alpha > 0)."""
    logits = model(x)
    if teacher is not None and recipe.kd_alpha > 0:
        with torch.no_grad():
            t_logits = teacher(x)
        loss = distillation_loss(logits, t_logits, y, alpha=recipe.kd_alpha, temperature=recipe.kd_temperature,
                                 label_smoothing=recipe.label_smoothing, weight=class_weight)
    else:
        loss = classification_loss(logits, y, label_smoothing=recipe.label_smoothing, weight=class_weight)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), logits.detach()


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: TensorSplit, recipe: TrainRecipe,
                normalize: Normalizer, gen: torch.Generator, *, teacher: torch.nn.Module | None = None,
                device: torch.device | str = "cpu", drop_last: bool = True, start_step: int = 0,
                scheduler=None, on_step=None, batches=iterate_batches, class_weight: torch.Tensor | None = None,
                frozen: list[torch.nn.Module] = ()) -> tuple[float, list[torch.Tensor], list[torch.Tensor], int]:
    """One pass over the in-memory split; returns (loss sum, predictions, labels, next step).

    `scheduler` (if any) is stepped after every optimiser step. `batches` has iterate_batches'
    signature (DDP passes one that yields this rank's slice). `frozen` modules stay in eval mode.
    """
    model.train()
    for module in frozen:
        module.eval()  # frozen BN keeps the ImageNet statistics
    loss_sum, preds, ys, step = 0.0, [], [], start_step
    for x, y in batches(train, recipe.batch_size, normalize, shuffle=True, generator=gen,
                        hflip=recipe.hflip, vflip=recipe.vflip, drop_last=drop_last):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = train_step(model, opt, x, y, recipe, teacher, class_weight)
        if scheduler is not None:
            scheduler.step()
        step += 1
        loss_value = float(loss)
        loss_sum += loss_value * len(y)
        preds.append(logits.argmax(1).cpu())
        ys.append(y.cpu())
        if on_step is not None:
            on_step(loss_value)
    return loss_sum, preds, ys, step


def _on_device(model, teacher, device: torch.device, channels_last: bool):
    """Model (and teacher, in eval mode) on `device`, channels-last in memory when asked."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        if channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
    return model, teacher


@dataclass
class _Progress:
    """What an epoch checkpoint carries beyond the weights: the history so far and the best epoch."""
    history: list = field(default_factory=list)
    best_f1: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    step: int = 0
    done: int = 0  # epochs completed

    def keep_if_best(self, model, epoch: int, val_f1: float) -> None:
        if val_f1 > self.best_f1:  # first best wins ties: deterministic
            self.best_f1, self.best_epoch = val_f1, epoch
            self.best_state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """The EMA of the weights and BN buffers (train.ema), updated after every optimiser step; None when off."""
    if decay == 0:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _frozen_and_averaged(model: torch.nn.Module, recipe: TrainRecipe):
    """(frozen modules, the EMA or None, the model validation scores and the stage keeps: the EMA when on).
    Called before DDP and the optimiser are built: both skip frozen weights."""
    frozen = freeze_early(model, recipe.freeze_stages)
    ema = weight_average(model, recipe.ema)
    return frozen, ema, ema.module if ema is not None else model


def _resume(checkpoint: EpochCheckpoint | None, model, opt, scheduler, gen, desc: str, epochs: int,
            ema: AveragedModel | None = None) -> _Progress:
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        return _Progress()
    model.load_state_dict(saved["model"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    opt.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"], gen)
    print(f"{desc}: resuming after epoch {saved['epoch']}/{epochs} from {checkpoint.path}", file=sys.stderr)
    return _Progress(saved["history"], saved["best_f1"], saved["best_epoch"], saved["best_state"], saved["step"],
                     saved["epoch"])


def _save_epoch(checkpoint: EpochCheckpoint, state: _Progress, epoch: int, model, opt, scheduler, gen,
                ema: AveragedModel | None = None) -> None:
    checkpoint.save({"epoch": epoch, "step": state.step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": get_rng_state(gen), "history": state.history,
                     "best_f1": state.best_f1, "best_epoch": state.best_epoch, "best_state": state.best_state,
                     "ema": ema.state_dict() if ema is not None else None})


def _epoch_row(epoch: int, lr: float, loss_sum: float, preds, ys, val_m: dict, num_classes: int) -> dict:
    y_all, p_all = torch.cat(ys).numpy(), torch.cat(preds).numpy()
    train_m = classification_metrics(y_all, p_all, num_classes)
    return {"epoch": epoch, "lr": lr, "train_loss": loss_sum / len(y_all), "train_acc": train_m["acc"],
            "train_macro_f1": train_m["macro_f1"], "val_loss": val_m["loss"], "val_acc": val_m["acc"],
            "val_macro_f1": val_m["macro_f1"]}


def finetune(model: torch.nn.Module, train: TensorSplit, val: TensorSplit, recipe: TrainRecipe, *,
             mean, std, num_classes: int, teacher: torch.nn.Module | None = None,
             device: torch.device | str = "cpu", progress: bool = True, desc: str = "finetune",
             ddp=None, checkpoint: EpochCheckpoint | None = None) -> TrainResult:
    """`ddp` (train.distributed.DDPContext): this rank trains its slice of every global batch; only rank 0
    validates and returns history and best state. `checkpoint`: written after every epoch (all state); a rerun
    resumes after its epochs with the weights and history of an uninterrupted run. The caller clears it."""
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"finetune needs non-empty train and val splits (got {len(train)} and {len(val)} images)")
    if ddp is not None and checkpoint is not None:
        raise ValueError("epoch checkpoints are single-process only (train.distributed > 1 restarts from epoch 1)")
    gen = seed_everything(recipe.seed)
    device = torch.device(device)
    use_cl = recipe.channels_last and device.type == "cpu"
    model, teacher = _on_device(model, teacher, device, use_cl)
    frozen, ema, evaluated = _frozen_and_averaged(model, recipe)
    normalize = Normalizer(mean, std, channels_last=use_cl)
    net = ddp.wrap(model, recipe.seed) if ddp is not None else model  # forward/backward go through `net`
    main = ddp is None or ddp.is_main
    progress = progress and main
    opt = make_optimizer(model, recipe)
    drop_last = len(train) > recipe.batch_size  # avoid a 1-image BN batch
    steps_per_epoch = len(train) // recipe.batch_size if drop_last else 1
    total, warmup = steps_per_epoch * recipe.epochs, steps_per_epoch * recipe.warmup_epochs
    scheduler = make_scheduler(opt, total, warmup)
    class_weight = balanced_class_weights(train.labels, num_classes).to(device) \
        if recipe.class_weights == "balanced" else None
    batches = balanced_batches if recipe.sampler == "balanced" else iterate_batches
    if ddp is not None:  # every rank draws the same global batches and trains on its slice
        batches = functools.partial(ddp.batches, source=batches)

    state = _resume(checkpoint, model, opt, scheduler, gen, desc, recipe.epochs, ema)
    bar = tqdm(total=total, initial=state.step, desc=desc, unit="step", disable=not progress, mininterval=1.0)
    for epoch in range(state.done + 1, recipe.epochs + 1):
        def on_step(loss: float, epoch=epoch) -> None:
            if ema is not None:
                ema.update_parameters(model)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}")

        loss_sum, preds, ys, state.step = train_epoch(
            net, opt, train, recipe, normalize, gen, teacher=teacher, device=device, drop_last=drop_last, frozen=frozen,
            start_step=state.step, scheduler=scheduler, on_step=on_step, batches=batches, class_weight=class_weight)
        if ddp is not None:
            loss_sum, preds, ys = ddp.gather_epoch(loss_sum, preds, ys)
            if not main:
                continue  # rank 0 validates and keeps the history; weights are identical on every rank
        val_m = evaluate(evaluated, val, normalize, recipe.eval_batch_size, num_classes, device)
        lr = recipe.lr * lr_factor(state.step - 1, total, warmup)  # the last step's LR
        row = _epoch_row(epoch, lr, loss_sum, preds, ys, val_m, num_classes)
        state.history.append(row)
        state.keep_if_best(evaluated, epoch, val_m["macro_f1"])
        if checkpoint is not None:
            _save_epoch(checkpoint, state, epoch, model, opt, scheduler, gen, ema)
        bar.write(f"{desc} epoch {epoch}/{recipe.epochs}: train loss {row['train_loss']:.4f} "
                  f"f1 {row['train_macro_f1']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f} "
                  f"f1 {row['val_macro_f1']:.3f}") if progress else None
    bar.close()
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(state.best_state, state.best_epoch, state.history, copy.deepcopy(opt.state_dict()))
