"""finetune and evaluate stages."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import torch

from elimnet.bench.allocator import allocator_state
from elimnet.checkpoint import load_model, save_model
from elimnet.compress.elim import set_num_classes
from elimnet.config import Config
from elimnet.data.prepare import load_meta, load_prepared, split_path
from elimnet.data.tensors import Normalizer
from elimnet.io import write_json, write_text
from elimnet.pipeline.common import set_threads
from elimnet.train import distributed
from elimnet.train.finetune import TrainRecipe, finetune, repeat_seed
from elimnet.train.resume import stage_checkpoint
from elimnet.train.metrics import evaluate, per_class_f1


# The repeat list is not part of a repeat's recipe: raising train.repeats must not restart repeat 0.
REPEAT_KEYS = ("train.repeats", "train.repeat_ids")


def _with_classes(model, config: dict, num_classes: int, seed: int):
    """The baseline starts from the 1000-class pretrained file: give it this data's classifier."""
    if config.get("num_classes") == num_classes:
        return model, config
    torch.manual_seed(seed)  # same fresh classifier as compress's "full" model
    model, _ = set_num_classes(model, num_classes)
    config = {**config, "num_classes": num_classes,
              "steps": config.get("steps", []) + [{"name": "classifier", "spec": {"num_classes": num_classes}}]}
    return model, config


def history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def run_finetune(cfg: Config, init: str | Path, data_dir: str | Path, out: str | Path, history_path: str | Path,
                 metrics_path: str | Path, teacher_path: str | Path | None = None,
                 role: str = "candidate", repeat: int = 0) -> dict | None:
    """Finetune and write model, history and metrics; under torchrun only rank 0 writes (others return None).

    `repeat` r (train.repeats) trains with repeat_seed(seed, r): a new classifier init for the baseline, a new
    data order and new flips, on the same split."""
    set_threads(cfg["train.threads"])
    allocator_state(cfg["train.keep_freed_memory"])  # no page faults for freed activations every step
    ddp = None
    if distributed.launched():
        distributed.check_world(int(os.environ["WORLD_SIZE"]), cfg["train.batch_size"])
        ddp = distributed.DDPContext.from_env()
    meta = load_meta(data_dir)
    classes = meta["classes"]
    model, config = load_model(init)
    seed = repeat_seed(cfg["seed"], repeat)
    model, config = _with_classes(model, config, len(classes), seed)
    config.update(classes=classes, image_size=meta["image_size"])
    recipe = TrainRecipe.from_config(cfg, seed=seed)
    teacher = None
    if teacher_path and recipe.kd_alpha > 0:
        teacher, _ = load_model(teacher_path)
    else:
        recipe.kd_alpha = 0.0  # the baseline never distils; alpha=0 is plain finetuning
    data = load_prepared(data_dir, ("train", "val"))
    train, val = data["train"], data["val"]
    checkpoint = None
    if ddp is None:  # per-epoch resume checkpoints are single-process
        data_files = [split_path(data_dir, "train"), split_path(data_dir, "val"), Path(data_dir) / "meta.json"]
        checkpoint = stage_checkpoint(cfg["train.checkpoint_dir"], f"{role}-r{repeat}",
                                      [init, teacher_path if teacher is not None else None, *data_files],
                                      {**{k: v for k, v in cfg.flat().items() if k.startswith("train.")
                                          and k not in REPEAT_KEYS}, "seed": seed},
                                      near=Path(out).parent)
    try:
        result = finetune(model, train, val, recipe, mean=config["mean"], std=config["std"],
                          num_classes=len(classes), teacher=teacher, desc=f"finetune {role}",
                          device=ddp.device if ddp else "cpu", ddp=ddp, checkpoint=checkpoint)
        metrics = None
        if ddp is None or ddp.is_main:
            metrics = _write_finetune(result, model, config, cfg, recipe, out, history_path, metrics_path)
        if checkpoint is not None:
            checkpoint.clear()  # the outputs exist: a rerun starts afresh
        if ddp is not None:
            ddp.barrier()  # no rank leaves before rank 0 has written
        return metrics
    finally:
        if ddp is not None:
            ddp.close()


def _write_finetune(result, model, config: dict, cfg: Config, recipe: TrainRecipe, out, history_path,
                    metrics_path) -> dict:
    model.load_state_dict(result.best_state)
    save_model(out, model, config, optimizer=result.optimizer_state, epoch=result.best_epoch,
               args=cfg.flat())
    best = result.history[result.best_epoch - 1]
    metrics = {"best_epoch": result.best_epoch, "epochs": recipe.epochs,
               **{k: v for k, v in best.items() if k not in ("epoch", "lr")}}
    write_text(history_path, history_csv(result.history))
    write_json(metrics_path, metrics)
    return metrics


def run_evaluate(cfg: Config, model_path: str | Path, data_dir: str | Path, out: str | Path,
                 predictions_path: str | Path, split: str = "test") -> dict:
    from elimnet.train import uncertainty
    from elimnet.train.metrics import support, warn_small_classes

    set_threads(cfg["train.threads"])
    model, config = load_model(model_path)
    classes = load_meta(data_dir)["classes"]
    data = load_prepared(data_dir, (split,))[split]
    m = evaluate(model, data, Normalizer(config["mean"], config["std"]), cfg["train.eval_batch_size"], len(classes))
    f1s = per_class_f1(m["y_true"], m["y_pred"], len(classes))
    ci = uncertainty.bootstrap_ci(m["y_true"], m["y_pred"], cfg["train.bootstrap"], cfg["seed"])
    metrics = {f"{split}_loss": m["loss"], f"{split}_acc": m["acc"], f"{split}_macro_f1": m["macro_f1"],
               f"{split}_acc_ci": ci["acc"], f"{split}_macro_f1_ci": ci["macro_f1"],
               "bootstrap": {"resamples": cfg["train.bootstrap"], "seed": cfg["seed"], "level": uncertainty.LEVEL},
               "per_class_f1": dict(zip(classes, f1s)),
               "per_class_support": dict(zip(classes, support(m["y_true"], len(classes)))),
               "small_classes": warn_small_classes(m["y_true"], classes, split),
               "confusion": m["confusion"], "classes": classes, "images": len(data)}
    # index = position in the split: the report pairs two models' rows on it (paired bootstrap, McNemar)
    rows = "index,actual,predicted\n" + "".join(f"{i},{classes[a]},{classes[p]}\n" for i, (a, p)
                                                in enumerate(zip(m["y_true"], m["y_pred"])))
    write_text(predictions_path, rows)
    write_json(out, metrics)
    return metrics
