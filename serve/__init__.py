"""ebgen.serve — inference runtime (onnxruntime), codecs, TorchServe handlers, HTTP service.

The model itself is the core's (`ebgen.runtime.InferenceModel`, loaded with
`ebgen.load_model(path)`, the one public front door); importing this package loads neither
torch nor onnxruntime (sessions are created on load).
"""
