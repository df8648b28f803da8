"""Eager PyTorch on CPU (channels_last): the backend every benchmark measures."""
from __future__ import annotations

import contextlib
from pathlib import Path

from elimnet.bench.backends import register_backend


@contextlib.contextmanager
def eager_cpu(models, cfg, image_size, threads, workdir: Path, prof, compile_: bool = False):
    import torch

    from elimnet.bench.latency import torch_runner

    fmt = torch.channels_last
    ready = {n: m.eval().to(memory_format=fmt) for n, m in models.items()}
    if compile_:
        ready = {n: torch.compile(m) for n, m in ready.items()}
    try:
        yield lambda x: {n: torch_runner(m, x.contiguous(memory_format=fmt)) for n, m in ready.items()}
    finally:
        for m in models.values():  # the caller's models come back as they were
            m.to(memory_format=torch.contiguous_format)


register_backend("cpu", eager_cpu, device="cpu", order=0, optional=False, allocator_peak=True,
                 help="eager PyTorch on CPU, channels_last")
