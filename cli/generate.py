"""`ebgen generate`: wraps `ebgen.serve.service.generate_response` (the servers' own core)."""
from __future__ import annotations

from pathlib import Path

import click

from ebgen.latents import REFINE_STEP_SIZE

from .options import device_option, model_arguments, pick_model, seed_option


@click.command("generate")
@model_arguments()
@click.option("-n", "--num-samples", type=int, default=64, show_default=True,
              help="Samples to draw.")
@seed_option()
@click.option("--out", default="samples", show_default=True, metavar="DIR|FILE",
              help="A folder (one file per sample, or grid.png / samples.npy), or a .png/.npy "
                   "file (a grid, or the array).")
@click.option("--grid", is_flag=True, help="Write one PNG grid instead of one PNG per sample.")
@click.option("--format", "fmt", type=click.Choice(["png", "npy"]), default=None,
              help="png (uint8 images) or npy (float32 N×C×H×W in [-1, 1]). "
                   "(default: from --out's suffix, else png)")
@click.option("--refine-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Latent-space MALA steps on E(G(z)) + the latent's prior before decoding "
                   "(Kumar et al. 2019): onnxruntime runs the model's latent_potential.onnx; a "
                   "model exported without one needs its PyTorch weights and torch.")
@click.option("--refine-step-size", type=click.FloatRange(0, min_open=True),
              default=REFINE_STEP_SIZE,
              show_default=True, help="The MALA step size, in the units of the standard normal "
              "variable behind the latent (a uniform latent is 2Φ(u) − 1 of it).")
@device_option()
def generate_command(model, model_option, num_samples, seed, out, grid, fmt, refine_steps,
                     refine_step_size, device) -> None:
    """Draw samples from a model's generator (same seed, same pixels as the servers).

    MODEL is a model directory, a checkpoint directory or a bundled model name (see
    `ebgen models`); without one, the bundled `mnist` digits model.

    \b
    Examples:
      ebgen generate -n 64 --out samples.png
      ebgen generate --model ring -n 1000 --out ring.npy
      ebgen generate models/tiny -n 16 --seed 0 --out samples/
      ebgen generate models/tiny -n 64 --out grid.png
      ebgen generate models/tiny -n 1000 --format npy --out samples.npy
      ebgen generate -n 64 --refine-steps 30 --out refined.png
    """
    from ebgen import load_model
    from ebgen.files import atomic_write_bytes
    from ebgen.serve import codecs
    from ebgen.serve.service import generate_response
    from ebgen.serve.validation import GenerateParams, Limits

    model = pick_model(model, model_option)
    target = Path(out)
    suffix = target.suffix.lower()
    fmt = fmt or ("npy" if suffix == ".npy" else "png")
    if suffix in (".png", ".npy") and suffix != f".{fmt}":
        raise click.UsageError(f"--out {out} does not match --format {fmt}")
    if num_samples < 1:
        raise click.UsageError("-n must be at least 1")
    m = load_model(model, device)
    if refine_steps:
        m = _Refined(m, model, refine_steps, refine_step_size, seed)
    single_file = suffix in (".png", ".npy")
    per_sample = fmt == "png" and not grid and not single_file
    if m.kind != "image" and fmt == "png":
        raise click.UsageError(f"{model} is a {m.kind} model: use --format npy")
    params = GenerateParams(num_samples=num_samples, seed=seed,
                            format="json" if per_sample else fmt, grid=False if per_sample
                            else grid or num_samples > 1)
    reply = generate_response(m, params, Limits(max_samples=max(num_samples, 1)))
    if single_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, reply.body)
        click.echo(f"{num_samples} samples (seed {seed}) in {target}")
        return
    target.mkdir(parents=True, exist_ok=True)
    if per_sample:
        import base64

        images = codecs.parse_json(reply.body)["images"]
        width = len(str(num_samples - 1))
        for i, image in enumerate(images):
            atomic_write_bytes(target / f"sample_{i:0{width}d}.png", base64.b64decode(image))
        click.echo(f"{num_samples} PNGs (seed {seed}) in {target}/")
        return
    name = "samples.npy" if fmt == "npy" else "grid.png"
    atomic_write_bytes(target / name, reply.body)
    click.echo(f"{num_samples} samples (seed {seed}) in {target / name}")


class _Refined:
    """An `InferenceModel` whose generator first refines its latents by latent-space MALA
    (`ebgen.load_refiner`: onnxruntime where the model carries latent_potential.onnx, else
    its PyTorch nets); everything else is the model's own."""

    def __init__(self, model, name: str, steps: int, step_size: float, seed: int) -> None:
        import ebgen

        self._model = model
        self._refiner = model if model.can_refine else ebgen.load_refiner(name)
        self._steps, self._step_size, self._seed = steps, step_size, seed

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def generate_from_latents(self, z):
        z, accepted = self._refiner.refine(z, self._steps, self._step_size, self._seed,
                                           progress=True)
        click.echo(f"refined the latents: {self._steps} MALA steps of {self._step_size:g}, "
                   f"{100 * accepted:.0f} % of moves accepted", err=True)
        return self._model.generate_from_latents(z)
