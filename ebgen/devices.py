"""Device resolution for torch code paths: `auto` means CUDA when present, else CPU."""
from __future__ import annotations

import torch

from .errors import EbgenError


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` → CUDA when present, else CPU; `cpu`, `cuda`, `cuda:N` as given (checked)."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EbgenError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EbgenError(f"device {name!r} asked for, but CUDA is not available here")
    return device
