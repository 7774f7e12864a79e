"""The Open Inference Protocol v2 (KServe, Triton) of the HTTP service: requests in, responses out.

Both encodings of a tensor are understood:

* JSON: `{"name", "shape", "datatype", "data": [...]}` with the data flat or nested, row-major;
* Triton's binary tensor data extension, what a stock `tritonclient.http` call sends: the body
  starts with `Inference-Header-Content-Length` bytes of JSON, followed by the raw bytes of every
  input whose `parameters` carry `binary_data_size`, in input order (little-endian, row-major).

Outputs come back binary the same way when the request asks for it (`"binary_data": true` on an
output, or `"binary_data_output": true` among the request's parameters), JSON otherwise. A body
with `Content-Encoding: gzip` or `deflate` is inflated under the same size cap as a plain one.

    request = parse_request(body, None, "energy", ("energy", "log_density", "percentile"))
    body, headers = encode_response("energy", outputs, request)
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebgen.errors import one_line

from .codecs import dumps, parse_json
from .validation import Limits, RequestError, check_body_size, check_fields

#: The header that says how many leading bytes of a body (request or response) are JSON.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: v2 datatypes accepted on input, and their numpy types (little-endian in binary data).
DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "UINT8": np.uint8}
#: Most dimensions a v2 input may have (a batch of images has 4).
MAX_DIMS = 8
#: The protocol extensions the server metadata announces.
EXTENSIONS = ["binary_tensor_data"]
REQUEST_FIELDS = ("id", "inputs", "outputs", "parameters")
TENSOR_FIELDS = ("name", "shape", "datatype", "data", "parameters")
#: Parameters a request may carry besides the model's own.
PROTOCOL_PARAMETERS = ("binary_data_output",)
#: v2 model names → their output tensors.
MODELS = {"generator": ("x",), "energy": ("energy", "log_density", "percentile")}
#: Each model's own request parameters.
MODEL_PARAMETERS = {"generator": ("num_samples", "seed"), "energy": ()}


@dataclass
class InferRequest:
    """A checked v2 infer request: input arrays by name, the model's parameters, the outputs
    wanted (in order) and which of them go back as binary data."""

    id: Any = None
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    binary: set[str] = field(default_factory=set)


def model_metadata(name: str, model: Any) -> dict[str, Any]:
    """`GET /v2/models/{name}` for an `InferenceModel`: its tensors, version and providers."""
    x = {"name": "x", "datatype": "FP32", "shape": [-1, *model.sample_shape]}
    if name == "generator":
        inputs = [{"name": "z", "datatype": "FP32", "shape": [-1, model.z_dim]}]
        outputs = [x]
    else:
        inputs = [x]
        outputs = [{"name": n, "datatype": "FP64" if n == "percentile" else "FP32",
                    "shape": [-1]} for n in MODELS["energy"]]
    return {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs,
            "parameters": {"ebgen_model": model.info.get("name"),
                           "providers": list(model.providers)}}


def inflate(body: bytes, encoding: str | None, limits: Limits) -> bytes:
    """`body` decompressed per its Content-Encoding (gzip, deflate or none), never past the
    body cap (413), so a small bomb cannot expand without bound."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise RequestError(415, f"Content-Encoding {encoding[:20]!r} is not supported: "
                                f"expected gzip or deflate")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limits.max_body_bytes + 1)
    except zlib.error as err:
        raise RequestError(400, f"body is not valid {encoding}: {one_line(err)}") from None
    check_body_size(len(out), limits)
    return out


def _header_length(text: str | None, size: int) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= size:
        raise RequestError(400, f"{HEADER_LENGTH} must be a byte count between 1 and the "
                                f"body's {size} bytes, got {text[:20]!r}")
    return int(text)


def parse_request(body: bytes, header_length: str | None, model_name: str,
                  outputs: Sequence[str]) -> InferRequest:
    """A v2 infer body (JSON, or JSON plus binary tensors after `header_length` bytes) checked
    against `model_name`'s parameters and output names `outputs`."""
    split = _header_length(header_length, len(body))
    obj = parse_json(body[:split] if split else body)
    binary = memoryview(body)[split:] if split else memoryview(b"")
    if not isinstance(obj, Mapping):
        raise RequestError(422, "v2 infer request must be a JSON object with inputs")
    check_fields(obj, REQUEST_FIELDS, "v2 infer")
    params = obj.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise RequestError(422, "v2 parameters must be an object")
    check_fields(params, MODEL_PARAMETERS[model_name] + PROTOCOL_PARAMETERS,
                 f"{model_name} parameters of a v2")
    binary_all = _flag(params, "binary_data_output")
    inputs = obj.get("inputs", [])
    if not isinstance(inputs, list):
        raise RequestError(422, "v2 inputs must be a list of tensors")
    request = InferRequest(id=obj.get("id"),
                           parameters={k: v for k, v in params.items()
                                       if k not in PROTOCOL_PARAMETERS})
    offset = 0
    for tensor in inputs:
        name, array, offset = decode_tensor(tensor, binary, offset)
        if name in request.inputs:
            raise RequestError(422, f"v2 input {name!r} given twice")
        request.inputs[name] = array
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes of binary data follow the "
                                f"inputs' binary_data_size")
    wanted = obj.get("outputs")
    if wanted is None:
        request.outputs = list(outputs)
        request.binary = set(outputs) if binary_all else set()
        return request
    if not isinstance(wanted, list) or not all(isinstance(o, Mapping) and "name" in o
                                               for o in wanted):
        raise RequestError(422, 'v2 outputs must be a list of {"name": ...}')
    for out in wanted:
        if out["name"] not in outputs:
            raise RequestError(422, f"unknown output {str(out['name'])[:40]!r} of {model_name}; "
                                    f"expected {', '.join(outputs)}")
        check_fields(out, ("name", "parameters"), "v2 output")
        out_params = out.get("parameters") or {}
        if not isinstance(out_params, Mapping):
            raise RequestError(422, "v2 output parameters must be an object")
        check_fields(out_params, ("binary_data",), "v2 output parameters of a")
        request.outputs.append(out["name"])
        if _flag(out_params, "binary_data", binary_all):
            request.binary.add(out["name"])
    return request


