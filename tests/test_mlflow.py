"""MLflow depth against a real `mlflow server` (SQLite store, one worker) on 127.0.0.1, stopped by its PID."""
from __future__ import annotations

import pytest
import torch

from conftest import fixed_split_repeats
from elimnet.checkpoint import model_config, save_model
from elimnet.config import load_params
from elimnet.io import write_json, write_text

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    from mlflow_server import mlflow_server as server

    with server(tmp_path) as uri:
        yield uri


def _history(acc0: float) -> str:
    cols = ["epoch", "train_loss", "train_acc", "train_macro_f1", "val_loss", "val_acc", "val_macro_f1", "lr"]
    rows = [[1, 1.0, acc0, acc0, 1.1, acc0, acc0 - 0.1, 0.01], [2, 0.5, acc0 + 0.1, acc0 + 0.1, 0.7, acc0 + 0.05,
                                                                   acc0 + 0.02, 0.001]]
    return ",".join(cols) + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows)


def make_experiment(root, cfg):
    """Metrics files as the pipeline writes them, and a finetuned (here: random) Elim-3 candidate file.
    Every repeat's predictions.csv tests the same images: `cfg` must pin one fixed split (fixed_split_repeats)."""
    from elimnet.models import create_model
    from elimnet.compress.build import build_candidate, describe

    torch.manual_seed(0)
    cand, steps, full = build_candidate(cfg, create_model("resnet18", pretrained=False), 3)
    m = root / "metrics"
    classes = ["a", "b", "c"]
    write_json(m / "structure.json", {
        "arch": "resnet18", "weights": "none", "image_size": 32, "removed_stages": ["layer2", "layer3", "layer4"],
        "full": describe(full, "resnet18", 32), "candidate": describe(cand, "resnet18", 32),
        "steps": [{"name": s["name"], **s["spec"]} for s in steps]})
    write_json(m / "latency.json", {"cpu": {"1": {"baseline": {"median_ms": 8.0},
                                                  "candidate": {"median_ms": 2.0, "reduction": 0.75}}},
                                    "cuda": None, "onnx": None, "compile": None})
    write_json(m / "data.json", {"skipped_total": 0})
    for role, acc0 in (("baseline", 0.6), ("candidate", 0.5)):
        for r in range(cfg["train.repeats"]):  # one folder per training repeat, as dvc.yaml's foreach writes
            acc, d = acc0 + 0.01 * r, m / role / f"r{r}"
            write_json(d / "train.json", {"best_epoch": 2, "train_loss": 0.5, "train_acc": acc + 0.1,
                                          "train_macro_f1": acc + 0.1, "val_loss": 0.7, "val_acc": acc + 0.05,
                                          "val_macro_f1": acc + 0.02})
            write_json(d / "eval.json", {"test_loss": 0.8, "test_acc": acc, "test_macro_f1": acc - 0.01,
                                         "confusion": [[3, 1, 0], [0, 4, 0], [1, 0, 2]], "classes": classes})
            write_text(d / "history.csv", _history(acc))
            write_text(d / "predictions.csv", "index,actual,predicted\n0,a,a\n1,b,c\n")
    model_path = root / "models" / "candidate.pt"
    save_model(model_path, cand, model_config("resnet18", steps=[{"name": s["name"], "spec": s["spec"]}
                                                                 for s in steps],
                                              weights="none", num_classes=3, classes=classes, image_size=32))
    return m, model_path


