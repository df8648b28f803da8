"""Saved models are `{"config": ..., "state_dict": ...}`: no pickled code.

Loading rebuilds the arch from the registry, replays the saved transform steps, then loads
the weights with weights_only=True (like timm's create_model + load_checkpoint).
Training checkpoints add optimizer/epoch/args alongside, in torchvision-references style.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from elimnet import errors
from elimnet.errors import CheckpointError
from elimnet.io import torch_save
from elimnet.models import create_model, get_spec
from elimnet.models.staged import StagedNet


def model_config(arch: str, steps: list[dict], **extra: Any) -> dict:
    spec = get_spec(arch)
    return {"arch": arch, "steps": steps, "mean": list(spec.mean), "std": list(spec.std), **extra}


def save_model(path: str | Path, model: StagedNet, config: dict, **extra: Any) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch_save(path, {"config": config, "state_dict": state, **extra})


def build_from_config(config: dict) -> StagedNet:
    from elimnet.compress import replay

    base = create_model(config["arch"], pretrained=False, arch_args=config.get("arch_args"))
    return replay(base, config.get("steps", []))


_REWRITE = "rerun the stage that writes it (dvc repro)"


def load_model(path: str | Path) -> tuple[StagedNet, dict]:
    ckpt = load_checkpoint(path)
    config = ckpt["config"]
    if not isinstance(config, dict) or "arch" not in config:
        raise CheckpointError(f"{path}: its config names no arch; {_REWRITE}")
    model = build_from_config(config)
    mismatch = state_dict_mismatch(model.state_dict(), ckpt["state_dict"])
    if mismatch:  # another arch, or a file edited by hand
        raise CheckpointError(f"{path}: weights do not fit arch {config['arch']} ({mismatch}); {_REWRITE}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:  # anything the comparison above does not cover
        first = errors.one_line(e).removeprefix("Error(s) in loading state_dict for StagedNet: ")
        raise CheckpointError(f"{path}: weights do not fit arch {config['arch']} ({first[:160]}); {_REWRITE}") from None
    return model, config


def state_dict_mismatch(expected: dict, found: dict, show: int = 3) -> str:
    """"" when `found` has exactly the keys and shapes of `expected`; else the counts and the first
    missing / unexpected keys and differing shapes (torch's own message names none of them)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} in the file, {tuple(v.shape)} in the arch" for k, v in expected.items()
              if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)]
    parts = [f"{len(items)} {what}: {', '.join(items[:show])}" + (", ..." if len(items) > show else "")
             for what, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes))
             if items]
    return "; ".join(parts)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such model file; {_REWRITE}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused a global: the file holds pickled code or objects
        raise CheckpointError(f"{path}: refused by weights_only loading (it holds pickled objects, not only "
                              f"tensors); {_REWRITE}") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, not a torch file: one answer
        raise CheckpointError(f"{path}: unreadable model file ({type(e).__name__}: {errors.one_line(e)[:120]}); "
                              f"{_REWRITE}") from None
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not an elimnet model file (expected keys config, state_dict); {_REWRITE}")
    return ckpt
