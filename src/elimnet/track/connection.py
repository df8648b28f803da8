"""Where the runs go, and whether the store can take one: URI resolution, bounded probes, store checks.

Bounded: an http(s) store is probed first (PROBE_TIMEOUT_S); one that does not answer is skipped
at once. While logging, MLflow's own retries and timeouts are cut to HTTP_LIMITS (MLflow's defaults,
7 retries with backoff 2 and 120 s per request, stalled a stage for minutes), so a server that
stops answering midway costs at most one bounded request: under 15 s per stage with the probe.

A relative `sqlite:///mlflow.db` is resolved against the main repository (main_repo_root), not the
working directory: `dvc exp run --queue` and `--temp` run the pipeline in a temporary copy under
`.dvc/tmp/exps/` that DVC deletes afterwards, and a run logged there would be lost with it.
A local store is checked before anything is written (check_store): a malformed or read-only file is
left untouched. A fresh SQLite store is created once under a file lock: concurrent first writers race
on MLflow's schema migration otherwise, and all but one lose their run.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PROBE_TIMEOUT_S = 3.0
# 2 tries x 3 s + 1 s backoff = 7 s for a request that never gets an answer (the first failure
# ends the logging); with the probe and MLflow's import (~5 s on a busy machine) it stays within 15 s.
# Set only while we log (and only where the user has not exported their own), restored afterwards.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}
SQLITE = "sqlite:///"


def tracking_uri(cfg) -> str:
    """$MLFLOW_TRACKING_URI, else mlflow.tracking_uri; a relative SQLite path made absolute (resolve_store_uri)."""
    return resolve_store_uri(os.environ.get("MLFLOW_TRACKING_URI") or cfg["mlflow.tracking_uri"])


def main_repo_root(start: str | Path | None = None) -> Path | None:
    """The repository whose store a run belongs to, or None outside git and DVC.

    In a DVC stage, $DVC_ROOT: DVC sets it to the repository that queued the experiment, also when the
    stage runs in a temporary executor copy (dvc/repo/experiments/queue/base.py, DVC 3.67). Then (or
    outside DVC, from `start`) the checkout that owns the git directory: for a `git worktree`, the main
    checkout (`git rev-parse --git-common-dir`), so every checkout of one repository shares one store."""
    base = Path(os.environ.get("DVC_ROOT") or start or Path.cwd())
    try:
        out = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=base,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is None or out.returncode != 0:
        return base if os.environ.get("DVC_ROOT") else None
    common = Path(out.stdout.strip())
    return common.parent if common.name == ".git" else base  # a bare or unusual layout: stay where we are


def resolve_store_uri(uri: str, root: str | Path | None = None) -> str:
    """`sqlite:///relative.db` -> `sqlite:////<main repo>/relative.db`; any other URI unchanged."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    base = Path(root) if root else main_repo_root()
    if base is None:
        return uri  # outside any repository: relative to the working directory, as MLflow reads it
    query = uri[len(SQLITE):].partition("?")[1:]
    return SQLITE + str((base / db).resolve()) + "".join(query)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI, else None."""
    if not uri.startswith(SQLITE):
        return None
    path = uri[len(SQLITE):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: `mlruns/<experiment>/` next to the database.

    MLflow would use ./mlruns of the working directory, a temporary copy for a queued experiment.
    It stores the location absolute (3.17 resolves relative ones), see docs/report.md."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return str(db.resolve().parent / "mlruns" / re.sub(r"[^\w.-]", "_", experiment))


def check_store(uri: str) -> str | None:
    """None when a local SQLite store can take a run; else why not, and nothing was written.

    A missing file is fine (init_store creates it). `PRAGMA quick_check` runs on a read-only
    connection, so a malformed file keeps its bytes; a file without write permission is refused
    before MLflow's migration code fails on it with pages of tracebacks."""
    db = sqlite_path(uri)
    if db is None or not db.exists():
        return None
    if not os.access(db, os.W_OK) or not db.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"{db} is read-only; left untouched (make it writable, or set mlflow.tracking_uri)"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            problems = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.DatabaseError as e:
        problems = [str(e)]
    if problems != ["ok"]:
        return (f"{db} failed PRAGMA quick_check ({problems[0][:200]}); left untouched "
                f"(move it aside to start a new store)")
    return None


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


# Serialises global_tracking_uri: two threads saving and restoring the same process-wide variable
# would interleave and leave the second thread's URI behind after both are done.
_TRACKING_LOCK = threading.Lock()


@contextlib.contextmanager
def global_tracking_uri(uri: str):
    """Point mlflow's global state at `uri` for one block, then restore it.

    mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would otherwise make the
    first URI used in a process win over every later params.yaml value. Only the fluent API
    (mlflow.pytorch, mlflow.onnx, log_input) needs it; everything else goes through an MlflowClient(uri).
    """
    import mlflow

    with _TRACKING_LOCK:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # restores the variable too; None unsets it
