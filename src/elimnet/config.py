"""params.yaml + `-S key=value` overrides -> one validated config.

Every parameter, its default and what it allows is a Field: the core keys in CORE below, and each
extension's section (compressions, backends, criteria, data sources, model families) declared where
the extension registers, collected in elimnet.extensions; schema() joins them. This module imports
no extension: the schema discovers them on first use. Every "bad value" message in the project
comes from validate():

    model.elim=9: must be an integer in [0, 6] for arch efficientnet_lite0 (7 stages)
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from elimnet import errors, extensions
from elimnet.deploy.artifacts import PRECISIONS  # a leaf: the precisions and their artifact files
from elimnet.errors import ConfigError
from elimnet.fields import Field, int_list, int_range, is_bool, is_str, num_range, one_of


def _arch(v):  # a registered arch or <a family's prefix><name>, e.g. timm/<name>
    from elimnet.models import check_arch  # lazy: the model registry imports torch
    return check_arch(v)


def _sources():
    extensions.discover()
    return extensions.names("source")


# ----------------------------------------------------------------------------- schema
# The true core keys: every run reads them whatever extensions it uses. Extension keys (bench.ort,
# data.variant, model.block, model.prune.* ...) are declared by their modules (elimnet.extensions).
CORE: dict[str, Field] = {
    "seed": Field(42, int_range(0), "training seed: init of new layers, training order, flips, bootstrap"),
    # data ---------------------------------------------------------------------------
    "data.name": Field("elpv", one_of(_sources), "data source"),
    "data.root": Field("data/raw", is_str(), "download cache for online sources"),
    "data.download_timeout_s": Field(3600.0, num_range(0.0, optional=True, lo_open=True),
                                     "total time one file's download may take, retries included (null = none)"),
    "data.image_size": Field(96, int_range(16, 1024), "side of the cached square uint8 images"),
    "data.val_fraction": Field(0.15, num_range(0.0, 0.5, lo_open=True), "validation share"),
    "data.test_fraction": Field(0.15, num_range(0.0, 0.5, lo_open=True), "test share (unused with data.folds)"),
    "data.split_seed": Field(42, int_range(0), "seed of the train/val/test split, the folds and data.max_per_class's "
                             "subset (repeats vary the training, this varies the split)"),
    "data.folds": Field(5, int_range(0), "0 = one fixed split (repeats train on it); K >= 3 = K-fold cross-"
                        "validation, repeat r tests on fold r (train.repeats must equal K)"),
    "data.max_per_class": Field(None, int_range(3, optional=True),
                                "cap images per class (deterministic subset) for quick runs"),
    # model --------------------------------------------------------------------------
    "model.arch": Field("efficientnet_lite0", _arch, "backbone (or timm/<name>)"),
    "model.weights": Field("imagenet", one_of(["imagenet", "none"]), "pretrained or random init"),
    # train --------------------------------------------------------------------------
    "train.epochs": Field(9, int_range(1), "finetuning epochs"),
    "train.batch_size": Field(32, int_range(1), "training batch size"),
    "train.lr": Field(0.01, num_range(0.0, lo_open=True), "peak learning rate"),
    "train.optimizer": Field("sgd", one_of(["sgd", "adamw"]), "optimizer"),
    "train.momentum": Field(0.9, num_range(0.0, 1.0), "SGD momentum"),
    "train.weight_decay": Field(5e-5, num_range(0.0), "weight decay"),
    "train.label_smoothing": Field(0.0, num_range(0.0, 0.5), "cross-entropy label smoothing"),
    "train.warmup_epochs": Field(0, int_range(0), "linear LR warm-up epochs before cosine decay"),
    "train.freeze_stages": Field(3, int_range(0), "the stem and this many early stages keep their ImageNet weights "
                                 "and BN statistics: no backward through them (faster steps); a model with fewer "
                                 "stages freezes them all; model.weights=none freezes nothing"),
    "train.ema": Field(0.0, num_range(0.0, 0.9999), "decay per step of an exponential moving average "
                       "of the weights, which validation picks from and the stage saves (0 = off)"),
    "train.hflip": Field(True, is_bool, "random horizontal flips"),
    "train.vflip": Field(True, is_bool, "random vertical flips"),
    "train.channels_last": Field(True, is_bool, "NHWC memory format (faster on CPU)"),
    "train.threads": Field(None, int_range(1, optional=True), "torch CPU threads (null = torch default)"),
    "train.eval_batch_size": Field(128, int_range(1), "evaluation batch size"),
    "train.bootstrap": Field(1000, int_range(1000), "bootstrap resamples of the test images for 95% CIs "
                             "(evaluate, report; seeded by `seed`)"),
    "train.kd.alpha": Field(0.0, num_range(0.0, 1.0), "distillation weight (0 = plain finetune)"),
    "train.kd.temperature": Field(4.0, num_range(0.0, lo_open=True), "distillation temperature"),
    "train.distributed": Field(1, int_range(1), "processes for torchrun DDP (1 = single process)"),
    # train: resumable finetune (elimnet.train.resume), class imbalance, allocator ---
    "train.checkpoint_dir": Field("auto", is_str(optional=True),
                                  "per-epoch resume checkpoints: auto (.dvc/tmp/elimnet/finetune inside a DVC "
                                  "repo), a folder, or null (off)"),
    "train.class_weights": Field("none", one_of(["balanced", "none"]),
                                 "cross-entropy class weights: balanced = n / (classes * n_class) of the train split"),
    "train.sampler": Field("balanced", one_of(["balanced", "none"]),
                           "training order: balanced = draw images with replacement, each class equally often"),
    "train.keep_freed_memory": Field(True, is_bool, "glibc keeps freed activations while training (faster "
                                                     "steps; see elimnet.bench.allocator)"),
    # train: repeated training (finetune/evaluate/export per repeat, pooled by the report) -------------
    "train.repeats": Field(5, int_range(1), "training repeats per model (seed + 1000 r; with data.folds, repeat r "
                           "is fold r); 1 = one run, no verdict (training variance not measured)"),
    "train.repeat_ids": Field([0, 1, 2, 3, 4], int_list(0), "the repeats as the list dvc.yaml expands: must be "
                              "[0, 1, ..., train.repeats-1]"),
    # bench --------------------------------------------------------------------------
    "bench.batch_sizes": Field([1, 8, 64], int_list(1), "latency batch sizes"),
    "bench.warmup": Field(3, int_range(0), "warm-up iterations per batch size"),
    "bench.repeats": Field(20, int_range(1), "timed iterations per batch size (max)"),
    "bench.budget_s": Field(3.0, num_range(0.0, lo_open=True), "time budget per model and batch size"),
    "bench.threads": Field(None, int_range(1, optional=True), "torch CPU threads (null = all cores)"),
    "bench.keep_freed_memory": Field(True, is_bool, "glibc keeps freed activations instead of page-faulting "
                                                     "them in again every pass (see elimnet.bench.allocator)"),
    # deploy (export stage, elimnet.deploy) and benchmark noise --------------------
    "deploy.precision": Field("fp32", one_of(list(PRECISIONS)),
                              "exported artifacts: fp32 ONNX, or fp32 + static INT8 QDQ ONNX"),
    "deploy.calibration_images": Field(128, int_range(1), "train images that set the INT8 activation ranges"),
    "deploy.calibration": Field("auto", one_of(["auto", "minmax", "entropy", "percentile"]),
                                "INT8 calibration method; auto = the best of all three on the val split"),
    "bench.noisy_cv": Field(0.2, num_range(0.0, lo_open=True),
                            "a timing whose CV stays above this after its budget is flagged noisy"),
    # search (optional NAS stage, elimnet.search) -----------------------------------
    "search.trials": Field(20, int_range(1), "completed trials the study should hold (resumes count)"),
    "search.minutes": Field(30.0, num_range(0.0, optional=True, lo_open=True),
                            "wall-clock budget of one search run (null = trials only)"),
    "search.epochs": Field(2, int_range(1), "training epochs per trial"),
    "search.study": Field("elimnet-search", is_str(), "Optuna study name (same name = resume)"),
    "search.storage": Field("sqlite:///optuna.db", is_str(), "Optuna RDB storage URL"),
    # tracking -----------------------------------------------------------------------
    "mlflow.tracking_uri": Field("sqlite:///mlflow.db", is_str(), "MLflow store (MLFLOW_TRACKING_URI wins)"),
    "mlflow.experiment": Field("elimnet", is_str(), "MLflow experiment name"),
    "mlflow.enabled": Field(True, is_bool, "log to MLflow in the report stage"),
}

_SCHEMA: dict[str, Field] = {}


def schema() -> dict[str, Field]:
    """Every parameter: the core keys plus each registered extension's section (built once)."""
    if not _SCHEMA:
        extensions.discover()
        merged = dict(CORE)
        for ext in extensions.declared():
            clash = set(ext.params) & set(merged)
            if clash:
                raise ValueError(f"{ext.kind} {ext.name} declares params that exist already: {sorted(clash)}")
            merged.update(ext.params)
        # params.yaml's order: core groups first (an extension's new group last), extension keys after
        # their group's core keys.
        groups = list(dict.fromkeys(k.split(".")[0] for k in CORE))

        def group_index(key: str) -> int:
            group = key.split(".")[0]
            return groups.index(group) if group in groups else len(groups)
        _SCHEMA.update(sorted(merged.items(), key=lambda kv: group_index(kv[0])))
    return _SCHEMA


