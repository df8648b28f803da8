"""ONNX Runtime on CPU: export with torch's current (torch.export-based) exporter, then time sessions.

The batch dimension is exported dynamic, so one file serves every benchmark batch size.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from elimnet.bench.latency import Runner


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def export_onnx(model: torch.nn.Module, path: str | Path, image_size: int, in_chans: int = 3,
                opset: int | None = None) -> Path:
    """Export `model` (eval mode, contiguous weights) to `path` with a dynamic batch dimension."""
    from elimnet.io import atomic_path

    path = Path(path)
    model = model.eval().to(memory_format=torch.contiguous_format)
    x = torch.randn(2, in_chans, image_size, image_size)
    kwargs = {"opset_version": opset} if opset else {}
    # The exporter reports each step on stdout; keep the benchmark's output a table.
    with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (x,), str(tmp), dynamo=True, input_names=["image"], output_names=["logits"],
                          dynamic_shapes=({0: "batch"},), external_data=False, **kwargs)
    return path


def ort_session(path: str | Path, threads: int):
    """A CPU InferenceSession with the same thread count as the PyTorch measurements."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def ort_runner(session, x: torch.Tensor) -> Runner:
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return lambda: session.run(None, feed)


def onnx_file_bytes(path: str | Path) -> int:
    return os.path.getsize(path)
