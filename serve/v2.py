"""The Open Inference Protocol v2 (KServe, Triton) of the HTTP service: requests in, responses out.

Both encodings of a tensor are understood:

* JSON: `{"name", "shape", "datatype", "data": [...]}` with the data flat or nested, row-major;
* Triton's binary tensor data extension, what a stock `tritonclient.http` call sends: the body
  starts with `Inference-Header-Content-Length` bytes of JSON, followed by the raw bytes of every
  input whose `parameters` carry `binary_data_size`, in input order (little-endian, row-major).

Outputs come back binary the same way when the request asks for it (`"binary_data": true` on an
output, or `"binary_data_output": true` among the request's parameters), JSON otherwise. A body
with `Content-Encoding: gzip` or `deflate` is inflated under the same size cap as a plain one
(`ebgen.serve.codecs.inflate`).

    request = parse_request(body, None, "energy", MODELS["energy"])
    body, headers = encode_response("energy", outputs, request)

`router(backend)` puts the routes over an `ebgen.serve.backend.Backend`: server and model
metadata (also under `/versions/1`), health, and `infer` for "generator" (input z, or
parameters num_samples/seed) and "energy" (input x → energy, log_density, percentile; on a
calibrated model also tail_probability (FP64) and is_anomaly (BOOL)).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.requests import Request

from ebgen import __version__
from ebgen.errors import one_line
from ebgen.names import (ENERGY_INPUT, GENERATOR_INPUT, GENERATOR_OUTPUT, IS_ANOMALY,
                         PERCENTILE, SCORE_OUTPUTS, TAIL_PROBABILITY)

from .codecs import dumps, inflate, parse_json
from .service import JSON_TYPE, latents_for, score_result
from .validation import (RequestError, check_count, check_fields, check_finite_output,
                         check_generate, check_latents, check_samples)

#: The header that says how many leading bytes of a body (request or response) are JSON.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: v2 datatypes accepted on input, and their numpy types (little-endian in binary data).
DTYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "UINT8": np.uint8,
          "BOOL": np.bool_}
#: Most dimensions a v2 input may have (a batch of images has 4).
MAX_DIMS = 8
#: The protocol extensions the server metadata announces.
EXTENSIONS = ["binary_tensor_data"]
REQUEST_FIELDS = ("id", "inputs", "outputs", "parameters")
TENSOR_FIELDS = ("name", "shape", "datatype", "data", "parameters")
#: Parameters a request may carry besides the model's own.
PROTOCOL_PARAMETERS = ("binary_data_output",)
#: v2 model names → their output tensors.
MODELS = {"generator": (GENERATOR_OUTPUT,), "energy": SCORE_OUTPUTS}
#: Output datatypes other than FP32.
OUTPUT_DATATYPES = {PERCENTILE: "FP64", TAIL_PROBABILITY: "FP64", IS_ANOMALY: "BOOL"}
#: Each model's one input.
INPUTS = {"generator": GENERATOR_INPUT, "energy": ENERGY_INPUT}
#: Each model's own request parameters.
MODEL_PARAMETERS = {"generator": ("num_samples", "seed", "refine_steps", "refine_step_size"),
                    "energy": ()}


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
    x = {"name": GENERATOR_OUTPUT, "datatype": "FP32", "shape": [-1, *model.sample_shape]}
    if name == "generator":
        inputs = [{"name": GENERATOR_INPUT, "datatype": "FP32", "shape": [-1, model.z_dim]}]
        outputs = [x]
    else:
        inputs = [{**x, "name": ENERGY_INPUT}]
        outputs = [{"name": n, "datatype": OUTPUT_DATATYPES.get(n, "FP32"), "shape": [-1]}
                   for n in model_outputs(name, model)]
    return {"name": name, "versions": ["1"], "platform": "onnxruntime_onnx",
            "inputs": inputs, "outputs": outputs,
            "parameters": {"ebgen_model": model.info.get("name"),
                           "providers": list(model.providers)}}


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
    return {np.dtype(t): name for name, t in DTYPES.items()}.get(array.dtype, "FP32")


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


def model_outputs(name: str, model: Any) -> tuple[str, ...]:
    """The output tensors of v2 model `name`: the energy's grow by the calibrated outputs."""
    return model.score_outputs if name == "energy" else MODELS[name]


def _model(backend: Any, name: str, version: str | None) -> Any:
    if name not in MODELS:
        raise RequestError(404, f"unknown model {name[:40]!r}: expected generator or energy")
    if version is not None and version != "1":
        raise RequestError(404, f"model {name} has no version {version[:20]!r}; its one "
                                f"version is 1")
    return backend.model


async def infer(backend: Any, request: Request, name: str, version: str | None = None
                ) -> tuple[bytes, dict[str, str]]:
    """One `POST /v2/models/{name}[/versions/{version}]/infer`: body and headers."""
    from starlette.concurrency import run_in_threadpool

    m, limits = _model(backend, name, version), backend.limits
    body = inflate(await backend.body(request), request.headers.get("content-encoding"), limits)
    req = parse_request(body, request.headers.get(HEADER_LENGTH), name, model_outputs(name, m))
    extra = sorted(set(req.inputs) - {INPUTS[name]})
    if extra:
        raise RequestError(422, f"unknown input {extra[0][:40]!r} of {name}; expected "
                                f"{INPUTS[name]}")
    parameters: dict[str, Any] = {}
    if name == "generator":
        if GENERATOR_INPUT in req.inputs:
            if req.parameters:
                raise RequestError(422, "give either input z or parameters num_samples/seed "
                                        "(and refine_steps/refine_step_size)")
            z = check_latents(req.inputs[GENERATOR_INPUT], m.z_dim, limits)
        else:
            params = check_generate(req.parameters, limits)
            z = (await run_in_threadpool(latents_for, m, params) if params.refine_steps
                 else latents_for(m, params))
            parameters = {"seed": params.seed}
        x = await backend.run(name, request, z)
        out = {GENERATOR_OUTPUT: check_finite_output(x, "generator's output")}
    else:
        if ENERGY_INPUT not in req.inputs:
            raise RequestError(422, f"energy needs input {ENERGY_INPUT}")
        x = check_samples(req.inputs[ENERGY_INPUT], m.sample_shape)
        check_count(len(x), limits)
        result = score_result(m, await backend.run(name, request, x))
        out = {k: np.asarray(v, DTYPES[OUTPUT_DATATYPES.get(k, "FP32")])
               for k, v in result.items()}
    return await run_in_threadpool(encode_response, name, out, req, parameters)


def router(backend: Any) -> Any:
    """The v2 routes (a FastAPI `APIRouter`) over `backend` (`ebgen.serve.backend.Backend`)."""
    from fastapi import APIRouter, Response

    routes = APIRouter()

    @routes.get("/v2")
    async def server_metadata():
        return {"name": "ebgen", "version": __version__, "extensions": EXTENSIONS}

    @routes.get("/v2/health/live")
    async def live():
        return {"live": True}

    @routes.get("/v2/health/ready")
    async def ready():
        await backend.check_ready()
        return {"ready": True}

    @routes.get("/v2/models/{name}")
    @routes.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str | None = None):
        return model_metadata(name, _model(backend, name, version))

    @routes.get("/v2/models/{name}/ready")
    @routes.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        _model(backend, name, version)
        return {"name": name, "ready": backend.ready}

    @routes.post("/v2/models/{name}/infer")
    @routes.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_route(name: str, request: Request, version: str | None = None):
        content, headers = await infer(backend, request, name, version)
        media = "application/octet-stream" if headers else JSON_TYPE
        return Response(content, media_type=media, headers=headers)

    return routes
