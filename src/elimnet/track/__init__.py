"""Experiment tracking in MLflow that never fails the pipeline: connection (where, bounded, checked),
run_content (what a run holds), model_logging (models and data), mlflow_log (log_run, the entry point)."""
from elimnet.track.connection import tracking_uri
from elimnet.track.mlflow_log import log_run
from elimnet.track.run_content import git_commit

__all__ = ["git_commit", "log_run", "tracking_uri"]