def test_report_logs_one_complete_run_to_a_real_server(tmp_path, mlflow_server, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    from elimnet.checkpoint import load_model
    from elimnet.pipeline.report_stage import run_report
    from elimnet.report.aggregate import comparison_rows
    from elimnet.report.records import records_from_mlflow
    from elimnet.track import git_commit

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-elim3")
    cfg = load_params(tmp_path / "none.yaml", ["model.arch=resnet18", "model.weights=none", "model.elim=3",
                                               "data.image_size=32", f"mlflow.tracking_uri={mlflow_server}",
                                               "mlflow.experiment=elimnet-test", *fixed_split_repeats(3)])
    metrics_dir, model_path = make_experiment(tmp_path, cfg)
    summary = run_report(cfg, metrics_dir, metrics_dir / "summary.json", tmp_path / "plots" / "curves.png",
                         model_path)
    rid = summary["mlflow_run_id"]
    assert rid

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("elimnet-test")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [rid] and runs[0].info.status == "FINISHED"
    run = runs[0]
    # params: every config key but mlflow.*, flattened
    assert len(run.data.params) == len([k for k in cfg.flat() if not k.startswith("mlflow.")])
    assert run.data.params["model.elim"] == "3" and run.data.params["bench.batch_sizes"] == "[1, 8, 64]"
    # metrics: the summary rows and ratios, per-epoch curves as steps
    mt = run.data.metrics
    # pooled over the 3 repeats: the mean of 0.49, 0.50, 0.51 and of 0.60, 0.61, 0.62
    assert mt["candidate.test_macro_f1"] == pytest.approx(0.50) and mt["baseline.test_acc"] == pytest.approx(0.61)
    assert mt["candidate.latency_cpu_bs1_ms"] == 2.0 and mt["ratios.latency_reduction_cpu_bs1"] == 0.75
    assert mt["ratios.params"] == pytest.approx(summary["candidate"]["params"] / summary["baseline"]["params"])
    # the paired statistics: both roles predicted the same (a->a, b->c), so the delta is 0 with CI [0, 0]
    assert mt["delta_test_macro_f1"] == 0.0 and mt["mcnemar_p"] == 1.0
    assert (mt["delta_test_macro_f1_ci_lo"], mt["delta_test_macro_f1_ci_hi"], mt["delta_test_acc_ci_hi"]) == (0, 0, 0)
    hist = client.get_metric_history(rid, "candidate.curve.val_macro_f1")
    assert [(h.step, round(h.value, 4)) for h in sorted(hist, key=lambda h: h.step)] == [(1, 0.4), (2, 0.52)]
    # tags
    tags = run.data.tags
    assert tags["dvc_exp_name"] == "exp-elim3" and tags["arch"] == "resnet18" and tags["method"] == "elim"
    assert tags.get("git_commit") == git_commit() and run.info.run_name == "exp-elim3"
    # artifacts: summary, plots, confusion matrices, per-role files
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"summary.json", "plots", "baseline", "candidate", "confusion_candidate.png",
            "confusion_baseline.png", "latency.json", "structure.json"} <= top
    assert {a.path for a in client.list_artifacts(rid, "candidate")} == {"candidate/r0", "candidate/r1", "candidate/r2"}
    assert {a.path for a in client.list_artifacts(rid, "baseline/r2")} == {
        "baseline/r2/eval.json", "baseline/r2/history.csv", "baseline/r2/predictions.csv", "baseline/r2/train.json"}
    assert [a.path for a in client.list_artifacts(rid, "plots")] == ["plots/curves.png"]
    # the finetuned model, with a signature whose batch dimension is open; it loads back and predicts the same
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # so teardown unsets what set_tracking_uri exports
    mlflow.set_tracking_uri(mlflow_server)
    models = client.search_logged_models([exp.experiment_id])
    assert [m.source_run_id for m in models] == [rid] and models[0].name == "model"
    uri = f"models:/{models[0].model_id}"
    sig = mlflow.models.get_model_info(uri).signature
    assert sig.inputs.inputs[0].shape == (-1, 3, 32, 32) and sig.outputs.inputs[0].shape == (-1, 3)
    served = mlflow.pytorch.load_model(uri)
    local = load_model(model_path)[0].eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(served(x), local(x))
    # and `elimnet compare --source mlflow` reads the run back into the seeds' table
    records, skipped = records_from_mlflow(mlflow_server, "elimnet-test")
    assert skipped == [] and [r.name for r in records] == ["exp-elim3"]
    assert records[0].params["model.elim"] == 3 and records[0].summary["steps"] == ["elim"]
    rows = comparison_rows(records)
    assert [r["name"] for r in rows] == ["full resnet18 (empty)", "empty Elim 3"]
    assert rows[1]["params"] == summary["candidate"]["params"] and rows[1]["reduction_cpu_bs1"] == 0.75
    assert rows[1]["delta_test_macro_f1_ci"] == [0.0, 0.0] and rows[1]["verdict"] == "no loss detected"
