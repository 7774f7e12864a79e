"""ebgen.serve — inference runtime (onnxruntime), codecs, TorchServe handlers, HTTP service.

`load_model(path)` → `InferenceModel` over a model directory; importing this package loads
neither torch nor onnxruntime (sessions are created on load).
"""
from .runtime import InferenceModel, load_model, resolve_model_path

__all__ = ["InferenceModel", "load_model", "resolve_model_path"]
