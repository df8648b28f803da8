"""Promises that already held when issue 16 was filed, pinned so they keep holding (docs/reliability.md)."""
from __future__ import annotations

import pytest
import torch
import yaml

from stage_runner import run_default_graph


class _Payload:
    """Unpickling this creates a file: the proof that code from a model file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("loader", ["checkpoint", "tensors"])
def test_a_pickled_payload_in_a_loaded_file_does_not_run(tmp_path, loader):
    from elimnet.checkpoint import load_checkpoint
    from elimnet.data.tensors import TensorSplit

    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({"config": _Payload(marker), "state_dict": {}, "images": _Payload(marker)}, path)
    with pytest.raises(Exception) as e:  # noqa: PT011 - the promise is "does not run", whatever is raised
        load_checkpoint(path) if loader == "checkpoint" else TensorSplit.load(path)
    assert "weights_only" in str(e.value) or "Unsupported" in str(e.value) or "global" in str(e.value).lower()
    assert not marker.exists()


@pytest.mark.slow
def test_metrics_are_byte_identical_across_reruns(tmp_path):
    """The whole tiny graph twice, in two folders: every metrics file except the timings is the same bytes."""
    # one fixed split trained 3 times: 6 images per class cannot hold the default 5 folds
    params = {"data": {"max_per_class": 6, "image_size": 32, "folds": 0},
              "train": {"epochs": 1, "batch_size": 8, "repeats": 3, "repeat_ids": [0, 1, 2]},
              "model": {"elim": 3}, "mlflow": {"enabled": False},
              "bench": {"batch_sizes": [1], "repeats": 2, "warmup": 1, "budget_s": 0.1}}
    runs = []
    for name in ("a", "b"):
        work = tmp_path / name
        work.mkdir()
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        run_default_graph(work / "params.yaml", work)
        m = work / "metrics"
        runs.append({str(p.relative_to(m)): p.read_bytes() for p in sorted(m.rglob("*"))
                     if p.is_file() and p.name not in ("latency.json", "summary.json", "headline.json")})  # timings
    repeats = [f"{role}/r{r}/{f}" for role in ("baseline", "candidate") for r in range(3)
               for f in ("train.json", "eval.json", "history.csv", "predictions.csv")]
    assert set(runs[0]) >= {"data.json", "structure.json", *repeats}
    assert runs[0] == runs[1]


def test_weights_mismatch_names_the_first_missing_unexpected_and_misshaped_keys(tmp_path):
    """Before, the line ended in "(Error(s) in loading state_dict for StagedNet:)" with no key named."""
    from elimnet.checkpoint import load_model, model_config
    from elimnet.errors import CheckpointError
    from elimnet.io import torch_save
    from elimnet.models import create_model

    model = create_model("simple_effnet")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first, second = list(state)[:2]
    del state[first]
    state["extra.weight"] = torch.zeros(2)
    state[second] = torch.zeros(*state[second].shape, 1)
    torch_save(tmp_path / "m.pt", {"config": model_config("simple_effnet", steps=[]), "state_dict": state})
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "m.pt")
    msg = str(e.value)
    want_shape = f"{second} {tuple(state[second].shape)} in the file, {tuple(model.state_dict()[second].shape)} in the arch"
    assert "\n" not in msg and f"1 missing: {first}; 1 unexpected: extra.weight; 1 of another shape: {want_shape}" in msg


def test_temp_folders_a_killed_run_left_are_removed_by_the_next_run_of_their_stage(tmp_path):
    """SIGKILL skips the `finally` that deletes a temp folder: data/.prepared.*.tmp (prepare) and
    models/deploy/.<role>.*.tmp (export) used to stay forever. Each stage's next run removes its own."""
    from PIL import Image

    from elimnet.config import defaults
    from elimnet.io import atomic_dir
    from elimnet.pipeline.prepare_stage import run_prepare

    images = tmp_path / "images"
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 12), (40 * i, 100 if c == "a" else 0, 0)).save(images / c / f"{i}.png")
    data = tmp_path / "data"
    stale = [data / ".prepared.k1ll3d.tmp", data / ".prepared.0ther.tmp"]
    for d in stale:
        (d / "x").mkdir(parents=True)
    (data / ".unrelated.tmp").mkdir()
    cfg = defaults(["data.name=folder", f"data.path={images}", "data.image_size=16", "data.val_fraction=0.2",
                    "data.test_fraction=0.2", "data.folds=0"])  # 6 images per class: one fixed split
    run_prepare(cfg, data / "prepared", tmp_path / "metrics" / "data.json")
    assert sorted(p.name for p in data.iterdir()) == [".unrelated.tmp", "prepared"]

    deploy = tmp_path / "models" / "deploy"
    for name in (".baseline.a1.tmp", ".candidate.b2.tmp"):
        (deploy / name).mkdir(parents=True)
    with atomic_dir(deploy / "baseline") as tmp:  # what the export stage writes through
        (tmp / "model.onnx").write_bytes(b"onnx")
    assert sorted(p.name for p in deploy.iterdir()) == [".candidate.b2.tmp", "baseline"]  # candidate's: its run
