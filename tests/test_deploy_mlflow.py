"""The report stage puts what ships into MLflow: ONNX models with signatures, the candidate
registered, dataset lineage, system metrics (a real `mlflow server` on 127.0.0.1)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fixed_split_repeats
from elimnet.config import load_params

pytestmark = pytest.mark.slow


@pytest.fixture
def mlflow_server(tmp_path):
    from mlflow_server import mlflow_server as server

    with server(tmp_path / "server") as uri:
        yield uri


def test_report_registers_the_onnx_candidate_with_lineage_and_system_metrics(tmp_path, mlflow_server, monkeypatch,
                                                                             tiny_split, one_thread):
    import mlflow
    from mlflow.tracking import MlflowClient
    from test_mlflow import make_experiment

    from elimnet.checkpoint import load_model
    from elimnet.deploy.export import export_onnx, ort_run, ort_session
    from elimnet.deploy.quantize import quantize
    from elimnet.pipeline.report_stage import run_report

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_params(tmp_path / "none.yaml", ["model.arch=resnet18", "model.weights=none", "model.elim=3",
                                               "data.image_size=32", f"mlflow.tracking_uri={mlflow_server}",
                                               "mlflow.experiment=deploy-test", *fixed_split_repeats(3)])
    metrics_dir, model_path = make_experiment(tmp_path, cfg)
    model = load_model(model_path)[0].eval()
    deploy = tmp_path / "models" / "deploy" / "candidate"
    fp32 = export_onnx(model, deploy / "model.onnx", 32, metadata={"mean": [0.5] * 3, "std": [0.25] * 3})
    quantize(fp32, deploy / "model.int8.onnx", [np.random.default_rng(0).standard_normal((4, 3, 32, 32))])
    data = tmp_path / "prepared"
    for i, split in enumerate(("train", "val", "test")):
        s = tiny_split(n_per_class=2 + i, size=32, classes=3, seed=i)
        data.mkdir(exist_ok=True)
        torch.save({"images": s.images, "labels": s.labels}, data / f"{split}.pt")

    summary = run_report(cfg, metrics_dir, metrics_dir / "summary.json", tmp_path / "curves.png", model_path,
                         deploy, data)
    rid = summary["mlflow_run_id"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(rid)
    assert run.info.status == "FINISHED"
    # The INT8 artifact is what ships: version 1 of "<experiment>-candidate", from this run.
    versions = client.search_model_versions("name='deploy-test-candidate'")
    assert [(v.version, v.run_id) for v in versions] == [("1", rid)]
    exp = client.get_experiment_by_name("deploy-test")
    logged = {m.name: m for m in client.search_logged_models([exp.experiment_id])}
    assert set(logged) == {"model", "onnx_fp32", "onnx_int8"}
    assert logged["onnx_int8"].model_id in versions[0].source
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # teardown unsets what set_tracking_uri exports
    mlflow.set_tracking_uri(mlflow_server)
    info = mlflow.models.get_model_info("models:/deploy-test-candidate/1")
    assert info.signature.inputs.inputs[0].shape == (-1, 3, 32, 32)
    assert info.signature.outputs.inputs[0].shape == (-1, 3)
    assert info.saved_input_example_info is not None
    # It loads back from the registry and answers like the file on disk.
    served = mlflow.onnx.load_model("models:/deploy-test-candidate/1")
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(served.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    np.testing.assert_array_equal(got, ort_run(ort_session(deploy / "model.int8.onnx"), x))
    # Dataset lineage: each split a run input with its context and a digest of its contents.
    inputs = {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
              for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["test", "train", "val"]
    assert inputs["train"].name == "deploy-test-train" and len({d.digest for d in inputs.values()}) == 3
    # System metrics were sampled while the models were logged (several seconds: pt2 export, 2 ONNX models).
    assert any(k.startswith("system/cpu_utilization_percentage") for k in run.data.metrics)
