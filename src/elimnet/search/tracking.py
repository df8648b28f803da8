"""MLflow for the search: one parent run per study, one child run per trial; never fails the search.

The parent is found again by its tag on resume, so a study extended over several runs keeps one
parent. The first MLflow error prints one warning and turns tracking off for the rest of the run.
Bounded like the report's logging: the store is probed first, a fresh SQLite file is initialised
under a lock, and every call runs under `bounded_requests`, so a dead server costs seconds.
"""
from __future__ import annotations

import os
import sys
from typing import Any

from elimnet.track.connection import bounded_requests

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STUDY_TAG = "elimnet.search.study"
ROLE_TAG = "elimnet.search.role"  # parent | trial: children carry the study tag too


class SearchTracker:
    def __init__(self, uri: str, experiment: str, study: str, enabled: bool = True):
        self.uri, self.experiment, self.study = uri, experiment, study
        self.enabled = enabled
        self.client = self.exp_id = self.parent_id = None

    def _fail(self, what: str, e: Exception) -> None:
        print(f"warning: MLflow {what} at {self.uri} failed ({type(e).__name__}: {e}); "
              f"the search goes on, results stay in the Optuna study", file=sys.stderr)
        self.enabled = False

    def start(self, params: dict[str, Any]) -> str | None:
        if not self.enabled:
            return None
        from elimnet.track.connection import check_store, init_store, probe

        why = probe(self.uri) or check_store(self.uri)
        if why is not None:
            self._fail("start", RuntimeError(why))
            return None
        try:
            with bounded_requests():
                from mlflow.entities import Param
                from mlflow.tracking import MlflowClient

                init_store(self.uri)
                self.client = MlflowClient(self.uri)
                exp = self.client.get_experiment_by_name(self.experiment)
                self.exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
                query = f"tags.`{STUDY_TAG}` = '{self.study}' and tags.`{ROLE_TAG}` = 'parent'"
                found = self.client.search_runs([self.exp_id], filter_string=query, max_results=1)
                if found:
                    self.parent_id = found[0].info.run_id
                    self.client.update_run(self.parent_id, status="RUNNING")
                else:
                    run = self.client.create_run(self.exp_id, run_name=f"search {self.study}",
                                                 tags={STUDY_TAG: self.study, ROLE_TAG: "parent"})
                    self.parent_id = run.info.run_id
                    self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000])
                                                                  for k, v in sorted(params.items())])
                return self.parent_id
        except Exception as e:  # noqa: BLE001 - tracking must never fail the search
            self._fail("start", e)
            return None

    def log_trial(self, number: int, params: dict[str, Any], metrics: dict[str, float]) -> str | None:
        if not self.enabled or self.parent_id is None:
            return None
        try:
            with bounded_requests():
                from mlflow.entities import Metric, Param

                tags = {"mlflow.parentRunId": self.parent_id, STUDY_TAG: self.study, ROLE_TAG: "trial",
                        "elimnet.search.trial": str(number)}
                run = self.client.create_run(self.exp_id, run_name=f"trial {number}", tags=tags)
                rid = run.info.run_id
                self.client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
                                      metrics=[Metric(k, float(v), 0, 0) for k, v in sorted(metrics.items())])
                self.client.set_terminated(rid)
                return rid
        except Exception as e:  # noqa: BLE001
            self._fail(f"logging trial {number}", e)
            return None

    def finish(self, metrics: dict[str, float]) -> None:
        if not self.enabled or self.parent_id is None:
            return
        try:
            with bounded_requests():
                from mlflow.entities import Metric

                self.client.log_batch(self.parent_id, metrics=[Metric(k, float(v), 0, 0)
                                                               for k, v in sorted(metrics.items())])
                self.client.set_terminated(self.parent_id)
        except Exception as e:  # noqa: BLE001
            self._fail("finish", e)
