"""Eager PyTorch on CUDA (CUDA events), when a GPU is present and bench.cuda is on."""
from __future__ import annotations

import contextlib
from pathlib import Path

from elimnet.bench.backends import register_backend
from elimnet.fields import Field, is_bool


def _cuda_unavailable(cfg) -> str | None:
    from elimnet.bench.latency import cuda_available

    if not cfg["bench.cuda"]:
        return "bench.cuda=false"
    return None if cuda_available() else "no CUDA device"


@contextlib.contextmanager
def _cuda(models, cfg, image_size, threads, workdir: Path, prof):
    import torch

    from elimnet.bench.latency import torch_runner

    ready = {n: m.eval().to("cuda") for n, m in models.items()}
    try:
        yield lambda x: {n: torch_runner(m, x.to("cuda"), amp=cfg["bench.amp"]) for n, m in ready.items()}
    finally:
        for m in models.values():
            m.to("cpu")
        torch.cuda.empty_cache()


register_backend("cuda", _cuda, device="cuda", order=10, unavailable=_cuda_unavailable, allocator_peak=True,
                 params={"bench.cuda": Field(True, is_bool, "also time CUDA when a GPU is present"),
                         "bench.amp": Field(False, is_bool, "CUDA timing under float16 autocast")},
                 help="eager PyTorch on CUDA (events; float16 autocast with bench.amp)")