def _flag(params: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"v2 parameter {name} must be true or false")
    return value


def decode_tensor(tensor: Any, binary: memoryview = memoryview(b""),
                  offset: int = 0) -> tuple[str, np.ndarray, int]:
    """One v2 input as (name, array of its shape, offset past its binary data in `binary`)."""
    if not isinstance(tensor, dict):
        raise RequestError(422, "each v2 input must be an object with name, shape, datatype, "
                                "data")
    check_fields(tensor, TENSOR_FIELDS, "v2 input")
    params = tensor.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise RequestError(422, "v2 input parameters must be an object")
    check_fields(params, ("binary_data_size",), "v2 input parameters of a")
    size = params.get("binary_data_size")
    needed = ("name", "shape", "datatype") + (() if size is not None else ("data",))
    missing = [k for k in needed if k not in tensor]
    if missing:
        raise RequestError(422, f"v2 input lacks {missing[0]!r}")
    name, shape, dtype = tensor["name"], tensor["shape"], tensor["datatype"]
    if not isinstance(name, str):
        raise RequestError(422, "v2 input name must be a string")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        shown = dtype[:20] if isinstance(dtype, str) else type(dtype).__name__
        raise RequestError(422, f"v2 datatype {shown!r} is not supported: "
                                f"expected {', '.join(DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31
                       for d in shape)):
        raise RequestError(422, f"v2 shape must be a list of at most {MAX_DIMS} "
                                f"non-negative integers")
    count = math.prod(shape)
    if size is not None:
        return (name, *_binary_tensor(name, size, tensor, shape, dtype, count, binary, offset))
    try:
        flat = np.asarray(tensor["data"], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as err:
        raise RequestError(422, f"v2 data of {name!r} is not a list of numbers: "
                                f"{one_line(err)}") from None
    if flat.size != count:
        raise RequestError(422, f"v2 input {name!r} has {flat.size} values for shape {shape} "
                                f"({count} expected)")
    if dtype == "UINT8" and flat.size and (flat.min() < 0 or flat.max() > 255
                                           or np.any(flat != np.rint(flat))):
        raise RequestError(422, f"v2 input {name!r}: UINT8 data must be integers in [0, 255]")
    return name, flat.astype(DTYPES[dtype]).reshape(shape), offset


def _binary_tensor(name: str, size: Any, tensor: Mapping, shape: list[int], dtype: str,
                   count: int, binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """The array of an input sent as binary data, and the offset after it."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise RequestError(422, f"binary_data_size of {name!r} must be a byte count")
    if "data" in tensor:
        raise RequestError(422, f"v2 input {name!r} has both data and binary_data_size")
    kind = np.dtype(DTYPES[dtype]).newbyteorder("<")
    if size != count * kind.itemsize:
        raise RequestError(422, f"binary_data_size of {name!r} is {size} bytes; shape {shape} "
                                f"of {dtype} needs {count * kind.itemsize}")
    if offset + size > len(binary):
        raise RequestError(400, f"binary data of {name!r} is cut short: {size} bytes expected, "
                                f"{len(binary) - offset} left in the body")
    array = np.frombuffer(binary[offset:offset + size], dtype=kind)
    return array.astype(DTYPES[dtype]).reshape(shape), offset + size


def encode_tensor(name: str, array: np.ndarray) -> dict[str, Any]:
    """An array as a JSON v2 output tensor (row-major flat data)."""
    dtype = _datatype(array)
    data = array.astype(DTYPES[dtype]).reshape(-1).tolist()
    return {"name": name, "datatype": dtype, "shape": list(array.shape), "data": data}


def _datatype(array: np.ndarray) -> str:
    kinds = {np.dtype(np.float64): "FP64", np.dtype(np.uint8): "UINT8"}
    return kinds.get(np.dtype(array.dtype), "FP32")


def encode_response(model_name: str, outputs: Mapping[str, np.ndarray], request: InferRequest,
                    parameters: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and extra headers answering `request` with `outputs`: JSON, or JSON plus the
    binary outputs after it (with `Inference-Header-Content-Length`)."""
    tensors, chunks = [], []
    for name in request.outputs:
        array = outputs[name]
        if name not in request.binary:
            tensors.append(encode_tensor(name, array))
            continue
        dtype = _datatype(array)
        raw = np.ascontiguousarray(array, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"))
        chunks.append(raw.tobytes())
        tensors.append({"name": name, "datatype": dtype, "shape": list(array.shape),
                        "parameters": {"binary_data_size": len(chunks[-1])}})
    body: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": tensors}
    if request.id is not None:
        body["id"] = request.id
    if parameters:
        body["parameters"] = dict(parameters)
    head = dumps(body)
    if not chunks:
        return head, {}
    return b"".join([head, *chunks]), {HEADER_LENGTH: str(len(head))}
