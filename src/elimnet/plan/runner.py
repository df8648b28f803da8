"""`elimnet plan`: arguments, and the run from prepared data to reports/plan.*.

    elimnet plan --budget 0.33 --trials 40 --minutes 60
    elimnet plan --budget-ms 2.5 --storage postgresql://user@db/plans --study lite0 --search-only  # a worker
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from elimnet.errors import ConfigError

DEFAULT_WORK_DIR = ".dvc/tmp/elimnet/plan"  # study, latency cache, scratch files (git-ignored by DVC)


def add_plan_arguments(p: argparse.ArgumentParser) -> None:
    from elimnet.config import add_params_arguments

    add_params_arguments(p)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=float, help="latency budget as a fraction of the full fp32 model's")
    budget.add_argument("--budget-ms", type=float, help="latency budget in ms per batch")
    p.add_argument("--trials", type=int, default=30, help="finished trials the study should hold (resumes count)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this run's search")
    p.add_argument("--batch-size", type=int, default=1, help="batch size the latency is measured at")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime / torch threads (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="full-recipe finetunes per finalist (seed, seed+1, ...)")
    p.add_argument("--finalists", type=int, default=3, help="screened candidates finetuned in full")
    p.add_argument("--proxy-images", type=int, default=512,
                   help="training images whose features set the imprinted class means (the proxy)")
    p.add_argument("--study", default="elimnet-plan", help="Optuna study name (same name + storage = resume)")
    p.add_argument("--storage", default=None, help=f"Optuna RDB URL (default sqlite:///{DEFAULT_WORK_DIR}/plan.db)")
    p.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="latency cache and scratch ONNX files")
    p.add_argument("--data", default="data/prepared", help="prepared splits (the prepare stage's output)")
    p.add_argument("--pretrained", default="models/pretrained.pt",
                   help="pretrained backbone file (default: built from model.arch/model.weights when absent)")
    p.add_argument("--out-dir", default="reports", help="where plan.json, plan.md and plan.png go")
    p.add_argument("--search-only", action="store_true", help="a worker: run trials, write no report")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="elimnet plan", description=__doc__.split("\n\n")[0])
    add_plan_arguments(p)
    return p


def _check_args(args) -> None:
    for name in ("trials", "batch_size", "repeats", "finalists", "proxy_images"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be an integer >= 1")
    if args.budget is not None and not 0 < args.budget <= 1:
        raise ConfigError(f"--budget={args.budget}: must be a fraction in (0, 1] of the full model's latency")
    if args.budget_ms is not None and args.budget_ms <= 0:
        raise ConfigError(f"--budget-ms={args.budget_ms}: must be > 0")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes={args.minutes}: must be > 0 (omit it for no time limit)")


def _base_model(cfg, pretrained: Path):
    import torch

    from elimnet.checkpoint import load_model
    from elimnet.models import create_model
    from elimnet.models.registry import params_arch_args

    if pretrained.is_file():
        model, config = load_model(pretrained)
        if config["arch"] != cfg["model.arch"]:
            raise ConfigError(f"--pretrained {pretrained}: holds {config['arch']} but model.arch={cfg['model.arch']}")
        return model
    torch.manual_seed(cfg["seed"])  # as the pretrained stage: the same random init for weights=none
    return create_model(cfg["model.arch"], pretrained=cfg["model.weights"] == "imagenet",
                        cache_dir=Path(cfg["data.root"]) / "weights",
                        arch_args=params_arch_args(cfg["model.arch"], cfg))


def make_context(args, cfg):
    """PlanContext from the prepared data, the backbone and the arguments; also returns the splits."""
    from elimnet.data.prepare import load_meta, load_prepared
    from elimnet.models import get_spec
    from elimnet.deploy.calibration import calibration_batches
    from elimnet.bench.hardware import hardware_fingerprint
    from elimnet.plan.deployed import TimingCache
    from elimnet.plan.proxy import sample_split
    from elimnet.plan.study import PlanContext

    data_dir = Path(args.data)
    if not (data_dir / "meta.json").is_file():
        raise ConfigError(f"--data {data_dir}: no prepared data (meta.json); run `dvc repro prepare` first")
    meta, splits = load_meta(data_dir), load_prepared(data_dir)
    spec = get_spec(cfg["model.arch"])
    work = Path(args.work_dir)
    (work / "onnx").mkdir(parents=True, exist_ok=True)
    ctx = PlanContext(
        cfg=cfg, base=_base_model(cfg, Path(args.pretrained)), data_dir=data_dir, num_classes=len(meta["classes"]),
        image_size=meta["image_size"], num_stages=len(spec.stage_names), mean=spec.mean, std=spec.std,
        proxy_train=sample_split(splits["train"], args.proxy_images, cfg["seed"]), proxy_val=splits["val"],
        calibration=[], batch_size=args.batch_size, threads=args.threads, hardware=hardware_fingerprint()["id"],
        cache=TimingCache(work / "latency.json"), workdir=work / "onnx", block_tables=work / "block_latency.json",
        timing={"warmup": cfg["bench.warmup"], "repeats": cfg["bench.repeats"], "budget_s": cfg["bench.budget_s"]})
    ctx.calibration = calibration_batches(splits["train"], ctx.normalize, min(cfg["deploy.calibration_images"],
                                                                              len(splits["train"])), cfg["seed"])
    return ctx, splits


def problem_of(ctx, args) -> dict:
    return {"arch": ctx.cfg["model.arch"], "weights": ctx.cfg["model.weights"], "classes": ctx.num_classes,
            "image_size": ctx.image_size, "train_images": len(ctx.proxy_train), "val_images": len(ctx.proxy_val),
            "batch_size": ctx.batch_size, "threads": ctx.threads, "hardware": ctx.hardware, "seed": ctx.cfg["seed"]}


def run_plan(args) -> int:
    from elimnet.config import params_from_args
    from elimnet.threads import set_threads
    from elimnet.plan.study import open_study, run_trials
    from elimnet.studies import check_same_problem

    _check_args(args)
    cfg = params_from_args(args)
    set_threads(args.threads)
    ctx, splits = make_context(args, cfg)
    storage = args.storage or f"sqlite:///{Path(args.work_dir) / 'plan.db'}"
    study = open_study(storage, args.study, cfg["seed"])
    check_same_problem(study, problem_of(ctx, args), "--study")
    ran = run_trials(ctx, study, args.trials, args.minutes, progress=args.progress)
    print(f"plan {args.study}: this run finished trials {ran}; {ctx.cache.measured} timed, the rest from the cache")
    if args.search_only:
        return 0
    from elimnet.plan.summary import summarize

    plan = summarize(ctx, study, args, splits, storage)
    from elimnet.plan.report import write_outputs

    paths = write_outputs(plan, args.out_dir)
    choice = plan.get("choice")
    print(f"choice: {choice['name']}, {choice['latency_ms']:.2f} ms ({choice['speedup_vs_full']:.2f}x), test "
          f"macro-F1 {choice['test_macro_f1']:.3f}\n{choice['command']}" if choice else "no candidate within budget")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from elimnet.errors import run_guarded

    return run_guarded(run_plan, build_parser().parse_args(argv))
