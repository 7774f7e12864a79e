"""Golden checkpoints pin the architecture and the checkpoint format: two tiny checkpoints
committed in tests/data/golden/ (written by scripts/make_golden.py) must load as they are and
give the energies and samples recorded beside them, within float tolerance. A renamed layer,
a changed default that alters the nets, or a new format version fails here first."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ebgen.checkpoint import load_checkpoint, read_meta  # noqa: E402
from ebgen.models import energy_function  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "golden"


@pytest.mark.parametrize("name", ["image", "points"])
def test_golden_checkpoint_loads_and_gives_its_recorded_outputs(name):
    directory = GOLDEN / name
    meta = read_meta(directory)
    assert meta["format"] == "ebgen-checkpoint" and meta["format_version"] == 1
    config, energy, generator, _ = load_checkpoint(directory, torch.device("cpu"))
    assert config.model.kind == name
    want = json.loads((directory / "expected.json").read_text())
    x, z = np.asarray(want["x"], np.float32), np.asarray(want["z"], np.float32)
    np.testing.assert_allclose(energy_function(energy)(x), want["energies"], rtol=1e-4,
                               atol=1e-4)
    with torch.no_grad():
        samples = generator(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(samples, np.asarray(want["samples"], np.float32), rtol=1e-4,
                               atol=1e-5)


def test_golden_files_are_small_and_only_what_a_checkpoint_needs():
    files = sorted(p.relative_to(GOLDEN).as_posix() for p in GOLDEN.rglob("*") if p.is_file())
    assert files == [f"{m}/{f}" for m in ("image", "points") for f in
                     ("config.json", "energy.safetensors", "expected.json",
                      "generator.safetensors")]
    assert sum((GOLDEN / f).stat().st_size for f in files) < 100_000
