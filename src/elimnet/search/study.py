"""The NAS search: an Optuna multi-objective study over `searched_mbconv` genomes.

Objectives: maximise val macro-F1 (after `search.epochs` of the normal finetune recipe),
minimise parameters and measured CPU latency (batch 1, median). The study lives in an
Optuna RDB storage (SQLite by default), so rerunning with the same `search.study` resumes
it: only the missing trials up to `search.trials` run, within `search.minutes`.

Every completed trial saves its model beside the export (the normal `{config, state_dict}`
file; config carries the genome as `arch_args`); files of dominated trials are deleted. The
exported "best" model is the Pareto-front trial with the highest val macro-F1 (ties: fewer
params, then lower latency), so it flows into finetune / evaluate / benchmark unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from elimnet.bench.latency import measure_latency
from elimnet.bench.model_size import count_macs
from elimnet.checkpoint import load_checkpoint, model_config, save_model
from elimnet.compress import TRANSFORMS
from elimnet.config import Config
from elimnet.data.prepare import load_meta, load_prepared
from elimnet.errors import ConfigError, StageError
from elimnet.io import torch_save, write_json
from elimnet.models import count_params, create_model, get_spec
from elimnet.search.space import suggest_genome
from elimnet.search.tracking import SearchTracker
from elimnet.studies import check_same_problem
from elimnet.train.finetune import TrainRecipe, finetune

ARCH = "searched_mbconv"
DIRECTIONS = ("maximize", "minimize", "minimize")  # val macro-F1, params, latency ms
OBJECTIVES = ("val_macro_f1", "params", "latency_ms")


def _open_study(cfg: Config):
    import optuna

    storage, name = cfg["search.storage"], cfg["search.study"]
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=list(DIRECTIONS),
                                    load_if_exists=True)
    except ValueError as e:  # e.g. an existing study with other directions
        raise ConfigError(f"search.study={name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a bad URL surfaces as many SQLAlchemy/import errors
        raise ConfigError(f"search.storage={storage}: must be a reachable Optuna RDB URL such as "
                          f"sqlite:///optuna.db ({type(e).__name__}: {e})") from None
    # Seed with the trial count so a resumed study does not replay the first random genomes.
    study.sampler = optuna.samplers.TPESampler(seed=cfg["seed"] + len(study.trials), n_startup_trials=8)
    return study


def _fail_stale_running(study) -> int:
    """Trials left RUNNING by a killed run never finish: mark them failed so the study is honest."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def pick_best(trials):
    """Highest val macro-F1 on the Pareto front; ties: fewer params, then lower latency."""
    return max(trials, key=lambda t: (t.values[0], -t.values[1], -t.values[2]))


def trial_path(trials_dir: str | Path, number: int) -> Path:
    return Path(trials_dir) / f"trial_{number:04d}.pt"


def _trial_objective(cfg: Config, study_name: str, data: dict, classes: list, size: int, recipe: TrainRecipe,
                     trials_dir: Path, tracker: SearchTracker, bar) -> Callable:
    """One trial: a sampled genome trained from scratch, scored on val macro-F1, params and latency."""
    spec = get_spec(ARCH)

    def objective(trial) -> tuple[float, float, float]:
        genome = suggest_genome(trial)
        trial.set_user_attr("genome", genome)
        torch.manual_seed(cfg["seed"])
        model, _ = TRANSFORMS["classifier"].apply(create_model(ARCH, arch_args=genome), num_classes=len(classes))
        result = finetune(model, data["train"], data["val"], recipe, mean=spec.mean, std=spec.std,
                          num_classes=len(classes), progress=False)
        model.load_state_dict(result.best_state)
        best = result.history[result.best_epoch - 1]
        f1, params = float(best["val_macro_f1"]), count_params(model)
        lat = measure_latency({"m": model}, 1, size, warmup=cfg["bench.warmup"], repeats=cfg["bench.repeats"],
                              budget_s=cfg["bench.budget_s"], channels_last=recipe.channels_last,
                              seed=cfg["seed"])["m"]["median_ms"]
        macs = count_macs(model, size)
        trial.set_user_attr("macs", macs)
        trial.set_user_attr("val_acc", float(best["val_acc"]))
        trial.set_user_attr("best_epoch", result.best_epoch)
        config = model_config(ARCH, steps=[{"name": "classifier", "spec": {"num_classes": len(classes)}}],
                              arch_args=genome, weights="none", num_classes=len(classes), classes=classes,
                              image_size=size, search={"study": study_name, "trial": trial.number,
                                                       "val_macro_f1": f1, "params": params, "latency_ms": lat,
                                                       "macs": macs})
        save_model(trial_path(trials_dir, trial.number), model, config)
        flat = {"widths": genome["widths"], "head": genome["head"], "se": genome["se"], "expand": genome["expand"][0],
                **trial.params}
        tracker.log_trial(trial.number, flat, {"val_macro_f1": f1, "val_acc": float(best["val_acc"]),
                                               "params": params, "latency_ms": lat, "macs": macs})
        bar.write(f"trial {trial.number}: val macro-F1 {f1:.4f}, {params:,} params, {lat:.2f} ms, "
                  f"{macs:,} MACs")
        return f1, float(params), lat

    return objective


