"""Log one run per experiment to MLflow (SQLite store by default): the one entry point, log_run.

MLflow being unreachable or broken must not fail a DVC stage: we warn once, in one line, and return
None; the JSON metrics DVC tracks are the record of truth. Where the store is and whether it can take
a run is track.connection's; what the run holds is track.run_content's; models are track.model_logging's.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from elimnet.track.connection import artifact_location, bounded_requests, check_store, init_store, probe
from elimnet.track.run_content import (EXPERIMENT_KIND, dvc_command_start_ms, entity_batches,
                                       run_description)


def ui_url(experiment_id: str, run_id: str | None = None, host: str = "http://127.0.0.1:5000") -> str:
    """Where `mlflow ui` shows this experiment's training runs (or one run)."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{host}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def log_run(*, uri: str, experiment: str, run_name: str, params: dict[str, Any], metrics: dict,
            history: dict[str, list[dict]] | None = None, artifacts: list[str | Path] = (),
            tags: dict[str, str] | None = None, model=None, input_shape: tuple[int, ...] | None = None,
            figures: dict[str, Any] | None = None, onnx_models: dict[str, str | Path] | None = None,
            register: dict[str, str] | None = None, datasets: dict[str, str | Path] | None = None) -> str | None:
    """Create one run; return its id once it has been read back from `uri`, or None with one warning line.

    `model` (a torch module) is logged with mlflow.pytorch under the name "model", with a tensor
    signature inferred from one forward pass on a batch of `input_shape` (batch dim left open);
    `figures` are matplotlib figures logged as PNG artifacts under their file names.
    `onnx_models` {name: .onnx} are logged with mlflow.onnx, and those named in `register`
    {name: registered model} become a new version of that registered model. `datasets`
    {context: split .pt} are logged as run inputs. System metrics are sampled meanwhile.
    """
    why = probe(uri) or check_store(uri)
    if why is not None:
        _warn(uri, why)
        return None
    try:
        with bounded_requests():
            init_store(uri)
            rid, exp_id = _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, figures)
            from elimnet.track.model_logging import log_models

            log_models(uri, rid, experiment, model, input_shape, onnx_models, register, datasets)
            _finish(uri, rid)
    except Exception as e:  # noqa: BLE001 - tracking must never fail the pipeline
        _warn(uri, f"{type(e).__name__}: {_first_line(e)}")
        return None
    if uri.startswith(("http://", "https://")):
        print(f"MLflow run: {ui_url(exp_id, rid, host=uri.rstrip('/'))}", file=sys.stderr)
    else:
        print(f"MLflow run: {ui_url(exp_id, rid)} (after `mlflow ui --backend-store-uri {uri}`)", file=sys.stderr)
    return rid


def artifact_dir(path: Path) -> str | None:
    """Where a file goes in the run: its folders below metrics/ (metrics/candidate/r0/eval.json ->
    candidate/r0, so the repeats and roles don't overwrite each other), else its own folder (plots)."""
    parents = [q.name for q in path.resolve().parents]
    if "metrics" in parents:
        below = parents[:parents.index("metrics")]
        return "/".join(reversed(below)) or None
    return path.parent.name or None


def _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, figures) -> tuple[str, str]:
    """The run with its params, metrics, curves, tags, files and figures; (run id, experiment id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = _experiment_id(client, experiment, artifact_location(uri, experiment))
    tags = {"mlflow.note.content": run_description(params), **(tags or {})}
    run = client.create_run(exp_id, run_name=run_name, start_time=dvc_command_start_ms(),
                            tags={k: str(v) for k, v in tags.items() if v})
    rid = run.info.run_id
    param_batches, metric_batches = entity_batches(params, metrics, history)
    for batch in param_batches:
        client.log_batch(rid, params=batch)
    for batch in metric_batches:
        client.log_batch(rid, metrics=batch)
    for path in artifacts:
        p = Path(path)
        if p.is_file():
            client.log_artifact(rid, str(p), artifact_path=artifact_dir(p))
    for fname, fig in (figures or {}).items():
        client.log_figure(rid, fig, fname)
    return rid, exp_id


def _finish(uri: str, rid: str) -> None:
    """End the run, then read it back from the store: a success line only for a run that is really there."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.set_terminated(rid)
    status = client.get_run(rid).info.status
    if status != "FINISHED":
        raise RuntimeError(f"run {rid} reads back as {status}, not FINISHED")


def _experiment_id(client, name: str, artifact_location: str | None = None) -> str:
    """Get or create; parallel jobs (dvc queue --jobs N) race to create it, and the loser re-reads."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get("mlflow.experimentKind") is None:
            for k, v in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _warn(uri: str, why: str) -> None:
    """One stderr line naming the store (warnings.warn would add a second line of source)."""
    print(f"warning: MLflow logging to {uri} failed ({why}); JSON metrics are kept", file=sys.stderr)
