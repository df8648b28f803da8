"""The plan's search space: compression params of the registry plus the deployed precision.

Every searched key is a param some registered compression declares (compress/base.py), so a
candidate is nothing but `-S` overrides: the main pipeline rebuilds it with `dvc exp run -S ...`.
Values are a few categorical levels rather than ranges: each distinct structure costs one export
and one timing, and the cache (plan/deployed.py) only helps when structures repeat.
"""
from __future__ import annotations

from elimnet.compress.base import TRANSFORMS, ordered

PRUNE_KS = (0, 1, 2, 3, 4, 6)
PRUNE_CRITERIA = ("l1", "bn", "imprint")  # weight-only, BN-only and the data-driven ICIP proxy
DIET_GROUPS = (1, 2, 4)
FILTER_RATIOS = (0.0, 0.25, 0.5)
PRECISIONS = ("fp32", "int8")
PRECISION_KEY = "deploy.precision"


def max_elim(num_stages: int) -> int:
    """Keep at least two stages: removing more leaves a stem-sized net that imprints near chance."""
    return max(0, num_stages - 2)


def searched_keys() -> list[str]:
    keys = ["model.elim", "model.prune.k", "model.prune.criterion", "model.diet.groups", "model.filter.ratio"]
    declared = {k for t in TRANSFORMS.values() for k in t.params}
    missing = [k for k in keys if k not in declared]
    if missing:  # a compression renamed its params: the plan must follow, not silently search nothing
        raise RuntimeError(f"plan: no registered compression declares {missing}")
    return keys + [PRECISION_KEY]


def suggest_overrides(trial, num_stages: int) -> dict:
    """One candidate: param key -> value (LayerPrune's criterion only when it removes blocks)."""
    searched_keys()
    out = {"model.elim": trial.suggest_int("model.elim", 0, max_elim(num_stages)),
           "model.prune.k": trial.suggest_categorical("model.prune.k", PRUNE_KS)}
    if out["model.prune.k"]:
        out["model.prune.criterion"] = trial.suggest_categorical("model.prune.criterion", PRUNE_CRITERIA)
    out["model.diet.groups"] = trial.suggest_categorical("model.diet.groups", DIET_GROUPS)
    out["model.filter.ratio"] = trial.suggest_categorical("model.filter.ratio", FILTER_RATIOS)
    out[PRECISION_KEY] = trial.suggest_categorical(PRECISION_KEY, PRECISIONS)
    return out


def methods_of(flat: dict) -> list[str]:
    """Registered compressions that are on for these params, in composition order (+ "int8")."""
    on = [t.name for t in ordered() if t.off is not None and not t.is_off(flat)]
    return on + (["int8"] if flat.get(PRECISION_KEY) == "int8" else [])


def candidate_name(flat: dict) -> str:
    """"Elim 2 + LayerPrune k=3 (l1) int8" from the registry's report labels; "full" when nothing is on."""
    labels = [t.label(flat) for t in ordered() if t.off is not None and t.label and not t.is_off(flat)]
    name = " + ".join(label for label in labels if label) or "full"
    return f"{name} int8" if flat.get(PRECISION_KEY) == "int8" else name


def reproduce_command(overrides: dict) -> str:
    """The `dvc exp run` that builds, finetunes and exports this candidate in the main pipeline.

    Every searched key is set, not just those off their default, so params.yaml cannot change it."""
    full = {k: overrides.get(k, _off_value(k)) for k in searched_keys()}
    sets = " ".join(f"-S '{k}={_yaml_value(v)}'" for k, v in full.items())
    return f"dvc exp run {sets}"


def _off_value(key: str):
    if key == PRECISION_KEY:
        return "fp32"
    from elimnet.config import schema

    for t in TRANSFORMS.values():
        if t.off and key in t.off:
            return t.off[key]
    return schema()[key].default


def _yaml_value(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
