"""Checkpoint directories: saving and loading, crash-safe.

A checkpoint directory holds `config.json` (the full config, format name and version, ebgen and
torch versions, step), `energy.safetensors`, `generator.safetensors` and `trainer_state.pt`
(optimisers, step, RNG; loaded with `weights_only=True`). A save first writes every file under a
temporary name, then records a commit marker, then renames each file into place; a load first
finishes (or discards) any interrupted save. A kill at any moment thus leaves either the previous
checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .config import Config
from .errors import CheckpointError
from .model_format import read_format_json
from .models import EnergyModel, Generator, build_models
from .names import CONFIG_FILE, ENERGY_WEIGHTS, GENERATOR_WEIGHTS, TRAINER_STATE

FORMAT_NAME = "ebgen-checkpoint"
FORMAT_VERSION = 1
_COMMIT = ".commit"
_TMP = ".tmp"


def _fsync_write(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` via a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + _TMP)
    _fsync_write(tmp, lambda p: p.write_text(text))
    os.replace(tmp, path)


def recover(directory: str | Path) -> None:
    """Finish a save that was interrupted after its commit marker, or discard one before it."""
    directory = Path(directory)
    marker = directory / _COMMIT
    if marker.exists():
        for name in json.loads(marker.read_text()):
            tmp = directory / (name + _TMP)
            if tmp.exists():
                os.replace(tmp, directory / name)
        marker.unlink()
    for tmp in directory.glob("*" + _TMP):
        tmp.unlink()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers (so saved keys stay clean)."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or getattr(module, "_orig_mod")
    return module


def save_checkpoint(directory: str | Path, config: Config, energy: torch.nn.Module,
                    generator: torch.nn.Module, step: int,
                    trainer_state: dict[str, Any] | None = None) -> None:
    """Write a complete checkpoint of both networks (and the trainer state) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recover(directory)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "ebgen_version": __version__,
            "torch_version": torch.__version__, "step": step, **config.to_dict()}
    writers: dict[str, Callable[[Path], None]] = {
        ENERGY_WEIGHTS: lambda p: save_file(_state(energy), str(p)),
        GENERATOR_WEIGHTS: lambda p: save_file(_state(generator), str(p)),
        CONFIG_FILE: lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"),
    }
    if trainer_state is not None:
        writers[TRAINER_STATE] = lambda p: torch.save({**trainer_state, "step": step}, p)
    for name, write in writers.items():
        _fsync_write(directory / (name + _TMP), write)
    atomic_write_text(directory / _COMMIT, json.dumps(list(writers)))
    recover(directory)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(module).state_dict().items()}


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict, after checking the format and version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    recover(directory)
    path = directory / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{directory} is not an ebgen checkpoint: no {CONFIG_FILE}")
    return read_format_json(path, FORMAT_NAME, FORMAT_VERSION)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[Config, EnergyModel, Generator, dict[str, Any]]:
    """Rebuild (config, energy, generator, meta) from a checkpoint; nets are in eval mode."""
    directory = Path(directory)
    meta = read_meta(directory)
    config = Config.from_dict(meta)
    energy, generator = build_models(config.model)
    for module, name in ((energy, ENERGY_WEIGHTS), (generator, GENERATOR_WEIGHTS)):
        path = directory / name
        if not path.exists():
            raise CheckpointError(f"checkpoint {directory} is missing {name}")
        try:
            module.load_state_dict(load_file(str(path)))
        except Exception as e:  # safetensors / shape errors: one line for the user
            raise CheckpointError(f"cannot load {path}: {str(e).splitlines()[0]}") from None
    energy.to(device).eval()
    generator.to(device).eval()
    return config, energy, generator, meta


def load_trainer_state(directory: str | Path) -> dict[str, Any]:
    """The optimiser/step/RNG state saved beside the weights (loaded with weights_only=True)."""
    path = Path(directory) / TRAINER_STATE
    if not path.exists():
        raise CheckpointError(f"cannot resume: {path} is missing")
    return torch.load(path, map_location="cpu", weights_only=True)
