"""export: models/deploy/<role>/ (deploy.artifacts.PRECISIONS) and metrics/<role>/export.json (docs/deploy.md)."""
from __future__ import annotations

from pathlib import Path

import torch

from elimnet.checkpoint import load_model
from elimnet.config import Config
from elimnet.data.prepare import load_meta, repeat_data_dir
from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.deploy.artifacts import artifact_path, artifacts
from elimnet.deploy.calibration import quantize_calibrated
from elimnet.deploy.evaluate import evaluate_artifacts
from elimnet.deploy.export import export_onnx, ort_session, parity
from elimnet.io import atomic_dir, write_json
from elimnet.threads import set_threads


def run_export(cfg: Config, model_path: str | Path, data_dir: str | Path, out_dir: str | Path,
               metrics_path: str | Path, role: str = "candidate", progress: bool = True, repeat: int = 0) -> dict:
    """Export the model (fp32; with deploy.precision=int8 also INT8), check it, measure its accuracy on the
    repeat's test split (fold r under data.folds)."""
    data_dir = repeat_data_dir(data_dir, repeat)
    set_threads(cfg["train.threads"])
    model, config = load_model(model_path)
    meta = load_meta(data_dir)
    size = config.get("image_size", meta["image_size"])
    normalize = Normalizer(config["mean"], config["std"])
    test = TensorSplit.load(Path(data_dir) / "test.pt")
    result: dict = {"role": role, "precision": cfg["deploy.precision"], "image_size": size}
    with atomic_dir(out_dir) as tmp:
        fp32 = export_onnx(model, artifact_path(tmp, "fp32"), size, name=f"{role} ({config.get('arch', '?')})",
                           metadata={"role": role, "arch": config.get("arch"), "precision": "fp32",
                                     "image_size": size, "classes": meta["classes"], "mean": list(config["mean"]),
                                     "std": list(config["std"])})
        x = torch.cat([xb for xb, _ in iterate_batches(test, 256, normalize)])  # real test images
        result["parity"] = parity(model, ort_session(fp32, cfg["train.threads"]), x)
        if cfg["deploy.precision"] == "int8":
            splits = {s: TensorSplit.load(Path(data_dir) / f"{s}.pt") for s in ("train", "val")}
            result["calibration"] = quantize_calibrated(
                fp32, artifact_path(tmp, "int8"), splits["train"], splits["val"], normalize, len(meta["classes"]),
                images=cfg["deploy.calibration_images"], seed=cfg["seed"], method=cfg["deploy.calibration"],
                name=role, progress=progress)
    result["files"] = {p: f.name for p, f in artifacts(out_dir).items()}  # in the role's deploy folder
    result["bytes"] = {p: f.stat().st_size for p, f in artifacts(out_dir).items()}
    result["accuracy"] = evaluate_artifacts(model_path, out_dir, data_dir, cfg["train.eval_batch_size"])
    write_json(metrics_path, result)
    return result

