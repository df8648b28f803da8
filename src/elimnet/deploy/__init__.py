"""What ships: ONNX export (fp32, dynamic batch), ONNX Runtime static INT8 quantization, and the
accuracy of those artifacts measured through onnxruntime itself (not through the torch model)."""
