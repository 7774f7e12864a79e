"""Latent-space MALA (`ebgen.refine`): the change of variables and the chain's invariant law."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ebgen.refine import from_normal, mala, to_normal


@pytest.mark.parametrize("latent", ["uniform", "normal"])
def test_the_normal_variable_carries_the_latent_prior_exactly(latent):
    u = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(0))
    z = from_normal(u, latent)
    inner = u.abs() < 3  # float32 latents keep ~1e-5 of the normal tail beyond ±3
    np.testing.assert_allclose(to_normal(z, latent)[inner].numpy(), u[inner].numpy(),
                               atol=5e-5)
    if latent == "uniform":  # N(0, 1) through 2Φ − 1 is U(−1, 1): its quantiles, its range
        values = np.sort(z.numpy().ravel())
        expected = np.linspace(-1, 1, len(values) + 2)[1:-1]
        assert np.abs(values - expected).max() < 0.02
        assert values.min() > -1 and values.max() < 1
    edge = to_normal(torch.tensor([[-1.0, 1.0]]), latent)
    assert torch.isfinite(edge).all()


def _tilted(shift: torch.Tensor):
    """U(u) = ‖u − shift‖²/2: a unit normal centred on `shift`."""
    def potential(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return 0.5 * (u - shift).pow(2).sum(1), u - shift
    return potential


@pytest.mark.parametrize("step_size", [0.3, 1.5])
def test_mala_leaves_its_target_invariant_at_any_step_size(step_size):
    """Chains started in the target stay there (a wrong acceptance ratio drifts the variance,
    a large step more so); chains started far away reach it."""
    gen = torch.Generator().manual_seed(1)
    shift = torch.tensor([1.0, -2.0])
    start = shift + torch.randn(8000, 2, generator=gen)
    u, accepted = mala(start, _tilted(shift), 40, step_size, gen)
    assert 0.05 < accepted < 1.0
    np.testing.assert_allclose(u.mean(0).numpy(), shift.numpy(), atol=0.06)
    np.testing.assert_allclose(u.var(0).numpy(), [1.0, 1.0], atol=0.08)
    far, _ = mala(torch.zeros(4000, 2) + 6.0, _tilted(shift), 200, 0.8, gen)
    np.testing.assert_allclose(far.mean(0).numpy(), shift.numpy(), atol=0.1)


def test_mala_counts_its_moves():
    moves = []
    mala(torch.zeros(5, 2), _tilted(torch.zeros(2)), 7, 0.5, torch.Generator().manual_seed(0),
         progress=lambda: moves.append(1))
    assert len(moves) == 7
