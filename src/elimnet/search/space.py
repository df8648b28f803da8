"""The search space: the seed 002 skeleton (5 stages, fixed strides) with free depth, width,
expansion, kernels, SE and head width. A genome is plain JSON that `searched_mbconv` builds.
"""
from __future__ import annotations

from elimnet.models.simple_effnet import NUM_STAGES, SEED_GENOME

MAX_REPEATS = SEED_GENOME["repeats"]  # depth per stage: 0 .. the seed's repeats (only shrinks)
WIDTH_MULTS = (0.5, 0.75, 1.0)
EXPANDS = (2, 4, 6)
KERNELS = (3, 5)
HEADS = (640, 1280)


def _round8(x: float) -> int:
    return max(8, int(x / 8 + 0.5) * 8)  # half up: 0.5 x 40 -> 24


def genome_from_params(p: dict) -> dict:
    """Optuna's sampled values -> a genome build_simple_effnet accepts."""
    return {
        "widths": [_round8(w * p["width"]) for w in SEED_GENOME["widths"]],
        "repeats": [p[f"repeats{i}"] for i in range(NUM_STAGES)],
        "strides": list(SEED_GENOME["strides"]),
        "expand": [p["expand"]] * NUM_STAGES,
        "kernel": [p[f"kernel{i}"] for i in range(NUM_STAGES)],
        "se": p["se"],
        "head": p["head"],
        "depthwise": True,
    }


def suggest_genome(trial) -> dict:
    params = {f"repeats{i}": trial.suggest_int(f"repeats{i}", 0, MAX_REPEATS[i]) for i in range(NUM_STAGES)}
    params["width"] = trial.suggest_categorical("width", WIDTH_MULTS)
    params["expand"] = trial.suggest_categorical("expand", EXPANDS)
    params.update({f"kernel{i}": trial.suggest_categorical(f"kernel{i}", KERNELS) for i in range(NUM_STAGES)})
    params["se"] = trial.suggest_categorical("se", (False, True))
    params["head"] = trial.suggest_categorical("head", HEADS)
    return genome_from_params(params)
