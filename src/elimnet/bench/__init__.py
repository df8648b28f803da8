"""Model size and speed: params/MACs (profile), latency per backend (latency, onnx_bench), memory.

Kept free of torch imports so that the report code can read benchmark results without it.
"""

# Latency backends, in the order they are measured and reported (keys of metrics/latency.json):
# eager PyTorch CPU, eager CUDA, ONNX Runtime CPU (fp32, and static INT8 QDQ), torch.compile on CPU.
BACKENDS = ("cpu", "cuda", "onnx", "ort_int8", "compile")
