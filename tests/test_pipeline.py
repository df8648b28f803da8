"""A tiny end-to-end run through the real stage entry points; MLflow holds its metrics."""
import json

import pytest
import yaml

from stage_runner import run_default_graph, run_stage_script

TINY = {"data": {"max_per_class": 8, "image_size": 32, "folds": 0},  # one fixed split, 2 repeats pooled on it
        "train": {"epochs": 2, "batch_size": 8, "repeats": 2, "repeat_ids": [0, 1]},
        "model": {"elim": 3}, "bench": {"batch_sizes": [1, 4], "repeats": 3, "warmup": 1, "budget_s": 0.2}}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("run")
    params = dict(TINY, mlflow={"tracking_uri": f"sqlite:///{work}/mlflow.db", "experiment": "tiny"})
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    run_default_graph(work / "params.yaml", work)
    return work


def test_every_metrics_file_is_written(tiny_run):
    m = tiny_run / "metrics"
    per_repeat = [f"{role}/r{r}/{f}" for role in ("baseline", "candidate") for r in (0, 1)
                  for f in ("train.json", "eval.json", "history.csv", "predictions.csv", "export.json")]
    for f in ["data.json", "structure.json", "latency.json", "summary.json", *per_repeat]:
        assert (m / f).stat().st_size > 0, f
    assert (tiny_run / "models/deploy/candidate/r1/model.onnx").stat().st_size > 0
    assert (tiny_run / "plots" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_structure_and_summary_content(tiny_run):
    m = tiny_run / "metrics"
    s = json.loads((m / "structure.json").read_text())
    assert s["removed_stages"] == ["stage5", "stage6", "stage7"] and s["removed_head"]
    assert s["candidate"]["params"] < s["full"]["params"]
    data = json.loads((m / "data.json").read_text())
    assert data["splits"]["train"]["size"] + data["splits"]["val"]["size"] + data["splits"]["test"]["size"] == 32
    summary = json.loads((m / "summary.json").read_text())
    assert summary["ratios"]["params"] == pytest.approx(s["candidate"]["params"] / s["full"]["params"])
    lat = json.loads((m / "latency.json").read_text())
    assert lat["cuda"] is None or isinstance(lat["cuda"], dict)  # unavailable is recorded, never zero
    assert set(lat["cpu"]) == {"1", "4"}
    history = (m / "candidate/r0/history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,") and len(history) == 3  # header + 2 epochs


def test_mlflow_holds_the_run_metrics(tiny_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_run}/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    summary = json.loads((tiny_run / "metrics/summary.json").read_text())
    assert run.data.metrics["candidate.test_macro_f1"] == pytest.approx(summary["candidate"]["test_macro_f1"])
    assert run.data.metrics["ratios.params"] == pytest.approx(summary["ratios"]["params"])
    assert run.data.params["model.elim"] == "3"
    steps = client.get_metric_history(run.info.run_id, "candidate.curve.val_macro_f1")
    assert sorted(s.step for s in steps) == [1, 2]


def test_evaluate_and_report_write_intervals(tiny_run):
    from elimnet.train import uncertainty

    m = tiny_run / "metrics"
    runs = [(role, r) for role in ("baseline", "candidate") for r in (0, 1)]
    ev = {k: json.loads((m / k[0] / f"r{k[1]}" / "eval.json").read_text()) for k in runs}
    preds = {k: (m / k[0] / f"r{k[1]}" / "predictions.csv").read_text().splitlines() for k in runs}
    for k, e in ev.items():
        assert preds[k][0] == "index,actual,predicted" and len(preds[k]) == 1 + e["images"]
        assert [int(ln.split(",")[0]) for ln in preds[k][1:]] == list(range(e["images"]))
        for key in ("test_acc", "test_macro_f1"):
            lo, hi = e[f"{key}_ci"]
            assert 0.0 <= lo <= e[key] <= hi <= 1.0
        assert e["bootstrap"] == {"resamples": 1000, "seed": 42, "level": 0.95}
        assert sum(e["per_class_support"].values()) == e["images"]
        assert set(e["per_class_f1"]) == set(e["per_class_support"]) == set(e["classes"])
        assert e["small_classes"] == e["classes"]  # a few test images per class: every class is flagged
    s = json.loads((m / "summary.json").read_text())
    assert s["repeats"] == 2 and s["bootstrap"]["levels"] == ["repeats", "test images"]
    assert s["delta_test_macro_f1"] == pytest.approx(s["ratios"]["test_macro_f1_delta"])
    assert s["delta_test_acc"] == pytest.approx(s["ratios"]["test_acc_delta"])
    for key in ("delta_test_macro_f1_ci", "delta_test_acc_ci"):
        assert s[key][0] <= s[key.removesuffix("_ci")] <= s[key][1]
    assert 0.0 < s["mcnemar_p"] <= 1.0 and s["paired_images"] == ev["baseline", 0]["images"]
    for role in ("baseline", "candidate"):  # pooled = mean of the repeats, which are listed next to it
        assert s["per_repeat"][role]["test_macro_f1"] == [ev[role, r]["test_macro_f1"] for r in (0, 1)]
        assert s[role]["test_macro_f1"] == pytest.approx((ev[role, 0]["test_macro_f1"] + ev[role, 1]["test_macro_f1"]) / 2)
    # the summary's delta CI is the two-level bootstrap of the four prediction files, seeded by `seed`
    names = sorted(set(ev["baseline", 0]["classes"]))
    col = {k: [names.index(ln.split(",")[2]) for ln in preds[k][1:]] for k in runs}
    y = [names.index(ln.split(",")[1]) for ln in preds["baseline", 0][1:]]
    d = uncertainty.two_level_bootstrap(y, [col["baseline", 0], col["baseline", 1]],
                                        [col["candidate", 0], col["candidate", 1]], 1000, 42)
    assert s["delta_test_macro_f1_ci"] == d["delta_macro_f1_ci"] and s["verdict"] == d["verdict"]
    assert s["candidate"]["test_macro_f1_ci"] == uncertainty.two_level_ci(
        y, [col["candidate", 0], col["candidate", 1]], 1000, 42)["macro_f1"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_run}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])[0]
    mt = run.data.metrics
    assert mt["mcnemar_p"] == pytest.approx(s["mcnemar_p"])
    assert [mt["delta_test_macro_f1_ci_lo"], mt["delta_test_macro_f1_ci_hi"]] == pytest.approx(
        s["delta_test_macro_f1_ci"])
    assert mt["candidate.test_acc_ci_hi"] == pytest.approx(s["candidate"]["test_acc_ci"][1])


def test_bad_params_fail_in_one_line_and_leave_nothing(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"model": {"elim": 7}}))
    rc = run_stage_script("prepare", ["--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path / "data"),
                                      "--metrics", str(tmp_path / "metrics/data.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == "error: model.elim=7: must be an integer in [0, 6] for arch efficientnet_lite0 (7 stages)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_mlflow_unreachable_does_not_fail_report(tiny_run, tmp_path, capfd, monkeypatch):
    params = dict(TINY, mlflow={"tracking_uri": "http://127.0.0.1:9", "experiment": "x"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    rc = run_stage_script("report", ["--params", str(tmp_path / "params.yaml"), "--metrics-dir",
                                     str(tiny_run / "metrics"), "--out", str(tmp_path / "summary.json"),
                                     "--plot", str(tmp_path / "c.png")])
    assert rc == 0 and (tmp_path / "summary.json").exists()
    assert "MLflow logging to http://127.0.0.1:9 failed" in capfd.readouterr().err
