"""torch model -> ONNX (fp32, dynamic batch) with torch's torch.export-based exporter, and its
numerical agreement with torch on given images.

The file carries what a consumer needs to feed it (mean, std, image size, classes) as ONNX
metadata, so evaluating an artifact needs nothing but the artifact and the images.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from elimnet.errors import StageError

INPUT_NAME, OUTPUT_NAME = "image", "logits"


class ExportError(StageError):
    """A model cannot be exported to ONNX (names the model and the operator that failed)."""


def failed_op(err: BaseException) -> str | None:
    """The aten operator an exporter error names, e.g. 'aten.linalg_eig' (None when it names none)."""
    text = str(err)
    for pat in (r"op='(aten\.[\w.]+?)'", r"torch\.ops\.(aten\.\w+)", r"(aten::\w+)", r"\b(aten\.\w+)"):
        m = re.search(pat, text)
        if m:
            return m.group(1).replace("::", ".")
    return None


def export_onnx(model: torch.nn.Module, path: str | Path, image_size: int, in_chans: int = 3,
                opset: int | None = None, name: str | None = None, metadata: dict | None = None) -> Path:
    """Export `model` (eval mode, contiguous weights) to `path` with a dynamic batch dimension.

    An operator the exporter cannot translate raises ExportError naming `name` (default: the
    file) and the operator; `metadata` values are stored JSON-encoded in the file's metadata_props.
    """
    from elimnet.io import atomic_path

    path = Path(path)
    model = model.eval().to(memory_format=torch.contiguous_format)
    # Batch 2: a size-1 example would let the exporter specialise the batch dimension.
    x = torch.randn(2, in_chans, image_size, image_size)
    kwargs = {"opset_version": opset} if opset else {}
    try:
        # The exporter reports each step on stdout; keep stage and benchmark output readable.
        with atomic_path(path) as tmp, contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (x,), str(tmp), dynamo=True, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamic_shapes=({0: "batch"},), external_data=False,
                              **kwargs)
            if metadata:
                set_metadata(tmp, metadata)
    except torch.onnx.OnnxExporterError as e:
        op = failed_op(e)
        what = f"operator {op} has no ONNX translation" if op else f"exporter failed ({_first_line(e)})"
        raise ExportError(f"{name or path.name}: cannot export to ONNX: {what}; replace that layer or keep "
                          f"bench.ort=false / deploy.precision off for this arch") from None
    return path


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:200] if lines else type(e).__name__


def set_metadata(path: str | Path, metadata: dict) -> None:
    """Store `metadata` (JSON-encoded values) in the ONNX file's metadata_props, in place."""
    import onnx

    m = onnx.load(str(path))
    keep = [p for p in m.metadata_props if p.key not in metadata]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in metadata.items():
        m.metadata_props.add(key=k, value=json.dumps(v))
    onnx.save(m, str(path))


def read_metadata(path: str | Path) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return {k: _decode(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}


def _decode(v: str):
    try:
        return json.loads(v)
    except ValueError:  # entries written by other tools (e.g. the quantizer) are plain strings
        return v


def ort_session(path: str | Path, threads: int | None = None):
    """A CPU InferenceSession, sequential, with `threads` intra-op threads (None: onnxruntime's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_run(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]


@torch.no_grad()
def parity(model: torch.nn.Module, session, images: torch.Tensor, batch_size: int = 64) -> dict:
    """Max abs and max relative error of the ONNX session's logits against torch's on `images`
    (already normalised float [N, C, S, S]); relative error is per image, against its largest logit."""
    model.eval()
    abs_err, rel_err = 0.0, 0.0
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].contiguous()
        ref = model(x).float().numpy()
        out = ort_run(session, x.numpy())
        diff = np.abs(out - ref)
        abs_err = max(abs_err, float(diff.max()))
        scale = np.maximum(np.abs(ref).max(axis=1, keepdims=True), 1e-12)
        rel_err = max(rel_err, float((diff / scale).max()))
    return {"max_abs_err": abs_err, "max_rel_err": rel_err, "images": int(images.shape[0])}
