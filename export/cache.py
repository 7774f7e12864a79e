"""Checkpoints served as they are: each exported once into a cache folder, keyed by its content.

`ebgen.load_model(ckpt_dir)` (and `ebgen serve RUN_DIR`, `ebgen generate RUN_DIR`, ...) call
`cached_export`: the checkpoint's config and weights are hashed, and the model directory for
that hash is exported the first time (ONNX with parity checks, no archives) and reused after.
Concurrent exports of one checkpoint are safe: the loser finds the winner's directory.

    path = cached_export(Path("runs/ring"))     # ~/.cache/ebgen/models/<hash>
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from ebgen.errors import EbgenError
from ebgen.names import CONFIG_FILE, ENERGY_WEIGHTS, GENERATOR_WEIGHTS, MODEL_FILE

log = logging.getLogger(__name__)
#: Overrides where exported checkpoints are cached.
CACHE_ENV = "EBGEN_CACHE_DIR"


def cache_dir() -> Path:
    """Where exported checkpoints are cached: $EBGEN_CACHE_DIR, else ~/.cache/ebgen/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ebgen" / "models"


def checkpoint_hash(directory: Path) -> str:
    """16 hex digits of the checkpoint's config and weights (what its export depends on)."""
    digest = hashlib.sha256()
    for name in (CONFIG_FILE, ENERGY_WEIGHTS, GENERATOR_WEIGHTS):
        path = directory / name
        digest.update(name.encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_export(checkpoint: Path) -> Path:
    """The model directory of `checkpoint`, exported into `cache_dir()` the first time."""
    target = cache_dir() / checkpoint_hash(checkpoint)
    if not (target / MODEL_FILE).is_file():
        from .model_dir import export_model

        log.info("exporting checkpoint %s to %s", checkpoint, target)
        try:
            export_model(checkpoint, target, force=True, archive=False, progress=False)
        except EbgenError:
            if not (target / MODEL_FILE).is_file():  # else a concurrent export won
                raise
    return target
