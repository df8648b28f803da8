"""What one MLflow run holds: params, metrics (flattened, curves as steps), tags, description, and the
report stage's assembly of all of it from summary.json and the stages' files (report_run)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

# MLflow 3 opens an experiment on its GenAI overview unless told it holds model training. Releases that
# read the experiment tag need it; 3.17's UI reads `?workflowType=machine_learning` in the URL (ui_url).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARAM_BATCH, METRIC_BATCH = 100, 500  # MLflow's log_batch limits per request


def git_commit(cwd: str | Path = ".") -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


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


def flat_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    """Nested numbers as dotted names; a [lo, hi] interval as name_lo / name_hi; NaN and text dropped."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_metrics(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:  # drop NaN
            out[key] = float(v)
        elif isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            out[f"{key}_lo"], out[f"{key}_hi"] = float(v[0]), float(v[1])  # a confidence interval
    return out


def entity_batches(params: dict[str, Any], metrics: dict, history: dict[str, list[dict]] | None):
    """log_batch-sized lists of Param and Metric entities: the metrics at step 0, each curve per epoch."""
    from mlflow.entities import Metric, Param

    ps = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    ms = [Metric(k, v, 0, 0) for k, v in sorted(flat_metrics(metrics).items())]
    for prefix, rows in (history or {}).items():
        for row in rows:
            step = int(row.get("epoch", 0))
            ms += [Metric(f"{prefix}.{k}", float(v), 0, step) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float))]
    return ([ps[i:i + PARAM_BATCH] for i in range(0, len(ps), PARAM_BATCH)],
            [ms[i:i + METRIC_BATCH] for i in range(0, len(ms), METRIC_BATCH)])


def report_run(cfg, summary: dict, stage_metrics: dict, metrics_dir: str | Path, files: list[str | Path],
               model_path=None, deploy_dir=None, data_dir=None) -> dict:
    """log_run's keyword arguments for the report stage: the summary as metrics, the stages' files as
    artifacts, confusion figures, tags, the finetuned candidate and its ONNX artifacts, the data splits.
    The figures are open matplotlib figures: close them after logging."""
    from elimnet.report.figures import confusion_figure
    from elimnet.report.repeats import repeat_files
    from elimnet.report.summary import PAIRED, ROLES
    from elimnet.io import read_json

    m = Path(metrics_dir)
    evals, structure = stage_metrics["evals"], stage_metrics["structure"]
    params = {k: v for k, v in cfg.flat().items() if not k.startswith("mlflow.")}
    metrics = {"baseline": summary["baseline"], "candidate": summary["candidate"], "ratios": summary["ratios"],
               "data": {"skipped_total": read_json(m / "data.json").get("skipped_total", 0)},
               **{k: summary[k] for k in PAIRED}}
    artifacts = [*files, m / "structure.json", m / "latency.json", m / "data.json",
                 *repeat_files(m, cfg["train.repeats"])]
    # The finetuned candidate goes to MLflow as a model; the DVC-tracked file stays the source of truth.
    model = None
    if model_path:
        from elimnet.checkpoint import load_model

        model = load_model(model_path)[0]
    size = structure.get("image_size", cfg["data.image_size"])
    figures = {f"confusion_{r}.png": confusion_figure(evals[r]["confusion"], evals[r]["classes"],
                                                      f"{r}: test confusion")
               for r in ROLES if "confusion" in evals[r] and "classes" in evals[r]}
    tags = {"git_commit": git_commit(), "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
            "arch": summary["arch"], "method": "+".join(summary["steps"]) or "full"}
    return dict(experiment=cfg["mlflow.experiment"], run_name=os.environ.get("DVC_EXP_NAME") or "workspace",
                params=params, metrics=metrics, history={f"{r}.curve": stage_metrics["histories"][r] for r in ROLES},
                artifacts=artifacts, tags=tags, model=model, input_shape=(1, 3, size, size), figures=figures,
                **deploy_logging(cfg["mlflow.experiment"], deploy_dir, data_dir))


def deploy_logging(experiment: str, deploy_dir: str | Path | None, data_dir: str | Path | None) -> dict:
    """log_run arguments for the candidate's ONNX artifacts (the one that ships registered as
    "<experiment>-candidate") and the prepared splits (dataset lineage)."""
    from elimnet.deploy.artifacts import artifacts, onnx_name, shipped

    found = artifacts(deploy_dir) if deploy_dir else {}
    onnx_models = {onnx_name(p): path for p, path in found.items()}
    ship = shipped(found) or "fp32"
    splits = {s: Path(data_dir) / f"{s}.pt" for s in ("train", "val", "test")} if data_dir else {}
    return {"onnx_models": onnx_models, "register": {onnx_name(ship): f"{experiment}-candidate"},
            "datasets": {s: p for s, p in splits.items() if p.is_file()}}
