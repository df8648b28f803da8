"""metrics/structure.json: the full model next to the candidate, and what each compression step did."""
from __future__ import annotations

from elimnet.compress.build import describe
from elimnet.models import get_spec

# Spec entries that are replay data, not something to read (torch-pruning's index history),
# or that have their own file (LayerPrune's importance -> layer_importance.json).
_BULKY_SPEC_KEYS = {"history", "importance"}


def _step_view(step: dict) -> dict:
    spec = {k: v for k, v in step["spec"].items() if k not in _BULKY_SPEC_KEYS}
    return {"name": step["name"], **spec, **{k: v for k, v in step["report"].items() if k not in step["spec"]}}


def structure_record(arch: str, weights: str, size: int, full, candidate, steps: list[dict]) -> dict:
    """Params, MACs, layers and stages of both models, the removed stages and head, the steps, the ratios."""
    full_d, cand_d = describe(full, arch, size), describe(candidate, arch, size)
    kept = {s["name"] for s in cand_d["stages"]}
    return {
        "arch": arch, "weights": weights, "image_size": size,
        "full": full_d, "candidate": cand_d,
        "removed_stages": [n for n in get_spec(arch).stage_names if n not in kept],
        "removed_head": full_d["head"] and not cand_d["head"],
        "steps": [_step_view(s) for s in steps],
        "ratios": {"params": cand_d["params"] / full_d["params"], "macs": cand_d["macs"] / full_d["macs"],
                   "layers": cand_d["layers"] / full_d["layers"]},
    }
