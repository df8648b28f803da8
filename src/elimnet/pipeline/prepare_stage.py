"""prepare: split the data source and decode it once into uint8 tensors."""
from __future__ import annotations

from pathlib import Path

from elimnet.config import Config
from elimnet.data import load_source
from elimnet.data.download import record_unverified
from elimnet.data.prepare import prepare
from elimnet.io import atomic_dir, write_json


def run_prepare(cfg: Config, out_dir: str | Path, metrics_path: str | Path) -> dict:
    with record_unverified() as unverified:
        source = load_source(cfg)
    with atomic_dir(out_dir) as tmp:
        metrics = prepare(source, tmp, image_size=cfg["data.image_size"], val_fraction=cfg["data.val_fraction"],
                          test_fraction=cfg["data.test_fraction"], split_seed=cfg["data.split_seed"],
                          max_per_class=cfg["data.max_per_class"], folds=cfg["data.folds"])
    metrics.pop("skipped_files", None)  # kept in meta.json; the metrics file stays small
    if unverified:  # fetched with no checksum and no length: nothing proved them complete
        metrics["unverified_downloads"] = {"count": len(unverified), "files": sorted(unverified)[:50]}
    write_json(metrics_path, metrics)
    return metrics
