"""ONNX Runtime on CPU: `ort` times the fp32 export (bench.ort), `ort_int8` the static INT8 QDQ model that
the export stage ships with deploy.precision=int8."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from elimnet.bench.backends import register_backend
from elimnet.fields import Field, is_bool


def _without_onnxruntime() -> str | None:
    from elimnet.bench.ort_timing import onnxruntime_version

    return None if onnxruntime_version() else "onnxruntime is not installed"


def _ort_unavailable(cfg) -> str | None:
    return "bench.ort=false" if not cfg["bench.ort"] else _without_onnxruntime()


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
def _ort(models, cfg, image_size, threads, workdir: Path, prof):
    from elimnet.bench.ort_timing import export_onnx

    yield _ort_runners(models, threads, prof, "onnx_file_bytes",
                       lambda n, m: export_onnx(m, workdir / f"{n}.onnx", image_size))


register_backend("ort", _ort, device="cpu", order=20, unavailable=_ort_unavailable,
                 params={"bench.ort": Field(True, is_bool, "time ONNX Runtime CPU (fp32 export): the runtime that ships, the headline")},
                 help="ONNX Runtime CPU (fp32 export)")


def _ort_int8_unavailable(cfg) -> str | None:
    if cfg["deploy.precision"] != "int8":
        return f"deploy.precision={cfg['deploy.precision']}"
    return _without_onnxruntime()


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


register_backend("ort_int8", _ort_int8, device="cpu", order=30, unavailable=_ort_int8_unavailable,
                 help="ONNX Runtime CPU, static INT8 QDQ (deploy.precision=int8)")
