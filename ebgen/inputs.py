"""Checks of what callers pass in, written once: every front door uses these.

`ebgen.load_model(...)` (Python), the CLI, the HTTP service and the TorchServe handlers all
refuse a bad input here, with the same one-line message. A refusal is a `RequestError`: an
`EbgenError` that also carries the HTTP status a server answers it with (400, 413, 422, 503).

- `check_int`: an integer field within bounds (numpy integers and ASCII-digit strings too);
- `check_num_samples`, `check_seed`: the two arguments of every `generate`;
- `check_samples`: arrays to score, as float32 (N, *sample_shape): shape, dtype, values.

    >>> check_seed(3)
    3
    >>> check_samples([[0.5, 2.0]], (2,)).dtype
    dtype('float32')
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import EbgenError
from .pixels import uint8_to_unit

#: Largest seed accepted (numpy seeds are non-negative; 2**63 keeps JSON clients exact enough).
MAX_SEED = 2**63 - 1
#: Slack on the [-1, 1] range for float image inputs (rounding in clients).
RANGE_TOLERANCE = 1e-3

_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


class RequestError(EbgenError):
    """A bad input or request: an HTTP `status` (400, 413, 422, 503) and a one-line `reason`."""

    def __init__(self, status: int, reason: str):
        self.status = int(status)
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)

    def body(self) -> bytes:
        """The one-line JSON answer: `{"error": "<reason>"}`."""
        return json.dumps({"error": self.reason}).encode("utf-8")


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """An int field in [low, high]: an integer (Python or numpy) or a string of ASCII digits
    (a query parameter); bools, floats and anything else digit-like ("²", "①", "--5") are
    refused (422)."""
    if isinstance(value, np.integer):
        value = int(value)
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


def check_num_samples(num_samples: Any, limit: int | None = None, low: int = 1) -> int:
    """`num_samples` of a generate call: an integer in [low, limit] (no cap when None)."""
    if limit is not None and isinstance(num_samples, (int, np.integer)) \
            and not isinstance(num_samples, bool) and num_samples > limit:
        raise RequestError(422, f"num_samples={num_samples} exceeds the limit of {limit} "
                                "per request")
    return check_int(num_samples, "num_samples", low, MAX_SEED if limit is None else limit)


def check_seed(seed: Any) -> int:
    """A generate seed: an integer in 0..MAX_SEED."""
    return check_int(seed, "seed", 0, MAX_SEED)


def _check_shape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`x` as a batch of `shape` samples (one sample, or an H×W grey image, becomes a batch)."""
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
    return x


def check_samples(x: Any, sample_shape: Sequence[int]) -> np.ndarray:
    """Arrays to score as float32 N×(sample_shape): shape, channels, size, values.

    Images (a C×H×W sample shape): uint8 arrays are pixels (0–255) and are mapped through
    `ebgen.pixels`; other integer arrays are refused; floats must already be in [-1, 1].
    Points (a (D,) sample shape) are any finite numbers. One sample without a batch axis
    (C×H×W, or H×W for a grey model; D for points) is taken as a batch of one.
    """
    x = np.asarray(x)
    shape = tuple(int(s) for s in sample_shape)
    image = len(shape) == 3
    if x.dtype.kind not in "iuf":
        raise RequestError(422, f"input of dtype {x.dtype}: expected numbers"
                           + (" (uint8 pixels or floats in [-1, 1])" if image else ""))
    if not image and x.dtype.kind in "iu":
        x = x.astype(np.float32)
    if x.dtype.kind in "iu" and x.dtype != np.uint8:
        raise RequestError(422, f"integer input of dtype {x.dtype}: send uint8 pixels or "
                                "floats in [-1, 1]")
    x = _check_shape(x, shape)
    if x.dtype == np.uint8:
        return uint8_to_unit(x)
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise RequestError(422, "input contains NaN or infinite values")
    if not image:
        return np.ascontiguousarray(x)
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        raise RequestError(422, f"float input in [{lo:.3g}, {hi:.3g}]: expected values in "
                                "[-1, 1] (or send uint8 pixels)")
    return np.clip(x, -1.0, 1.0)
