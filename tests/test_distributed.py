"""train.distributed: the finetune stage relaunches itself under torchrun (2 gloo ranks on CPU) and ends
with the same weights as one process with the same global batch, written once, by rank 0.

Run as a script, this file is the stage under test: it registers a BN- and dropout-free arch (PyTorch's
SyncBatchNorm has no CPU kernel, so only such nets match one process to float tolerance on CPU), logs
every output write with its rank, then runs stages/finetune.py. The stage relaunches `sys.argv[0]`, so
every torchrun rank goes through this wrapper too.
"""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ARCH = "ddp_test_nobn"
WRITE_LOG = "ELIMNET_TEST_WRITE_LOG"


def _tiny_nobn():
    from torch import nn

    from elimnet.models.staged import StagedNet

    stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    stages = [nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())),
              nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()))]
    return StagedNet(stem, stages, nn.Identity(), nn.Sequential(nn.Linear(16, 1000)))


def _stage_main() -> None:
    """The wrapper: register the test arch, record which rank writes what, run the real stage script."""
    from elimnet.models.registry import register_model
    from elimnet.pipeline import train_stages

    register_model(ARCH, family="test", num_stages=2)(_tiny_nobn)
    for name in ("save_model", "write_text", "write_json"):
        real = getattr(train_stages, name)

        def logged(path, *a, _real=real, **kw):
            with open(os.environ[WRITE_LOG], "a") as f:  # O_APPEND: ranks never interleave a line
                f.write(f"{os.environ.get('RANK', 'single')} {Path(path).name}\n")
            return _real(path, *a, **kw)

        setattr(train_stages, name, logged)
    from elimnet.pipeline.common import run_stage

    # Not run_name="__main__": runpy would set sys.argv[0] to the stage, and the relaunch must rerun us.
    sys.exit(run_stage(runpy.run_path(str(ROOT / "stages" / "finetune.py"))["main"]))


