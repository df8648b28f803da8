"""Log one run per experiment to MLflow (SQLite store by default).

MLflow being unreachable or broken must not fail a DVC stage: we warn once and return
None; the JSON metrics DVC tracks are the record of truth.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tracking_uri(cfg) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg["mlflow.tracking_uri"]


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _flat_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:  # drop NaN
            out[key] = float(v)
    return out


def log_torch_model(run_id: str, model, input_shape: tuple[int, ...]) -> str:
    """Log `model` to run `run_id` with mlflow.pytorch (pt2 format) and a signature; return the model URI."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = model.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        y = model(torch.zeros(*input_shape))
    # Tensor signature with an open batch dimension: a served model takes any number of images.
    f32 = np.dtype(np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(f32, (-1, *input_shape[1:]))]),
                               outputs=Schema([TensorSpec(f32, (-1, *y.shape[1:]))]))
    active = mlflow.active_run()
    with (contextlib.nullcontext() if active and active.info.run_id == run_id else mlflow.start_run(run_id=run_id)):
        # "pt2": a torch.export program, no pickled code (like our own model files); the example
        # has batch 2 so that the exported batch dimension stays dynamic (size 1 would specialise).
        # Explicit requirements skip MLflow's slow import-tracing inference.
        info = mlflow.pytorch.log_model(model, name="model", signature=signature, serialization_format="pt2",
                                        input_example=np.zeros((2, *input_shape[1:]), dtype=np.float32),
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    return info.model_uri


# Serialises _tracking: two threads saving and restoring the same process-wide variable would
# interleave and leave the second thread's URI behind after both are done.
_TRACKING_LOCK = threading.Lock()


@contextlib.contextmanager
def _tracking(uri: str):
    """Point mlflow's global state at `uri` for one block, then restore it.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would otherwise make the
    first URI used in a process win over every later params.yaml value. Only mlflow.pytorch
    needs the global URI; everything else goes through an MlflowClient(uri).
    """
    import mlflow

    with _TRACKING_LOCK:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # restores the variable too; None unsets it


def _experiment_id(client, name: str) -> str:
    """Get or create; parallel jobs (dvc queue --jobs N) race to create it, and the loser re-reads."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def log_run(*, uri: str, experiment: str, run_name: str, params: dict[str, Any], metrics: dict,
            history: dict[str, list[dict]] | None = None, artifacts: list[str | Path] = (),
            tags: dict[str, str] | None = None, model=None, input_shape: tuple[int, ...] | None = None,
            figures: dict[str, Any] | None = None, onnx_models: dict[str, str | Path] | None = None,
            register: dict[str, str] | None = None, datasets: dict[str, str | Path] | None = None) -> str | None:
    """Create one run; return its id, or None (with one warning) if MLflow is unavailable.

    `model` (a torch module) is logged with mlflow.pytorch under the name "model", with a tensor
    signature inferred from one forward pass on a batch of `input_shape` (batch dim left open);
    `figures` are matplotlib figures logged as PNG artifacts under their file names.
    `onnx_models` {name: .onnx} are logged with mlflow.onnx, and those named in `register`
    {name: registered model} become a new version of that registered model. `datasets`
    {context: split .pt} are logged as run inputs. System metrics are sampled meanwhile.
    """
    try:
        return _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, model,
                        input_shape, figures, onnx_models, register, datasets)
    except Exception as e:  # noqa: BLE001 - tracking must never fail the pipeline
        warnings.warn(f"MLflow logging to {uri} failed, metrics stay in metrics/*.json: {type(e).__name__}: {e}",
                      stacklevel=2)
        print(f"warning: MLflow logging to {uri} failed ({type(e).__name__}); JSON metrics are kept",
              file=sys.stderr)
        return None


def _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, model, input_shape,
             figures, onnx_models=None, register=None, datasets=None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = _experiment_id(client, experiment)
    run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in (tags or {}).items() if v})
    rid = run.info.run_id
    from mlflow.entities import Metric, Param

    ps = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    ms = [Metric(k, v, 0, 0) for k, v in sorted(_flat_metrics(metrics).items())]
    for prefix, rows in (history or {}).items():
        for row in rows:
            step = int(row.get("epoch", 0))
            ms += [Metric(f"{prefix}.{k}", float(v), 0, step) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float))]
    for i in range(0, len(ps), 100):
        client.log_batch(rid, params=ps[i:i + 100])
    for i in range(0, len(ms), 500):
        client.log_batch(rid, metrics=ms[i:i + 500])
    for path in artifacts:
        p = Path(path)
        if p.is_file():
            client.log_artifact(rid, str(p), artifact_path=p.parent.name if p.parent.name != "metrics" else None)
    for fname, fig in (figures or {}).items():
        client.log_figure(rid, fig, fname)
    steps = []  # (what, how): each one may fail alone, the run (params, metrics) stays
    if model is not None:
        steps.append(("model", lambda: log_torch_model(rid, model, input_shape)))
    if onnx_models or datasets:
        from elimnet.track import mlflow_deploy as dep

        steps += [(f"ONNX model {n}", lambda n=n, p=p: dep.log_onnx_model(p, n, (register or {}).get(n)))
                  for n, p in (onnx_models or {}).items()]
        if datasets:
            steps.append(("datasets", lambda: dep.log_datasets(datasets, experiment)))
    if steps:
        from elimnet.track.mlflow_deploy import start_run_with_system_metrics

        with _tracking(uri), start_run_with_system_metrics(rid):
            for what, log in steps:
                try:
                    log()
                except Exception as e:  # noqa: BLE001 - keep the run (params, metrics) even without it
                    warnings.warn(f"MLflow {what} logging failed: {type(e).__name__}: {e}", stacklevel=2)
    client.set_terminated(rid)
    return rid
