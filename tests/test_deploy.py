"""Deployed artifacts: ONNX export parity per arch, INT8 QDQ quantization, accuracy through onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from elimnet.config import load_params
from elimnet.models import create_model, list_models


def _lively(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random init collapses deep inverted-residual nets to the same logits for every image. BN
    statistics measured on one random batch keep activations alive at every depth, so logits differ
    per image and parity checks every layer; gammas below 1 keep the net from amplifying float
    rounding (at gamma ~1 torch itself differs by 1e-4 between batch sizes on EfficientNet-B0)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.2 + 0.2)
    model.train()
    with torch.no_grad():
        model(torch.randn(32, 3, 32, 32, generator=g))
    return model.eval()


# The deeper RedNets are RedNet26's modules stacked deeper; at random init their involutions overflow float32
# (NaN logits), so a parity check on them would compare NaNs. RedNet26 carries the parity check for the family.
_OVERFLOW_AT_RANDOM_INIT = ("rednet38", "rednet50", "rednet101", "rednet152")


@pytest.mark.parametrize("arch", [a for a in list_models() if a not in _OVERFLOW_AT_RANDOM_INIT])
def test_every_arch_exports_and_matches_torch_in_onnxruntime(arch, tmp_path, one_thread):
    from elimnet.compress.elim import set_num_classes
    from elimnet.deploy.export import export_onnx, ort_run, ort_session, parity

    from elimnet.deploy.export import ExportError

    torch.manual_seed(0)
    model, _ = set_num_classes(create_model(arch, pretrained=False), 5)
    model = _lively(model)
    # RedNet's stride-32 involutions need a 2x2 map at the end: at 32 px the last BN sees one pixel.
    size = 64 if arch.startswith("rednet") else 32
    if "condconv" in arch:  # per-image mixed kernels: the exporter has no translation, and says so in one line
        with pytest.raises(ExportError, match=f"{arch}.onnx: cannot export to ONNX: operator aten.conv2d"):
            export_onnx(model, tmp_path / f"{arch}.onnx", size, metadata={"arch": arch})
        return
    path = export_onnx(model, tmp_path / f"{arch}.onnx", size, metadata={"arch": arch})
    sess = ort_session(path, threads=1)
    assert sess.get_inputs()[0].shape[0] == "batch"  # one file for every batch size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    for bs in (1, 3):  # the batch dimension is dynamic
        with torch.no_grad():
            ref = model(x[:bs]).numpy()
        out = ort_run(sess, x[:bs].numpy())
        assert out.shape == (bs, 5)
        # 1e-4 on the logits' own scale: random deep nets (RedNet) reach logits of 1e11
        np.testing.assert_allclose(out, ref, atol=1e-4 * max(1.0, float(np.abs(ref).max())), rtol=0)
    p = parity(model, sess, x, batch_size=3)
    assert p["images"] == 3 and p["max_abs_err"] < 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert ref.std(axis=0).max() > 1e-3  # logits differ per image: the comparison is not vacuous


def test_unexportable_op_is_one_line_error_naming_model_and_op(tmp_path):
    from elimnet.deploy.export import ExportError, export_onnx
    from elimnet.errors import ElimnetError

    class Eig(nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x[:, 0]).real

    with pytest.raises(ExportError) as e:
        export_onnx(Eig(), tmp_path / "eig.onnx", 8, name="candidate (eigvals)")
    msg = str(e.value)
    assert isinstance(e.value, ElimnetError) and "\n" not in msg
    assert msg.startswith("candidate (eigvals): cannot export to ONNX: operator aten.linalg_eig")
    assert not (tmp_path / "eig.onnx").exists()


def _prepared(tmp_path, tiny_split):
    """A data/prepared folder of 4 brightness classes and a small model trained to tell them apart."""
    from elimnet.checkpoint import model_config, save_model
    from elimnet.compress.elim import set_num_classes
    from elimnet.data.tensors import Normalizer, iterate_batches
    from elimnet.io import write_json

    data = tmp_path / "prepared"
    data.mkdir()
    for name, seed in (("train", 0), ("val", 1), ("test", 2)):
        s = tiny_split(n_per_class=8, size=32, seed=seed)
        torch.save({"images": s.images, "labels": s.labels}, data / f"{name}.pt")
    write_json(data / "meta.json", {"classes": ["a", "b", "c", "d"], "image_size": 32})
    torch.manual_seed(0)
    model, _ = set_num_classes(create_model("resnet18", pretrained=False), 4)
    cfg = model_config("resnet18", [{"name": "classifier", "spec": {"num_classes": 4}}], num_classes=4,
                       image_size=32, classes=["a", "b", "c", "d"])
    train = tiny_split(n_per_class=8, size=32, seed=0)
    norm = Normalizer(cfg["mean"], cfg["std"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(12):
        for x, y in iterate_batches(train, 16, norm, shuffle=True, generator=torch.Generator().manual_seed(0)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    save_model(tmp_path / "candidate.pt", model.eval(), cfg)
    return data, tmp_path / "candidate.pt"


def test_int8_export_and_evaluation_on_a_tiny_model(tmp_path, tiny_split, one_thread):
    import onnx

    from elimnet.deploy.export import read_metadata
    from elimnet.io import read_json
    from elimnet.pipeline.export_stage import run_export

    data, model_path = _prepared(tmp_path, tiny_split)
    cfg = load_params(tmp_path / "none.yaml", ["deploy.precision=int8", "deploy.calibration_images=20",
                                               "train.eval_batch_size=16", "train.threads=1"])
    r = run_export(cfg, model_path, data, tmp_path / "deploy", tmp_path / "export.json", progress=False)
    assert r == read_json(tmp_path / "export.json")
    assert sorted(r["files"]) == ["fp32", "int8"] and r["bytes"]["int8"] < r["bytes"]["fp32"] / 2
    assert r["parity"]["images"] == 32 and r["parity"]["max_rel_err"] < 1e-4  # trained logits are large
    # Calibration: every method measured on val, the one kept is the best by macro-F1.
    cal = r["calibration"]
    assert cal["images"] == 20 and sorted(cal["methods"]) == ["entropy", "minmax", "percentile"]
    assert cal["methods"][cal["method"]]["macro_f1"] == max(m["macro_f1"] for m in cal["methods"].values())
    # The int8 file really is static QDQ with per-channel (axis-0) int8 weight scales.
    g = onnx.load(str(tmp_path / "deploy" / "model.int8.onnx")).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10 and "Conv" in ops
    scales = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    weight_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in scales
                 and scales[n.input[0]].dtype == np.int8 and scales[n.input[0]].ndim == 4]
    assert weight_dq and all(scales[n.input[1]].ndim == 1 and scales[n.input[1]].size > 1 for n in weight_dq)
    meta = read_metadata(tmp_path / "deploy" / "model.int8.onnx")
    assert meta["precision"] == "int8" and meta["calibration"] == cal["method"] and meta["classes"][0] == "a"
    acc = r["accuracy"]
    assert acc["images"] == 32 and acc["torch"]["acc"] >= 0.5  # above chance (0.25): it learnt something
    assert acc["fp32"]["agreement"] == 1.0 and acc["fp32"]["delta_acc"] == 0.0
    assert acc["int8"]["delta_acc"] == pytest.approx(acc["int8"]["acc"] - acc["torch"]["acc"])
    assert acc["int8"]["agreement"] >= 0.75, acc


def test_fp32_precision_writes_no_int8_and_bad_precision_is_rejected(tmp_path, tiny_split, one_thread):
    from elimnet.errors import ConfigError
    from elimnet.deploy.artifacts import artifacts
    from elimnet.pipeline.export_stage import run_export

    data, model_path = _prepared(tmp_path, tiny_split)
    cfg = load_params(tmp_path / "none.yaml", ["deploy.precision=fp32", "train.threads=1"])
    r = run_export(cfg, model_path, data, tmp_path / "deploy", tmp_path / "export.json", progress=False)
    assert sorted(artifacts(tmp_path / "deploy")) == ["fp32"] and "int8" not in r["accuracy"]
    assert "calibration" not in r
    with pytest.raises(ConfigError, match=r"deploy.precision=fp16: must be one of fp32, int8"):
        load_params(tmp_path / "none.yaml", ["deploy.precision=fp16"])
    assert json.loads((tmp_path / "export.json").read_text())["precision"] == "fp32"


def test_report_summary_gets_the_deployed_accuracy_per_precision_pooled_over_repeats():
    from elimnet.report.repeats import deployed_accuracy

    r0 = {"torch": {"acc": 0.9, "macro_f1": 0.8}, "fp32": {"acc": 0.9, "macro_f1": 0.8},
          "int8": {"acc": 0.85, "macro_f1": 0.75}}
    r1 = {"torch": {"acc": 0.8, "macro_f1": 0.6}, "fp32": {"acc": 0.8, "macro_f1": 0.6}}  # no INT8 in repeat 1
    assert deployed_accuracy([r0]) == {"test_acc_onnx_fp32": 0.9, "test_macro_f1_onnx_fp32": 0.8,
                                       "test_acc_onnx_int8": 0.85, "test_macro_f1_onnx_int8": 0.75}
    assert deployed_accuracy([r0, r1]) == pytest.approx({"test_acc_onnx_fp32": 0.85, "test_macro_f1_onnx_fp32": 0.7})
    assert deployed_accuracy([]) == {}


def test_compare_has_columns_per_backend_and_precision():
    from elimnet.report.aggregate import columns, comparison_rows
    from elimnet.report.records import ExpRecord

    summ = {"arch": "resnet18", "weights": "none", "steps": ["elim"],
            "baseline": {"params": 10, "layers": 5, "macs": 100, "test_macro_f1": 0.9,
                         "latency_cpu_bs1_ms": 10.0, "latency_ort_int8_bs1_ms": 2.0},
            "candidate": {"params": 5, "layers": 3, "macs": 50, "test_macro_f1": 0.85,
                          "test_macro_f1_onnx_int8": 0.84, "latency_cpu_bs1_ms": 6.0,
                          "latency_ort_int8_bs1_ms": 1.0},
            "ratios": {"latency_reduction_cpu_bs1": 0.4, "latency_reduction_ort_int8_bs1": 0.5}}
    rows = comparison_rows([ExpRecord("e1", {"model.arch": "resnet18", "model.elim": 2, "model.weights": "none"},
                                      summ)])
    cols = columns(rows)
    assert cols.index("latency_cpu_bs1_ms") < cols.index("latency_ort_int8_bs1_ms")
    assert "reduction_ort_int8_bs1" in cols and "test_macro_f1_onnx_int8" in cols
    assert "test_macro_f1_onnx_fp32" not in cols  # no experiment has it
    cand = next(r for r in rows if r["role"] == "candidate")
    assert cand["latency_ort_int8_bs1_ms"] == 1.0 and cand["reduction_ort_int8_bs1"] == 0.5
    assert cand["test_macro_f1_onnx_int8"] == 0.84


def test_headline_reduction_names_the_shipped_backend():
    from elimnet.report.headline import headline_reduction

    def per(red, noisy=False):
        return {"8": {"baseline": {"median_ms": 9.0}, "candidate": {"reduction": red / 2}},
                "1": {"baseline": {"median_ms": 2.0, "noisy": noisy}, "candidate": {"reduction": red}}}

    lat = {"cpu": per(0.4), "onnx": per(0.3), "ort_int8": None}
    assert headline_reduction(lat) == {"backend": "onnx", "batch_size": 1, "reduction": 0.3, "noisy": False}
    assert headline_reduction({**lat, "ort_int8": per(0.2, noisy=True)}) == {"backend": "ort_int8", "batch_size": 1,
                                                                   "reduction": 0.2, "noisy": True}
    assert headline_reduction({"cpu": None}) is None
