"""Models and data in MLflow: the finetuned torch model (pt2, tensor signature), the ONNX artifacts with a
signature and an input example (the one that ships registered as a model version), the data splits as run
inputs (lineage), system metrics sampled meanwhile.

These use MLflow's fluent API: log_models runs them inside the run, on the tracking URI (global_tracking_uri).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from elimnet.track.connection import global_tracking_uri


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


def log_torch_model(run_id: str, model, input_shape: tuple[int, ...]) -> str:
    """Log `model` to run `run_id` with mlflow.pytorch (pt2 format) and a signature; return the model URI."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = model.eval().to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        y = model(torch.zeros(*input_shape))
    # Tensor signature with an open batch dimension: a served model takes any number of images.
    f32 = np.dtype(np.float32)
    signature = ModelSignature(inputs=Schema([TensorSpec(f32, (-1, *input_shape[1:]))]),
                               outputs=Schema([TensorSpec(f32, (-1, *y.shape[1:]))]))
    active = mlflow.active_run()
    with (contextlib.nullcontext() if active and active.info.run_id == run_id else mlflow.start_run(run_id=run_id)):
        # "pt2": a torch.export program, no pickled code (like our own model files); the example
        # has batch 2 so that the exported batch dimension stays dynamic (size 1 would specialise).
        # Explicit requirements skip MLflow's slow import-tracing inference.
        info = mlflow.pytorch.log_model(model, name="model", signature=signature, serialization_format="pt2",
                                        input_example=np.zeros((2, *input_shape[1:]), dtype=np.float32),
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
    return info.model_uri


def log_models(uri: str, run_id: str, experiment: str, model=None, input_shape: tuple[int, ...] | None = None,
               onnx_models: dict[str, str | Path] | None = None, register: dict[str, str] | None = None,
               datasets: dict[str, str | Path] | None = None) -> None:
    """Everything of log_run that needs the fluent API, in run `run_id` with system metrics sampled.

    Each step may fail alone, with one warning line: the run keeps its params and metrics."""
    steps = []
    if model is not None:
        steps.append(("model", lambda: log_torch_model(run_id, model, input_shape)))
    steps += [(f"ONNX model {n}", lambda n=n, p=p: log_onnx_model(p, n, (register or {}).get(n)))
              for n, p in (onnx_models or {}).items()]
    if datasets:
        steps.append(("datasets", lambda: log_datasets(datasets, experiment)))
    if not steps:
        return
    with global_tracking_uri(uri), start_run_with_system_metrics(run_id):
        for what, log in steps:
            try:
                log()
            except Exception as e:  # noqa: BLE001 - keep the run (params, metrics) even without it
                first = (str(e).strip().splitlines() or [""])[0][:300]
                print(f"warning: MLflow {what} logging to {uri} failed ({type(e).__name__}: {first}); "
                      f"the run keeps its params and metrics", file=sys.stderr)
