"""Epoch checkpoints of a finetune run, so that a rerun after SIGINT or SIGKILL resumes.

The file lives outside DVC's outputs (DVC deletes those before it reruns a stage), under a
persistent cache path: `train.checkpoint_dir`, by default `.dvc/tmp/elimnet/finetune` of the
DVC repository that holds the stage's output. Its name holds a hash of everything the run depends on (the
input files' bytes, the params, the role and the elimnet code), so a checkpoint of other
inputs is never resumed: it is deleted when a run with a different key of the same role starts.
The stage clears the checkpoint once its outputs are written.

Resuming restores weights, optimiser, scheduler and every RNG stream (the shuffling/flip
generator, torch's global one for dropout, numpy, python), so on the same machine the resumed
run's weights and metrics equal an uninterrupted run's.
"""
from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from elimnet.io import torch_save

FORMAT = 1
AUTO = "auto"
AUTO_SUBDIR = Path(".dvc") / "tmp" / "elimnet" / "finetune"
# Params that say where or how fast, not what is computed: changing them keeps a checkpoint valid.
_NOT_IN_KEY = {"train.checkpoint_dir", "train.keep_freed_memory"}


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


class EpochCheckpoint:
    """One run's checkpoint file: save() after each epoch, load() at start, clear() after success."""

    def __init__(self, path: str | Path, key: str):
        self.path, self.key = Path(path), key

    def save(self, state: dict[str, Any]) -> None:
        torch_save(self.path, {"format": FORMAT, "key": self.key, **state})  # atomic: old or new, never half

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none or it cannot be trusted (then it is deleted)."""
        self._drop_stale()
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
                raise ValueError("written by other inputs or another elimnet version")
        except Exception as e:  # resuming from a doubtful file is worse than starting over
            _warn(f"{self.path}: unusable checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                  f"starting from epoch 1")
            self.clear()
            return None
        return state

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _drop_stale(self) -> None:
        prefix = self.path.name.rsplit("-", 1)[0] + "-"
        for other in self.path.parent.glob(prefix + "*.pt"):
            if other != self.path:
                _warn(f"{other}: checkpoint of other inputs or params, deleted (not resumed)")
                other.unlink(missing_ok=True)


def get_rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every random stream training draws from, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state = {"generator": gen.get_state(), "torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], gen: torch.Generator) -> None:
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(v):
    # random.setstate wants (version, tuple of ints, gauss); keep the types it was given
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def _file_digest(path: Path, h) -> None:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def run_key(inputs: Iterable[str | Path | None], params: dict[str, Any], role: str) -> str:
    """sha256 over the input files (a folder: its files, sorted), the params, the role and elimnet's code."""
    h = hashlib.sha256()
    h.update(json.dumps({"role": role, "params": {k: v for k, v in sorted(params.items()) if k not in _NOT_IN_KEY}},
                        sort_keys=True, default=str).encode())
    files: list[Path] = []
    for item in inputs:
        if item is None:
            continue
        p = Path(item)
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    code = Path(__file__).resolve().parent.parent  # the elimnet package (a namespace package: no __file__)
    files += sorted(code.rglob("*.py"))  # an edited loop must not resume a checkpoint of the old one
    for f in files:
        h.update(str(f.relative_to(code) if f.is_relative_to(code) else f.name).encode())
        _file_digest(f, h)
    return h.hexdigest()


def checkpoint_dir(setting: str | None, near: str | Path = ".") -> Path | None:
    """`train.checkpoint_dir`: null = off; "auto" = .dvc/tmp/elimnet/finetune of the DVC repo holding `near`
    (the stage's output), off outside one: no stray .dvc folder, and runs writing elsewhere (tests, scripts)
    never touch a workspace's checkpoints. Anything else is a folder path."""
    if setting is None:
        return None
    if setting != AUTO:
        return Path(setting)
    here = Path(near).resolve()
    for d in (here, *here.parents):
        if (d / ".dvc").is_dir():
            return d / AUTO_SUBDIR
    return None


def stage_checkpoint(setting: str | None, role: str, inputs: Iterable[str | Path | None],
                     params: dict[str, Any], near: str | Path = ".") -> EpochCheckpoint | None:
    folder = checkpoint_dir(setting, near)
    if folder is None:
        return None
    key = run_key(inputs, params, role)
    return EpochCheckpoint(folder / f"{role}-{key[:20]}.pt", key)
