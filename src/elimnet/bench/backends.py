"""Latency backends: one registry entry each, in the order they are measured and reported.

A backend declares why it is not measured for given params (or None), the device its timings use,
and `prepare`: a context manager that readies the models and yields `make_runners(x)` ->
{model name: zero-argument runner}. Adding a backend is one `register_backend(...)` call plus its
param in config.py (docs/extending.md). torch and onnxruntime are imported inside the functions,
so report code can list BACKENDS without them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager


@dataclass(frozen=True)
class Backend:
    name: str
    device: str  # "cpu" or "cuda": how time_runners synchronises
    unavailable: Callable[[Any], str | None]  # cfg -> why it is not measured, or None
    prepare: Callable[..., ContextManager[Callable]]  # (models, cfg, image_size, threads, workdir, prof)
    optional: bool = True  # a failure is recorded under `unavailable`, not raised
    allocator_peak: bool = False  # peak memory measurable by torch's allocator hooks (eager only)
    help: str = ""


REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    if backend.name in REGISTRY:
        raise ValueError(f"backend {backend.name!r} registered twice")
    REGISTRY[backend.name] = backend
    return backend


def unavailable_backends(cfg) -> dict[str, str]:
    """Backend -> why it is not measured (backends absent from the result are measured)."""
    return {name: why for name, b in REGISTRY.items() if (why := b.unavailable(cfg))}


# ----------------------------------------------------------------------------- eager and compiled CPU
@contextlib.contextmanager
def _eager_cpu(models, cfg, image_size, threads, workdir: Path, prof, compile_: bool = False):
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


register_backend(Backend("cpu", "cpu", lambda cfg: None, _eager_cpu, optional=False, allocator_peak=True,
                         help="eager PyTorch on CPU, channels_last"))


# ----------------------------------------------------------------------------- CUDA
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


register_backend(Backend("cuda", "cuda", _cuda_unavailable, _cuda, allocator_peak=True,
                         help="eager PyTorch on CUDA (events; float16 autocast with bench.amp)"))


# ----------------------------------------------------------------------------- ONNX Runtime
def _onnx_unavailable(cfg) -> str | None:
    from elimnet.bench.ort_timing import onnxruntime_version

    if not cfg["bench.onnx"]:
        return "bench.onnx=false"
    return None if onnxruntime_version() else "onnxruntime is not installed"


def _ort_runners(models, threads, prof, size_key: str, make_file: Callable):
    """make_runners over ONNX Runtime sessions of `make_file(name, model)`; its size goes to prof[name][size_key]."""
    from elimnet.bench.ort_timing import onnx_file_bytes, ort_runner, ort_session

    sessions = {}
    for n, m in models.items():
        path = make_file(n, m)
        prof[n][size_key] = onnx_file_bytes(path)
        sessions[n] = ort_session(path, threads)
    return lambda x: {n: ort_runner(s, x) for n, s in sessions.items()}


@contextlib.contextmanager
def _onnx(models, cfg, image_size, threads, workdir: Path, prof):
    from elimnet.bench.ort_timing import export_onnx

    yield _ort_runners(models, threads, prof, "onnx_file_bytes",
                       lambda n, m: export_onnx(m, workdir / f"{n}.onnx", image_size))


register_backend(Backend("onnx", "cpu", _onnx_unavailable, _onnx, help="ONNX Runtime CPU (fp32 export)"))


def _ort_int8_unavailable(cfg) -> str | None:
    from elimnet.bench.ort_timing import onnxruntime_version

    if cfg["deploy.precision"] != "int8":
        return f"deploy.precision={cfg['deploy.precision']}"
    return None if onnxruntime_version() else "onnxruntime is not installed"


@contextlib.contextmanager
def _ort_int8(models, cfg, image_size, threads, workdir: Path, prof):
    from elimnet.bench.latency import bench_input
    from elimnet.bench.ort_timing import export_onnx
    from elimnet.deploy.quantize import quantize

    # Static QDQ as the export stage ships it; latency depends on the graph, not on the scales,
    # so random calibration batches (MinMax) stand in for the train images here.
    calib = [bench_input(4, image_size, cfg["seed"] + i).numpy() for i in range(2)]

    def int8_file(n, m):
        fp32 = export_onnx(m, workdir / f"{n}.int8src.onnx", image_size, name=n)
        return quantize(fp32, workdir / f"{n}.int8.onnx", calib, "minmax", name=n)

    yield _ort_runners(models, threads, prof, "int8_file_bytes", int8_file)


register_backend(Backend("ort_int8", "cpu", _ort_int8_unavailable, _ort_int8,
                         help="ONNX Runtime CPU, static INT8 QDQ (deploy.precision=int8)"))


# ----------------------------------------------------------------------------- torch.compile
register_backend(Backend("compile", "cpu", lambda cfg: None if cfg["bench.compile"] else "bench.compile=false",
                         lambda *a: _eager_cpu(*a, compile_=True), help="torch.compile (inductor) on CPU"))

BACKENDS = tuple(REGISTRY)
