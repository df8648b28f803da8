"""The plan's Optuna study: maximise the accuracy proxy, minimise the deployed latency.

The study lives in an Optuna RDB storage (SQLite by default; PostgreSQL lets workers on several
machines join it). Heartbeats mark the trials of a killed worker failed without touching those of
live ones. A rerun with the same study resumes: only the trials missing up to `trials` run.
"""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from elimnet.config import Config
from elimnet.data.tensors import Normalizer, TensorSplit
from elimnet.errors import ConfigError
from elimnet.models.staged import StagedNet
from elimnet.plan.deployed import TimingCache, deployed_file, structure_key, time_deployed
from elimnet.plan.proxy import imprinted, proxy_macro_f1
from elimnet.plan.space import candidate_name, methods_of, suggest_overrides

DIRECTIONS = ("maximize", "minimize")  # proxy macro-F1, deployed latency (ms)
HEARTBEAT_S = 30


@dataclass
class PlanContext:
    """Everything a trial reads: the base config and model, data, and how to time."""
    cfg: Config
    base: StagedNet  # the pretrained 1000-class backbone
    data_dir: Path  # prepared splits (data-dependent LayerPrune criteria read them)
    num_classes: int
    image_size: int
    num_stages: int
    mean: tuple
    std: tuple
    proxy_train: TensorSplit
    proxy_val: TensorSplit
    calibration: list  # normalised float batches for INT8 ranges
    batch_size: int
    threads: int | None
    hardware: str
    cache: TimingCache
    workdir: Path
    block_tables: Path | None = None  # LayerPrune's own eager per-block tables, kept across trials
    timing: dict = field(default_factory=dict)  # warmup, repeats, budget_s
    _reference: Path | None = None

    def reference_file(self) -> Path:
        """The full model's fp32 file, exported on first use (a run whose timings all hit the cache needs none)."""
        if self._reference is None:
            full = self.build(self.cfg.replace(**all_off_params()))[1]
            self._reference = deployed_file(imprinted(full, self.proxy_train, self.normalize, self.num_classes),
                                            "fp32", self.workdir, "reference", self.image_size, self.calibration)
        return self._reference

    @property
    def normalize(self) -> Normalizer:
        return Normalizer(self.mean, self.std)

    def build(self, cfg: Config) -> tuple[StagedNet, StagedNet]:
        from elimnet.compress.build import build_candidate

        candidate, _, full = build_candidate(cfg, self.base, self.num_classes, self.data_dir,
                                             latency_table=self.block_tables)
        return candidate, full


def all_off_params() -> dict:
    from elimnet.compress.base import all_off

    return {**all_off(), "deploy.precision": "fp32"}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _rdb_storage(storage: str, attempts: int = 5):
    """Optuna's RDB storage; retried when another worker is creating the same schema at this moment."""
    import time

    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; we rely on them knowingly
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=4 * HEARTBEAT_S)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)


def open_study(storage: str, name: str, seed: int):
    """Create or load `name` in `storage`, with heartbeats and a sampler seeded for reproducible proposals."""
    import optuna

    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(storage=_rdb_storage(storage), study_name=name, directions=list(DIRECTIONS),
                                    load_if_exists=True)
    except ValueError as e:  # an existing study with other directions
        raise ConfigError(f"--study {name}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a bad URL surfaces as many SQLAlchemy/driver errors
        raise ConfigError(f"--storage {storage}: must be a reachable Optuna RDB URL such as sqlite:///plan.db or "
                          f"postgresql://user@host/db ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    # The same history gives the same proposals: a rerun (or a fresh study) replays its candidates.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=6)
    return study


def measure(ctx: PlanContext, model: StagedNet, precision: str, name: str,
            need_file: bool = True) -> tuple[Path | None, dict, bool]:
    """(deployed file, {latency_ms, reference_ms}, whether it was timed now) of one candidate.

    A cached timing needs no export unless the caller wants the file (the proxy scores it)."""
    key = ctx.cache.key(structure_key(model, ctx.image_size), precision, ctx.batch_size, ctx.threads, ctx.hardware)
    entry = ctx.cache.get(key)
    if entry is not None and not need_file:
        return None, entry, False
    path = deployed_file(model, precision, ctx.workdir, name, ctx.image_size, ctx.calibration)
    if entry is not None:
        return path, entry, False
    # Interleaved with the full model: the paired ratio survives machine drift, the ms don't.
    ms = time_deployed({"candidate": path, "reference": ctx.reference_file()}, ctx.batch_size, ctx.image_size,
                       ctx.threads, seed=ctx.cfg["seed"], **ctx.timing)
    entry = {"latency_ms": ms["candidate"], "reference_ms": ms["reference"]}
    ctx.cache.put(key, entry)
    return path, entry, True


def objective(ctx: PlanContext, trial) -> tuple[float, float]:
    import optuna

    from elimnet.bench.model_size import count_macs
    from elimnet.models import count_params

    overrides = suggest_overrides(trial, ctx.num_stages)
    try:
        cfg = ctx.cfg.replace(**overrides)
        candidate, _ = ctx.build(cfg)
    except (ConfigError, ValueError) as e:  # a combination the compressions refuse (e.g. more blocks than left)
        trial.set_user_attr("invalid", str(e).splitlines()[0][:300])
        raise optuna.TrialPruned(str(e)) from None
    model = imprinted(candidate, ctx.proxy_train, ctx.normalize, ctx.num_classes)
    path, entry, timed = measure(ctx, model, overrides["deploy.precision"], f"trial{trial.number}")
    f1 = proxy_macro_f1(path, ctx.proxy_val, ctx.normalize, ctx.num_classes, ctx.threads)
    flat = cfg.flat()
    attrs: dict[str, Any] = {"overrides": overrides, "name": candidate_name(flat), "methods": methods_of(flat),
                             "params": count_params(candidate), "macs": count_macs(candidate, ctx.image_size),
                             "latency_ms": entry["latency_ms"], "reference_ms": entry["reference_ms"],
                             "ratio": entry["latency_ms"] / entry["reference_ms"], "timed_now": timed,
                             "worker": worker_id()}
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    for f in ctx.workdir.glob(f"trial{trial.number}.*onnx"):  # only the timing is kept
        f.unlink()
    return f1, float(entry["latency_ms"])


def run_trials(ctx: PlanContext, study, trials: int, minutes: float | None, progress: bool = True) -> list[int]:
    """Run trials until the study holds `trials` finished ones or `minutes` pass; the numbers this process ran."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState
    from tqdm import tqdm

    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    remaining = max(0, trials - done)
    ran: list[int] = []
    if not remaining:
        return ran
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.manual_seed(ctx.cfg["seed"])
    bar = tqdm(total=remaining, desc=f"plan {study.study_name}", unit="trial", disable=not progress)

    def after(study_, trial) -> None:
        ran.append(trial.number)
        bar.update(1)
        if trial.state == TrialState.COMPLETE:
            a = trial.user_attrs
            bar.write(f"trial {trial.number}: {a['name']}: proxy macro-F1 {trial.values[0]:.3f}, "
                      f"{a['latency_ms']:.2f} ms ({a['ratio']:.2f} x full){'' if a['timed_now'] else ' cached'}")

    # Workers sharing a study stop together once it holds `trials` finished ones.
    study.optimize(lambda t: objective(ctx, t), n_trials=remaining, timeout=minutes * 60 if minutes else None,
                   catch=(RuntimeError,), callbacks=[MaxTrialsCallback(trials, states=finished), after])
    bar.close()
    return ran
