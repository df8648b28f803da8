"""`elimnet plan`: the JSON schema, the latency cache, the budget, and workers sharing a PostgreSQL study.

Tiny on purpose: a random-init simple_effnet on 32 px images of 4 classes the test builds, one
epoch, one repeat. What is asserted does not depend on the machine's speed: the budget is checked
against the latencies the plan itself measured.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

FAST = ["-S", "model.arch=simple_effnet", "-S", "model.weights=none", "-S", "train.epochs=1",
        "-S", "train.batch_size=8", "-S", "train.eval_batch_size=64", "-S", "bench.repeats=3", "-S", "bench.warmup=1",
        "-S", "bench.budget_s=0.05", "-S", "deploy.calibration_images=8"]
ENTRY_KEYS = {"name", "methods", "params", "macs", "latency_ms", "runtime", "precision", "test_macro_f1",
              "test_macro_f1_ci"}


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # --threads 1 must not leak into other tests
    yield
    torch.set_num_threads(n)


def _prepared(root: Path, tiny_split) -> Path:
    d = root / "prepared"
    d.mkdir(parents=True)
    for name, n, seed in (("train", 6, 0), ("val", 4, 1), ("test", 3, 2)):
        s = tiny_split(n_per_class=n, seed=seed)
        torch.save({"images": s.images, "labels": s.labels}, d / f"{name}.pt")
    (d / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"], "image_size": 32}))
    return d


def _args(root: Path, data: Path, *extra: str) -> list[str]:
    return ["--params", os.devnull, *FAST, "--data", str(data), "--pretrained", str(root / "none.pt"),
            "--threads", "1", "--repeats", "1", "--finalists", "2", "--no-progress", *extra]


def _plan(argv: list[str]) -> None:
    from elimnet.plan.runner import build_parser, run_plan

    assert run_plan(build_parser().parse_args(argv)) == 0


def _trial_params(storage: str, study: str) -> list[dict]:
    import optuna

    return [t.params for t in optuna.load_study(study_name=study, storage=storage).trials]


def test_plan_writes_the_schema_reuses_its_timings_and_respects_the_budget(tmp_path, tiny_split, capsys):
    data = _prepared(tmp_path, tiny_split)
    work, out = tmp_path / "work", tmp_path / "out"
    storage = f"sqlite:///{tmp_path}/plan.db"
    common = _args(tmp_path, data, "--budget", "1.0", "--trials", "3", "--storage", storage, "--work-dir", str(work))
    _plan([*common, "--study", "a", "--out-dir", str(out)])
    first = capsys.readouterr().out
    timed = json.loads((work / "latency.json").read_text())

    plan = json.loads((out / "plan.json").read_text())
    assert {"budget_ms", "reference", "front", "choice"} <= set(plan)
    assert set(plan["reference"]) >= {"latency_ms", "runtime", "precision"}
    assert (plan["reference"]["runtime"], plan["reference"]["precision"]) == ("onnxruntime", "fp32")
    assert plan["budget_ms"] == pytest.approx(1.0 * plan["reference"]["latency_ms"])
    assert plan["front"], "a 3-trial plan at budget 1.0 found no candidate at all"
    for e in plan["front"] + [plan["choice"]]:
        assert ENTRY_KEYS <= set(e) and e["precision"] in ("fp32", "int8") and e["runtime"] == "onnxruntime"
        assert 0.0 <= e["test_macro_f1"] <= 1.0 and e["test_macro_f1_ci"][0] <= e["test_macro_f1_ci"][1]
        assert 1.0 / e["speedup_vs_full"] <= 1.0  # measured paired ratio within --budget 1.0
    assert plan["choice"]["command"].startswith("dvc exp run -S 'model.elim=")
    assert f"deploy.precision={plan['choice']['precision']}" in plan["choice"]["command"]
    assert (out / "plan.md").read_text().startswith("# elimnet plan: a")
    assert (out / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plan["trials"]["complete"] + plan["trials"]["pruned"] == 3
    # Cached under the benchmark's own fingerprint (bench.hardware), in keys of the current version.
    from elimnet.bench.hardware import hardware_fingerprint
    from elimnet.plan.deployed import CACHE_VERSION

    machine = hardware_fingerprint()["id"]
    assert timed and all(k.startswith(f"v{CACHE_VERSION}|") and k.endswith(f"|{machine}") for k in timed)
    assert plan["hardware"]["fingerprint"] == machine

    # A fresh study with the same seed proposes the same candidates, and every timing comes from the cache.
    _plan([*common, "--study", "b", "--out-dir", str(tmp_path / "out_b"), "--search-only"])
    second = capsys.readouterr().out
    assert "0 timed, the rest from the cache" in second, second
    assert json.loads((work / "latency.json").read_text()) == timed
    assert _trial_params(storage, "b") == _trial_params(storage, "a")
    assert "timed" in first

    # A budget no candidate meets: nothing on the front, no choice; the study is resumed, not rerun.
    _plan([*_args(tmp_path, data, "--budget-ms", "1e-9", "--trials", "3", "--storage", storage, "--work-dir",
                  str(work)), "--study", "a", "--out-dir", str(tmp_path / "out_tight")])
    assert "finished trials []" in capsys.readouterr().out
    tight = json.loads((tmp_path / "out_tight" / "plan.json").read_text())
    assert tight["front"] == [] and tight["choice"] is None and tight["screened"] == []
    assert tight["reference"]["test_macro_f1"] == plan["reference"]["test_macro_f1"]  # kept in the study


def test_plan_refuses_bad_arguments_in_one_line(tmp_path, tiny_split):
    from elimnet.errors import ConfigError
    from elimnet.plan.runner import build_parser, run_plan

    data = _prepared(tmp_path, tiny_split)
    with pytest.raises(ConfigError, match=r"^--budget=1.5: must be a fraction in \(0, 1\]"):
        run_plan(build_parser().parse_args(_args(tmp_path, data, "--budget", "1.5")))
    with pytest.raises(ConfigError, match=r"^--data .*nowhere: no prepared data"):
        run_plan(build_parser().parse_args(_args(tmp_path, tmp_path / "nowhere", "--budget", "0.5")))


# ----------------------------------------------------------------------------- PostgreSQL: 2 workers, 1 study
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_runner() -> list[str]:
    """How to run the server binaries: PostgreSQL refuses root, so as the `postgres` user under root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        import pwd
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and no `postgres` user to start PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a loopback port (initdb + pg_ctl in a temp dir), its URL."""
    pytest.importorskip("psycopg", reason="needs the psycopg driver (requirements.txt)")
    bins = [shutil.which(b) or next(Path("/usr/lib/postgresql").glob(f"*/bin/{b}"), None) for b in ("initdb", "pg_ctl")]
    if not all(bins):
        print("skip: PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    initdb, pg_ctl = map(str, bins)
    run_as = _pg_runner()
    root = Path(tempfile.mkdtemp(prefix="elimnet-pg-"))
    os.chmod(root, 0o755)
    if run_as:
        shutil.chown(root, "postgres")
    port, data = _free_port(), root / "data"
    cmd = run_as + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
    init = subprocess.run(cmd, capture_output=True, text=True)
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = subprocess.run(run_as + [pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
                           capture_output=True, text=True)
    if start.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(run_as + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study_without_losing_a_trial(tmp_path, tiny_split, postgres_url):
    import optuna
    from optuna.trial import TrialState

    data = _prepared(tmp_path, tiny_split)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "src"))
    procs = []
    for w in range(2):  # a work dir each: as on two machines, nothing shared but the database
        argv = [sys.executable, "-m", "elimnet.plan", *_args(tmp_path, data, "--budget", "1.0", "--trials", "4"),
                "--storage", postgres_url, "--study", "shared", "--work-dir", str(tmp_path / f"w{w}"), "--search-only"]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.5)
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    ran = [json.loads(o.split("finished trials ")[1].split(";")[0]) for o, _ in outs]

    trials = optuna.load_study(study_name="shared", storage=postgres_url).trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))) and 4 <= len(trials) <= 5  # a running one may finish past 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert set(ran[0]).isdisjoint(ran[1]) and sorted(ran[0] + ran[1]) == numbers
    assert {t.user_attrs["worker"] for t in trials if t.state == TrialState.COMPLETE} <= \
        {f"{socket.gethostname()}:{p.pid}" for p in procs}
