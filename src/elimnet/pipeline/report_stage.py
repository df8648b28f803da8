"""report: candidate next to baseline in metrics/summary.json, a curves plot, one MLflow run."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from elimnet.bench import BACKENDS
from elimnet.config import Config
from elimnet.io import atomic_path, read_json, write_json
from elimnet.track import git_commit, log_run, tracking_uri

ROLES = ("baseline", "candidate")


def _read_history(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def summarize(structure: dict, train: dict[str, dict], evals: dict[str, dict], latency: dict) -> dict:
    rows = {}
    for role, part in (("baseline", "full"), ("candidate", "candidate")):
        p = structure[part]
        row = {"params": p["params"], "macs": p["macs"], "layers": p["layers"],
               **{k: v for k, v in train[role].items() if k.startswith(("train_", "val_"))},
               **{k: evals[role][k] for k in ("test_loss", "test_acc", "test_macro_f1")}}
        for dev in BACKENDS:  # cpu, cuda, onnx, compile; unmeasured ones are null
            for bs, stats in (latency.get(dev) or {}).items():
                row[f"latency_{dev}_bs{bs}_ms"] = stats[role]["median_ms"]
        rows[role] = row
    b, c = rows["baseline"], rows["candidate"]
    ratios = {"params": c["params"] / b["params"], "macs": c["macs"] / b["macs"], "layers": c["layers"] / b["layers"],
              "test_macro_f1_delta": c["test_macro_f1"] - b["test_macro_f1"],
              "test_acc_delta": c["test_acc"] - b["test_acc"]}
    for dev in BACKENDS:  # cpu, cuda, onnx, compile; unmeasured ones are null
        for bs, stats in (latency.get(dev) or {}).items():
            ratios[f"latency_reduction_{dev}_bs{bs}"] = stats["candidate"]["reduction"]
    return {"arch": structure["arch"], "weights": structure["weights"], "removed_stages": structure["removed_stages"],
            "steps": [s["name"] for s in structure["steps"] if s["name"] != "classifier"],
            "cuda": latency.get("cuda") is not None, **rows, "ratios": ratios}


def headline(summary: dict) -> dict:
    """The few numbers people compare across experiments (`dvc exp show`): the candidate's size, quality and
    paired latency reductions. Everything else stays in summary.json (`elimnet compare` reads it)."""
    c, r = summary["candidate"], summary["ratios"]
    out = {"params_M": round(c["params"] / 1e6, 3), "mmacs": round(c["macs"] / 1e6, 1), "layers": c["layers"],
           "test_macro_f1": c["test_macro_f1"], "test_acc": c["test_acc"]}
    for k, v in r.items():
        if k.startswith("latency_reduction_cpu_") and v is not None:
            out[k.replace("latency_reduction_cpu_", "faster_")] = v
    return out


def plot_curves(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib.pyplot as plt

    from elimnet.report.figures import CURVES_DPI, curves_figure

    fig = curves_figure(histories)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=CURVES_DPI)
    plt.close(fig)


def run_report(cfg: Config, metrics_dir: str | Path, out: str | Path, plot_path: str | Path,
               model_path: str | Path | None = None) -> dict:
    m = Path(metrics_dir)
    structure, latency = read_json(m / "structure.json"), read_json(m / "latency.json")
    train = {r: read_json(m / r / "train.json") for r in ROLES}
    evals = {r: read_json(m / r / "eval.json") for r in ROLES}
    histories = {r: _read_history(m / r / "history.csv") for r in ROLES}
    summary = summarize(structure, train, evals, latency)
    plot_curves(histories, Path(plot_path))
    write_json(out, summary)
    write_json(Path(out).with_name("headline.json"), headline(summary))
    if cfg["mlflow.enabled"]:
        run_name = os.environ.get("DVC_EXP_NAME") or "workspace"
        params = {k: v for k, v in cfg.flat().items() if not k.startswith("mlflow.")}
        metrics = {"baseline": summary["baseline"], "candidate": summary["candidate"], "ratios": summary["ratios"],
                   "data": {"skipped_total": read_json(m / "data.json").get("skipped_total", 0)}}
        artifacts = [out, plot_path, m / "structure.json", m / "latency.json", m / "data.json",
                     *(m / r / f for r in ROLES for f in ("eval.json", "history.csv", "predictions.csv"))]
        import matplotlib.pyplot as plt

        from elimnet.report.figures import confusion_figure

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
        summary["mlflow_run_id"] = log_run(uri=tracking_uri(cfg), experiment=cfg["mlflow.experiment"],
                                           run_name=run_name, params=params, metrics=metrics,
                                           history={f"{r}.curve": histories[r] for r in ROLES}, artifacts=artifacts,
                                           tags=tags, model=model, input_shape=(1, 3, size, size), figures=figures)
        for fig in figures.values():
            plt.close(fig)
    return summary
