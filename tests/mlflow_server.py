"""A real `mlflow server` on 127.0.0.1 for tests: SQLite store, one worker, free port, stopped by PID.

    with mlflow_server(tmp_path) as uri:   # "http://127.0.0.1:PORT", answers /health
        ...

A pytest fixture is `with mlflow_server(tmp_path) as uri: yield uri`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(root: str | Path, start_timeout: float = 180.0) -> Iterator[str]:
    """Start `mlflow server` with its store and artifacts under `root`; yield its URI; always stop it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log_path = root / "mlflow-server.log"
    with open(log_path, "wb") as log:
        # A new session: the server's worker processes share our PID as their group id.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
        try:
            deadline = time.monotonic() + start_timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start on {uri}:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield uri
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group led by our child's PID, nothing else
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
