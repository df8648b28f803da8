"""What `dvc exp show` compares (metrics/headline.json) and how `elimnet compare` still gets the full summary
when summary.json is a plain output rather than a DVC metric."""
import json
import subprocess

from conftest import git_commit_all
from elimnet.pipeline.report_stage import headline_metrics
from elimnet.report.records import records_from_dvc

SUMMARY = {"arch": "resnet18", "weights": "imagenet", "steps": ["elim"],
           "baseline": {"params": 11_000_000, "macs": 1_800_000_000, "layers": 21, "test_macro_f1": 0.8},
           "candidate": {"params": 683_846, "macs": 1_200_000_000, "layers": 13, "test_macro_f1": 0.75,
                         "test_acc": 0.9, "test_loss": 0.3, "latency_cpu_bs1_ms": 5.0},
           "ratios": {"params": 0.06, "latency_reduction_cpu_bs1": 0.25, "latency_reduction_cpu_bs64": 0.125,
                      "latency_reduction_cuda_bs1": None}}


def test_headline_is_the_candidates_few_numbers():
    assert headline_metrics(SUMMARY) == {"params_M": 0.684, "mmacs": 1200.0, "layers": 13, "test_macro_f1": 0.75,
                                 "test_acc": 0.9, "faster_bs1": 0.25, "faster_bs64": 0.125}


def test_records_read_summary_from_the_experiments_commit(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/summary.json").write_text(json.dumps(SUMMARY))
    git_commit_all(tmp_path, "exp")
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "metrics/summary.json").write_text(json.dumps({**SUMMARY, "arch": "changed-in-workspace"}))
    show = [{"rev": rev, "name": "main", "data": {"rev": rev, "metrics": {"metrics/headline.json": {"data": {}}},
                                                  "params": {"params.yaml": {"data": {"model": {"elim": 2}}}}},
             "experiments": None}]
    records, skipped = records_from_dvc(show, repo=str(tmp_path), include_commits=True)
    assert skipped == [] and [r.summary["arch"] for r in records] == ["resnet18"]
    assert records[0].params["model.elim"] == 2
    # Without a repo to read from, the experiment has no summary: skipped, not invented.
    assert records_from_dvc(show, include_commits=True) == ([], ["main"])
