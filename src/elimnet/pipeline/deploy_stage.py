"""export stage (models/deploy/<role>/model.onnx [+ model.int8.onnx]) and the accuracy of those
artifacts, measured through onnxruntime on the test split, with deltas against the torch model.

metrics/<role>/export.json:
    {role, precision, image_size, files: {fp32, int8}, bytes: {...},
     parity: {max_abs_err, max_rel_err, images}            # fp32 ONNX vs torch, real test images
     calibration: {method, images, methods: {m: {acc, macro_f1, agreement}}}   # val split, int8 only
     accuracy: {torch: {acc, macro_f1}, fp32: {acc, macro_f1, delta_acc, delta_macro_f1, agreement}, int8: ...}}
"""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.checkpoint import load_model
from elimnet.config import Config
from elimnet.data.prepare import load_meta
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.io import atomic_dir, write_json
from elimnet.pipeline.common import set_threads

FP32_NAME, INT8_NAME = "model.onnx", "model.int8.onnx"


def artifacts(deploy_dir: str | Path) -> dict[str, Path]:
    """precision -> file, for the artifacts present in `deploy_dir`."""
    d = Path(deploy_dir)
    return {p: d / f for p, f in (("fp32", FP32_NAME), ("int8", INT8_NAME)) if (d / f).is_file()}


def calibration_batches(split: TensorSplit, normalize: Normalizer, n: int, seed: int,
                        batch_size: int = 16) -> list:
    """`n` train images in a seeded random order (splits may be class-sorted), normalised, batched.

    All batches have the same size: ONNX Runtime's histogram calibrators (entropy, percentile)
    stack per-batch outputs and fail on a short last batch."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:n]
    batch_size = max(b for b in range(1, batch_size + 1) if idx.numel() % b == 0)
    sub = TensorSplit(split.images[idx], split.labels[idx])
    return [x.numpy() for x, _ in iterate_batches(sub, batch_size, normalize)]


def _torch_preds(model, split: TensorSplit, normalize: Normalizer, batch_size: int, num_classes: int) -> dict:
    from elimnet.train.metrics import evaluate

    m = evaluate(model, split, normalize, batch_size, num_classes)
    return {"acc": m["acc"], "macro_f1": m["macro_f1"], "y_pred": m["y_pred"]}


def evaluate_artifacts(cfg: Config, model_path: str | Path, deploy_dir: str | Path, data_dir: str | Path,
                       split: str = "test") -> dict:
    """acc/macro-F1 of the torch model and of every artifact in `deploy_dir` on `split`, with each
    artifact's delta against torch and its top-1 agreement with torch. The evaluate stage can call
    this and store the result under "deployed" (see docs/deploy.md)."""
    from elimnet.deploy.evaluate import evaluate_onnx

    model, config = load_model(model_path)
    num_classes = len(load_meta(data_dir)["classes"])
    data = TensorSplit.load(Path(data_dir) / f"{split}.pt")
    normalize = Normalizer(config["mean"], config["std"])
    bs = cfg["train.eval_batch_size"]
    ref = _torch_preds(model, data, normalize, bs, num_classes)
    out = {"split": split, "images": len(data), "torch": {k: ref[k] for k in ("acc", "macro_f1")}}
    for precision, path in artifacts(deploy_dir).items():
        m = evaluate_onnx(path, data, num_classes, batch_size=bs, normalize=normalize, reference=ref["y_pred"])
        out[precision] = {"acc": m["acc"], "macro_f1": m["macro_f1"], "agreement": m["agreement"],
                          "delta_acc": m["acc"] - ref["acc"], "delta_macro_f1": m["macro_f1"] - ref["macro_f1"]}
    return out


def run_export(cfg: Config, model_path: str | Path, data_dir: str | Path, out_dir: str | Path,
               metrics_path: str | Path, role: str = "candidate", progress: bool = True) -> dict:
    """Export the model (fp32; with deploy.precision=int8 also INT8), check it, measure its accuracy."""
    from elimnet.deploy.evaluate import evaluate_onnx
    from elimnet.deploy.export import export_onnx, ort_session, parity
    from elimnet.deploy.quantize import METHODS, quantize_best

    set_threads(cfg["train.threads"])
    model, config = load_model(model_path)
    meta = load_meta(data_dir)
    classes, size = meta["classes"], config.get("image_size", meta["image_size"])
    normalize = Normalizer(config["mean"], config["std"])
    test = TensorSplit.load(Path(data_dir) / "test.pt")
    precision = cfg["deploy.precision"]
    result: dict = {"role": role, "precision": precision, "image_size": size}
    with atomic_dir(out_dir) as tmp:
        fp32 = export_onnx(model, tmp / FP32_NAME, size, name=f"{role} ({config.get('arch', '?')})",
                           metadata={"role": role, "arch": config.get("arch"), "precision": "fp32",
                                     "image_size": size, "classes": classes, "mean": list(config["mean"]),
                                     "std": list(config["std"])})
        x = torch.cat([xb for xb, _ in iterate_batches(test, 256, normalize)])  # real test images
        result["parity"] = parity(model, ort_session(fp32, cfg["train.threads"]), x)
        if precision == "int8":
            train = TensorSplit.load(Path(data_dir) / "train.pt")
            val = TensorSplit.load(Path(data_dir) / "val.pt")
            calib = calibration_batches(train, normalize, cfg["deploy.calibration_images"], cfg["seed"])
            ref = evaluate_onnx(fp32, val, len(classes), normalize=normalize)["y_pred"]
            methods = METHODS if cfg["deploy.calibration"] == "auto" else [cfg["deploy.calibration"]]
            chosen = quantize_best(
                fp32, tmp / INT8_NAME, calib, methods=methods, name=role, progress=progress,
                score=lambda p: {k: v for k, v in evaluate_onnx(p, val, len(classes), normalize=normalize,
                                                                reference=ref).items()
                                 if k in ("acc", "macro_f1", "agreement")})
            result["calibration"] = {"split": "val", "images": sum(b.shape[0] for b in calib), **chosen}
    result["files"] = {p: f.name for p, f in artifacts(out_dir).items()}  # in the role's deploy folder
    result["bytes"] = {p: f.stat().st_size for p, f in artifacts(out_dir).items()}
    result["accuracy"] = evaluate_artifacts(cfg, model_path, out_dir, data_dir)
    write_json(metrics_path, result)
    return result
