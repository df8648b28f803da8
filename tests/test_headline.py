"""What `dvc exp show` compares (metrics/headline.json) and how `elimnet compare` still gets the full summary
when summary.json is a plain output rather than a DVC metric."""
import json
import subprocess

from conftest import git_commit_all
from elimnet.report.headline import headline_metrics
from elimnet.report.records import records_from_dvc

SUMMARY = {"arch": "resnet18", "weights": "imagenet", "steps": ["elim"],
           "baseline": {"params": 11_000_000, "macs": 1_800_000_000, "layers": 21, "test_macro_f1": 0.8},
           "candidate": {"params": 683_846, "macs": 1_200_000_000, "layers": 13, "test_macro_f1": 0.75,
                         "test_acc": 0.9, "test_loss": 0.3, "latency_cpu_bs1_ms": 5.0},
           "ratios": {"params": 0.06, "latency_reduction_cpu_bs1": 0.25, "latency_reduction_cpu_bs64": 0.125,
                      "latency_reduction_cuda_bs1": None}}


def test_headline_is_the_candidates_few_numbers():
    assert headline_metrics(SUMMARY) == {"params_M": 0.684, "mmacs": 1200.0, "layers": 13, "test_macro_f1": 0.75,
                                         "test_acc": 0.9, "faster_eager_bs001_pct": 25.0,
                                         "faster_eager_bs064_pct": 12.5}
    pooled = {**SUMMARY, "repeats": 3, "verdict": "no loss detected"}
    assert headline_metrics(pooled)["repeats"] == 3 and headline_metrics(pooled)["verdict"] == "no loss detected"


def test_headline_latency_names_sort_by_batch_size_and_come_from_the_shipped_backend():
    """Zero-padded batch sizes sort as numbers; ort_int8 > ort > onnx > cpu, both names of the fp32 ORT backend."""
    ratios = {"latency_reduction_cpu_bs1": 0.1, "latency_reduction_cpu_bs8": 0.2, "latency_reduction_cpu_bs64": 0.3}
    for backend in ("onnx", "ort"):
        ort = {f"latency_reduction_{backend}_bs{bs}": v for bs, v in ((1, 0.5), (8, 0.25), (64, 0.75))}
        got = headline_metrics({**SUMMARY, "ratios": {**ratios, **ort}})
        speed = {k: v for k, v in got.items() if k.startswith("faster_ort")}
        assert list(speed) == sorted(speed) == ["faster_ort_bs001_pct", "faster_ort_bs008_pct", "faster_ort_bs064_pct"]
        assert list(speed.values()) == [50.0, 25.0, 75.0]
        eager = {k: v for k, v in got.items() if k.startswith("faster_eager")}  # kept beside the shipped runtime
        assert eager == {"faster_eager_bs001_pct": 10.0, "faster_eager_bs008_pct": 20.0, "faster_eager_bs064_pct": 30.0}
    int8 = {"latency_reduction_ort_int8_bs1": 0.4, "latency_reduction_ort_bs1": 0.5}
    got = headline_metrics({**SUMMARY, "ratios": {**ratios, **int8}})
    assert {k: v for k, v in got.items() if k.startswith("faster_")} == {
        "faster_ort_int8_bs001_pct": 40.0, "faster_eager_bs001_pct": 10.0, "faster_eager_bs008_pct": 20.0,
        "faster_eager_bs064_pct": 30.0}


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
