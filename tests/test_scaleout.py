"""Scale-out plumbing: concurrent experiments against a real `mlflow server` and a SQLite store,
and a local-directory DVC remote that round-trips pipeline outputs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mlflow_server import mlflow_server

pytestmark = pytest.mark.slow

N = 3
# A separate process logging one experiment, as the report stage of a queued `dvc exp run` does.
LOG_ONE = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_scaleout import _log_one
print(_log_one(sys.argv[1], int(sys.argv[2])) or "FAILED")
"""


def _log_one(uri: str, i: int) -> str | None:
    from elimnet.track import log_run

    return log_run(uri=uri, experiment="scaleout", run_name=f"exp{i}", params={"model.elim": i},
                   metrics={"test_macro_f1": i / 10, "bench": {"speedup": 1 + i}},
                   history={"candidate": [{"epoch": e, "val_macro_f1": i / 10 + e / 100} for e in (1, 2)]})


def _assert_all_landed(uri: str, ids: list[str | None]) -> None:
    from mlflow.tracking import MlflowClient

    assert None not in ids and len(set(ids)) == N
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("scaleout")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"exp{i}" for i in range(N)]
    for r in runs:
        i = int(r.data.params["model.elim"])
        assert r.info.run_id == ids[i] and r.info.status == "FINISHED"
        assert r.data.metrics == {"test_macro_f1": pytest.approx(i / 10), "bench.speedup": 1.0 + i,
                                  "candidate.val_macro_f1": pytest.approx(i / 10 + 0.02)}
        steps = client.get_metric_history(r.info.run_id, "candidate.val_macro_f1")
        assert sorted(m.step for m in steps) == [1, 2]


def test_concurrent_runs_all_land_on_a_real_server(tmp_path):
    """N experiments logging at once (a fresh experiment: they race to create it) all appear with metrics."""
    with mlflow_server(tmp_path / "server") as uri:
        ids: list[str | None] = [None] * N
        start = threading.Barrier(N)

        def worker(i: int) -> None:
            start.wait()
            ids[i] = _log_one(uri, i)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)  # generous: CI machines have run this suite 5x slower than ours
        _assert_all_landed(uri, ids)


def test_concurrent_processes_on_an_initialised_sqlite_store(tmp_path):
    """N processes writing one SQLite file all land once its schema exists (as `mlflow db upgrade` makes it).

    On a fresh file they raced on MLflow's schema migration; log_run now initialises it under a file
    lock (tests/test_tracking_bounds.py covers the fresh file).
    """
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    # Creates the schema as `mlflow db upgrade URI` does (in-process: one interpreter start less).
    MlflowClient(uri).search_experiments()
    assert (tmp_path / "mlflow.db").stat().st_size > 0
    procs = [subprocess.Popen([sys.executable, "-c", LOG_ONE, uri, str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(N)]
    outs = [p.communicate(timeout=300) for p in procs]
    ids = [o.strip().splitlines()[-1] if o.strip() else None for o, _ in outs]
    assert "FAILED" not in ids, "\n".join(e[-1500:] for _, e in outs)
    _assert_all_landed(uri, ids)


# ----------------------------------------------------------------------------- DVC remote
def _env() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # stage cmds call `python`
    return env


def _run(args: list[str], cwd: Path) -> str:
    out = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout + out.stderr


def _dvc(*args: str, cwd: Path) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd)


STAGE = """stages:
  make:
    cmd: python make.py
    deps: [make.py]
    outs: [out/weights.bin, out/prepared]
"""
MAKE = """from pathlib import Path
Path("out/prepared").mkdir(parents=True, exist_ok=True)
Path("out/weights.bin").write_bytes(bytes(range(256)) * 64)
for i in range(3):
    Path(f"out/prepared/part{i}.txt").write_text(f"split {i}\\n" * 100)
"""


def test_local_dvc_remote_round_trips_stage_outputs(tmp_path):
    """push -> drop cache and outputs (a fresh machine) -> pull restores them byte for byte, status clean."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "make.py").write_text(MAKE)
    _run(["git", "init", "-q"], repo)
    _dvc("init", "-q", cwd=repo)
    _dvc("repro", cwd=repo)
    before = {p.relative_to(repo): p.read_bytes() for p in sorted((repo / "out").rglob("*"))
              if p.is_file() and p.name != ".gitignore"}
    assert len(before) == 4
    _dvc("remote", "add", "-d", "shared", str(remote), cwd=repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "pipeline + remote"], repo)
    pushed = _dvc("push", cwd=repo)
    assert "pushed" in pushed and any(remote.rglob("*"))

    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "out")
    _dvc("pull", cwd=repo)
    after = {p.relative_to(repo): p.read_bytes() for p in sorted((repo / "out").rglob("*"))
              if p.is_file() and p.name != ".gitignore"}
    assert after == before
    status = _dvc("status", cwd=repo)
    assert "Data and pipelines are up to date" in status
    assert "are in sync" in _dvc("status", "--cloud", cwd=repo)  # the remote holds everything the lock names