def __getattr__(name: str):  # `config.SCHEMA` stays available, built on first use
    if name == "SCHEMA":
        return schema()
    raise AttributeError(name)


def _map_keys() -> set[str]:
    """Keys whose value is a mapping: their children are data, not schema keys."""
    return {k for k, f in schema().items() if isinstance(f.default, dict)}


# ----------------------------------------------------------------------------- config
class Config:
    """Validated parameters. `cfg["model.elim"]` or `cfg.section("model")` (nested dict)."""

    def __init__(self, flat: dict[str, Any]):
        self._flat = dict(flat)

    def __getitem__(self, key: str) -> Any:
        if key not in self._flat:
            raise KeyError(f"unknown parameter {key!r}")
        return copy.deepcopy(self._flat[key])

    def flat(self) -> dict[str, Any]:
        return copy.deepcopy(self._flat)

    def nested(self) -> dict[str, Any]:
        return unflatten(self._flat)

    def section(self, prefix: str) -> dict[str, Any]:
        return self.nested().get(prefix, {})

    def replace(self, **dotted: Any) -> "Config":
        """A new validated config with some values changed: cfg.replace(**{"model.elim": 3})."""
        flat = self.flat()
        flat.update(dotted)
        return validate(flat)

    def __repr__(self) -> str:
        return f"Config({self._flat})"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in _map_keys():
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, v in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = copy.deepcopy(v)
    return tree


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, schema(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see params.yaml for the allowed keys"
    return ConfigError(f"{key}: unknown parameter{hint}")


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars, as DVC's ruamel reads params.yaml: `1e-3` is a float, only true/false are booleans
    (PyYAML's YAML 1.1 reads `1e-3` as a string and `yes`/`on` as true)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def yaml_load(text: str):
    """Parse params text with YAML 1.2 scalars (see _Loader)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """`-S key=value` strings (DVC's syntax) -> {key: yaml-parsed value}."""
    out: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{item!r}: an override must look like key=value, e.g. model.elim=3")
        if key not in schema():
            raise _unknown_key(key)
        try:
            out[key] = yaml_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def validate(flat: dict[str, Any]) -> Config:
    values = {k: copy.deepcopy(f.default) for k, f in schema().items()}
    for key, v in flat.items():
        if key not in schema():
            raise _unknown_key(key)
        values[key] = v
    for key, f in schema().items():
        allowed = f.check(values[key])
        if allowed:
            raise ConfigError(f"{key}={_show(values[key])}: must be {allowed}")
    _cross_checks(values)
    return Config(values)


def _cross_checks(v: dict[str, Any]) -> None:
    """The extensions' cross-checks, families first (they may normalise model.arch), then the core's."""
    for ext in extensions.declared("family"):
        if ext.check is not None:
            ext.check(v)
    _core_checks(v)
    for ext in extensions.declared():
        if ext.kind != "family" and ext.check is not None:
            ext.check(v)


def _core_checks(v: dict[str, Any]) -> None:
    from elimnet.models import get_spec  # lazy: the model registry imports torch

    spec = get_spec(v["model.arch"])
    if v["model.weights"] == "imagenet" and not spec.has_pretrained:
        raise ConfigError(f"model.weights=imagenet: arch {spec.name} has no pretrained weights; "
                          f"must be none")
    if v["data.val_fraction"] + v["data.test_fraction"] >= 0.9:
        raise ConfigError(f"data.val_fraction+data.test_fraction="
                          f"{v['data.val_fraction'] + v['data.test_fraction']:g}: must be < 0.9")
    _folds_check(v)
    if v["train.repeat_ids"] != list(range(v["train.repeats"])):
        want = list(range(v["train.repeats"]))
        raise ConfigError(f"train.repeat_ids={_show(v['train.repeat_ids'])}: must be {_show(want)} for "
                          f"train.repeats={v['train.repeats']} (DVC expands the stages over this list; set both)")


def _folds_check(v: dict[str, Any]) -> None:
    folds = v["data.folds"]
    if folds in (1, 2):
        raise ConfigError(f"data.folds={folds}: must be 0 (one fixed split) or >= 3 (K-fold cross-validation)")
    if folds and v["train.repeats"] != folds:
        raise ConfigError(f"data.folds={folds} and train.repeats={v['train.repeats']}: must be equal (repeat r "
                          f"trains and tests on fold r; set train.repeats={folds} and train.repeat_ids="
                          f"{_show(list(range(folds)))})")


def _show(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def load_params(path: str | Path | None = "params.yaml", overrides: Iterable[str] = ()) -> Config:
    """Read a params file (missing keys take their defaults), apply -S overrides, validate.

    A missing file means the defaults (elimnet commands outside a repo; hermetic tests); the command
    line refuses a missing file that the user named (params_from_args).
    """
    tree = {}
    path = Path(path) if path is not None else Path("params.yaml")
    if path.exists():
        try:
            tree = yaml_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(e, "problem", None) or errors.one_line(e)
            raise ConfigError(f"{where}: YAML syntax error ({problem}); fix the file") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: must hold a mapping of parameter groups")
    flat = flatten(tree)
    flat.update(parse_overrides(overrides))
    return validate(flat)


def defaults(overrides: Iterable[str] = ()) -> Config:
    """The schema's defaults with `-S`-style overrides: no params file read."""
    return validate(parse_overrides(overrides))


def params_from_args(args) -> Config:
    """The Config an entry point's `--params`/`-S` arguments describe (see add_params_arguments)."""
    if args.params is not None and not Path(args.params).exists():  # os.devnull: no file, the defaults
        raise ConfigError(f"--params {args.params}: no such file (omit --params to use ./params.yaml or the defaults)")
    return load_params(args.params if args.params is not None else "params.yaml", args.overrides)


def add_params_arguments(parser) -> None:
    """`--params FILE` and repeatable `-S key=value`, as every elimnet entry point takes them."""
    parser.add_argument("--params", default=None,
                        help="params file (default: ./params.yaml when present, else the defaults)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param, as in `dvc exp run -S` (repeatable)")
