"""ONNX Runtime on CPU: export with torch's current (torch.export-based) exporter, then time sessions.

The batch dimension is exported dynamic, so one file serves every benchmark batch size.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from elimnet.bench.latency import Runner
# Export and sessions live with the deployed artifacts; re-exported for the benchmark's callers.
from elimnet.deploy.export import export_onnx, ort_run, ort_session  # noqa: F401


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def ort_runner(session, x: torch.Tensor) -> Runner:
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy())}
    return lambda: session.run(None, feed)


def onnx_file_bytes(path: str | Path) -> int:
    return os.path.getsize(path)
