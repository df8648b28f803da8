"""Log one run per experiment to MLflow (SQLite store by default).

MLflow being unreachable or broken must not fail a DVC stage: we warn once and return
None; the JSON metrics DVC tracks are the record of truth.

Bounded: an http(s) store is probed first (PROBE_TIMEOUT_S); one that does not answer is skipped
at once. While logging, MLflow's own retries and timeouts are cut to HTTP_LIMITS (MLflow's defaults,
7 retries with backoff 2 and 120 s per request, stalled a stage for minutes), so a server that
stops answering midway costs at most one bounded request: under 15 s per stage with the probe.
A fresh SQLite store is created once under a file lock: concurrent first writers race on MLflow's
schema migration otherwise, and all but one lose their run.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def tracking_uri(cfg) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg["mlflow.tracking_uri"]


PROBE_TIMEOUT_S = 3.0
# 2 tries x 3 s + 1 s backoff = 7 s for a request that never gets an answer (the first failure
# ends the logging); with the probe and MLflow's import (~5 s on a busy machine) it stays within 15 s.
# Set only while we log (and only where the user has not exported their own), restored afterwards.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


def probe(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `uri` can be used (any HTTP answer counts, even 401/404; non-http stores are local),
    else why not, in a few words. One request with a short timeout: no retries."""
    import http.client
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        return f"no answer within {timeout_s:g} s" if isinstance(reason, TimeoutError) or \
            "timed out" in str(reason) else str(reason)


_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def bounded_requests():
    """HTTP_LIMITS in the environment for one block (MLflow reads them per request), then the old values.

    Holds a lock: threads saving and restoring the same variables would leave one's values behind."""
    with _ENV_LOCK:
        before = {k: os.environ.get(k) for k in HTTP_LIMITS}
        for k, v in HTTP_LIMITS.items():
            os.environ.setdefault(k, v)
        try:
            yield
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (relative to the working directory), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def init_store(uri: str) -> None:
    """Create a SQLite store's schema once, under `<db>.lock`, before any run is logged.

    MLflow migrates a fresh file in every process that opens it; three at once lost two runs
    ("table metrics already exists"). Under the lock the first one creates it, the others find it
    done. The store object is cached by MLflow per URI, so logging reuses it."""
    db = sqlite_path(uri)
    if db is None:
        return
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=120):
        MlflowClient(uri).search_experiments(max_results=1)


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# MLflow 3 opens an experiment on its GenAI overview unless told it holds model training. Releases that
# read the experiment tag need it; 3.17's UI reads `?workflowType=machine_learning` in the URL (ui_url).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ui_url(experiment_id: str, run_id: str | None = None, host: str = "http://127.0.0.1:5000") -> str:
    """Where `mlflow ui` shows this experiment's training runs (or one run)."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{host}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def dvc_command_start_ms() -> int | None:
    """Start of the `dvc repro` / `dvc exp run` (or queue worker) that runs this stage, in ms since the
    epoch: the earliest stage of the experiment, so the run's duration covers them all. None outside DVC."""
    if not os.environ.get("DVC_ROOT"):
        return None
    try:
        import psutil

        proc = psutil.Process().parent()
        while proc is not None:  # sh -c "python stages/report.py" <- dvc (`dvc exp exec-run` when queued)
            argv = proc.cmdline()
            if "dvc" in [os.path.basename(a) for a in argv[:2]] or argv[1:3] == ["-m", "dvc"]:
                return int(proc.create_time() * 1000)
            proc = proc.parent()
    except Exception:  # noqa: BLE001 - a missing start time only shortens the duration shown
        return None
    return None


def run_description(params: dict[str, Any], cwd: str | Path = ".") -> str:
    """Markdown for the run's description: which DVC experiment, how to look at it, its params diff."""
    name, base = os.environ.get("DVC_EXP_NAME"), os.environ.get("DVC_EXP_BASELINE_REV") or git_commit(cwd)
    if not base:
        return ""
    short = base[:7]
    lines = [f"DVC experiment **{name}** on commit `{short}`: `dvc exp show --rev {name}`, "
             f"`dvc params diff {short} {name}`, `dvc exp apply {name}`." if name else
             f"`dvc repro` in the workspace on commit `{short}`: `dvc params diff {short}`."]
    try:
        import yaml

        from elimnet.config import flatten

        out = subprocess.run(["git", "show", f"{base}:params.yaml"], cwd=cwd, capture_output=True, text=True,
                             timeout=10)
        before = flatten(yaml.safe_load(out.stdout) or {}) if out.returncode == 0 else {}
    except Exception:  # noqa: BLE001 - the description is a convenience
        before = {}
    changed = [(k, before[k], v) for k, v in sorted(params.items()) if k in before and before[k] != v]
    if changed:
        lines += ["", f"| param | {short} | this run |", "|---|---|---|"]
        lines += [f"| {k} | {a} | {b} |" for k, a, b in changed]
    elif before:
        lines += ["", f"Params as committed in `{short}`."]
    return "\n".join(lines)


def _flat_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:  # drop NaN
            out[key] = float(v)
        elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            out[f"{key}_lo"], out[f"{key}_hi"] = float(v[0]), float(v[1])  # a confidence interval
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
        if exp.tags.get("mlflow.experimentKind") is None:
            for k, v in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    try:
        return client.create_experiment(name, tags=EXPERIMENT_KIND)
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
    why = probe(uri)
    if why is not None:
        _warn(uri, why)
        return None
    try:
        with bounded_requests():
            init_store(uri)
            return _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, model,
                            input_shape, figures, onnx_models, register, datasets)
    except Exception as e:  # noqa: BLE001 - tracking must never fail the pipeline
        _warn(uri, f"{type(e).__name__}: {_first_line(e)}")
        return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _warn(uri: str, why: str) -> None:
    """One stderr line naming the store (warnings.warn would add a second line of source)."""
    print(f"warning: MLflow logging to {uri} failed ({why}); JSON metrics are kept", file=sys.stderr)


def _log_run(uri, experiment, run_name, params, metrics, history, artifacts, tags, model, input_shape,
             figures, onnx_models=None, register=None, datasets=None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = _experiment_id(client, experiment)
    tags = {"mlflow.note.content": run_description(params), **(tags or {})}
    run = client.create_run(exp_id, run_name=run_name, start_time=dvc_command_start_ms(),
                            tags={k: str(v) for k, v in tags.items() if v})
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
        import elimnet.track.mlflow_deploy as dep

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
                    print(f"warning: MLflow {what} logging to {uri} failed ({type(e).__name__}: {_first_line(e)}); "
                          f"the run keeps its params and metrics", file=sys.stderr)
    client.set_terminated(rid)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow run: {ui_url(exp_id, rid, host=uri.rstrip('/'))}", file=sys.stderr)
    else:
        print(f"MLflow run: {ui_url(exp_id, rid)} (after `mlflow ui --backend-store-uri {uri}`)", file=sys.stderr)
    return rid
