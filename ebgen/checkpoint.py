"""Checkpoint directories: saving and loading, crash-safe.

A checkpoint directory holds `config.json` (the full config, format name and version, ebgen and
torch versions, step), `energy.safetensors`, `generator.safetensors` and `trainer_state.pt`
(optimisers, step, RNG; loaded with `weights_only=True`). A save first writes every file under a
temporary name of its own (`NAME.<save>.tmp`), then records a commit marker naming the save and its
files, then renames each file into place. A kill at any moment thus leaves either the previous
checkpoint or the new one, never a mix; and since no two saves stage under one name, a reader
that resolved a committed save's staged file never opens the next save's half-written one.

Only the writer (`save_checkpoint`, and the trainer before it resumes) ever changes the directory:
it finishes or discards an interrupted save (`recover`). Readers (`read_meta`, `load_checkpoint`)
never write. They read the last committed save — under the temporary names while its renames are
pending — and check that every file carries the same step (the weights record it in their
safetensors metadata), retrying while a save is in flight, so a reader polling a live run
neither disturbs it nor sees config from one step and weights from another.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from .config import Config
from .errors import CheckpointError, one_line
from .files import atomic_write_text, fsync_directory, fsync_file
from .model_format import read_format_json
from .models import EnergyModel, Generator, build_models
from .names import CONFIG_FILE, ENERGY_WEIGHTS, GENERATOR_WEIGHTS, TRAINER_STATE

FORMAT_NAME = "ebgen-checkpoint"
FORMAT_VERSION = 1
_COMMIT = ".commit"
_TMP = ".tmp"
#: How long a reader waits for a save in flight to finish before giving up.
READ_TIMEOUT_S = 10.0
_STEP_KEY = "step"


def _fsync_write(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    fsync_file(path)


def _staged(directory: Path, name: str, save: str) -> Path:
    """Where `save` stages `name` (an empty save id: the fixed names of ebgen before 0.1.1)."""
    return directory / (f"{name}.{save}{_TMP}" if save else name + _TMP)


def _read_marker(directory: Path) -> tuple[str, list[str]] | None:
    """(save id, file names) of the committed save whose renames are pending, or None."""
    try:
        marker = json.loads((directory / _COMMIT).read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # a marker is written atomically; an unreadable one commits nothing
        return "", []
    if isinstance(marker, list):  # the marker of an older ebgen: the names alone
        return "", [str(name) for name in marker]
    return str(marker.get("save", "")), [str(name) for name in marker.get("files", [])]


def recover(directory: str | Path) -> None:
    """Finish a save that was interrupted after its commit marker, or discard one before it.

    For the writer only (a reader would delete the files a live save is staging). Safe when
    several processes recover one directory at once: each step tolerates the others' work.
    """
    directory = Path(directory)
    pending = _read_marker(directory)
    if pending is not None:
        save, names = pending
        for name in names:
            try:
                os.replace(_staged(directory, name, save), directory / name)
            except FileNotFoundError:
                pass  # already in place
        fsync_directory(directory)  # the renames are durable before the marker goes
        (directory / _COMMIT).unlink(missing_ok=True)
    for tmp in directory.glob("*" + _TMP):
        tmp.unlink(missing_ok=True)


def _committed_files(directory: Path) -> dict[str, Path]:
    """Where each file of the last committed save is now, without changing anything."""
    save, pending = _read_marker(directory) or ("", [])
    files = {}
    for name in (CONFIG_FILE, ENERGY_WEIGHTS, GENERATOR_WEIGHTS, TRAINER_STATE):
        staged = _staged(directory, name, save)
        files[name] = staged if name in pending and staged.exists() else directory / name
    return files


class _SaveInFlight(Exception):
    """A save changed the files under a reader; read again."""


class _Missing(Exception):
    """A file of the save is not there: a first save in flight (read again, briefly), or a
    checkpoint that lacks it (the message, for the user)."""


#: How long a missing file is waited for (a first save renames its files one by one).
MISSING_WAIT_S = 1.0


def _read_consistently(directory: Path, read: Callable[[dict[str, Path]], Any]) -> Any:
    """`read(files)` on the last committed save, again while a save in flight disturbs it."""
    start = time.monotonic()
    while True:
        try:
            return read(_committed_files(directory))
        except _Missing as missing:
            if time.monotonic() - start > MISSING_WAIT_S:
                raise CheckpointError(str(missing)) from None
        except (FileNotFoundError, _SaveInFlight):
            if time.monotonic() - start > READ_TIMEOUT_S:
                raise CheckpointError(f"checkpoint {directory} kept changing while being read "
                                      f"for {READ_TIMEOUT_S:.0f} s; try again") from None
        time.sleep(0.02)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers (so saved keys stay clean)."""
    while hasattr(module, "module") or hasattr(module, "_orig_mod"):
        module = getattr(module, "module", None) or getattr(module, "_orig_mod")
    return module


