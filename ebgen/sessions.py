"""The one onnxruntime session set-up: every ONNX file ebgen runs is opened here.

Sessions log errors only (onnxruntime's warnings about unused initialisers and the like would
otherwise fill every terminal), run on the providers asked for (CPU by default), and take an
optional thread count. They are set up for serving beside other work: every graph
optimisation on, one inter-op thread (the graphs are chains: nothing to run side by side) and
no spinning, so idle intra-op threads sleep instead of burning the cores an event loop, other
workers or the clients need (onnxruntime spins by default; README "Serving speed" has what
each setting changed). onnxruntime is imported inside, so importing this module is free.

    session = ort_session(path)                      # CPU
    session = ort_session(path, ["CUDAExecutionProvider", "CPUExecutionProvider"], threads=2)
"""
from __future__ import annotations

import os
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
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=list(providers))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own kinds
        name = "model bytes" if isinstance(model, bytes) else str(model)
        raise EbgenError(f"onnxruntime cannot load {name}: {one_line(e)}") from e


#: Overrides the onnxruntime threads per session of serving workers (TorchServe's included).
THREADS_ENV = "EBGEN_THREADS"


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def serving_threads(workers: int = 1) -> int:
    """onnxruntime threads per session for one of `workers` serving processes: $EBGEN_THREADS,
    else the cores shared out evenly (at least 1)."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, available_cores() // max(1, workers))
