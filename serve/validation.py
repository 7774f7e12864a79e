"""Request checks, written once: every front door rejects bad input here, the same way.

The checks of one value (an integer field, a seed, arrays to score) live in `ebgen.inputs`,
which the Python API uses too; this module adds what only requests have: fields, formats,
body sizes and per-request caps.

A rejected request raises `RequestError`, which carries an HTTP status and a one-line reason;
front doors answer it as `{"error": "<reason>"}` with that status and keep serving.

    400  the body cannot be read: malformed JSON, a corrupt image or .npy, an empty body
    413  too large: the body, or a decoded image, beyond the configured caps
    422  readable but wrong: unknown fields, wrong types, wrong shape / size / channel count
         (an RGB image to a grey model), NaN or inf, values outside [-1, 1], too many samples

    >>> limits = Limits(max_samples=64)
    >>> check_generate({"num_samples": 16, "seed": 3}, limits).num_samples
    16
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebgen.inputs import (MAX_SEED, RequestError, check_int, check_num_samples, check_samples,
                          check_seed)
from ebgen.latents import REFINE_STEP_SIZE

__all__ = ["FORMATS", "GENERATE_FIELDS", "LIMITS_ENV", "MAX_SEED", "GenerateParams", "Limits",
           "RequestError", "check_body_size", "check_count", "check_fields", "check_finite_output",
           "check_generate", "check_int", "check_latents", "check_num_samples", "check_samples",
           "check_seed"]

#: Response formats of `generate`.
FORMATS = ("png", "npy", "json")
#: Fields a `generate` request may carry.
GENERATE_FIELDS = ("num_samples", "seed", "format", "grid", "refine_steps", "refine_step_size")
#: Largest MALA step size a request may ask for (normal units; 0.05 is the default).
MAX_REFINE_STEP_SIZE = 10.0
#: Environment variable carrying `Limits` as JSON to TorchServe's handler processes.
LIMITS_ENV = "EBGEN_SERVE_LIMITS"


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (every front door applies the same)."""

    max_samples: int = 1024          # num_samples of one generate request
    max_score_inputs: int = 1024     # inputs of one score request
    max_body_bytes: int = 8 * 2**20  # request body
    body_timeout_s: float = 30.0     # longest a client may take to send its body (408)
    max_refine_steps: int = 100      # refine_steps of one generate request (each: both nets
                                     # forward and backward over its samples)


@dataclass(frozen=True)
class GenerateParams:
    """A checked `generate` request."""

    num_samples: int = 16
    seed: int = 0
    format: str = "png"
    grid: bool = False
    refine_steps: int = 0            # latent-space MALA steps before decoding (`ebgen.refine`)
    refine_step_size: float = REFINE_STEP_SIZE


def check_body_size(size: int | None, limits: Limits) -> None:
    """413 when a body of `size` bytes exceeds the cap (None: size unknown, not checked)."""
    if size is not None and size > limits.max_body_bytes:
        raise RequestError(413, f"request body of {size} bytes exceeds the limit of "
                                f"{limits.max_body_bytes} bytes")


def check_fields(obj: Mapping[str, Any], allowed: Iterable[str], what: str) -> None:
    """422 naming the first field of `obj` not in `allowed`."""
    allowed = tuple(allowed)
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise RequestError(422, f"unknown field {unknown[0]!r} in {what} request; expected "
                                f"{', '.join(allowed)}")


def check_finite_output(array: np.ndarray, what: str) -> np.ndarray:
    """A model output that JSON and the client can use: non-finite values (latents or inputs
    so far out that float32 overflows) are the request's fault, a 422, never a 500."""
    if not np.isfinite(array).all():
        raise RequestError(422, f"the {what} overflows float32 for this input: it lies too far "
                                f"outside the range the model was trained on")
    return array


def _bool(value: Any, name: str) -> bool:
    """A boolean field; "true"/"false"/"1"/"0" strings (query parameters) are read too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
        return value.lower() in ("true", "1")
    raise RequestError(422, f"{name} must be true or false, got {json.dumps(value)[:40]}")


def fresh_seed() -> int:
    """A random seed in 0..2**31 - 1 from the OS: 1 µs where a fresh numpy Generator costs
    ~40 µs, and distinct in forked workers (a process-wide generator would repeat there)."""
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def check_generate(obj: Any, limits: Limits, default_seed: int | None = None) -> GenerateParams:
    """A `generate` request object ({num_samples, seed, format, grid, refine_steps,
    refine_step_size}) checked.

    A missing seed uses `default_seed`, or a fresh random one when that is None (the answer
    reports it, so any sample can be reproduced).
    """
    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        raise RequestError(422, "generate request must be a JSON object with "
                                f"{', '.join(GENERATE_FIELDS)}")
    check_fields(obj, GENERATE_FIELDS, "generate")
    n = check_num_samples(obj.get("num_samples", GenerateParams.num_samples),
                          limits.max_samples)
    seed = obj.get("seed", default_seed)
    if seed is None:
        seed = fresh_seed()
    seed = check_seed(seed)
    fmt = obj.get("format", "png")
    if fmt not in FORMATS:
        raise RequestError(422, f"format must be one of {', '.join(FORMATS)}, got "
                                f"{json.dumps(fmt)[:40]}")
    grid = _bool(obj.get("grid", False), "grid")
    if grid and fmt == "npy":
        raise RequestError(422, "grid applies to format png or json, not npy")
    steps = check_int(obj.get("refine_steps", 0), "refine_steps", 0, limits.max_refine_steps)
    step_size = _step_size(obj.get("refine_step_size", REFINE_STEP_SIZE))
    return GenerateParams(num_samples=n, seed=seed, format=fmt, grid=grid, refine_steps=steps,
                          refine_step_size=step_size)


def _step_size(value: Any) -> float:
    """refine_step_size: a number in (0, MAX_REFINE_STEP_SIZE] (a numeric string too)."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, np.number)):
            raise ValueError
        step = float(value)
    except ValueError:
        raise RequestError(422, f"refine_step_size must be a number, got "
                                f"{json.dumps(value, default=str)[:40]}") from None
    if not 0 < step <= MAX_REFINE_STEP_SIZE:  # NaN fails too
        raise RequestError(422, f"refine_step_size={step:g} is out of range: expected a "
                                f"number in (0, {MAX_REFINE_STEP_SIZE:g}]")
    return step


def check_count(n: int, limits: Limits) -> None:
    """422 when one score request holds more inputs than the cap."""
    if n > limits.max_score_inputs:
        raise RequestError(422, f"{n} inputs exceed the limit of {limits.max_score_inputs} "
                                "per score request")


def check_latents(z: Any, z_dim: int, limits: Limits) -> np.ndarray:
    """Explicit latents (v2 `z` input) as float32 N×z_dim, finite, N within the sample cap."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim == 1 and z.size == z_dim:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise RequestError(422, f"z of shape {list(z.shape)}: expected [N, {z_dim}]")
    if z.shape[0] > limits.max_samples:
        raise RequestError(422, f"{z.shape[0]} latents exceed the limit of "
                                f"{limits.max_samples} per request")
    if z.shape[0] == 0 or not np.all(np.isfinite(z)):
        raise RequestError(422, "z must hold at least one row of finite values")
    return z

