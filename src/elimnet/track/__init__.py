"""Experiment tracking in MLflow that never fails the pipeline."""
from elimnet.track.mlflow_log import git_commit, log_run, tracking_uri

__all__ = ["git_commit", "log_run", "tracking_uri"]
