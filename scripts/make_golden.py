"""Write the golden checkpoints of tests/test_golden.py: a tiny image model and a tiny points
model (two training steps each, seeded), with the energies and samples they give.

The golden files pin the architecture and the checkpoint format: a change to either makes
tests/test_golden.py fail until it is deliberate, in which case rerun this script (and say why
in the commit). Only config.json and the two weight files are kept (about 40 KB in all).

    python scripts/make_golden.py              # rewrites tests/data/golden/
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"
KEEP = ("config.json", "energy.safetensors", "generator.safetensors")
#: name → (preset, overrides): small enough to commit, every kind of layer included.
MODELS = {
    "image": ("tiny", {"steps": 2}),
    "points": ("toy2d", {"steps": 2, "batch_size": 32, "z_dim": 4, "energy_width": 16,
                         "generator_width": 16, "num_experts": 8, "num_components": 4,
                         "num_points": 512, "sample_every": 1000, "checkpoint_every": 1000,
                         "dataset": "unequal"}),
}
NUM_PROBES = 6
LATENT_SEED, PROBE_SEED = 11, 12


def probes(sample_shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Fixed inputs to score: images in [-1, 1], points spread over a few data scales."""
    rng = np.random.default_rng(PROBE_SEED)
    if kind == "image":
        return rng.uniform(-1, 1, (NUM_PROBES, *sample_shape)).astype(np.float32)
    return (3.0 * rng.standard_normal((NUM_PROBES, *sample_shape))).astype(np.float32)


def expected(directory: Path) -> dict:
    """The probes `x` and latents `z`, and what the checkpoint in `directory` gives for them:
    energies and samples (float32, as lists)."""
    import torch

    from ebgen.checkpoint import load_checkpoint
    from ebgen.latents import sample_latents

    config, energy, generator, _ = load_checkpoint(directory, torch.device("cpu"))
    m = config.model
    shape = (m.data_dim,) if m.kind == "points" else (m.channels, m.image_size, m.image_size)
    x = probes(shape, m.kind)
    z = sample_latents(NUM_PROBES, m.z_dim, seed=LATENT_SEED, distribution=m.latent)
    with torch.no_grad():
        energies = energy(torch.from_numpy(x)).numpy()
        samples = generator(torch.from_numpy(z)).numpy()
    return {"x": x.tolist(), "z": z.tolist(), "energies": energies.tolist(),
            "samples": samples.tolist()}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    from ebgen.presets import preset_config
    from ebgen.train import train

    for name, (preset, overrides) in MODELS.items():
        with tempfile.TemporaryDirectory() as tmp:
            train(preset_config(preset, **overrides), tmp, progress=False)
            out = GOLDEN / name
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            for file in KEEP:
                shutil.copy(Path(tmp) / file, out / file)
        (out / "expected.json").write_text(json.dumps(expected(out)) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
