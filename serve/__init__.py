"""ebgen.serve — inference runtime (onnxruntime), codecs, TorchServe handlers, HTTP service.

The one public way to load a model is `ebgen.load_model(path)` (implemented in
`ebgen.serve.runtime`), which returns an `InferenceModel`; importing this package loads
neither torch nor onnxruntime (sessions are created on load).
"""
from .runtime import InferenceModel, resolve_model_path

__all__ = ["InferenceModel", "resolve_model_path"]
