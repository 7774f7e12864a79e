"""The one onnxruntime session set-up: every ONNX file ebgen runs is opened here.

Sessions log errors only (onnxruntime's warnings about unused initialisers and the like would
otherwise fill every terminal), run on the providers asked for (CPU by default), and take an
optional thread count. onnxruntime is imported inside, so importing this module is free.

    session = ort_session(path)                      # CPU
    session = ort_session(path, ["CUDAExecutionProvider", "CPUExecutionProvider"], threads=2)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .errors import EbgenError, one_line

CPU = ("CPUExecutionProvider",)


def ort_session(model: str | Path | bytes, providers: Sequence[Any] = CPU,
                threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` for `model` (a path or the file's bytes); a file
    onnxruntime cannot load is an `EbgenError` naming it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own kinds
        name = "model bytes" if isinstance(model, bytes) else str(model)
        raise EbgenError(f"onnxruntime cannot load {name}: {one_line(e)}") from e
