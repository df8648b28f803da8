"""Tracking never stalls or fails a stage: a closed port and a server that never answers are skipped
after one probe, with one warning line; a fresh SQLite store takes concurrent first writers."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import fixed_split_repeats
from elimnet.track import log_run
from elimnet.track.connection import HTTP_LIMITS, bounded_requests, probe


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed on exit: connections are refused


class SilentServer:
    """Accepts TCP connections on 127.0.0.1, reads nothing, answers nothing; counts connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)  # held open, never answered

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.stop.set()
        self.thread.join()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def _log(uri: str) -> str | None:
    return log_run(uri=uri, experiment="x", run_name="r", params={"a": 1}, metrics={"m": 0.5})


def test_closed_port_is_skipped_with_one_warning_line(capfd):
    uri = f"http://127.0.0.1:{_closed_port()}"
    env_before = {k: os.environ.get(k) for k in HTTP_LIMITS}
    assert probe(uri) is not None
    assert _log(uri) is None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: MLflow logging to {uri} failed (")
    assert {k: os.environ.get(k) for k in HTTP_LIMITS} == env_before  # nothing leaks into later code


def test_silent_server_costs_one_probe_and_no_mlflow_request(silent_server, capfd):
    """The probe's own timeout ends the wait (the test finishes only because the code bounds it); MLflow,
    whose defaults waited 7 x 120 s, never connects: the server sees exactly one connection."""
    assert _log(silent_server.uri) is None
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"MLflow logging to {silent_server.uri} failed (no answer within 3 s)" in err[0]
    assert len(silent_server.conns) == 1


def test_server_that_stalls_after_the_probe_gets_two_bounded_tries(monkeypatch, capfd):
    """/health answers, the API never does: MLflow's requests run under HTTP_LIMITS (2 tries of 3 s), not its
    defaults (8 tries of 120 s); the first failed request ends the logging. The server sees exactly 2 API calls."""
    import http.server

    for k in HTTP_LIMITS:
        monkeypatch.delenv(k, raising=False)
    api_calls: list[str] = []
    release = threading.Event()

    class Stall(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/health"):
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                return
            api_calls.append(self.path.split("?")[0])
            release.wait(60)  # answers nothing until the test ends

        do_POST = do_GET

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stall)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    uri = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        assert _log(uri) is None
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
    assert api_calls == ["/api/2.0/mlflow/experiments/get-by-name"] * 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: MLflow logging to {uri} failed (MlflowException")


def test_http_limits_apply_inside_and_are_restored_after(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")  # the user's own choice wins
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT

    with bounded_requests():
        assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 3
        assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 3
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"


def test_unreachable_store_leaves_report_outputs_unchanged(tmp_path, capfd):
    """The report writes the same summary.json whether MLflow is off or unreachable."""
    from test_mlflow import make_experiment

    from elimnet.config import load_params
    from elimnet.pipeline.report_stage import run_report

    uri = f"http://127.0.0.1:{_closed_port()}"
    outs = {}
    for name, over in (("off", ["mlflow.enabled=false"]), ("dead", [f"mlflow.tracking_uri={uri}"])):
        root = tmp_path / name
        cfg = load_params(tmp_path / "none.yaml", ["model.arch=resnet18", "model.weights=none", "model.elim=3",
                                                   "data.image_size=32", *fixed_split_repeats(3), *over])
        metrics_dir, _ = make_experiment(root, cfg)
        summary = run_report(cfg, metrics_dir, root / "summary.json", root / "curves.png")
        outs[name] = (root / "summary.json").read_bytes()
        assert summary.get("mlflow_run_id") is None
    assert outs["off"] == outs["dead"]
    assert f"MLflow logging to {uri} failed" in capfd.readouterr().err


LOG_ONE = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_scaleout import _log_one
print(_log_one(sys.argv[1], int(sys.argv[2])) or "FAILED")
"""


@pytest.mark.slow
def test_three_processes_on_a_fresh_sqlite_file_all_land(tmp_path):
    """Three first writers on a file that does not exist yet: the locked initialisation lets all three land."""
    from test_scaleout import N, _assert_all_landed

    db = tmp_path / "fresh" / "mlflow.db"
    uri = f"sqlite:///{db}"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    assert not db.exists()
    procs = [subprocess.Popen([sys.executable, "-c", LOG_ONE, uri, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(N)]
    outs = [p.communicate(timeout=600) for p in procs]
    ids = [o.strip().splitlines()[-1] if o.strip() else None for o, _ in outs]
    assert "FAILED" not in ids, "\n".join(e[-1500:] for _, e in outs)
    _assert_all_landed(uri, ids)


# ----------------------------------------------------------------------------- the store: where, and whether it can take a run
def _sqlite_file(path: Path, rows: int = 2000) -> bytes:
    """A real SQLite database over many pages (not an MLflow store: check_store runs before MLflow opens it)."""
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE metrics (key TEXT, value REAL)")
        con.executemany("INSERT INTO metrics VALUES (?, ?)", [(f"metric_{i:05d}" * 4, i / 7) for i in range(rows)])
    con.close()
    return path.read_bytes()


def test_corrupted_store_keeps_its_bytes_and_names_the_cause(tmp_path, capfd):
    import random

    db = tmp_path / "mlflow.db"
    data = bytearray(_sqlite_file(db))
    page = 4096
    assert len(data) > 8 * page
    mid = (len(data) // page // 2) * page  # a b-tree page in the middle: its header and cells become noise
    data[mid:mid + page] = random.Random(0).randbytes(page)
    db.write_bytes(bytes(data))
    assert _log(f"sqlite:///{db}") is None
    assert db.read_bytes() == bytes(data)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no lock, journal or mlruns either
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PRAGMA quick_check" in err[0] and "left untouched" in err[0], err


def test_read_only_store_is_refused_in_one_line(tmp_path, capfd):
    db = tmp_path / "mlflow.db"
    before = _sqlite_file(db, rows=10)
    db.chmod(0o444)
    try:
        assert _log(f"sqlite:///{db}") is None
    finally:
        db.chmod(0o644)
    assert db.read_bytes() == before
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{db} is read-only" in err[0], err


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def test_relative_store_resolves_to_the_repository_that_queued_the_run(tmp_path, monkeypatch):
    """DVC runs a queued experiment in <repo>/.dvc/tmp/exps/tmpXXXX, a fresh git repository it deletes
    afterwards, with $DVC_ROOT naming the repository that queued it."""
    from elimnet.track.connection import resolve_store_uri

    main = _git_repo(tmp_path / "main")
    temp_copy = _git_repo(main / ".dvc" / "tmp" / "exps" / "tmpabc123")
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert resolve_store_uri("sqlite:///mlflow.db") == f"sqlite:///{temp_copy.resolve()}/mlflow.db"  # no DVC: itself
    monkeypatch.setenv("DVC_ROOT", str(main))
    assert resolve_store_uri("sqlite:///mlflow.db") == f"sqlite:///{main.resolve()}/mlflow.db"
    assert resolve_store_uri("sqlite:///sub/x.db?timeout=5") == f"sqlite:///{main.resolve()}/sub/x.db?timeout=5"
    assert resolve_store_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert resolve_store_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_relative_store_of_a_git_worktree_is_the_main_checkouts(tmp_path, monkeypatch):
    from elimnet.track.connection import resolve_store_uri

    main = _git_repo(tmp_path / "main")
    git = ["git", "-C", str(main), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    subprocess.run([*git, "worktree", "add", "-q", str(tmp_path / "wt")], check=True)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "wt")
    assert resolve_store_uri("sqlite:///mlflow.db") == f"sqlite:///{main.resolve()}/mlflow.db"
    outside = tmp_path / "no-git"
    outside.mkdir()
    monkeypatch.chdir(outside)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert resolve_store_uri("sqlite:///mlflow.db") == "sqlite:///mlflow.db"  # no repository: as MLflow reads it


@pytest.mark.slow
def test_run_from_a_temp_copy_lands_in_the_main_store_and_is_read_back(tmp_path, monkeypatch, capfd):
    """A queued experiment's report stage: cwd is DVC's temporary copy, the URI the default relative one.
    The run, and its artifacts, land in the main repository, and the success line names that store."""
    from mlflow.tracking import MlflowClient

    from elimnet.config import load_params
    from elimnet.track import tracking_uri

    main = _git_repo(tmp_path / "main")
    temp_copy = _git_repo(main / ".dvc" / "tmp" / "exps" / "tmpq1")
    (temp_copy / "metrics").mkdir()
    (temp_copy / "metrics" / "summary.json").write_text("{}")
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(main))
    uri = tracking_uri(load_params(tmp_path / "none.yaml", ["mlflow.tracking_uri=sqlite:///mlflow.db"]))
    assert uri == f"sqlite:///{main.resolve()}/mlflow.db"
    rid = log_run(uri=uri, experiment="queued", run_name="exp-1", params={"a": 1}, metrics={"m": 0.5},
                  artifacts=[temp_copy / "metrics" / "summary.json"])
    assert rid is not None
    assert not (temp_copy / "mlflow.db").exists() and not (temp_copy / "mlruns").exists()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("queued")
    assert [r.info.run_id for r in client.search_runs([exp.experiment_id])] == [rid]
    assert exp.artifact_location == str(main.resolve() / "mlruns" / "queued")
    assert (main / "mlruns" / "queued" / rid / "artifacts" / "summary.json").read_text() == "{}"
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("MLflow run: ") and f"--backend-store-uri {uri}`" in err[-1]
