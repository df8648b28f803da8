"""compress: the pretrained model + model.* -> the candidate (models/candidate_init.pt) and metrics/structure.json."""
from __future__ import annotations

from pathlib import Path

from elimnet.checkpoint import load_model, model_config, save_model
from elimnet.compress.build import build_candidate
from elimnet.bench.block_table import ensure_latency_file
from elimnet.compress.layerprune import importance_file
from elimnet.config import Config
from elimnet.data.prepare import load_meta
from elimnet.errors import StageError
from elimnet.io import write_json
from elimnet.report.structure import structure_record


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
    structure = structure_record(arch, base_conf.get("weights", "imagenet"), size, full, candidate, steps)
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
