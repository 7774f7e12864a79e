"""`evaluate`: what `ebgen eval` reports about a trained checkpoint.

2-D models: VEEGAN-protocol mode coverage on generator samples (built-in sets) and the
KL(p_data ‖ p_E) of the energy normalised on a grid. Image models: the mean energy of held-out
data, of generator samples and of uniform noise (a working energy orders them data < samples
< noise, since lower energy means more probable).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .data import load_data
from .devices import resolve_device
from .latents import sample_latents
from .toy2d import TOY_SETS


def generator_function(generator: torch.nn.Module, z_dim: int, distribution: str,
                       device: torch.device, seed: int = 0, batch: int = 4096):
    """Wrap a generator (eval mode) as `sample(n) -> np.ndarray`, latents seeded by `seed`."""
    def sample(n: int) -> np.ndarray:
        z = sample_latents(n, z_dim, seed=seed, distribution=distribution)
        with torch.no_grad():
            parts = [generator(torch.from_numpy(z[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, n, batch)]
        return torch.cat(parts).numpy()
    return sample


def energy_function(energy: torch.nn.Module, device: torch.device | str = "cpu",
                    batch: int = 4096):
    """Wrap an energy net as `fn(x: np.ndarray (n, ...)) -> np.ndarray (n,)`, chunked, no grad."""
    def fn(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.no_grad():
            parts = [energy(torch.from_numpy(x[i:i + batch]).to(device)).float().cpu()
                     for i in range(0, len(x), batch)]
        return torch.cat(parts).numpy() if parts else np.zeros(0, np.float32)
    return fn


def evaluate(checkpoint: str | Path, num_samples: int = 2500, data_path: str | None = None,
             seed: int = 0, device: str | None = "auto") -> dict[str, Any]:
    """Evaluate the checkpoint in `checkpoint`; returns a JSON-ready report."""
    torch_device = resolve_device(device)
    config, energy, generator, meta = load_checkpoint(checkpoint, torch_device)
    data_config = config.data
    if data_path is not None:
        data_config = dataclasses.replace(data_config, path=data_path, dataset=None)
    _, heldout = load_data(data_config, config.model, seed=config.train.seed)
    sample = generator_function(generator, config.model.z_dim, config.model.latent,
                                torch_device, seed=seed)
    energy_fn = energy_function(energy, torch_device)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "step": meta["step"],
                              "kind": config.model.kind, "objective": config.train.objective,
                              "dataset": data_config.dataset or heldout.name}
    if config.model.kind == "points":
        from .metrics2d import evaluate_points

        name = data_config.dataset if data_config.dataset in TOY_SETS else None
        report.update(evaluate_points(sample, energy_fn, name, heldout.values.cpu().numpy(),
                                      num_samples=num_samples))
        return report
    rng = np.random.default_rng(seed)
    index = torch.from_numpy(rng.permutation(len(heldout))[:min(len(heldout), 10_000)])
    data = heldout.batch(index).numpy()
    noise = rng.uniform(-1, 1, size=(num_samples, *config.model.sample_shape)).astype(np.float32)
    for name, x in (("data", data), ("samples", sample(num_samples)), ("noise", noise)):
        e = energy_fn(x)
        report[f"energy_{name}_mean"] = float(e.mean())
        report[f"energy_{name}_std"] = float(e.std())
    report["num_samples"] = num_samples
    report["num_heldout"] = len(data)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned `key: value` lines."""
    width = max(len(k) for k in report)
    lines = []
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)
