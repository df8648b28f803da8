"""What ships, in MLflow: ONNX artifacts with a signature and an input example (the candidate's
registered as a model version), the data splits as run inputs (lineage), system metrics.

Called by mlflow_log._log_run inside an active run on the tracking URI (see _tracking there)."""
from __future__ import annotations

from pathlib import Path


def onnx_signature(path: str | Path):
    """Tensor signature from the ONNX graph itself: float32 [batch, C, S, S] -> [batch, classes]."""
    import numpy as np
    import onnx
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema, TensorSpec

    g = onnx.load(str(path), load_external_data=False).graph

    def shape(v):
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)

    f32 = np.dtype(np.float32)
    return ModelSignature(inputs=Schema([TensorSpec(f32, shape(g.input[0]), g.input[0].name)]),
                          outputs=Schema([TensorSpec(f32, shape(g.output[0]), g.output[0].name)]))


def log_onnx_model(path: str | Path, name: str, registered_model_name: str | None = None):
    """Log one .onnx to the active run (signature, batch-2 input example); optionally register it."""
    import mlflow
    import numpy as np
    import onnx
    import onnxruntime

    sig = onnx_signature(path)
    spec = sig.inputs.inputs[0]
    example = np.zeros((2, *spec.shape[1:]), dtype=np.float32)
    return mlflow.onnx.log_model(onnx.load(str(path)), name=name, signature=sig,
                                 input_example={spec.name: example}, save_as_external_data=False,
                                 registered_model_name=registered_model_name,
                                 onnx_execution_providers=["CPUExecutionProvider"],  # the CPU build we pin
                                 pip_requirements=[f"onnx=={onnx.__version__}",
                                                   f"onnxruntime=={onnxruntime.__version__}"])


def log_datasets(datasets: dict[str, str | Path], name: str) -> None:
    """Each prepared split (train.pt, ...) as a run input with its digest, context = split name."""
    import warnings

    import mlflow
    import torch

    for context, path in datasets.items():
        d = torch.load(path, map_location="cpu", weights_only=True)
        with warnings.catch_warnings():  # MLflow registers two identical local-file sources and warns that it picks one
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_numpy(d["images"].numpy(), targets=d["labels"].numpy(),
                                        source=str(Path(path).resolve()), name=f"{name}-{context}")
        mlflow.log_input(ds, context=context)


def start_run_with_system_metrics(run_id: str):
    """Resume `run_id` as the active run with system metrics sampled every second while it is open."""
    import mlflow

    mlflow.set_system_metrics_sampling_interval(1)
    mlflow.set_system_metrics_samples_before_logging(1)
    return mlflow.start_run(run_id=run_id, log_system_metrics=True)
