"""Per-block latency tables for LayerPrune budgets, timed by the benchmark's own harness.

A table times, interleaved in one `time_runners` call: the model, the full (reference) model, and
each candidate block alone on the input it sees inside the model (removing it saves that much).
The runners come from the backend registry (bench.backends), so a table measured on `ort` runs the
same export and session code as the benchmark, with the same input (`bench_input` at the seed),
threads and batch size: the table's full-model median is the benchmark's.

A table is measured once per key (arch, block-shape hash, image size, batch size, backend,
threads, hardware fingerprint) and kept in a JSON file (metrics/block_latency.json), so a budget
selection is a pure function of the scores and that file.
"""
from __future__ import annotations

import copy
import hashlib
import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from elimnet.bench.backends import REGISTRY, Backend
from elimnet.bench.hardware import hardware_fingerprint
from elimnet.bench.latency import bench_input, time_runners
from elimnet.errors import ConfigError
from elimnet.io import read_json, write_json
from elimnet.models.staged import StagedNet, stage_view

# model.prune.budget_backend -> the registry backend that times the table (the benchmark's own names).
TABLE_BACKENDS = {"eager": "cpu", "ort": "ort"}
BUDGET_BATCH_SIZES = (1, 8, 64)  # as in seed 003
TABLE_REPEATS, TABLE_BUDGET_S, TABLE_WARMUP, TABLE_MIN_REPEATS = 30, 2.0, 3, 5


def table_backend(name: str) -> Backend:
    """The registry backend a table named `eager` or `ort` is timed with."""
    if name in TABLE_BACKENDS and TABLE_BACKENDS[name] in REGISTRY:
        return REGISTRY[TABLE_BACKENDS[name]]
    raise ConfigError(f"model.prune.budget_backend={name}: must be one of {', '.join(TABLE_BACKENDS)}")


def table_key(model: StagedNet, arch: str, image_size: int, batch_size: int, backend: str,
              threads: int | None = None) -> dict:
    """What a block's timing depends on. `structure` hashes the block shapes (elim/neck change them)."""
    view = stage_view(model, [f"stage{i}" for i in range(len(model.stages))], image_size=image_size)
    shapes = [[b.path, b.in_shape, b.out_shape, b.params] for b in view.blocks]
    shapes.append([type(model.head).__name__, type(model.neck).__name__])
    return {"arch": arch, "structure": hashlib.sha256(json.dumps(shapes).encode()).hexdigest()[:12],
            "image_size": image_size, "batch_size": batch_size, "backend": backend,
            "threads": threads or torch.get_num_threads(), "hardware": hardware_fingerprint()["id"]}


def key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _exporting() -> bool:
    """True while torch.export / the ONNX exporter traces (versions differ in what they set)."""
    compiler = torch.compiler
    return bool(getattr(compiler, "is_exporting", lambda: False)() or compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


class BlockReplay(nn.Module):
    """Runs one block on its recorded input; the benchmark's image only feeds an exported graph.

    Exported, the input is tied to the graph's image by adding 0 x one pixel: a block on a constant
    input would be folded away by ONNX Runtime's constant folding and time as nothing."""

    def __init__(self, block: nn.Module, x: torch.Tensor):
        super().__init__()
        self.block = block
        self.register_buffer("x", x)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.x + image[:1, :1, :1, :1] * 0 if _exporting() else self.x
        return self.block(x)


@torch.no_grad()
def record_block_inputs(model: StagedNet, paths: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each block in `paths` sees when `model` runs on `x`."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(p).register_forward_pre_hook(
        lambda mod, inp, p=p: inputs.__setitem__(p, inp[0].detach().clone())) for p in paths]
    try:
        model.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    return inputs


@torch.no_grad()
def measure_block_table(model: StagedNet, paths: list[str], image_size: int, batch_size: int = 1, *,
                        backend: str = "eager", cfg=None, threads: int | None = None, seed: int = 0,
                        reference: StagedNet | None = None, repeats: int = TABLE_REPEATS,
                        budget_s: float = TABLE_BUDGET_S, warmup: int = TABLE_WARMUP) -> dict:
    """Timings of the model, the reference (full) model and each block alone, all interleaved
    round-robin by bench.latency.time_runners on the backend's runners. `cfg` is what the backend
    reads (ort_int8: seed; cuda: bench.amp); eager and ort read nothing from it."""
    be = table_backend(backend)
    threads = threads or torch.get_num_threads()
    x = bench_input(batch_size, image_size, seed)
    m = copy.deepcopy(model).cpu().eval()
    inputs = record_block_inputs(m, paths, x)
    models: dict[str, nn.Module] = {"model": m}
    if reference is not None:
        models["reference"] = copy.deepcopy(reference).cpu().eval()
    models.update({p: BlockReplay(m.get_submodule(p), inputs[p]).eval() for p in paths})
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix="elimnet-blocks-") as tmp, \
                be.prepare(models, cfg, image_size, threads, Path(tmp), defaultdict(dict)) as make_runners:
            stats = time_runners(make_runners(x), batch_size, device=be.device, warmup=warmup, repeats=repeats,
                                 budget_s=budget_s, min_repeats=TABLE_MIN_REPEATS, ci95=True)
    finally:
        torch.set_num_threads(before)
    return {"model": stats["model"], "reference": stats.get("reference", stats["model"]),
            "blocks": {p: stats[p] for p in paths}}


@dataclass(frozen=True)
class LatencyCache:
    """Where block tables are cached; `store=False` reads only (elimnet summary must not modify a DVC output)."""
    path: str | Path
    store: bool = True


def block_table(model: StagedNet, paths: list[str], key: dict, path: str | Path | LatencyCache | None = None, *,
                reference: StagedNet | None = None, cfg=None, seed: int = 0) -> tuple[dict, bool]:
    """(table, reused): the cached table for `key` from `path`, else measure it (and store it there)."""
    store = True
    if isinstance(path, LatencyCache):
        path, store = path.path, path.store
    kid = key_id(key)
    doc = read_json(path) if path is not None and Path(path).exists() else {}
    tables = doc.get("tables", {})
    t = tables.get(kid)
    if t is not None and set(paths) <= set(t["blocks"]):
        return t, True
    measured = measure_block_table(model, paths, key["image_size"], key["batch_size"], backend=key["backend"],
                                   cfg=cfg, threads=key["threads"], seed=seed, reference=reference)
    t = {"key": key, "hardware": hardware_fingerprint(), **measured}
    if path is not None and store:
        tables[kid] = t
        write_json(path, {"tables": dict(sorted(tables.items()))})
    return t, False


def ensure_latency_file(path: str | Path) -> None:
    """Create an empty table file when none exists (the DVC output exists even with LayerPrune off)."""
    if not Path(path).exists():
        write_json(path, {"tables": {}})
