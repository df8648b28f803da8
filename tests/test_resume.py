"""Resumable finetune: a run interrupted after an epoch (SIGINT, SIGKILL) resumes from its checkpoint and ends
with the weights, history and metrics of an uninterrupted run; stale or broken checkpoints are never resumed.

Run as a script, this file is the finetune stage under test: it registers a tiny arch and pauses one second
after every checkpoint write (test-side, so the test can kill the run right after a given epoch), then runs
stages/finetune.py.
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from elimnet.train.finetune import TrainRecipe, finetune
from elimnet.train.resume import EpochCheckpoint, checkpoint_dir, run_key, stage_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARCH = "resume_test_tiny"


def _tiny(classes: int = 1000):
    """BN (running stats), dropout (global torch RNG) and a classifier: every stream resuming must restore."""
    from elimnet.models.staged import StagedNet

    stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
    stages = [nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                          nn.Dropout(0.2)))]
    return StagedNet(stem, stages, nn.Identity(), nn.Sequential(nn.Linear(16, classes)))


def _register(monkeypatch=None):
    from elimnet.models import registry

    spec = registry.ArchSpec(name=ARCH, family="test", build=_tiny, num_stages=1, stage_names=("stage1",))
    if monkeypatch is None:
        registry._REGISTRY[ARCH] = spec
    else:
        monkeypatch.setitem(registry._REGISTRY, ARCH, spec)


def _stage_main() -> None:
    _register()
    real_save = EpochCheckpoint.save

    def save_then_pause(self, state):
        real_save(self, state)
        print(f"checkpoint epoch {state['epoch']}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("RESUME_TEST_PAUSE", "0")))

    EpochCheckpoint.save = save_then_pause
    from elimnet.pipeline.common import run_stage

    sys.exit(run_stage(runpy.run_path(str(ROOT / "stages" / "finetune.py"))["main"]))


# ----------------------------------------------------------------------------- in-process resume
def _interrupt_after(monkeypatch, epochs_done: int):
    """Make the loop raise KeyboardInterrupt (as SIGINT does) when it starts validating epoch epochs_done + 1."""
    import elimnet.train.finetune as ft

    calls = {"n": 0}
    real = ft.evaluate

    def evaluate(*a, **kw):
        calls["n"] += 1
        if calls["n"] > epochs_done:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(ft, "evaluate", evaluate)
    return lambda: monkeypatch.setattr(ft, "evaluate", real)


@pytest.mark.parametrize("ema", [0.0, 0.9])  # with train.ema the average resumes too
def test_interrupted_finetune_resumes_to_the_uninterrupted_result(tmp_path, tiny_split, one_thread, monkeypatch,
                                                                  ema):
    train, val = tiny_split(n_per_class=6, size=16), tiny_split(n_per_class=2, size=16, seed=1)
    recipe = TrainRecipe.from_config(None, epochs=3, batch_size=8, warmup_epochs=1, channels_last=True, ema=ema)
    kw = dict(mean=(0.5,) * 3, std=(0.25,) * 3, num_classes=4, progress=False)

    def fresh():
        torch.manual_seed(0)
        return _tiny(4)
    ref_model = fresh()
    ref = finetune(ref_model, train, val, recipe, **kw)

    ckpt = EpochCheckpoint(tmp_path / "ck" / "baseline-abc.pt", "abc")
    restore = _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        finetune(fresh(), train, val, recipe, checkpoint=ckpt, **kw)
    restore()
    saved = ckpt.load()
    assert saved["epoch"] == 1 and len(saved["history"]) == 1 and saved["step"] == 3
    assert set(saved["rng"]) >= {"generator", "torch", "python", "numpy"}

    model = _tiny(4)  # other init weights: they must all come from the checkpoint
    res = finetune(model, train, val, recipe, checkpoint=ckpt, **kw)
    assert res.history == ref.history  # every float of every epoch
    assert res.best_epoch == ref.best_epoch
    assert all(torch.equal(res.best_state[k], ref.best_state[k]) for k in ref.best_state)
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())
    for a, b in zip(res.optimizer_state["state"].values(), ref.optimizer_state["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert [g["lr"] for g in res.optimizer_state["param_groups"]] == \
        [g["lr"] for g in ref.optimizer_state["param_groups"]]
    # A checkpoint of the last epoch (killed before the outputs were written) just returns the result.
    again = finetune(_tiny(4), train, val, recipe, checkpoint=ckpt, **kw)
    assert again.history == ref.history and again.best_epoch == ref.best_epoch


def test_checkpoints_of_other_inputs_or_broken_files_are_never_resumed(tmp_path, capsys):
    (tmp_path / "in.pt").write_bytes(b"weights v1")
    params = {"train.lr": 0.01, "seed": 1, "train.checkpoint_dir": "a", "train.keep_freed_memory": True}
    key = run_key([tmp_path / "in.pt"], params, "baseline")
    assert key == run_key([tmp_path / "in.pt"], {**params, "train.checkpoint_dir": "b"}, "baseline")  # where: same
    assert key != run_key([tmp_path / "in.pt"], {**params, "train.lr": 0.02}, "baseline")
    assert key != run_key([tmp_path / "in.pt"], params, "candidate")
    (tmp_path / "in.pt").write_bytes(b"weights v2")
    assert key != run_key([tmp_path / "in.pt"], params, "baseline")

    folder = tmp_path / "ck"
    old = stage_checkpoint(str(folder), "baseline", [tmp_path / "in.pt"], params)
    old.save({"epoch": 1})
    cand = stage_checkpoint(str(folder), "candidate", [tmp_path / "in.pt"], params)
    cand.save({"epoch": 2})
    new = stage_checkpoint(str(folder), "baseline", [tmp_path / "in.pt"], {**params, "train.lr": 0.5})
    assert new.path != old.path and new.load() is None
    assert not old.path.exists() and cand.path.exists()  # the stale one is deleted, the other role's kept
    assert "other inputs or params, deleted" in capsys.readouterr().err

    # Right name, other key inside (e.g. a hash-prefix collision): refused and deleted.
    EpochCheckpoint(new.path, "something else").save({"epoch": 1})
    assert new.load() is None and not new.path.exists()
    # A damaged file: one warning, a fresh start.
    new.path.write_bytes(b"PK\x03\x04 not a checkpoint")
    assert new.load() is None and not new.path.exists()
    assert "unusable checkpoint" in capsys.readouterr().err


def test_checkpoint_dir_auto_is_in_the_outputs_dvc_repo_only(tmp_path):
    assert checkpoint_dir(None) is None
    assert checkpoint_dir(str(tmp_path / "x")) == tmp_path / "x"
    (tmp_path / "models").mkdir()
    assert checkpoint_dir("auto", tmp_path / "models") is None  # never creates a .dvc folder outside a DVC repo
    (tmp_path / ".dvc").mkdir()
    assert checkpoint_dir("auto", tmp_path / "models") == tmp_path.resolve() / ".dvc" / "tmp" / "elimnet" / "finetune"


# ----------------------------------------------------------------------------- killed stage processes
@pytest.fixture
def workdir(tmp_path, tiny_split):
    from elimnet.io import torch_save

    d = tmp_path
    (d / "data").mkdir()
    for name, split in (("train", tiny_split(8, size=16, seed=0)), ("val", tiny_split(3, size=16, seed=1))):
        torch.save({"images": split.images, "labels": split.labels}, d / "data" / f"{name}.pt")
    (d / "data" / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"], "image_size": 16}))
    torch.manual_seed(0)
    config = {"arch": ARCH, "steps": [], "mean": [0.5] * 3, "std": [0.25] * 3}
    torch_save(d / "init.pt", {"config": config, "state_dict": _tiny().state_dict()})
    (d / "params.yaml").write_text(f"seed: 3\ntrain:\n  epochs: 4\n  batch_size: 8\n  lr: 0.05\n  threads: 1\n"
                                   f"  checkpoint_dir: {d / 'ck'}\n")
    return d


def _args(d: Path, out: Path) -> list[str]:
    return ["--params", str(d / "params.yaml"), "--role", "baseline", "--init", str(d / "init.pt"),
            "--data", str(d / "data"), "--out", str(out / "model.pt"), "--history", str(out / "history.csv"),
            "--metrics", str(out / "train.json")]


def _kill_after_epoch(d: Path, out: Path, epoch: int, sig: int) -> str:
    """Start the stage, wait for the checkpoint of `epoch` (the stage then pauses), send `sig`."""
    env = dict(os.environ, OMP_NUM_THREADS="1", RESUME_TEST_PAUSE="30")
    proc = subprocess.Popen([sys.executable, __file__, *_args(d, out)], cwd=d, env=env, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines = []
    try:
        for line in proc.stderr:  # blocks until the stage reports; the 30 s pause leaves time to signal
            lines.append(line)
            if f"checkpoint epoch {epoch}\n" in line:  # tqdm may share the line (it ends with \r)
                proc.send_signal(sig)
                break
        proc.wait(timeout=60)
        lines += proc.stderr.readlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "".join(lines)[-3000:]
    return "".join(lines)


@pytest.mark.slow
def test_sigint_then_sigkill_then_rerun_equals_an_uninterrupted_run(workdir, monkeypatch):
    from elimnet.bench.allocator import KEPT, allocator_state
    from elimnet.checkpoint import load_checkpoint
    from elimnet.config import load_params
    from elimnet.pipeline.train_stages import run_finetune

    d = workdir
    out = d / "out"
    err = _kill_after_epoch(d, out, 1, signal.SIGINT)
    assert "resuming" not in err
    ck = list((d / "ck").glob("baseline-*.pt"))
    assert len(ck) == 1 and torch.load(ck[0], weights_only=True)["epoch"] == 1
    assert not (out / "model.pt").exists()
    err = _kill_after_epoch(d, out, 2, signal.SIGKILL)
    assert "resuming after epoch 1/4" in err
    assert torch.load(ck[0], weights_only=True)["epoch"] == 2

    threads = torch.get_num_threads()
    _register(monkeypatch)
    try:  # the rerun (resumes after epoch 2) and the reference, in this process: two cold interpreters less
        cfg = load_params(d / "params.yaml")
        run_finetune(cfg, d / "init.pt", d / "data", out / "model.pt", out / "history.csv", out / "train.json",
                     role="baseline")
        assert not ck[0].exists()  # cleared on success
        assert allocator_state(False).startswith(KEPT)  # train.keep_freed_memory (default true) was applied
        ref = d / "ref"
        run_finetune(cfg.replace(**{"train.checkpoint_dir": None}), d / "init.pt", d / "data", ref / "model.pt",
                     ref / "history.csv", ref / "train.json", role="baseline")
    finally:
        torch.set_num_threads(threads)
    assert (out / "history.csv").read_bytes() == (ref / "history.csv").read_bytes()
    assert (out / "train.json").read_bytes() == (ref / "train.json").read_bytes()
    assert len((ref / "history.csv").read_text().splitlines()) == 5  # header + 4 epochs
    a, b = load_checkpoint(out / "model.pt"), load_checkpoint(ref / "model.pt")
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert a["epoch"] == b["epoch"]
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])


def test_repeats_train_with_their_own_seed_and_checkpoint(workdir, monkeypatch):
    """Repeat r trains with seed + 1000 r on the same data (other weights than repeat 0), and its resume
    checkpoint is its own: repeat 1 never resumes from repeat 0's epochs."""
    from elimnet.checkpoint import load_checkpoint
    from elimnet.config import load_params
    from elimnet.pipeline.train_stages import run_finetune
    from elimnet.train.finetune import repeat_seed

    assert [repeat_seed(42, r) for r in range(3)] == [42, 1042, 2042]
    d, threads = workdir, torch.get_num_threads()
    _register(monkeypatch)
    cfg = load_params(d / "params.yaml").replace(**{"train.epochs": 1})
    seen = []
    monkeypatch.setattr("elimnet.pipeline.train_stages.stage_checkpoint",
                        lambda setting, role, inputs, params, near: seen.append((role, params["seed"])))
    try:
        for r in (0, 1):
            out = d / f"r{r}"
            run_finetune(cfg, d / "init.pt", d / "data", out / "model.pt", out / "history.csv", out / "train.json",
                         role="baseline", repeat=r)
        again = d / "again"
        run_finetune(cfg, d / "init.pt", d / "data", again / "model.pt", again / "history.csv",
                     again / "train.json", role="baseline", repeat=1)
    finally:
        torch.set_num_threads(threads)
    assert seen == [("baseline-r0", 3), ("baseline-r1", 1003), ("baseline-r1", 1003)]
    w = [load_checkpoint(p)["state_dict"] for p in (d / "r0/model.pt", d / "r1/model.pt", again / "model.pt")]
    assert any(not torch.equal(w[0][k], w[1][k]) for k in w[0])  # another init and data order
    assert all(torch.equal(w[1][k], w[2][k]) for k in w[1])  # the same repeat is the same run


if __name__ == "__main__":
    _stage_main()
