"""Peak memory of one forward pass, beyond the weights.

CUDA: torch.cuda.max_memory_allocated around the pass. CPU has no allocator statistics (and
tracemalloc does not see torch's allocations; process RSS hides what glibc keeps cached), so we
count storage bytes of tensors created by aten ops while they are alive, with a dispatch mode:
the CPU analogue of CUDA's allocated-bytes peak (intermediate activations and outputs; kernel
scratch space such as oneDNN workspaces is not visible).
"""
from __future__ import annotations

import resource
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages produced inside the mode, deduplicated across views."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}  # storage data_ptr -> [nbytes, live tensor objects]
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        entry = self.live.get(ptr)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views and in-place results of tensors made outside the mode (weights, the input) are not new memory.
        inputs = {a.untyped_storage().data_ptr() for a in tree_flatten((args, kwargs))[0]
                  if isinstance(a, torch.Tensor) and a.device.type == "cpu"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if ptr == 0 or nbytes == 0:
                continue
            entry = self.live.get(ptr)
            if entry is None and ptr in inputs:
                continue
            if entry is None:
                self.live[ptr] = [nbytes, 1]
                self.current += nbytes
                self.peak = max(self.peak, self.current)
            else:
                entry[1] += 1  # a view or an in-place result: same storage, counted once
            weakref.finalize(t, self._release, ptr)
        return out


@torch.no_grad()
def peak_forward_bytes(run, device: str = "cpu") -> int | None:
    """Peak bytes allocated during one call of `run` beyond what was allocated before it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    if device != "cpu":
        return None
    mode = LiveTensorBytes()
    with mode:
        out = run()
    del out
    return int(mode.peak)


def max_rss_bytes() -> int:
    """The process's peak resident set size so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)
