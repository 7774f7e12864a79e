"""Where an image energy's bits/dim go: its data base alone, and its variance floor.

For a trained image model with the data base (`--base data`), on the held-out images of its
data (dequantised as `ebgen eval` does, `ebgen.metrics.likelihood`):

- the base alone: the per-pixel Gaussian of the training images with variances floored at the
  model's `base_min_variance`, a normalised density in closed form;
- the model itself with the floor refitted after training to each of `--floors` (the same
  training images, experts and generator untouched), exported with log Z by AIS and measured
  by `ebgen eval --anomaly`: bits/dim (forward and reverse log Z), the corruption AUROCs and
  the sample figures;
- and the diagonal Gaussian and PPCA baselines beside them.

    python benchmarks/density_floor.py RUN --data MNIST_DIR
    python benchmarks/density_floor.py RUN --data MNIST_DIR --floors 0.05,0.001,0.0001 --chains 64
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path


def load_image_run(run: str, data: str | None) -> tuple:
    """(config, energy, generator, meta, train, heldout) of checkpoint `run`, an image model
    with the data base; `data` replaces the path it trained on."""
    from ebgen.checkpoint import load_checkpoint
    from ebgen.data import load_data

    config, energy, generator, meta = load_checkpoint(run)
    if config.model.base != "data" or config.model.kind != "image":
        raise SystemExit(f"{run}: needs an image model with the data base")
    data_config = config.data if data is None else dataclasses.replace(
        config.data, path=data, dataset=None)
    train, heldout = load_data(data_config, config.model, seed=config.train.seed)
    return config, energy, generator, meta, train, heldout


def report_with_log_z(checkpoint: Path, scratch: Path, data: str | None, chains: int,
                      temperatures: int) -> dict:
    """`ebgen eval --anomaly` (2,000 samples) of `checkpoint` exported into `scratch` with
    log Z by AIS."""
    from ebgen.eval import evaluate
    from ebgen.export import export_model

    model_dir = export_model(checkpoint, scratch / "model", archive=False, progress=False,
                             log_z={"chains": chains, "temperatures": temperatures})
    return evaluate(model_dir, num_samples=2000, data_path=data, device="cpu", anomaly=True)


def base_only_bits_per_dim(run: str, data: str | None, seed: int = 0) -> dict:
    """bits/dim of the held-out images under the model's base Gaussian alone."""
    import numpy as np
    import torch

    from ebgen.metrics.likelihood import bits_per_dim, dequantise
    from ebgen.pixels import uint8_to_unit

    config, energy, _, _, _, heldout = load_image_run(run, data)
    test, volume = dequantise(uint8_to_unit(heldout.values).numpy(), np.random.default_rng(seed))
    mean, scale, _ = energy.base_whitening()  # N(mean, scale²): its constant cancels in log Z
    flat = torch.from_numpy(test.reshape(len(test), -1))
    whitened = (flat - mean) / torch.diag(scale)
    dim = flat.shape[1]
    nll = (0.5 * whitened.pow(2).sum(1) + torch.log(torch.diag(scale)).sum()
           + 0.5 * dim * math.log(2 * math.pi)).numpy()
    return {"floor": config.model.base_min_variance,
            "bits_per_dim": bits_per_dim(nll - volume, dim)}


def refloored(run: str, floor: float, data: str | None, out: Path) -> Path:
    """A copy of checkpoint `run` with its data base refitted at variance floor `floor`."""
    from ebgen.checkpoint import save_checkpoint
    from ebgen.train.density import refit_base

    config, energy, generator, meta, train, _ = load_image_run(run, data)
    energy = refit_base(config, energy, train, "data", floor)
    save_checkpoint(out, config, energy, generator, meta.get("step", 0))
    return out


def measure(run: str, floor: float, data: str | None, chains: int, temperatures: int) -> dict:
    """`ebgen eval --anomaly` of `run` refloored and exported with log Z."""
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = refloored(run, floor, data, Path(scratch) / "checkpoint")
        return report_with_log_z(checkpoint, Path(scratch), data, chains, temperatures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training checkpoint of an image model (data base)")
    parser.add_argument("--data", default=None, help="its data, where not where it trained")
    parser.add_argument("--floors", default="0.05,0.0001")
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--temperatures", type=int, default=3000)
    args = parser.parse_args()
    base = base_only_bits_per_dim(args.run, args.data)
    print(f"base alone (floor {base['floor']:g}): {base['bits_per_dim']:.2f} bits/dim")
    print("| floor | bits/dim (reverse log Z) | diagonal Gaussian | PPCA | AUROC noise / blur / "
          "inverted / shifted | confident | Fréchet |")
    print("|---|---|---|---|---|---|---|")
    for floor in (float(f) for f in args.floors.split(",")):
        r = measure(args.run, floor, args.data, args.chains, args.temperatures)
        like, auroc = r["likelihood"], r["anomaly"]["energy"]
        print(f"| {floor:g} | {like['bits_per_dim']:.2f} ({like['bits_per_dim_reverse_log_z']:.2f}) "
              f"| {like['bits_per_dim_diagonal_gaussian']:.2f} | {like['bits_per_dim_ppca50']:.2f} "
              f"| {' / '.join(f'{auroc[k]:.3f}' for k in ('noise', 'blur', 'inverted', 'shifted'))} "
              f"| {100 * r['confident_share']:.1f} % | {r['frechet_distance']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
