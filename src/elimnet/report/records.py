"""Experiment records from `dvc exp show --json` (DVC 3.x) or from an MLflow experiment.

A record is one finished experiment: its flat params, its metrics/summary.json (the report
stage's output) and the hardware block its latencies were measured on (metrics/latency.json), from
which the comparison rows are built. Records come in the order a user reads them: the workspace, then
experiments, then commits (only when asked for).
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from elimnet.bench.hardware import fingerprint_id
from elimnet.errors import ConfigError, StageError

SUMMARY = "metrics/summary.json"
LATENCY = "metrics/latency.json"  # its `hardware` block says which machine timed the latencies


@dataclass
class ExpRecord:
    name: str
    params: dict[str, Any]  # dotted keys, as in config.flatten
    summary: dict[str, Any]  # metrics/summary.json: arch, weights, steps, baseline, candidate, ratios
    source: str = ""  # "dvc:<rev>" or "mlflow:<run id>"
    tags: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, Any] | None = None  # latency.json's hardware block; None when not recorded

    @property
    def machine(self) -> str | None:
        return machine_id(self.hardware)


def machine_id(hardware: dict | None) -> str | None:
    """Which machine setting timed a record: the hardware block's fingerprint (bench.hardware.fingerprint_id,
    the benchmark's own), plus its thread count, which changes every latency (None: not recorded)."""
    if not isinstance(hardware, dict) or not hardware.get("cpu"):
        return None
    threads = hardware.get("threads")
    return fingerprint_id(hardware) + (f"/t{threads}" if threads else "")


def machine_label(hardware: dict | None) -> str:
    """'AMD EPYC, 2 threads [1a2b3c4d5e6f]' for a report line; 'unrecorded machine' without a block."""
    if machine_id(hardware) is None:
        return "unrecorded machine"
    threads = hardware.get("threads")
    return f"{hardware['cpu']}" + (f", {threads} threads" if threads else "") + f" [{fingerprint_id(hardware)}]"


# ----------------------------------------------------------------------------- DVC
def dvc_entries(show: list[dict], include_commits: bool) -> Iterator[tuple[str, dict]]:
    """(name, data): the workspace, then every experiment (newest first), then the commits if asked for.

    The workspace comes first so that a user's own run is never hidden behind an older record of the
    same params and seed."""
    commits = []
    for entry in show:
        if entry.get("rev") == "workspace":
            yield "workspace", entry
    for entry in show:
        if entry.get("rev") == "workspace":
            continue
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:  # DVC 3: one rev per experiment, newest first
                yield rev.get("name") or exp.get("name") or rev.get("rev", "")[:7], rev
                break
        commits.append((entry.get("name") or entry.get("rev", "")[:7], entry))
    if include_commits:
        yield from commits


def _git_json(repo: str, rev: str | None, path: str) -> dict | None:
    if not rev or rev == "workspace":
        p = Path(repo) / path
        return json.loads(p.read_text()) if rev == "workspace" and p.is_file() else None
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, timeout=30)
    try:
        return json.loads(out.stdout) if out.returncode == 0 else None
    except json.JSONDecodeError:
        return None


def _metric_file(data: dict, path: str, repo: str | None) -> dict | None:
    """A JSON file of one record: from `exp show` when DVC tracks it as a metric, else from the record's commit."""
    found = ((data.get("metrics") or {}).get(path) or {}).get("data")
    if found is None and repo is not None:
        found = _git_json(repo, data.get("rev"), path)
    return found


def records_from_dvc(show: list[dict], summary_path: str = SUMMARY, repo: str | None = None,
                     include_commits: bool = False) -> tuple[list[ExpRecord], list[str]]:
    """Parse DVC 3.x `exp show --json`; return (records, names skipped for lacking a summary).

    include_commits: also the commits' own records (asked for with --rev/--all-commits), after the
    workspace and the experiments."""
    from elimnet.config import flatten

    if not isinstance(show, list):
        raise StageError("dvc exp show --json: expected a list of commits (DVC 3.x format)")
    records, skipped, seen = [], [], set()
    for name, entry in dvc_entries(show, include_commits):
        data = {"rev": entry.get("rev"), **(entry.get("data") or {})}
        summary = _metric_file(data, summary_path, repo)
        if entry.get("error") or not isinstance(summary, dict) or "candidate" not in summary:
            skipped.append(name)
            continue
        params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
        key = json.dumps([params, summary], sort_keys=True, default=str)
        if key in seen:  # the workspace and a commit usually repeat an experiment: the first one stays
            continue
        seen.add(key)
        hardware = summary.get("hardware") or (_metric_file(data, LATENCY, repo) or {}).get("hardware")
        records.append(ExpRecord(name, params, summary, source=f"dvc:{data['rev']}", hardware=hardware))
    return records, skipped


def dvc_exp_show(repo: str = ".", extra_args: list[str] = ()) -> list[dict]:
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", *extra_args]
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise StageError(f"source=dvc: `{' '.join(cmd[2:])}` failed in {repo}: {last}")
    return json.loads(res.stdout)


# ----------------------------------------------------------------------------- MLflow
def _typed(v: str) -> Any:
    """MLflow stores params as str(value): read them back as YAML (str(None) is "None")."""
    if v == "None":
        return None
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def _rejoin_cis(d: dict[str, Any]) -> dict[str, Any]:
    """MLflow holds a CI [lo, hi] as KEY_lo and KEY_hi (track.run_content.flat_metrics): back to KEY: [lo, hi]."""
    out = {}
    for k, v in d.items():
        base = k[:-3]
        if k.endswith("_lo") and f"{base}_hi" in d:
            out[base] = [v, d[f"{base}_hi"]]
        elif not (k.endswith("_hi") and f"{base}_lo" in d):
            out[k] = v
    return out


def _unflatten_metrics(metrics: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    top = {}
    for k, v in metrics.items():
        head, _, rest = k.partition(".")
        if head in ("baseline", "candidate", "ratios") and rest and "." not in rest:
            out.setdefault(head, {})[rest] = v
        elif not rest and (head.startswith("delta_") or head == "mcnemar_p"):  # the report's paired statistics
            top[head] = v
    out = {k: _rejoin_cis(v) for k, v in out.items()}
    out.update(_rejoin_cis(top))
    return out


def records_from_mlflow(uri: str, experiment: str) -> tuple[list[ExpRecord], list[str]]:
    """One record per finished run of `experiment` (the report stage logs one run per experiment), newest
    first: like the workspace in `records_from_dvc`, a user's latest run is never hidden by an older one."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"mlflow.experiment={experiment}: no such experiment at {uri}")
    records, skipped = [], []
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              max_results=5000, order_by=["attributes.start_time DESC"])
    for run in runs:
        tags = dict(run.data.tags)
        name = tags.get("dvc_exp_name") or run.info.run_name or run.info.run_id[:8]
        summary = _unflatten_metrics(run.data.metrics)
        if "candidate" not in summary or "baseline" not in summary:
            skipped.append(name)
            continue
        params = {k: _typed(v) for k, v in run.data.params.items()}
        method = tags.get("method", "")
        summary.update(arch=tags.get("arch") or params.get("model.arch"), weights=params.get("model.weights"),
                       steps=[] if method in ("", "full") else method.split("+"))
        records.append(ExpRecord(name, params, summary, source=f"mlflow:{run.info.run_id}", tags=tags))
    return records, skipped
