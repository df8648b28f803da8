"""report: metrics/summary.json + headline.json + plots/curves.png from the stages' metrics, one MLflow run."""
from __future__ import annotations

from pathlib import Path

from elimnet.config import Config
from elimnet.io import write_json
from elimnet.report.figures import save_curves
from elimnet.report.headline import headline_metrics, headline_reduction
from elimnet.report.summary import build_summary, read_stage_metrics
from elimnet.track import log_run, tracking_uri
from elimnet.track.run_content import report_run


def run_report(cfg: Config, metrics_dir: str | Path, out: str | Path, plot_path: str | Path,
               model_path: str | Path | None = None, deploy_dir: str | Path | None = None,
               data_dir: str | Path | None = None) -> dict:
    stage_metrics = read_stage_metrics(metrics_dir)
    summary = build_summary(metrics_dir, stage_metrics, cfg["train.repeats"], cfg["train.bootstrap"], cfg["seed"],
                            folds=cfg["data.folds"])
    summary["headline"] = headline_reduction(stage_metrics["latency"])
    save_curves(stage_metrics["histories"], Path(plot_path))
    write_json(out, summary)
    write_json(Path(out).with_name("headline.json"), headline_metrics(summary))
    if cfg["mlflow.enabled"]:
        import matplotlib.pyplot as plt

        run = report_run(cfg, summary, stage_metrics, metrics_dir, [out, plot_path], model_path, deploy_dir,
                         data_dir)
        summary["mlflow_run_id"] = log_run(uri=tracking_uri(cfg), **run)
        for fig in run["figures"].values():
            plt.close(fig)
    return summary