def save_checkpoint(directory: str | Path, config: Config, energy: torch.nn.Module,
                    generator: torch.nn.Module, step: int,
                    trainer_state: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> None:
    """Write a complete checkpoint of both networks (and the trainer state) atomically;
    `extra` adds keys to config.json (what produced it, say)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    recover(directory)
    tag = {_STEP_KEY: str(step)}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "ebgen_version": __version__,
            "torch_version": torch.__version__, "step": step, **config.to_dict(),
            **(extra or {})}
    writers: dict[str, Callable[[Path], None]] = {
        ENERGY_WEIGHTS: lambda p: save_file(_state(energy), str(p), metadata=tag),
        GENERATOR_WEIGHTS: lambda p: save_file(_state(generator), str(p), metadata=tag),
        CONFIG_FILE: lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"),
    }
    if trainer_state is not None:
        writers[TRAINER_STATE] = lambda p: torch.save({**trainer_state, "step": step}, p)
    save = f"{step}-{secrets.token_hex(4)}"
    for name, write in writers.items():
        _fsync_write(_staged(directory, name, save), write)
    atomic_write_text(directory / _COMMIT, json.dumps({"save": save, "files": list(writers)}),
                      durable=True)
    recover(directory)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in unwrap(module).state_dict().items()}


def _check_directory(directory: Path) -> None:
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist")
    staged = any(directory.glob(CONFIG_FILE + "*" + _TMP))
    if not (directory / CONFIG_FILE).exists() and not staged:
        raise CheckpointError(f"{directory} is not an ebgen checkpoint: no {CONFIG_FILE}")


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's config.json as a dict, after checking the format and version."""
    directory = Path(directory)
    _check_directory(directory)
    return _read_consistently(directory, lambda files: _read_config(files[CONFIG_FILE]))


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(path)
    return read_format_json(path, FORMAT_NAME, FORMAT_VERSION)


def _read_weights(path: Path, step: int) -> dict[str, torch.Tensor]:
    """The tensors of `path`, which must belong to the save of `step` (when it says)."""
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            saved_step = (f.metadata() or {}).get(_STEP_KEY)
            if saved_step is not None and saved_step != str(step):
                raise _SaveInFlight
            return {key: f.get_tensor(key) for key in f.keys()}
    except (_SaveInFlight, FileNotFoundError):
        raise
    except Exception as e:  # a damaged or foreign file: one line for the user
        if not path.exists():  # renamed away by a save while we opened it: read again
            raise FileNotFoundError(path) from None
        raise CheckpointError(f"cannot load {path}: {one_line(e)}") from None


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[Config, EnergyModel, Generator, dict[str, Any]]:
    """Rebuild (config, energy, generator, meta) from a checkpoint; nets are in eval mode."""
    directory = Path(directory)
    _check_directory(directory)

    def read(files: dict[str, Path]) -> tuple[dict[str, Any], dict[str, dict]]:
        meta = _read_config(files[CONFIG_FILE])
        weights = {}
        for name in (ENERGY_WEIGHTS, GENERATOR_WEIGHTS):
            if not files[name].exists():
                raise _Missing(f"checkpoint {directory} is missing {name}")
            weights[name] = _read_weights(files[name], meta.get("step", 0))
        return meta, weights

    meta, weights = _read_consistently(directory, read)
    config = Config.from_dict(meta)
    energy, generator = build_models(config.model)
    for module, name in ((energy, ENERGY_WEIGHTS), (generator, GENERATOR_WEIGHTS)):
        try:
            module.load_state_dict(weights[name])
        except Exception as e:  # shape errors: one line for the user
            raise CheckpointError(f"cannot load {directory / name}: "
                                  f"{one_line(e)}") from None
    energy.to(device).eval()
    generator.to(device).eval()
    return config, energy, generator, meta


def load_trainer_state(directory: str | Path) -> dict[str, Any]:
    """The optimiser/step/RNG state saved beside the weights (loaded with weights_only=True),
    from the same save as `read_meta`'s config."""
    directory = Path(directory)
    _check_directory(directory)

    def read(files: dict[str, Path]) -> dict[str, Any]:
        step = _read_config(files[CONFIG_FILE]).get("step", 0)
        path = files[TRAINER_STATE]
        if not path.exists():
            raise _Missing(f"cannot resume: {directory / TRAINER_STATE} is missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as e:  # a tampered or damaged file: refused, in one line
            if not path.exists():  # renamed away by a save while we read it: read again
                raise FileNotFoundError(path) from None
            raise CheckpointError(f"cannot resume from {path}: "
                                  f"{one_line(e)}") from None
        if int(state.get("step", step)) != step:
            raise _SaveInFlight
        return state

    return _read_consistently(directory, read)


def check_fresh_out_dir(out_dir: Path) -> None:
    """Refuse to start a fresh run in a directory that already holds a checkpoint."""
    if (out_dir / CONFIG_FILE).exists():
        raise CheckpointError(f"{out_dir} already holds a checkpoint: pass --resume to "
                              f"continue it, or choose another --out")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line).get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in lines), durable=True)
