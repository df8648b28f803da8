"""The one table of deployed precisions and their artifact files (models/deploy/<role>/<file>).

A leaf (no torch, no onnx): config, the stages, the report and MLflow logging all read the
vocabulary from here, so adding a precision is one row.
"""
from __future__ import annotations

from pathlib import Path

# precision -> artifact file name in a role's deploy folder, in shipping order (the last present ships)
PRECISIONS: dict[str, str] = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def artifact_path(deploy_dir: str | Path, precision: str) -> Path:
    return Path(deploy_dir) / PRECISIONS[precision]


def artifacts(deploy_dir: str | Path) -> dict[str, Path]:
    """precision -> file, for the artifacts present in `deploy_dir`."""
    found = {p: artifact_path(deploy_dir, p) for p in PRECISIONS}
    return {p: path for p, path in found.items() if path.is_file()}


def shipped(precisions) -> str | None:
    """The precision that ships among `precisions`: the most compressed one present (int8 over fp32)."""
    present = [p for p in PRECISIONS if p in precisions]
    return present[-1] if present else None


def onnx_name(precision: str) -> str:
    """Name of a precision's artifact in summaries and MLflow: onnx_fp32, onnx_int8."""
    return f"onnx_{precision}"
