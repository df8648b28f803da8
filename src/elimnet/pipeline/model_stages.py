"""pretrained and compress: materialise the backbone's weights, then build the candidate."""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.errors import StageError
from elimnet.checkpoint import load_model, model_config, save_model
from elimnet.compress.build import build_candidate, describe
from elimnet.bench.block_table import ensure_latency_file
from elimnet.compress.layerprune import importance_file
from elimnet.config import Config
from elimnet.data.prepare import load_meta
from elimnet.io import write_json
from elimnet.models import create_model, get_spec
from elimnet.models.registry import params_arch_args


def run_pretrained(cfg: Config, out: str | Path) -> dict:
    arch, weights = cfg["model.arch"], cfg["model.weights"]
    torch.manual_seed(cfg["seed"])  # "empty" models: the same random init every run
    arch_args = params_arch_args(arch, cfg)  # e.g. model.experts for simple_effnet_condconv
    model = create_model(arch, pretrained=weights == "imagenet", cache_dir=Path(cfg["data.root"]) / "weights",
                         arch_args=arch_args)
    config = model_config(arch, steps=[], weights=weights, num_classes=1000)
    if arch_args:
        config["arch_args"] = arch_args
    save_model(out, model, config)
    return config


# Spec entries that are replay data, not something to read (torch-pruning's index history),
# or that have their own file (LayerPrune's importance -> layer_importance.json).
_BULKY_SPEC_KEYS = {"history", "importance"}


def _step_view(step: dict) -> dict:
    spec = {k: v for k, v in step["spec"].items() if k not in _BULKY_SPEC_KEYS}
    return {"name": step["name"], **spec, **{k: v for k, v in step["report"].items() if k not in step["spec"]}}


def run_compress(cfg: Config, pretrained: str | Path, data_dir: str | Path, out: str | Path,
                 structure_path: str | Path) -> dict:
    meta = load_meta(data_dir)
    base, base_conf = load_model(pretrained)
    arch = base_conf["arch"]
    if arch != cfg["model.arch"]:
        raise StageError(f"{pretrained} holds {arch} but model.arch={cfg['model.arch']}: rerun the pretrained stage")
    size = cfg["data.image_size"]
    latency_path = Path(structure_path).with_name("block_latency.json")  # LayerPrune's persisted timing table
    candidate, steps, full = build_candidate(cfg, base, len(meta["classes"]), data_dir, latency_table=latency_path)
    spec = get_spec(arch)
    full_d, cand_d = describe(full, arch, size), describe(candidate, arch, size)
    kept = {s["name"] for s in cand_d["stages"]}
    structure = {
        "arch": arch, "weights": base_conf.get("weights", "imagenet"), "image_size": size,
        "full": full_d, "candidate": cand_d,
        "removed_stages": [n for n in spec.stage_names if n not in kept],
        "removed_head": full_d["head"] and not cand_d["head"],
        "steps": [_step_view(s) for s in steps],
        "ratios": {"params": cand_d["params"] / full_d["params"], "macs": cand_d["macs"] / full_d["macs"],
                   "layers": cand_d["layers"] / full_d["layers"]},
    }
    config = model_config(arch, steps=[{"name": s["name"], "spec": s["spec"]} for s in steps],
                          weights=base_conf.get("weights", "imagenet"), num_classes=len(meta["classes"]),
                          classes=meta["classes"], image_size=size)
    if base_conf.get("arch_args"):  # a searched genome (elimnet.search) is part of the architecture
        config["arch_args"] = base_conf["arch_args"]
    save_model(out, candidate, config)
    write_json(structure_path, structure)
    # Always written (empty candidates when LayerPrune is off) so the DVC output exists.
    write_json(Path(structure_path).with_name("layer_importance.json"), importance_file(steps))
    ensure_latency_file(latency_path)
    return structure
