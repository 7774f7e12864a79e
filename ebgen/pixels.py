"""The one place where pixel values change range.

Models see images as float tensors in [-1, 1] (NCHW); files and metric tools see uint8 in
[0, 255]. Every conversion between the two goes through these functions, for numpy arrays and
torch tensors alike (duck-typed: both support the arithmetic used here).
"""
from __future__ import annotations

from typing import Any

import numpy as np

#: The range models are trained and served in.
PIXEL_RANGE = (-1.0, 1.0)


def uint8_to_unit(x: Any) -> Any:
    """Map uint8 pixels (or any values in [0, 255]) to floats in [-1, 1]."""
    if isinstance(x, np.ndarray):
        return x.astype(np.float32) / 127.5 - 1.0
    return x.float() / 127.5 - 1.0


def unit_to_uint8(x: Any) -> Any:
    """Map floats in [-1, 1] to uint8 pixels, clipping out-of-range values and rounding."""
    if isinstance(x, np.ndarray):
        return np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    import torch

    return torch.clamp(torch.round((x.float() + 1.0) * 127.5), 0, 255).to(torch.uint8)
