"""finetune and evaluate stages."""
from __future__ import annotations

import os
from pathlib import Path

from elimnet.bench.allocator import allocator_state
from elimnet.checkpoint import load_model, save_model
from elimnet.config import Config
from elimnet.data.prepare import load_meta, load_prepared, repeat_data_dir, split_path
from elimnet.data.tensors import Normalizer
from elimnet.io import write_json, write_text
from elimnet.train import distributed
from elimnet.threads import set_threads
from elimnet.train.classifier import with_classes
from elimnet.train.finetune import TrainRecipe, finetune, repeat_seed
from elimnet.train.resume import stage_checkpoint
from elimnet.train.metrics import evaluate
from elimnet.train.outputs import evaluation_record, history_csv, predictions_csv

# The repeat list is not part of a repeat's recipe: raising train.repeats must not restart repeat 0.
REPEAT_KEYS = ("train.repeats", "train.repeat_ids")


def run_finetune(cfg: Config, init: str | Path, data_dir: str | Path, out: str | Path, history_path: str | Path,
                 metrics_path: str | Path, teacher_path: str | Path | None = None,
                 role: str = "candidate", repeat: int = 0) -> dict | None:
    """Finetune and write model, history and metrics; under torchrun only rank 0 writes (others return None).

    `repeat` r (train.repeats) trains with repeat_seed(seed, r): a new classifier init (the candidate's from r = 1
    on: train/classifier.py), a new data order and new flips, on the same split (under data.folds: fold r's)."""
    data_dir = repeat_data_dir(data_dir, repeat)
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
    model, config = with_classes(model, config, len(classes), seed, repeat)
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
                 predictions_path: str | Path, split: str = "test", repeat: int = 0) -> dict:
    """Under data.folds the predictions' index is each test image's global id, so the report pools folds."""
    data_dir = repeat_data_dir(data_dir, repeat)
    set_threads(cfg["train.threads"])
    model, config = load_model(model_path)
    meta = load_meta(data_dir)
    classes = meta["classes"]
    data = load_prepared(data_dir, (split,))[split]
    m = evaluate(model, data, Normalizer(config["mean"], config["std"]), cfg["train.eval_batch_size"], len(classes))
    metrics = evaluation_record(m, classes, split, len(data), cfg["train.bootstrap"], cfg["seed"])
    write_text(predictions_path, predictions_csv(classes, m["y_true"], m["y_pred"],
                                                 meta.get("test_ids") if split == "test" else None))
    write_json(out, metrics)
    return metrics
