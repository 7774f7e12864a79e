"""The one latent sampler and the one pixel conversion."""
import numpy as np
import pytest
import torch

from ebgen.latents import sample_latents
from ebgen.pixels import uint8_to_unit, unit_to_uint8


def test_same_seed_same_latents():
    a, b = sample_latents(8, 5, seed=3), sample_latents(8, 5, seed=3)
    assert a.dtype == np.float32 and a.shape == (8, 5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_latents(8, 5, seed=4))


def test_latent_ranges():
    u = sample_latents(10_000, 3, seed=0)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.mean()) < 0.05
    n = sample_latents(10_000, 3, seed=0, distribution="normal")
    assert abs(n.std() - 1) < 0.05
    with pytest.raises(ValueError):
        sample_latents(1, 3, distribution="cauchy")


def test_pixel_round_trip_numpy_and_torch():
    pixels = np.arange(256, dtype=np.uint8)
    unit = uint8_to_unit(pixels)
    assert unit.min() == -1 and unit.max() == 1
    np.testing.assert_array_equal(unit_to_uint8(unit), pixels)
    t = torch.from_numpy(pixels)
    assert torch.equal(unit_to_uint8(uint8_to_unit(t)), t)
    assert unit_to_uint8(np.array([-5.0, 5.0])).tolist() == [0, 255]
