"""Seeded latent sampling, the one latent sampler of ebgen.

Latents are drawn with numpy's PCG64 on the CPU from an integer seed, so the same seed gives the
same `z` in PyTorch training, the ONNX runtime (which never imports torch), on CPU and on GPU.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The latent MALA step size (`ebgen.refine`) `ebgen generate`, `ebgen eval`, the servers'
#: `refine_step_size` and both engines' `refine` use unless told, in the units of the normal
#: variable behind the latent (69 % of moves accepted on the bundled mnist, 75–92 % in 2-D).
#: Here, not in the torch module, so the CLI's options read it without importing torch.
REFINE_STEP_SIZE = 0.05

#: Latent distributions a Generator can be trained with.
LATENT_DISTRIBUTIONS = ("uniform", "normal")


def sample_latents(n: int, z_dim: int,
                   seed: int | Sequence[int] | np.random.Generator | None = None,
                   distribution: str = "uniform") -> np.ndarray:
    """Draw `n` latents of `z_dim` dims as float32: U(-1, 1) (default) or N(0, 1).

    `seed` is an int or a sequence of ints such as (seed, step, rank) (reproducible), a numpy
    Generator (a stream of draws) or None (fresh).
    """
    if distribution not in LATENT_DISTRIBUTIONS:
        raise ValueError(f"unknown latent distribution {distribution!r}; "
                         f"expected one of {', '.join(LATENT_DISTRIBUTIONS)}")
    if n < 0 or z_dim <= 0:
        raise ValueError(f"need n >= 0 and z_dim > 0, got n={n}, z_dim={z_dim}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if distribution == "uniform":
        z = rng.uniform(-1.0, 1.0, size=(n, z_dim))
    else:
        z = rng.standard_normal(size=(n, z_dim))
    return z.astype(np.float32)
