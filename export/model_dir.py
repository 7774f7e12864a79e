"""`export_model`: a checkpoint directory in, a self-contained model directory out.

The model directory (design.md §3) holds `model.json` (schema in `ebgen.model_format`),
`generator.onnx`, `generator_uint8.onnx` (images only), `energy.onnx`, and the TorchServe
archives `generate.mar` and `score.mar`. Everything is written into a temporary folder beside
the target and renamed into place at the end, so a failed export leaves nothing half-written.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ebgen import __version__
from ebgen.config import Config, ModelConfig
from ebgen.errors import EbgenError
from ebgen.files import atomic_directory
from ebgen.latents import sample_latents
from ebgen.model_format import MODEL_FORMAT, MODEL_FORMAT_VERSION, QUANTILE_LEVELS
from ebgen.names import (BATCH_AXIS, ENERGY_INPUT, ENERGY_ONNX, ENERGY_OUTPUT, GENERATOR_INPUT,
                         GENERATOR_ONNX, GENERATOR_OUTPUT, GENERATOR_UINT8_ONNX,
                         GENERATOR_UINT8_OUTPUT, LATENT_POTENTIAL_ONNX, MODEL_FILE,
                         POTENTIAL_GRAD_OUTPUT, POTENTIAL_INPUT, POTENTIAL_OUTPUT, TORCH_DIR)
from ebgen.pixels import PIXEL_RANGE
from ebgen.potential import LatentPotential

from .archive import ARCHIVE_KINDS, HANDLER_FILES, archive_name, build_archive
from .onnx_export import (ATOL, EXPORT_BATCH, PARITY_BATCHES, RTOL, UINT8_LEVELS,
                          UInt8Generator, check_parity, export_onnx)

#: Latents and samples per forward pass when computing energy quantiles.
_CHUNK = 1024


def export_model(checkpoint: str | Path, out: str | Path, *, force: bool = False,
                 archive: bool = True, opset: int = 18, device: str = "cpu",
                 quantile_samples: int = 10000, name: str | None = None,
                 handler: str | Path | None = None, progress: bool = True,
                 log_z: dict[str, int] | None = None) -> Path:
    """Export the checkpoint in `checkpoint` to the model directory `out`; returns `out`.

    Writes the ONNX files, checks each against PyTorch (batch 1, 7, 64), computes the energy
    quantiles of up to `quantile_samples` training samples (held-out data, else generator
    samples when the data cannot be loaded; `model.json` records which), and builds the
    TorchServe archives with `handler` for both (default: `archive.HANDLER_FILES`, one per
    kind) unless `archive` is False or a handler file is missing (then it says so). Export
    and parity run on the CPU; `device` is where the quantile energies are computed.
    Progress lines go to stderr if `progress`. With `log_z` ({"chains": C, "temperatures": T}),
    log Z of the energy is estimated by annealed importance sampling (`ebgen.export.partition`)
    and stored as model.json's `log_partition`, so `log_density` is served normalised.

    Raises `EbgenError` (one line) for an unknown checkpoint format, a missing weights file,
    a non-empty `out` without `force` (or, with `force`, one that is not a model directory),
    and for any file that fails the ONNX checker or the parity check.

    Example:
        >>> from ebgen.export import export_model
        >>> export_model("runs/tiny", "models/tiny", force=True)  # doctest: +SKIP
        PosixPath('models/tiny')
    """
    from ebgen.checkpoint import load_checkpoint, save_checkpoint

    started = time.perf_counter()
    if quantile_samples < 1:
        raise EbgenError(f"quantile_samples is {quantile_samples}: expected a positive count")
    if opset < 18:
        raise EbgenError(f"opset {opset} is too old for torch's ONNX exporter: expected >= 18")
    checkpoint, out = Path(checkpoint), Path(out)
    _check_out(out, force, checkpoint)
    say = _Progress(progress)
    handlers = _archive_handlers(archive, handler, say)
    config, energy, generator, meta = load_checkpoint(checkpoint, "cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    with atomic_directory(out, tag=str(os.getpid())) as tmp:
        files, parity = export_networks(config.model, energy, generator, tmp, opset, say)
        say("computing energy quantiles")
        quantiles = energy_quantiles(config, energy, generator, quantile_samples, device)
        say(f"  {quantiles['num_samples']} samples of {quantiles['source']}")
        info = model_info(config, meta, checkpoint, name, opset, files, parity, quantiles,
                          bool(handlers))
        if log_z is not None:
            info["log_partition"] = estimate_log_z(energy, say, **log_z)
        (tmp / MODEL_FILE).write_text(json.dumps(info, indent=2) + "\n")
        save_checkpoint(tmp / TORCH_DIR, config, energy, generator, meta.get("step", 0))
        for kind, kind_handler in handlers.items():
            say(f"building {archive_name(kind)}")
            build_archive(tmp, kind, kind_handler, tmp)
    say(f"exported {checkpoint} (step {meta.get('step')}) to {out} in "
        f"{time.perf_counter() - started:.1f} s")
    return out


def estimate_log_z(energy: torch.nn.Module, say, chains: int,
                   temperatures: int) -> dict[str, Any]:
    """model.json's `log_partition`: AIS forward and reverse (`ebgen.export.partition`); for
    2-D models the midpoint rule on a grid gives `log_z` and the AIS figures go under "ais"
    (AIS chains get trapped in a rugged energy's ripples, README)."""
    from .partition import log_partition, quadrature_log_partition

    say(f"estimating log Z: {chains} AIS chains, {temperatures} temperatures each way")
    estimate = log_partition(energy, chains=chains, temperatures=temperatures)
    say(f"  log Z {estimate.log_z:.3f} ± {estimate.standard_error:.3f} (reverse "
        f"{estimate.log_z_reverse:.3f}), acceptance {estimate.acceptance:.2f}, "
        f"{estimate.seconds:.0f} s")
    if energy.config.kind != "points" or energy.config.data_dim != 2:
        return estimate.to_dict()
    exact = quadrature_log_partition(energy)
    say(f"  log Z {exact.log_z:.3f} by the midpoint rule ({exact.resolution}² grid, ± "
        f"{exact.error:.3f}), {exact.seconds:.0f} s; AIS was "
        f"{estimate.log_z - exact.log_z:+.3f} off")
    return {**exact.to_dict(), "ais": estimate.to_dict()}


def _archive_handlers(archive: bool, handler: str | Path | None, say) -> dict[str, Path]:
    """The handler file of each archive to build: none without `archive`, or when a handler
    file is missing (then it says so)."""
    if not archive:
        return {}
    handlers = {kind: Path(handler) if handler is not None else HANDLER_FILES[kind]
                for kind in ARCHIVE_KINDS}
    missing = [str(path) for path in handlers.values() if not path.is_file()]
    if missing:
        say(f"skipping TorchServe archives: handler {', '.join(missing)} not found")
        return {}
    return handlers


def export_networks(model: ModelConfig, energy: torch.nn.Module, generator: torch.nn.Module,
                    directory: Path, opset: int = 18, say=lambda message: None
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Write and check generator.onnx, generator_uint8.onnx (images) and energy.onnx.

    Returns (model.json's `onnx` file entries, its `parity` table). Generator inputs are
    seeded latents; energy inputs are uniform in [-1, 1] (images) or, for points, Gaussian
    around the data (its mean, twice its std: N(0, 2²) in standardised units).
    """
    def latents(n: int, seed: int) -> np.ndarray:
        return sample_latents(n, model.z_dim, seed, model.latent)

    def samples(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        if model.kind == "image":
            return rng.uniform(-1, 1, (n, *model.sample_shape)).astype(np.float32)
        shift = np.asarray(model.data_shift or 0.0)
        scale = np.asarray(model.data_scale or 1.0)  # around the data, in its own units
        return (shift + 2.0 * scale * rng.standard_normal((n, *model.sample_shape))
                ).astype(np.float32)

    nets = [("generator", GENERATOR_ONNX, generator, latents, GENERATOR_INPUT,
             GENERATOR_OUTPUT)]
    if model.kind == "image":
        nets.append(("generator_uint8", GENERATOR_UINT8_ONNX, UInt8Generator(generator),
                     latents, GENERATOR_INPUT, GENERATOR_UINT8_OUTPUT))
    nets.append(("energy", ENERGY_ONNX, energy, samples, ENERGY_INPUT, ENERGY_OUTPUT))
    files: dict[str, dict[str, Any]] = {}
    parity: dict[str, dict[str, float]] = {}
    for key, filename, net, make_input, input_name, output_name in nets:
        say(f"exporting {filename}")
        path = export_onnx(net, torch.from_numpy(make_input(EXPORT_BATCH, 1)),
                           directory / filename, input_name, output_name, opset)
        parity[key] = check_parity(path, net, make_input)
        files[key] = {"file": filename, "input": input_name, "output": output_name,
                      "sha256": sha256_file(path)}
        say(f"  {filename}: {path.stat().st_size / 1e6:.2f} MB, max |ORT - PyTorch| "
            f"{max(parity[key].values()):.2g}")
    if model.kind != "image":
        files["generator_uint8"] = {"skipped": "points model: samples are points, not pixels"}
    files["latent_potential"], potential_parity = export_potential(
        model, energy, generator, directory, opset, say)
    if potential_parity is not None:
        parity["latent_potential"] = potential_parity
    return files, parity


def export_potential(model: ModelConfig, energy: torch.nn.Module, generator: torch.nn.Module,
                     directory: Path, opset: int, say
                     ) -> tuple[dict[str, Any], dict[str, float] | None]:
    """Write latent_potential.onnx (refinement without torch) into `directory`: its model.json
    `onnx` entry and its parity, or, when the networks cannot be exported that way, a
    `skipped` entry saying why and None: refinement then needs the PyTorch weights, and
    everything else still works."""
    from .potential_export import check_potential_parity, export_latent_potential

    say(f"exporting {LATENT_POTENTIAL_ONNX}")
    potential = LatentPotential(energy, generator, model.latent)
    try:
        path = export_latent_potential(potential, model.z_dim, directory / LATENT_POTENTIAL_ONNX,
                                       opset)
        parity = check_potential_parity(path, potential, model.z_dim, model.latent)
    except EbgenError as e:
        (directory / LATENT_POTENTIAL_ONNX).unlink(missing_ok=True)
        say(f"  skipped: {e}")
        return {"skipped": str(e)}, None
    say(f"  {LATENT_POTENTIAL_ONNX}: {path.stat().st_size / 1e6:.2f} MB, max |ORT - PyTorch| "
        f"{max(parity.values()):.2g}")
    return {"file": LATENT_POTENTIAL_ONNX, "input": POTENTIAL_INPUT,
            "outputs": [POTENTIAL_OUTPUT, POTENTIAL_GRAD_OUTPUT],
            "sha256": sha256_file(path)}, parity


def model_info(config: Config, meta: dict[str, Any], checkpoint: Path, name: str | None,
               opset: int, files: dict, parity: dict, quantiles: dict,
               archives: bool) -> dict[str, Any]:
    """The model.json dict (schema: `ebgen.model_format`)."""
    import onnx
    import onnxruntime

    model = config.model
    info: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
        "name": name or checkpoint.resolve().name, "kind": model.kind,
        "sample_shape": list(model.sample_shape)}
    if model.kind == "image":
        info.update(layout="NCHW", pixel_range=list(PIXEL_RANGE),
                    channel_order="L" if model.channels == 1 else "RGB")
    else:
        scale = model.data_scale or [1.0] * model.data_dim
        info["data_units"] = {"shift": model.data_shift or [0.0] * model.data_dim,
                              "scale": scale, "log_det": sum(math.log(v) for v in scale)}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    info.update({
        "latent": {"distribution": model.latent, "z_dim": model.z_dim},
        "architecture": config.to_dict()["model"],
        "onnx": {"opset": opset, "batch_axis": BATCH_AXIS, **files},
        "parity": parity,
        "parity_check": {"batches": list(PARITY_BATCHES), "export_batch": EXPORT_BATCH,
                         "rtol": RTOL, "atol": ATOL, "uint8_levels": UINT8_LEVELS,
                         "onnxruntime_version": onnxruntime.__version__},
        "energy_quantiles": quantiles,
        "provenance": {"checkpoint": str(checkpoint.resolve()), "step": meta.get("step"),
                       "ebgen_version": __version__, "torch_version": torch.__version__,
                       "onnx_version": onnx.__version__, "exported_at": now,
                       "config": config.to_dict()},
        "archives": {kind: archive_name(kind) for kind in ARCHIVE_KINDS} if archives else {},
        "torch": TORCH_DIR,
    })
    return info


class _Progress:
    """Short progress lines on stderr (or nothing)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_out(out: Path, force: bool, checkpoint: Path) -> None:
    """Refuse an output that is a file, holds the checkpoint, or is not empty (without force).

    With `force`, only an existing model directory (one with model.json) is replaced: a
    mistyped `--out` never deletes an unrelated folder.
    """
    if out.exists() and not out.is_dir():
        raise EbgenError(f"output {out} exists and is not a directory")
    if checkpoint.exists():
        ckpt, target = checkpoint.resolve(), out.resolve()
        if target == ckpt or ckpt in target.parents or target in ckpt.parents:
            raise EbgenError(f"output {out} overlaps the checkpoint {checkpoint}: expected a "
                             f"separate folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise EbgenError(f"output folder {out} exists and is not empty: pass --force "
                             f"(force=True) to replace it, or choose another --out")
        if not (out / MODEL_FILE).exists():
            raise EbgenError(f"refusing to replace {out}: it is not empty and not an ebgen "
                             f"model directory (no {MODEL_FILE})")


def _remove_abandoned(out: Path) -> None:
    """Remove what killed exports to `out` left behind: temporary and old-copy folders named
    after a process that no longer runs."""
    for path in out.parent.glob(f".{out.name}.*"):
        match = re.fullmatch(rf"\.{re.escape(out.name)}\.(?:old-)?(\d+)(?:\..*\.tmp)?",
                             path.name)
        if match is None or not path.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except (PermissionError, OverflowError):
            pass  # another user's process is alive: not ours to touch


@torch.no_grad()
def energy_quantiles(config: Config, energy: torch.nn.Module, generator: torch.nn.Module,
                     num_samples: int = 10000, device: str = "cpu") -> dict[str, Any]:
    """`QUANTILE_LEVELS` quantiles of the energies of up to `num_samples` reference samples.

    The reference is the training data (`ebgen.data.load_data` on the checkpoint's config),
    else its held-out part, else, when no data loads, generator samples. The result records
    `levels`, ascending `values`, `source` ("training data" | "held-out data" | "generator
    samples"), `dataset` and `num_samples`.
    """
    from ebgen.data import load_data
    from ebgen.devices import resolve_device
    from ebgen.models import energy_function, generator_function

    dev = resolve_device(device)
    rng = np.random.default_rng(0)
    source, dataset, x = "generator samples", None, None
    try:
        train, heldout = load_data(config.data, config.model, seed=config.train.seed)
        for part, label in ((train, "training data"), (heldout, "held-out data")):
            if len(part):
                index = torch.from_numpy(np.sort(rng.permutation(len(part))[:num_samples]))
                x, source, dataset = part.batch(index), label, part.name
                break
    except EbgenError:  # data missing or moved since training: fall back, and say so
        pass
    if x is None:
        x = generator_function(generator.to(dev).eval(), config.model.z_dim,
                               config.model.latent, dev, seed=0, batch=_CHUNK)(num_samples)
    values = energy_function(energy.to(dev).eval(), dev, batch=_CHUNK)(np.asarray(x))
    values = values[np.isfinite(values)]
    if len(values) == 0:
        raise EbgenError("no finite energies to compute quantiles from: the energy model "
                         "gives NaN or infinity on every reference sample")
    quantiles = np.maximum.accumulate(np.quantile(values.astype(np.float64), QUANTILE_LEVELS))
    return {"levels": list(QUANTILE_LEVELS), "values": [float(v) for v in quantiles],
            "source": source, "dataset": dataset, "num_samples": int(len(values))}
