"""data.name=folder end to end: every stage script of dvc.yaml, in order, on a generated ImageFolder
(the DVC-driven variant belongs to the DVC end-to-end suite)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from stage_runner import TINY_GRAPH, fruit_folder, run_default_graph


@pytest.mark.slow
def test_folder_source_through_every_stage(tmp_path):
    imgs = fruit_folder(tmp_path / "imgs")
    (imgs / "plum" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # skipped and counted
    params = {"data": {"name": "folder", "path": str(imgs), "image_size": 32, "val_fraction": 0.25,
                       "test_fraction": 0.25, "folds": 0},  # one fixed split: 8 images per class, 1 run
              "train": {"epochs": 1, "batch_size": 8, "threads": 1, "repeats": 1, "repeat_ids": [0]},
              "mlflow": {"enabled": False}, **TINY_GRAPH}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_default_graph(tmp_path / "params.yaml", tmp_path)

    m = tmp_path / "metrics"
    data = json.loads((m / "data.json").read_text())
    assert data["source"] == "folder" and data["classes"] == ["apple", "kiwi", "plum"]
    assert data["skipped_total"] == 1
    assert sum(data["splits"][s]["size"] for s in ("train", "val", "test")) == 24
    assert torch.load(tmp_path / "data" / "prepared" / "train.pt", weights_only=True)["images"].shape[1:] == (3, 32, 32)
    for role in ("baseline", "candidate"):  # evaluated on exactly the prepared test split
        rows = (m / role / "r0" / "predictions.csv").read_text().splitlines()[1:]
        assert len(rows) == data["splits"]["test"]["size"]
        assert {r.split(",")[1] for r in rows} <= {"apple", "kiwi", "plum"}  # index,actual,predicted
    summary = json.loads((m / "summary.json").read_text())
    assert summary["ratios"]["params"] < 1.0  # elim=2 cut the top
    # one training run per model: an interval over images only, and no verdict
    assert summary["repeats"] == 1 and summary["verdict"] is None
    assert summary["verdict_note"] == "training variance not measured (train.repeats=1)"
