"""The one inference core: every front door (HTTP, TorchServe, CLI) answers through here.

A request goes decode → check → run → encode, and each step lives once:
`ebgen.serve.codecs` (decode, encode), `ebgen.serve.validation` (check), the runtime's
onnxruntime sessions (run) and this module (glue). Batched front doors call the pieces
(`latents_for`, `run_generator_batch`, `encode_generate`; `decode_score_request`,
`run_energy_batch`, `score_result`); the others call `generate_response` / `score_response`,
which are those same pieces composed.

Request bodies (the same on `POST /generate`, `POST /score` and TorchServe's
`/predictions/generate`, `/predictions/score`):

    generate   {"num_samples": 16, "seed": 0, "format": "png"|"npy"|"json", "grid": false,
                "refine_steps": 0, "refine_step_size": 0.05} (refine_steps > 0: latent-space
               MALA before decoding, `ebgen.refine`; the same seed gives the same samples)
               png: one PNG (the sample, or a grid when num_samples > 1 or grid is true);
               npy: float32 N×C×H×W in [-1, 1]; json: {"seed", "shape", "images": [base64
               PNG, ...], "grid": base64 PNG when asked} (points models: "samples" instead)
    score      PNG/JPEG bytes, .npy bytes (one sample or a batch; uint8 pixels or floats in
               [-1, 1]), or {"instances": [base64 PNG | nested list, ...], "dtype": "float32"
               | "uint8"} → {"energy": [...], "log_density": [...], "percentile": [...]}
               (+ "tail_probability", "is_anomaly" once the model is calibrated)

    >>> from ebgen import load_model
    >>> model = load_model("models/tiny")                               # doctest: +SKIP
    >>> generate_response(model, {"num_samples": 4, "seed": 1}).content_type  # doctest: +SKIP
    'image/png'
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ebgen.images import tile_images
from ebgen.pixels import unit_to_uint8

from . import codecs
from .validation import (GenerateParams, Limits, RequestError, check_body_size, check_count,
                         check_fields, check_finite_output, check_generate, check_samples)

log = logging.getLogger(__name__)
#: Fields of a JSON score request.
SCORE_REQUEST_FIELDS = ("instances", "dtype")
JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"
PNG_TYPE = "image/png"


@dataclass
class Reply:
    """One answer: status, body bytes, content type and extra headers."""

    body: bytes
    content_type: str = JSON_TYPE
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200, **headers: str) -> Reply:
        """A compact one-line JSON answer."""
        return cls(codecs.dumps(obj), JSON_TYPE, status, dict(headers))

    @classmethod
    def error(cls, err: RequestError) -> Reply:
        """`{"error": reason}` with the error's status (and Retry-After for a 503)."""
        headers = {}
        if getattr(err, "retry_after", None):
            headers["Retry-After"] = str(err.retry_after)
        return cls(err.body(), JSON_TYPE, err.status, headers)


# ------------------------------------------------------------------------------- generate

def latents_for(model: Any, params: GenerateParams) -> np.ndarray:
    """The request's latents, drawn on the CPU from its seed by the runtime, then, with
    `refine_steps`, moved by latent-space MALA on latent_potential.onnx (`ebgen.refine`, the
    chain's noise from the same seed): 422 when the model has no such file. Refining runs
    both networks forward and backward `refine_steps` times, so front doors call this off
    their event loop when `params.refine_steps` is set."""
    z = model.latents(params.num_samples, params.seed)
    if not params.refine_steps:
        return z
    if not model.can_refine:
        raise RequestError(422, "this model cannot refine latents: it was exported without "
                                "latent_potential.onnx (re-export it with `ebgen export`)")
    z, _ = model.refine(z, params.refine_steps, params.refine_step_size, params.seed)
    return z


def run_generator(model: Any, z: np.ndarray) -> np.ndarray:
    """The generator on explicit latents z (N, z_dim) → float32 (N, *sample_shape)."""
    return model.generate_from_latents(z)