@pytest.fixture
def workdir(tmp_path, tiny_split):
    """A prepared-data folder (4 classes, 32 train / 16 val images at 32 px), an init model file, params."""
    from elimnet.io import torch_save

    d = tmp_path
    (d / "data").mkdir()
    for name, split in (("train", tiny_split(8, seed=0)), ("val", tiny_split(4, seed=1))):
        torch.save({"images": split.images, "labels": split.labels}, d / "data" / f"{name}.pt")
    (d / "data" / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"], "image_size": 32}))
    torch.manual_seed(0)
    model = _tiny_nobn()
    # A model file as checkpoint.save_model writes it (the arch is registered only inside the wrapper).
    config = {"arch": ARCH, "steps": [], "mean": [0.5] * 3, "std": [0.25] * 3}
    torch_save(d / "init.pt", {"config": config, "state_dict": model.state_dict()})
    # freeze_stages 0: this is about the ranks matching one process, not freezing (the default would freeze
    # this 2-stage net's stem and both stages, and the test checks the stem trained)
    (d / "params.yaml").write_text("seed: 3\ntrain:\n  epochs: 2\n  batch_size: 8\n  lr: 0.05\n  threads: 1\n"
                                   "  freeze_stages: 0\n")
    return d


def _run_stage(d: Path, tag: str, processes: int) -> tuple[subprocess.CompletedProcess, Path]:
    out = d / tag
    log = d / f"{tag}.writes"
    env = dict(os.environ, OMP_NUM_THREADS="1", **{WRITE_LOG: str(log)})
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    args = [sys.executable, __file__, "--params", str(d / "params.yaml"), "-S", f"train.distributed={processes}",
            "--role", "baseline", "--init", str(d / "init.pt"), "--data", str(d / "data"),
            "--out", str(out / "model.pt"), "--history", str(out / "history.csv"),
            "--metrics", str(out / "train.json")]
    proc = subprocess.run(args, cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{processes} process(es) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, out


def _run_single_in_process(d: Path, monkeypatch) -> Path:
    """The N=1 reference, in this process (a third cold interpreter would double the test's time)."""
    from elimnet.config import load_params
    from elimnet.models import registry
    from elimnet.pipeline.train_stages import run_finetune

    monkeypatch.setitem(registry._REGISTRY, ARCH, registry.ArchSpec(
        name=ARCH, family="test", build=_tiny_nobn, num_stages=2, stage_names=("stage1", "stage2")))
    out = d / "one"
    run_finetune(load_params(d / "params.yaml"), d / "init.pt", d / "data", out / "model.pt",
                 out / "history.csv", out / "train.json", role="baseline")
    return out


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_and_write_once(workdir, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): same float reduction order
    try:
        out1 = _run_single_in_process(workdir, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    two, out2 = _run_stage(workdir, "two", 2)

    # Every output written exactly once, by rank 0.
    assert sorted((workdir / "two.writes").read_text().splitlines()) == [
        "0 history.csv", "0 model.pt", "0 train.json"]
    assert two.stdout.count("baseline repeat 0: best epoch") == 1  # only rank 0 reports
    assert sorted(p.name for p in out2.iterdir()) == ["history.csv", "model.pt", "train.json"]  # no temp files

    # Same final (best-epoch) weights as one process with the same global batch of 8 (2 ranks x 4).
    s1 = torch.load(out1 / "model.pt", weights_only=True)
    s2 = torch.load(out2 / "model.pt", weights_only=True)
    assert s1["epoch"] == s2["epoch"]
    assert s1["state_dict"].keys() == s2["state_dict"].keys()
    init = torch.load(workdir / "init.pt", weights_only=True)["state_dict"]
    for k, v in s1["state_dict"].items():
        assert torch.allclose(v, s2["state_dict"][k], rtol=1e-4, atol=1e-5), k
    worst = max(float((v - s2["state_dict"][k]).abs().max()) for k, v in s1["state_dict"].items())
    print(f"max |w(1 process) - w(2 ranks)| = {worst:.2e}")  # pytest -s shows it (docs/scaleout.md quotes it)
    assert not torch.allclose(s1["state_dict"]["stem.0.weight"], init["stem.0.weight"])  # it did train

    # Train metrics are gathered over both ranks: loss and accuracy of the global batches.
    m1, m2 = (json.loads((o / "train.json").read_text()) for o in (out1, out2))
    assert m1.keys() == m2.keys()
    for k in m1:
        assert m1[k] == pytest.approx(m2[k], rel=1e-4, abs=1e-5), k
    h1, h2 = ((o / "history.csv").read_text().splitlines() for o in (out1, out2))
    assert len(h1) == len(h2) == 3  # header + 2 epochs


def test_rank_slices_partition_the_single_process_batches(tiny_split):
    """The ranks' slices of each global batch, concatenated, are the single-process batch (images, flips, labels)."""
    from elimnet.data.tensors import Normalizer, iterate_batches
    from elimnet.train.distributed import DDPContext

    split, norm = tiny_split(5, classes=4), Normalizer([0.5] * 3, [0.25] * 3)  # 20 images, batch 8 -> 2 batches
    kw = dict(shuffle=True, hflip=True, vflip=True, drop_last=True)
    single = list(iterate_batches(split, 8, norm, generator=torch.Generator().manual_seed(7), **kw))
    ranks = [list(DDPContext(r, 2, torch.device("cpu"), "gloo").batches(
        split, 8, norm, generator=torch.Generator().manual_seed(7), **kw)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 2
    for b, (x, y) in enumerate(single):
        assert [len(r[b][1]) for r in ranks] == [4, 4]
        assert torch.equal(torch.cat([r[b][0] for r in ranks]), x)
        assert torch.equal(torch.cat([r[b][1] for r in ranks]), y)


def test_batch_not_divisible_fails_before_launch(capsys):
    """An indivisible global batch is a one-line config error, raised before torchrun starts."""
    from elimnet.pipeline.common import run_stage

    stage = runpy.run_path(str(ROOT / "stages" / "finetune.py"))
    rc = run_stage(stage["main"], ["-S", "train.distributed=3", "-S", "train.batch_size=32", "--params", os.devnull,
                                   "--init", "x.pt", "--out", "o.pt", "--history", "h.csv", "--metrics", "m.json"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == ("error: train.batch_size=32: must be divisible by train.distributed=3 "
                   "(each process trains on batch_size / distributed images)")


def test_torchrun_command_reruns_the_same_script():
    from elimnet.train.distributed import torchrun_cmd

    assert torchrun_cmd(4, "stages/finetune.py", ["--role", "baseline"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4",
        "stages/finetune.py", "--role", "baseline"]


if __name__ == "__main__":
    _stage_main()
