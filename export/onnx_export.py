"""ONNX export of the two networks, and the check that onnxruntime agrees with PyTorch.

Each file is written by torch's dynamo exporter in eval mode with a named dynamic batch axis
(`names.BATCH_AXIS`) and the weights inside the file, loses the exporter's stack traces (paths
on the exporting machine), passes `onnx.checker` (full check), then runs in a fresh
onnxruntime session against PyTorch on fresh inputs at batch sizes 1, 7 and 64 (never the
export batch). A difference beyond the tolerance raises `EbgenError`.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebgen.errors import EbgenError, one_line
from ebgen.sessions import ort_session
from ebgen.names import BATCH_AXIS
from ebgen.pixels import unit_to_uint8

#: Batch sizes of the parity check; the export itself traces `EXPORT_BATCH`, which is none.
PARITY_BATCHES = (1, 7, 64)
EXPORT_BATCH = 5
RTOL, ATOL = 1e-3, 1e-4
#: Node metadata in which torch's exporter records the Python stack (`drop_stack_traces`).
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
#: uint8 outputs may differ by one level (rounding of values that land on .5).
UINT8_LEVELS = 1

#: A function giving fresh float32 inputs: (batch size, seed) -> array.
InputFn = Callable[[int, int], np.ndarray]


class UInt8Generator(nn.Module):
    """G(z) followed by `ebgen.pixels.unit_to_uint8`: uint8 NCHW pixels for metric tools."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return unit_to_uint8(self.generator(z))


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Hide the exporter's chatter (missing torchvision ops, deprecation notices)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path,
                input_name: str, output_name: str | Sequence[str], opset: int = 18) -> Path:
    """Export `module` (put in eval mode) to `path` and run the full ONNX checker.

    `output_name` names the one output, or each of several in order. The first axis of every
    input and output is the dynamic axis `BATCH_AXIS`; weights are stored inside the file (no
    external data). Raises `EbgenError` when export or check fails.
    """
    import onnx

    path = Path(path)
    outputs = [output_name] if isinstance(output_name, str) else list(output_name)
    module.eval()
    batch = torch.export.Dim(BATCH_AXIS, min=1)
    try:
        with quiet_exporter(), torch.no_grad():
            torch.onnx.export(module, (example,), str(path), dynamo=True, external_data=False,
                              input_names=[input_name], output_names=outputs,
                              dynamic_shapes=({0: batch},), opset_version=opset, verbose=False)
    except Exception as e:  # exporter errors are long; the first line says what failed
        raise EbgenError(f"ONNX export of {path.name} failed: "
                         f"{type(e).__name__}: {one_line(e)}") from e
    model = drop_stack_traces(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:
        raise EbgenError(f"{path.name} fails the ONNX checker: {one_line(e)}") from e
    check_signature(model, path.name, [input_name], outputs)
    return path


def drop_stack_traces(path: str | Path):
    """Rewrite the ONNX file at `path` without the exporter's per-node Python stack traces.

    They name files on the exporting machine (its source checkout and site-packages) and
    mean nothing where the model runs; the graph and weights are untouched. Returns the
    rewritten `onnx.ModelProto`.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        kept = [p for p in node.metadata_props if p.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.save(model, str(path))
    return model


def check_signature(model, filename: str, inputs: Sequence[str], outputs: Sequence[str]
                    ) -> None:
    """Raise unless the graph has exactly these I/O names, each batched on BATCH_AXIS."""
    graph = model.graph
    got = ([i.name for i in graph.input], [o.name for o in graph.output])
    if got != (list(inputs), list(outputs)):
        raise EbgenError(f"{filename} has inputs {got[0]} and outputs {got[1]}: expected "
                         f"{list(inputs)} and {list(outputs)}")
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_param != BATCH_AXIS:
            raise EbgenError(f"{filename}: {value.name!r} has no dynamic axis {BATCH_AXIS!r} "
                             f"first (got {[d.dim_param or d.dim_value for d in dims]})")


def check_parity(path: str | Path, module: nn.Module, make_input: InputFn,
                 batches: Sequence[int] = PARITY_BATCHES, rtol: float = RTOL,
                 atol: float = ATOL) -> dict[str, float]:
    """Max |ORT − PyTorch| per batch size (as strings) of the ONNX file at `path`.

    Runs `path` in a fresh onnxruntime session and `module` in eval mode on CPU, on inputs
    `make_input(batch, seed)`. Raises `EbgenError` naming the file and the max error when a
    float output differs beyond `rtol`/`atol`, or a uint8 output by more than one level.
    """
    path = Path(path)
    session = ort_session(path)
    input_name = session.get_inputs()[0].name
    module.eval()
    diffs: dict[str, float] = {}
    for seed, n in enumerate(batches):
        x = make_input(n, 1000 + seed)
        got = session.run(None, {input_name: x})[0]
        with torch.no_grad():
            want = module(torch.from_numpy(x)).cpu().numpy()
        if got.shape != want.shape or got.dtype != want.dtype:
            raise EbgenError(f"{path.name} at batch {n}: onnxruntime gives {got.dtype} "
                             f"{got.shape}, PyTorch {want.dtype} {want.shape}")
        if want.dtype == np.uint8:
            diff = float(np.abs(got.astype(np.int16) - want.astype(np.int16)).max(initial=0))
            ok = diff <= UINT8_LEVELS
            limit = f"{UINT8_LEVELS} level"
        else:
            diff = float(np.abs(got - want).max(initial=0.0))
            ok = bool(np.allclose(got, want, rtol=rtol, atol=atol))
            limit = f"rtol {rtol:g} / atol {atol:g}"
        if not ok:
            raise EbgenError(f"{path.name} does not match PyTorch at batch {n}: max |diff| "
                             f"{diff:.3g} (tolerance {limit})")
        diffs[str(n)] = diff
    return diffs