def _split(array: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """`array` cut along axis 0 into consecutive parts of `sizes`."""
    return np.split(array, np.cumsum(sizes)[:-1]) if sizes else []


def run_generator_batch(model: Any, zs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Several requests' latents in one onnxruntime call; one output per request."""
    if not zs:
        return []
    return _split(run_generator(model, np.concatenate(zs)), [len(z) for z in zs])


def encode_generate(model: Any, params: GenerateParams, x: np.ndarray) -> Reply:
    """Samples x (float32 in [-1, 1]) encoded as the request's format asks."""
    check_finite_output(x, "generator's output")
    seed = str(params.seed)
    if params.format == "npy":
        return Reply(codecs.encode_npy(x.astype(np.float32)), NPY_TYPE, headers={"X-Seed": seed})
    if model.kind != "image":
        if params.format == "png":
            raise RequestError(422, f"format png needs an image model; this is a {model.kind} "
                                    "model: ask for npy or json")
        return Reply.json({"seed": params.seed, "shape": list(x.shape),
                           "samples": x.astype(float).tolist()}, **{"X-Seed": seed})
    if params.format == "png":
        pixels = unit_to_uint8(x)
        body = (codecs.encode_png(pixels[0]) if len(x) == 1 and not params.grid
                else codecs.encode_png(tile_images(pixels)))
        return Reply(body, PNG_TYPE, headers={"X-Seed": seed})
    return Reply.json({"seed": params.seed, "shape": list(x.shape),
                       **codecs.encode_json_images(x, grid=params.grid)}, **{"X-Seed": seed})


def generate_batch(model: Any, requests: Sequence[GenerateParams | RequestError]
                   ) -> list[Reply]:
    """Checked requests (or their errors) → one answer each, with one generator call (a
    request whose latents cannot be had, e.g. refinement on a model without it, gets its
    own error)."""
    latents = [_latents_or_error(model, r) if isinstance(r, GenerateParams) else r
               for r in requests]
    outputs = iter(run_generator_batch(model, [z for z in latents
                                               if not isinstance(z, RequestError)]))
    replies = []
    for r, z in zip(requests, latents):
        if isinstance(z, RequestError):
            replies.append(Reply.error(z))
            continue
        replies.append(_isolated(lambda: encode_generate(model, r, next(outputs))))
    return replies


def _latents_or_error(model: Any, params: GenerateParams) -> np.ndarray | RequestError:
    try:
        return latents_for(model, params)
    except RequestError as err:
        return err


def _isolated(answer: Callable[[], Reply]) -> Reply:
    """One request's answer, its failure kept to itself: a RequestError becomes its 4xx, any
    other exception a logged 500, never its batch neighbours' failure."""
    try:
        return answer()
    except RequestError as err:
        return Reply.error(err)
    except Exception as err:
        log.exception("answering one request of a batch failed")
        return Reply.error(RequestError(500, f"internal error: {type(err).__name__}"))


def parse_generate(body: bytes | str | Mapping | None, limits: Limits) -> GenerateParams:
    """A raw generate body (JSON bytes, text, an already parsed object, or empty) checked."""
    if isinstance(body, (bytes, bytearray, str)):
        check_body_size(len(body), limits)
        body = codecs.parse_json(body) if body.strip() else {}
    return check_generate(body, limits)


def generate_response(model: Any, params: GenerateParams | Mapping | None = None,
                      limits: Limits | None = None) -> Reply:
    """One generate request answered (raises `RequestError` for a bad one)."""
    params = params if isinstance(params, GenerateParams) else \
        check_generate(params or {}, limits or Limits(), default_seed=0)
    reply = generate_batch(model, [params])[0]
    if reply.status != 200:
        raise RequestError(reply.status, codecs.parse_json(reply.body)["error"])
    return reply


# ---------------------------------------------------------------------------------- score

def _image_size(shape: Sequence[int]) -> tuple[int, int] | None:
    """(H, W) of an image model's samples; None for points."""
    return (int(shape[-2]), int(shape[-1])) if len(shape) == 3 else None


def _decode_instance(item: Any, dtype: str, size: tuple[int, int] | None) -> np.ndarray:
    """One JSON instance: a base64 PNG/JPEG string or a nested list."""
    if isinstance(item, str):
        return codecs.decode_base64_image(item, size)
    if isinstance(item, list):
        return codecs.decode_json_tensor(item, dtype)
    raise RequestError(422, "each instance must be a base64 PNG/JPEG string or a nested list")


def decode_score_request(body: bytes | str | Mapping | np.ndarray, model: Any,
                         limits: Limits) -> np.ndarray:
    """A score body → checked float32 (N, *sample_shape) in [-1, 1], or `RequestError`."""
    shape = model.sample_shape
    if isinstance(body, np.ndarray):
        x = check_samples(body, shape)
    else:
        if isinstance(body, (bytes, bytearray, str)):
            check_body_size(len(body), limits)
            raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
            body = codecs.parse_json(raw) if codecs.sniff(raw) == "json" else raw
        if isinstance(body, bytes):
            x = check_samples(codecs.decode_payload(body, _image_size(shape)), shape)
        else:
            if not isinstance(body, Mapping) or "instances" not in body:
                raise RequestError(422, 'JSON score request must be {"instances": [...]} '
                                        '(base64 PNGs or nested lists)')
            check_fields(body, SCORE_REQUEST_FIELDS, "score")
            items, dtype = body["instances"], body.get("dtype", "float32")
            if not isinstance(items, list) or not items:
                raise RequestError(422, "instances must be a non-empty list")
            check_count(len(items), limits)
            x = np.concatenate([check_samples(_decode_instance(i, dtype, _image_size(shape)),
                                              shape) for i in items])
    check_count(len(x), limits)
    return x


def run_energy_batch(model: Any, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Several requests' inputs in one onnxruntime call; energies (n,) per request."""
    if not xs:
        return []
    return _split(model.energy(np.concatenate(xs)), [len(x) for x in xs])


def score_result(model: Any, energy: np.ndarray) -> dict[str, list]:
    """Energies → {"energy", "log_density", "percentile"} lists, and on a calibrated model
    "tail_probability" and "is_anomaly" (booleans): the runtime's `score_energy`."""
    energy = check_finite_output(np.asarray(energy, dtype=np.float32), "energy")
    return {name: column.tolist() for name, column in model.score_energy(energy).items()}


def score_batch(model: Any, requests: Sequence[np.ndarray | RequestError]) -> list[Reply]:
    """Checked inputs (or their errors) → one answer each, with one energy call."""
    good = [r for r in requests if isinstance(r, np.ndarray)]
    energies = iter(run_energy_batch(model, good))
    return [Reply.error(r) if isinstance(r, RequestError)
            else _isolated(lambda e=next(energies): Reply.json(score_result(model, e)))
            for r in requests]


def score_response(model: Any, payloads: Sequence[bytes | str | Mapping | np.ndarray],
                   limits: Limits | None = None) -> dict[str, list[float]]:
    """Score every sample of every payload in one call; lists in payload order.

    Raises `RequestError` for the first bad payload (the CLI names its file).
    """
    limits = limits or Limits()
    xs = [decode_score_request(p, model, limits) for p in payloads]
    energy = np.concatenate(run_energy_batch(model, xs)) if xs else np.zeros(0, np.float32)
    return score_result(model, energy)
