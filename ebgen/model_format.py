"""The model directory's `model.json`: its format name, version and reading.

`ebgen export` writes a model directory (design.md §3): `model.json`, `generator.onnx`,
`generator_uint8.onnx`, `energy.onnx`, `latent_potential.onnx` and the TorchServe archives. `model.json` fields:

    format, format_version          "ebgen-model", 1
    name                            model name (the checkpoint folder's name unless given)
    kind                            "image" or "points"
    sample_shape                    [C, H, W] or [D]
    layout, pixel_range, channel_order
                                    "NCHW", [-1.0, 1.0], "L" or "RGB" (images only)
    latent                          {"distribution": "uniform"|"normal", "z_dim": int}
    data_units                      points only: {"shift": [D], "scale": [D], "log_det"}: the
                                    nets inside work on (x − shift) / scale; every ONNX input
                                    and output is in the data's own units, and energies
                                    include log_det = Σ log scale (the change of variables)
    architecture                    the training ModelConfig dict (rebuilds the nets)
    onnx                            {"opset": int, "batch_axis": "batch",
                                     "generator": {"file", "input", "output", "sha256"},
                                     "generator_uint8": {...}, "energy": {...}}
                                    points models: "generator_uint8": {"skipped": reason}
                                    "latent_potential": {"file", "input" ("u"), "outputs"
                                     (["potential", "potential_grad"]), "sha256"}: U(u) and
                                     ∇U for refinement (`ebgen.refine`); {"skipped": reason}
                                     where the exporter could not write it; absent from
                                     exports before it existed
    parity                          max |ORT − PyTorch| per file and batch size checked:
                                    {"generator": {"1": d, "7": d, "64": d}, ...}
                                    (uint8 file: in pixel levels)
    parity_check                    {"batches", "export_batch", "rtol", "atol",
                                     "uint8_levels", "onnxruntime_version"}
    energy_quantiles                {"levels": [0.001 … 0.999], "values": [...]} of the
                                    training data's energies (ascending), plus "source"
                                    ("training data" | "held-out data" | "generator
                                    samples"), "dataset" and "num_samples"
    provenance                      {"checkpoint", "step", "ebgen_version", "torch_version",
                                     "onnx_version", "exported_at" (UTC ISO time),
                                     "config": the training Config dict}
    log_partition                   optional (`ebgen export --log-z`): {"log_z" (forward AIS),
                                     "standard_error", "log_z_reverse", "chains",
                                     "temperatures", "acceptance", "seconds", "method"};
                                    for 2-D models {"log_z" (midpoint rule), "error",
                                     "resolution", "box", "mass_outside", "seconds",
                                     "method", "ais": the AIS entry above};
                                    `log_density` is then −E − log_z
    archives                        {"generate": "generate.mar", "score": "score.mar"} or {}
    torch                           "torch": the folder holding the PyTorch weights and
                                    config.json (a weights-only checkpoint; `load_torch`)

Reading it needs no torch: servers and `ebgen.load_model` use this module alone.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .names import MODEL_FILE

MODEL_FORMAT = "ebgen-model"
MODEL_FORMAT_VERSION = 1
#: Quantile levels of training-data energies stored for percentile scores.
QUANTILE_LEVELS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                   0.95, 0.975, 0.99, 0.995, 0.999)


def read_format_json(path: Path, expected_format: str, expected_version: int) -> dict[str, Any]:
    """A JSON artefact descriptor (model.json, a checkpoint's config.json), format-checked."""
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from None
    if info.get("format") != expected_format:
        raise CheckpointError(f"{path} has format {info.get('format')!r}, "
                              f"expected {expected_format!r}")
    if info.get("format_version") != expected_version:
        raise CheckpointError(f"{path} has format version {info.get('format_version')!r}; this "
                              f"ebgen reads version {expected_version}")
    return info


def read_model_info(directory: str | Path) -> dict[str, Any]:
    """`model.json` of a model directory, after checking its format and version."""
    directory = Path(directory)
    path = directory / MODEL_FILE
    if not path.exists():
        raise CheckpointError(f"{directory} is not an ebgen model directory: no {MODEL_FILE} "
                              f"(make one with `ebgen export CKPT_DIR --out {directory}`)")
    return read_format_json(path, MODEL_FORMAT, MODEL_FORMAT_VERSION)


def model_file(directory: str | Path, entry: dict[str, Any], check_hash: bool = True) -> Path:
    """The file an `onnx` entry of model.json names, confined to `directory`, present and (with
    `check_hash`) matching its recorded sha256; else `CheckpointError`."""
    directory = Path(directory)
    name = entry.get("file")
    if not isinstance(name, str) or not name or Path(name).is_absolute() \
            or Path(name).name != name:
        raise CheckpointError(f"{directory / MODEL_FILE} names the file {name!r}: model files "
                              f"must be plain names inside the model directory")
    path = directory / name
    if not path.is_file():
        raise CheckpointError(f"model directory {directory} is missing {name}")
    expected = entry.get("sha256")
    if check_hash and expected:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            raise CheckpointError(f"{path} does not match the sha256 in {MODEL_FILE}: the file "
                                  f"was changed or damaged after export; export again")
    return path
