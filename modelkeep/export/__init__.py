"""Send models out: ONNX (checked in onnxruntime), plain PyTorch state dicts and Keras files."""
