"""TorchServe handlers `GenerateHandler` and `ScoreHandler` over the one inference core.

The four steps of TorchServe's contract, for a batch of N requests:

    initialize   load the archive's model directory (model.json + ONNX files, unpacked by
                 TorchServe into `model_dir`) with the onnxruntime runtime
    preprocess   decode + check each request alone (`ebgen.serve.service`); a bad one becomes
                 its own error, never its neighbours'
    inference    one onnxruntime call for every good request of the batch
    postprocess  N answers, in order: bytes plus a per-request status, content type and
                 headers (`context.set_response_status`), so a bad request gets its 4xx and
                 `{"error": "..."}` while the rest of its batch succeeds

A failure of the batch as a whole (model not loaded, onnxruntime error) raises TorchServe's
`PredictionException` with a JSON reason. Request bodies are those of `POST /generate` and
`POST /score` of the HTTP service. Limits come from $EBGEN_SERVE_LIMITS (JSON of
`validation.Limits`), which `ebgen serve --engine torchserve` sets.

Tested without a server (as TorchServe's own handlers are) by calling `handle()` with a mock
context; the archives use the one-class entry files `ts_generate.py` and `ts_score.py`.
"""
from __future__ import annotations

import json
import logging
import os
from http import HTTPStatus
from collections.abc import Sequence
from typing import Any

import numpy as np
from ts.torch_handler.base_handler import BaseHandler
from ts.utils.util import PredictionException

from . import service
from .validation import LIMITS_ENV, GenerateParams, Limits, RequestError

log = logging.getLogger(__name__)
FORM_HINT = ("the body arrived as an HTML form: send it with Content-Type: application/json "
             "(or application/octet-stream for PNG/.npy bytes)")


def limits_from_env() -> Limits:
    """The request caps `ebgen serve` passed in $EBGEN_SERVE_LIMITS, else the defaults."""
    text = os.environ.get(LIMITS_ENV)
    return Limits(**json.loads(text)) if text else Limits()


def request_body(row: dict[str, Any]) -> bytes | str | dict | list:
    """One request's body as TorchServe hands it over: bytes, text or already-parsed JSON."""
    if "body" not in row and "data" not in row:
        raise RequestError(400, FORM_HINT)
    body = row.get("body", row.get("data"))
    if body is None:
        return b""
    return bytes(body) if isinstance(body, bytearray) else body


def _size(body: Any) -> int:
    """Bytes of a body; parsed JSON is measured as compact JSON."""
    if isinstance(body, (bytes, str)):
        return len(body)
    return len(json.dumps(body, separators=(",", ":")))


class EbgenHandler(BaseHandler):
    """The steps both handlers share; subclasses say how to check, run and encode."""

    #: The archive kind this handler serves ("generate" or "score").
    kind = ""

    def __init__(self) -> None:
        super().__init__()
        self.limits = Limits()
        self.model: Any = None

    def initialize(self, context: Any) -> None:
        """Load the unpacked archive (`model_dir`) into onnxruntime sessions."""
        import onnxruntime

        from ebgen import load_model
        from ebgen.runtime import CUDA_PROVIDER
        from ebgen.sessions import serving_threads

        props = context.system_properties
        gpu = props.get("gpu_id")
        device = (f"cuda:{gpu}" if gpu is not None
                  and CUDA_PROVIDER in onnxruntime.get_available_providers() else "cpu")
        self.model = load_model(props.get("model_dir"), device, serving_threads())
        self.limits = limits_from_env()
        self.manifest = getattr(context, "manifest", None)
        self.initialized = True
        log.info("ebgen %s handler: model %s on %s", self.kind, self.model.info.get("name"),
                 ", ".join(self.model.providers))

    def check(self, body: Any) -> Any:
        """One request body → what `run` takes; raises `RequestError` when bad."""
        raise NotImplementedError

    def run(self, items: Sequence[Any]) -> list[service.Reply]:
        """Checked items (or `RequestError`s) → one Reply each, in one model call."""
        raise NotImplementedError

    def preprocess(self, data: list[dict[str, Any]]) -> list[Any]:
        """Each request decoded and checked alone: a checked item or its `RequestError`."""
        items: list[Any] = []
        for row in data:
            try:
                body = request_body(row)
                if _size(body) > self.limits.max_body_bytes:
                    raise RequestError(413, f"request body of {_size(body)} bytes exceeds the "
                                            f"limit of {self.limits.max_body_bytes} bytes")
                items.append(self.check(body))
            except RequestError as err:
                items.append(err)
            except Exception as err:  # unforeseen input: this request's 400, not the batch's
                log.exception("ebgen %s: request could not be read", self.kind)
                items.append(RequestError(400, f"unreadable request: {type(err).__name__}"))
        return items

    def inference(self, data: list[Any], *args: Any, **kwargs: Any) -> list[service.Reply]:
        """One onnxruntime call for the batch's good requests; a Reply per request."""
        if self.model is None:
            raise PredictionException(json.dumps({"error": "model is not loaded"}), 503)
        try:
            return self.run(data)
        except RequestError as err:  # a whole-batch refusal: TorchServe's way
            raise PredictionException(err.body().decode(), err.status) from None
        except Exception as err:
            log.exception("ebgen %s batch failed", self.kind)
            reason = {"error": f"inference failed: {type(err).__name__}"}
            raise PredictionException(json.dumps(reason), 503) from None

    def postprocess(self, data: list[service.Reply]) -> list[bytes]:
        """Bodies in request order, with each request's status, content type and headers."""
        context = self.context
        for idx, reply in enumerate(data):
            if context is None:
                break
            context.set_response_content_type(idx, reply.content_type)
            for key, value in reply.headers.items():
                context.set_response_header(idx, key, value)
            if reply.status != 200:
                context.set_response_status(reply.status, HTTPStatus(reply.status).phrase, idx)
        return [reply.body for reply in data]


class GenerateHandler(EbgenHandler):
    """`generate`: {"num_samples", "seed", "format", "grid"} → PNG, PNG grid, .npy or JSON."""

    kind = "generate"

    def check(self, body: Any) -> GenerateParams:
        return service.parse_generate(body, self.limits)

    def run(self, items: Sequence[GenerateParams | RequestError]) -> list[service.Reply]:
        return service.generate_batch(self.model, items)


class ScoreHandler(EbgenHandler):
    """`score`: PNG/JPEG, .npy or {"instances": [...]} → energy, log_density, percentile."""

    kind = "score"

    def check(self, body: Any) -> np.ndarray:
        return service.decode_score_request(body, self.model, self.limits)

    def run(self, items: Sequence[np.ndarray | RequestError]) -> list[service.Reply]:
        return service.score_batch(self.model, items)
