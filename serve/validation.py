"""Request checks, written once: every front door rejects bad input here, the same way.

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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ebgen.errors import EbgenError

#: Response formats of `generate`.
FORMATS = ("png", "npy", "json")
#: Fields a `generate` request may carry.
GENERATE_FIELDS = ("num_samples", "seed", "format", "grid")
#: Largest seed accepted (numpy seeds are non-negative; 2**63 keeps JSON clients exact enough).
MAX_SEED = 2**63 - 1
#: Environment variable carrying `Limits` as JSON to TorchServe's handler processes.
LIMITS_ENV = "EBGEN_SERVE_LIMITS"
#: Slack on the [-1, 1] range for float inputs (rounding in clients).
RANGE_TOLERANCE = 1e-3


class RequestError(EbgenError):
    """A bad request: an HTTP `status` (400, 413, 422, 503) and a one-line `reason`."""

    def __init__(self, status: int, reason: str):
        self.status = int(status)
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)

    def body(self) -> bytes:
        """The one-line JSON answer: `{"error": "<reason>"}`."""
        return json.dumps({"error": self.reason}).encode("utf-8")


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (every front door applies the same)."""

    max_samples: int = 1024          # num_samples of one generate request
    max_score_inputs: int = 1024     # inputs of one score request
    max_body_bytes: int = 8 * 2**20  # request body
    body_timeout_s: float = 30.0     # longest a client may take to send its body (408)


@dataclass(frozen=True)
class GenerateParams:
    """A checked `generate` request."""

    num_samples: int = 16
    seed: int = 0
    format: str = "png"
    grid: bool = False


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


_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


def _int(value: Any, name: str, low: int, high: int) -> int:
    """An int field in [low, high]: a JSON integer or a string of ASCII digits (a query
    parameter); bools, floats and anything else digit-like ("²", "①", "--5") are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
            value = int(value.strip())
        else:
            shown = json.dumps(value)[:40] if isinstance(value, (str, float, bool)) or \
                value is None else type(value).__name__
            raise RequestError(422, f"{name} must be an integer, got {shown}")
    if not low <= value <= high:
        shown = str(value) if value.bit_length() < 64 else "a number that large"
        raise RequestError(422, f"{name}={shown} is out of range: expected {low}..{high}")
    return value


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


def check_generate(obj: Any, limits: Limits, default_seed: int | None = None) -> GenerateParams:
    """A `generate` request object ({num_samples, seed, format, grid}) checked.

    A missing seed uses `default_seed`, or a fresh random one when that is None (the answer
    reports it, so any sample can be reproduced).
    """
    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        raise RequestError(422, "generate request must be a JSON object with num_samples, "
                                "seed, format, grid")
    check_fields(obj, GENERATE_FIELDS, "generate")
    n = obj.get("num_samples", GenerateParams.num_samples)
    if isinstance(n, int) and not isinstance(n, bool) and n > limits.max_samples:
        raise RequestError(422, f"num_samples={n} exceeds the limit of {limits.max_samples} "
                                "per request")
    n = _int(n, "num_samples", 1, limits.max_samples)
    seed = obj.get("seed", default_seed)
    if seed is None:
        seed = int(np.random.default_rng().integers(0, 2**31))
    seed = _int(seed, "seed", 0, MAX_SEED)
    fmt = obj.get("format", "png")
    if fmt not in FORMATS:
        raise RequestError(422, f"format must be one of {', '.join(FORMATS)}, got "
                                f"{json.dumps(fmt)[:40]}")
    grid = _bool(obj.get("grid", False), "grid")
    if grid and fmt == "npy":
        raise RequestError(422, "grid applies to format png or json, not npy")
    return GenerateParams(num_samples=n, seed=seed, format=fmt, grid=grid)


def check_samples(x: np.ndarray, sample_shape: Sequence[int]) -> np.ndarray:
    """Arrays to score as float32 N×(sample_shape): shape, channels, size, values.

    Images (a C×H×W sample shape): uint8 arrays are pixels (0–255) and are mapped through
    `ebgen.pixels`; other integer arrays are refused; floats must already be in [-1, 1].
    Points (a (D,) sample shape) are any finite numbers. One sample without a batch axis
    (C×H×W, or H×W for a grey model; D for points) is taken as a batch of one.
    """
    from ebgen.pixels import uint8_to_unit

    shape = tuple(int(s) for s in sample_shape)
    image = len(shape) == 3
    if not image and x.dtype.kind in "iu":
        x = x.astype(np.float32)
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        raise RequestError(422, f"integer input of dtype {x.dtype}: send uint8 pixels or "
                                "floats in [-1, 1]")
    if len(shape) == 3 and shape[0] == 1 and x.ndim == 2:
        x = x[None]                                  # H×W grey image
    if x.ndim == len(shape):
        x = x[None]                                  # one sample
    if x.ndim != len(shape) + 1:
        dims = ", ".join(map(str, shape))
        raise RequestError(422, f"input of shape {list(x.shape)}: expected [N, {dims}] or "
                                f"[{dims}]")
    got = tuple(x.shape[1:])
    if got != shape:
        if len(shape) == 3 and got[1:] == shape[1:] and got[0] != shape[0]:
            kinds = {1: "grey", 3: "RGB"}
            raise RequestError(422, f"{kinds.get(got[0], got[0])} input ({got[0]} channels) to "
                                    f"a {kinds.get(shape[0], shape[0])} model: expected "
                                    f"{shape[0]} channel(s)")
        if len(shape) == 3 and got[0] == shape[0]:
            raise RequestError(422, f"image of {got[2]}x{got[1]} px: this model takes "
                                    f"{shape[2]}x{shape[1]} px")
        raise RequestError(422, f"input of sample shape {list(got)}: expected {list(shape)}")
    if x.shape[0] == 0:
        raise RequestError(422, "no inputs to score")
    if x.dtype == np.uint8:
        return uint8_to_unit(x)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise RequestError(422, "input contains NaN or infinite values")
    if not image:
        return x
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise RequestError(422, f"float input in [{lo:.3g}, {hi:.3g}]: expected values in "
                                "[-1, 1] (or send uint8 pixels)")
    return np.clip(x, -1.0, 1.0)


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

