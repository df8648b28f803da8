"""Multi-process finetuning: torchrun + DistributedDataParallel, on the in-memory splits.

`train.distributed=N > 1` makes stages/finetune.py re-run itself as
`python -m torch.distributed.run --standalone --nproc_per_node=N <script> <same args>`,
so dvc.yaml keeps one static command and N=1 stays one plain process.

Each rank walks the same seeded global batches as the single-process loop (same permutation,
same flips) and trains on its contiguous 1/N slice, so the union of the ranks' slices is the
single-process batch and DDP's gradient average equals the global-batch gradient. Train
metrics are gathered across ranks; validation, history, model file and metrics are rank 0's.

Backend: NCCL with one GPU per rank when CUDA has enough devices, else gloo on CPU.
BatchNorm: on GPUs the model is converted to SyncBatchNorm (global batch statistics, as in
one process); PyTorch's SyncBatchNorm has no CPU kernel, so on CPU each rank normalises with
its own batch/N statistics and running stats are rank 0's (DDP broadcasts buffers). BN-free
and dropout-free models match one process to float tolerance; the others match in expectation.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

from elimnet.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from elimnet.data.tensors import Normalizer, TensorSplit

# torch is imported inside DDPContext: the launching process only parses params and starts torchrun,
# so it stays light (each rank imports torch anyway).


def launched() -> bool:
    """True inside a torchrun worker (torchrun sets RANK and WORLD_SIZE for every rank)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_world(processes: int, batch_size: int) -> None:
    if processes > 1 and batch_size % processes:
        raise ConfigError(f"train.batch_size={batch_size}: must be divisible by train.distributed={processes} "
                          f"(each process trains on batch_size / distributed images)")


def torchrun_cmd(processes: int, script: str, args: Sequence[str]) -> list[str]:
    # --standalone: a local rendezvous on a free port, so queued experiments never collide.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            script, *args]


def relaunch(processes: int, script: str, args: Sequence[str]) -> int:
    """Run `script args` under torchrun with `processes` ranks; return its exit status."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; train.threads still wins per rank
    return subprocess.run(torchrun_cmd(processes, script, args), env=env).returncode


def _use_cuda(local_world: int) -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.device_count() >= local_world


@dataclass
class DDPContext:
    """One rank's view of the process group and the hooks the finetune loop calls."""

    rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DDPContext":
        """Join the group torchrun set up (env:// rendezvous); idempotent."""
        import torch
        import torch.distributed as dist

        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        if _use_cuda(local_world):
            backend, device = "nccl", torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        else:
            backend, device = "gloo", torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group(backend, rank=rank, world_size=world)
        return cls(rank, world, device, backend)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        # No barrier here: after a failure the other ranks may be stuck in a collective (torchrun ends them).
        if dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: torch.nn.Module, seed: int) -> torch.nn.Module:
        """DDP-wrap `model` (SyncBatchNorm on GPUs); the optimiser keeps using `model`'s parameters."""
        import torch

        if self.device.type == "cuda":
            # Converts children in place (state_dict keys unchanged), so `model` stays the unwrapped net.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # Different dropout streams per rank (rank 0 keeps the single-process seed); the shared batch
        # order and flips come from the loop's own generator, which every rank seeds alike.
        torch.manual_seed(seed + self.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def batches(self, split: TensorSplit, batch_size: int, normalize: Normalizer, source=None, **kw
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`source`'s global batches (iterate_batches or finetune.balanced_batches: the same generator draws on
        every rank), cut to this rank's slice."""
        from elimnet.data.tensors import iterate_batches

        if len(split) < self.world_size:
            raise ConfigError(f"train.distributed={self.world_size}: must be <= the {len(split)} training images")
        for x, y in (source or iterate_batches)(split, batch_size, _identity, **kw):
            # Equal slices when batch_size % world == 0 (checked); a short single batch (tiny split,
            # no drop_last) is cut as evenly as possible.
            yield normalize(x.tensor_split(self.world_size)[self.rank]), y.tensor_split(self.world_size)[self.rank]

    def gather_epoch(self, loss_sum: float, preds: list[torch.Tensor], ys: list[torch.Tensor]
                     ) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
        """All ranks' train loss sums and predictions, so train metrics cover the global batches."""
        import torch
        import torch.distributed as dist

        mine = (loss_sum, torch.cat(preds) if preds else torch.empty(0, dtype=torch.long),
                torch.cat(ys) if ys else torch.empty(0, dtype=torch.long))
        parts: list = [None] * self.world_size
        dist.all_gather_object(parts, mine)
        return sum(p[0] for p in parts), [p[1] for p in parts], [p[2] for p in parts]


def _identity(x: "torch.Tensor") -> "torch.Tensor":
    return x  # uint8 batches: normalise only this rank's slice