def _keep_front(study, complete: list, trials_dir: Path, out: Path):
    """Save the picked trial's model as `out` and delete the dominated trials' files; return the pick."""
    front = study.best_trials
    best = pick_best(front)
    on_front = {t.number for t in front}
    for t in complete:  # a dominated trial stays dominated: its file is never needed again
        if t.number not in on_front:
            trial_path(trials_dir, t.number).unlink(missing_ok=True)
    best_file = trial_path(trials_dir, best.number)
    if not best_file.exists():
        raise StageError(f"{best_file}: the best trial's model is missing (trials dir moved?); "
                         f"rerun with a new search.study")
    torch_save(out, load_checkpoint(best_file))
    return best


def _trial_row(t) -> dict:
    return {"trial": t.number, **dict(zip(OBJECTIVES, t.values)), "macs": t.user_attrs.get("macs"),
            "val_acc": t.user_attrs.get("val_acc"), "genome": t.user_attrs.get("genome")}


def run_search(cfg: Config, data_dir: str | Path, out: str | Path, metrics_path: str | Path,
               trials_dir: str | Path | None = None, progress: bool = True) -> dict:
    import optuna
    from optuna.trial import TrialState

    from elimnet.threads import set_threads
    from elimnet.track import tracking_uri

    set_threads(cfg["train.threads"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from us
    out = Path(out)
    trials_dir = Path(trials_dir) if trials_dir else out.with_name(out.stem + "_trials")
    meta = load_meta(data_dir)
    classes, size = meta["classes"], meta["image_size"]
    data = load_prepared(data_dir, ("train", "val"))
    recipe = TrainRecipe.from_config(cfg)
    recipe.epochs, recipe.kd_alpha = cfg["search.epochs"], 0.0

    study = _open_study(cfg)
    check_same_problem(study, {"classes": classes, "image_size": size, "train_images": len(data["train"]),
                               "val_images": len(data["val"]), "epochs": recipe.epochs, "seed": cfg["seed"],
                               "lr": recipe.lr, "batch_size": recipe.batch_size}, "search.study")
    stale = _fail_stale_running(study)
    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    remaining = max(0, cfg["search.trials"] - done)

    tracker = SearchTracker(tracking_uri(cfg), cfg["mlflow.experiment"], cfg["search.study"],
                            enabled=cfg["mlflow.enabled"])
    tracker.start({**{f"search.{k}": v for k, v in cfg.section("search").items()},
                   "data.name": cfg["data.name"], "image_size": size, "classes": len(classes)})
    bar = tqdm(total=remaining, desc=f"search {cfg['search.study']}", unit="trial", disable=not progress)
    if remaining:
        objective = _trial_objective(cfg, cfg["search.study"], data, classes, size, recipe, trials_dir, tracker, bar)
        timeout = cfg["search.minutes"] * 60 if cfg["search.minutes"] else None
        study.optimize(objective, n_trials=remaining, timeout=timeout, catch=(RuntimeError,),
                       callbacks=[lambda s, t: bar.update(1)])
    bar.close()

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise StageError(f"search {cfg['search.study']}: no trial completed (search.minutes too small?)")
    best = _keep_front(study, complete, trials_dir, out)
    summary = {"study": cfg["search.study"], "storage": cfg["search.storage"],
               "trials_complete": len(complete), "trials_run_now": len(complete) - done,
               "trials_failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
               "stale_marked_failed": stale, "best": _trial_row(best),
               "pareto": [_trial_row(t) for t in study.best_trials], "model": str(out)}
    tracker.finish({f"best.{k}": v for k, v in _trial_row(best).items() if isinstance(v, (int, float))})
    write_json(metrics_path, summary)
    return summary
