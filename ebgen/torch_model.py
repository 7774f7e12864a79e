"""`TorchModel`: a model's two PyTorch nets, for what ONNX cannot do — gradients.

`ebgen.load_torch(path)` gives one for a checkpoint, a model directory (its `torch/` folder,
written by `ebgen export`) or a bundled model that carries its weights. numpy in and out, in
the data's own units (points) or [-1, 1] pixels (images), like `ebgen.load_model`:

- `energy(x)`, `generate(num_samples, seed)`, `generate_from_latents(z)`;
- `energy_grad(x)`: ∇ₓE(x), the score function's negative (Langevin steps, saliency);
- `latent_energy_grad(z)`: ∇_z E(G(z)), for moving samples in latent space;
- `refine(z, steps, step_size)`: latent-space MALA on E(G(z)) plus the latent's prior
  (Kumar et al. 2019; `ebgen.refine`), `ebgen generate` / `ebgen eval --refine-steps`;
- `interpolate(z0, z1, steps)`: latents on the path between two (linear for a uniform latent,
  spherical for a normal one, so every point keeps a typical norm).

    >>> model = ebgen.load_torch("ring")                         # doctest: +SKIP
    >>> model.energy_grad(model.generate(4, seed=0)).shape       # doctest: +SKIP
    (4, 2)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .errors import EbgenError
from .inputs import check_num_samples, check_samples, check_seed
from .latents import REFINE_STEP_SIZE, sample_latents
from .names import CONFIG_FILE, TORCH_DIR
from .potential import LatentPotential
from .refine import held_coordinates, refine_latents


class TorchModel:
    """The energy and the generator of one model in PyTorch (eval mode) on `device`."""

    def __init__(self, directory: str | Path, device: str = "cpu") -> None:
        self.directory = Path(directory)
        self.device = torch.device(device)
        self.config, self.energy_net, self.generator_net, self.meta = load_checkpoint(
            self.directory, self.device)
        self.sample_shape = tuple(self.config.model.sample_shape)

    def __repr__(self) -> str:
        return (f"TorchModel({str(self.directory)!r}, kind={self.config.model.kind!r}, "
                f"sample_shape={self.sample_shape}, step={self.meta.get('step')})")

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def latents(self, num_samples: int, seed: int | None = None) -> np.ndarray:
        """The latents `generate` uses (the one latent sampler: the same as onnxruntime's)."""
        model = self.config.model
        return sample_latents(check_num_samples(num_samples, low=0), model.z_dim,
                              None if seed is None else check_seed(seed), model.latent)

    @torch.no_grad()
    def generate_from_latents(self, z: np.ndarray) -> np.ndarray:
        """G(z) as float32 numpy."""
        return self.generator_net(self._tensor(z)).float().cpu().numpy()

    def generate(self, num_samples: int, seed: int | None = None) -> np.ndarray:
        """Samples; the same seed gives the same samples as `ebgen.load_model(...).generate`."""
        return self.generate_from_latents(self.latents(num_samples, seed))

    @torch.no_grad()
    def energy(self, x: Any) -> np.ndarray:
        """E(x) per sample (checked as every front door checks it)."""
        return self.energy_net(self._tensor(check_samples(x, self.sample_shape))).cpu().numpy()

    def energy_grad(self, x: Any) -> np.ndarray:
        """∇ₓE(x), the same shape as the (batched) input x."""
        x = self._tensor(check_samples(x, self.sample_shape)).requires_grad_(True)
        grad, = torch.autograd.grad(self.energy_net(x).sum(), x)
        return grad.cpu().numpy()

    def latent_energy_grad(self, z: np.ndarray) -> np.ndarray:
        """∇_z E(G(z)) for latents z (n, z_dim)."""
        z = self._tensor(z).requires_grad_(True)
        grad, = torch.autograd.grad(self.energy_net(self.generator_net(z)).sum(), z)
        return grad.cpu().numpy()

    def refine(self, z: np.ndarray, steps: int = 20, step_size: float = REFINE_STEP_SIZE,
               seed: int = 0, batch_size: int = 1000,
               progress: bool = False) -> tuple[np.ndarray, float]:
        """Latent-space MALA (Kumar et al. 2019, `ebgen.refine`): `steps` Metropolis-adjusted
        Langevin moves on E(G(z)) + the latent's own log-prior, run on the standard normal
        variable behind the latents (a uniform latent is 2Φ(u) − 1, so no move leaves its
        cube; `step_size` is in those normal units), `batch_size` latents at a time (a bar on
        stderr with `progress`). Returns (refined z, mean acceptance rate); the same seed gives
        the same chain as `InferenceModel.refine` on the exported model. The chain's target is
        the latent prior reweighted by exp(−E(G(z))), so refined samples follow
        q(x)·exp(−E(x)), not exp(−E) alone: measure before relying on it
        (`ebgen eval --refine-steps`)."""
        potential = LatentPotential(self.energy_net, self.generator_net,
                                    self.config.model.latent)
        return refine_latents(z, self.config.model.latent, potential.value_and_grad, steps,
                              step_size, seed, batch_size, progress,
                              held=held_coordinates(self.config.model.num_components))

    def interpolate(self, z0: np.ndarray, z1: np.ndarray, steps: int = 8) -> np.ndarray:
        """`steps` latents from z0 to z1 (each (z_dim,)), ends included: (steps, z_dim)."""
        z0, z1 = (np.asarray(z, dtype=np.float64).reshape(-1) for z in (z0, z1))
        t = np.linspace(0.0, 1.0, check_num_samples(steps, low=2))[:, None]
        if self.config.model.latent == "uniform":
            return ((1 - t) * z0 + t * z1).astype(np.float32)
        cos = float(np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1) + 1e-12))
        omega = np.arccos(np.clip(cos, -1.0, 1.0))
        if omega < 1e-6:
            return ((1 - t) * z0 + t * z1).astype(np.float32)
        return ((np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1)
                / np.sin(omega)).astype(np.float32)


def checkpoint_directory(path: str | Path) -> Path:
    """The PyTorch checkpoint behind `path`: a training checkpoint itself, else the torch/
    folder of a model directory or bundled model."""
    from .runtime import resolve_model_path

    checkpoint = Path(path).expanduser()
    if (checkpoint / CONFIG_FILE).is_file():
        return checkpoint
    return torch_directory(resolve_model_path(str(path)))


def torch_directory(model_dir: Path) -> Path:
    """Where the PyTorch weights of a model directory live (its torch/ folder)."""
    folder = model_dir / TORCH_DIR
    if not (folder / CONFIG_FILE).is_file():
        raise EbgenError(f"{model_dir} carries no PyTorch weights (no {TORCH_DIR}/ folder): "
                         f"export it again from its checkpoint with this ebgen, or load the "
                         f"checkpoint itself")
    return folder
