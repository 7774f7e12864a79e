"""Latent-space MALA (Kumar et al. 2019), the one sampler behind every `refine`: numpy only.

The chain targets the latent prior reweighted by exp(−E(G(z))). It always runs on a standard
normal variable u: a normal latent is u itself, a uniform one is z = 2Φ(u) − 1 (Φ the normal
CDF), which carries N(0, 1) onto U(−1, 1) exactly. So the potential is
U(u) = E(G(z(u))) + ‖u‖²/2 for both, and no proposal ever leaves a uniform latent's cube: a
random walk inside the cube itself would refuse most of its moves in 100 dimensions, where
some coordinate nearly always sits within a step of a face.

The potential and its gradient come from whoever holds the networks: PyTorch's autograd
(`ebgen.potential.LatentPotential`, for `TorchModel.refine`) or onnxruntime running the
exported `latent_potential.onnx` (`InferenceModel.refine`, no torch). This module owns the
rest, so both give the same chain from the same seed:

- `to_normal(z, latent)` / `from_normal(u, latent)`: the change of variables (float64);
- `mala(u, potential, steps, step_size, rng)`: the Metropolis-adjusted Langevin chain on any
  potential returning (U, ∇U) per row; returns the last states and the mean acceptance;
- `refine_latents(z, latent, potential, ...)`: checked arguments, batches, progress bar;
- `held_coordinates(num_components)`: how many leading latent coordinates the chain keeps.

A generator with latent components (`--num-components`) reads each sample's component from
z's first coordinate, and the components draw separate modes (the digit classes, the 2-D
sets' clusters). A chain free to move that coordinate carries samples across components
towards whichever has the lowest energies, so the modes' shares drift from the trained ones
(on the digits: a class lost in 30 moves). For such generators the chain holds it and
samples the other coordinates given it: each sample is refined within its own component.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np

from .errors import EbgenError
from .inputs import check_num_samples, check_seed

#: How close to the cube's faces a uniform latent is taken before the normal quantile.
_EDGE = 1e-12

#: u (n, d) float32 -> (U(u) (n,), ∇U(u) (n, d)), both float32.
Potential = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

_normal_cdf = np.frompyfunc(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), 1, 1)
_normal_quantile = np.frompyfunc(statistics.NormalDist().inv_cdf, 1, 1)


def to_normal(z: np.ndarray, latent: str) -> np.ndarray:
    """The standard normal variable behind latents z (n, z_dim) of distribution `latent`."""
    z = np.asarray(z, dtype=np.float64)
    if latent == "normal":
        return z
    p = np.clip((z + 1.0) / 2.0, _EDGE, 1.0 - _EDGE)
    return _normal_quantile(p).astype(np.float64)


def from_normal(u: np.ndarray, latent: str) -> np.ndarray:
    """Latents of distribution `latent` from standard normal u (float64)."""
    u = np.asarray(u, dtype=np.float64)
    if latent == "normal":
        return u
    return 2.0 * _normal_cdf(u).astype(np.float64) - 1.0


def held_coordinates(num_components: int) -> int:
    """Leading latent coordinates refinement keeps fixed: 1 (the component selector) for a
    generator with latent components, else 0."""
    return 1 if num_components else 0


def mala(u: np.ndarray, potential: Potential, steps: int, step_size: float,
         rng: np.random.Generator, progress: Callable[[], None] | None = None,
         held: int = 0) -> tuple[np.ndarray, float]:
    """`steps` Metropolis-adjusted Langevin moves of each row of u on `potential`.

    Each proposal is u − s²/2 ∇U(u) + s ξ (ξ ~ N(0, I) from `rng`), accepted with the
    Metropolis–Hastings ratio of the two Langevin densities, so the chain leaves exp(−U)
    invariant for any step size s. The first `held` coordinates never move (the chain then
    samples the rest given them; the same draws of ξ either way). `progress` is called after
    each move. Returns (last states as float32, mean acceptance rate).
    """
    u = np.asarray(u, dtype=np.float32)
    energy, grad = _evaluate(potential, u)
    accepted = 0.0
    half = 0.5 * step_size ** 2
    for _ in range(steps):
        proposal = (u - half * grad + step_size * rng.standard_normal(u.shape)
                    ).astype(np.float32)
        proposal[:, :held] = u[:, :held]
        energy_new, grad_new = _evaluate(potential, proposal)
        forward = np.square(proposal - u + half * grad)[:, held:].sum(1)
        backward = np.square(u - proposal + half * grad_new)[:, held:].sum(1)
        log_alpha = energy - energy_new + (forward - backward) / (2 * step_size ** 2)
        # a proposal whose potential is not finite is refused (NaN compares false)
        accept = np.log(rng.random(len(u))) < log_alpha
        u = np.where(accept[:, None], proposal, u)
        energy = np.where(accept, energy_new, energy)
        grad = np.where(accept[:, None], grad_new, grad)
        accepted += float(accept.mean()) / steps
        if progress is not None:
            progress()
    return u, accepted


def refine_latents(z: np.ndarray, latent: str, potential: Potential, steps: int,
                   step_size: float, seed: int = 0, batch_size: int = 1000,
                   progress: bool = False, held: int = 0) -> tuple[np.ndarray, float]:
    """Latents z (n, z_dim) after `steps` MALA moves on `potential` (of the normal variable
    behind them), `batch_size` rows at a time, noise from numpy's PCG64 on a stream of `seed`
    apart from the one `sample_latents(seed)` draws from, a bar on stderr with `progress`;
    the first `held` coordinates stay as they are (`held_coordinates`). Returns (refined z as
    float32, mean acceptance rate). Raises `EbgenError` for a negative step count, a step size
    that is not positive, a bad batch size or seed."""
    steps = check_num_samples(steps, low=0)
    batch_size = check_num_samples(batch_size)
    if not (isinstance(step_size, (int, float)) and step_size > 0 and math.isfinite(step_size)):
        raise EbgenError(f"step_size must be a positive number, got {step_size!r}")
    # its own stream of the seed: the latents themselves come from default_rng(seed)
    rng = np.random.default_rng(np.random.SeedSequence(check_seed(seed), spawn_key=(1,)))
    z = np.asarray(z, dtype=np.float32)
    if steps == 0 or len(z) == 0:
        return z, 0.0
    from tqdm.auto import tqdm

    refined, accepted = [], 0.0
    with tqdm(total=steps * -(-len(z) // batch_size), disable=not progress,
              desc="refine latents", unit="step") as bar:
        for start in range(0, len(z), batch_size):
            chunk = z[start:start + batch_size]
            u, rate = mala(to_normal(chunk, latent), potential, steps, float(step_size), rng,
                           progress=bar.update, held=held)
            refined.append(from_normal(u, latent).astype(np.float32))
            refined[-1][:, :held] = chunk[:, :held]  # exactly as given, not via Φ and back
            accepted += rate * len(chunk) / len(z)
    return np.concatenate(refined), accepted


def _evaluate(potential: Potential, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(U, ∇U) of `potential` at u as float64 / float32 arrays of the right shapes."""
    energy, grad = potential(u)
    energy = np.asarray(energy, dtype=np.float64).reshape(len(u))
    grad = np.asarray(grad, dtype=np.float32).reshape(u.shape)
    return energy, grad
