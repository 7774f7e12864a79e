"""`ebgen eval`: wraps `ebgen.eval.evaluate`."""
from __future__ import annotations

import json

import click

from ebgen.latents import REFINE_STEP_SIZE

from .options import device_option, json_option, seed_option


@click.command("eval")
@click.argument("model", metavar="MODEL")
@click.option("--num-samples", type=int, default=None,
              help="Generator samples to evaluate (and, for 2-D, exact samples of exp(−E)). "
                   "(default: 12500 for points, 10000 for images)")
@click.option("--data", "path", default=None, metavar="PATH",
              help="Data to evaluate against instead of the training run's (needed for a "
                   "bundled image model). (default: the run's)")
@click.option("--anomaly", is_flag=True,
              help="AUROC of the energy against corrupted held-out data, beside a baseline: "
                   "images noised, blurred, inverted and shifted (PCA-50 reconstruction); "
                   "points uniform in the data's box, column-shuffled and noisy (Gaussian).")
@click.option("--plots", "plots_dir", default=None, metavar="DIR",
              help="Write pictures to DIR: samples (over the energy landscape for 2-D) and a "
                   "histogram of energies of data, samples and noise (images and 2-D points).")
@click.option("--refine-steps", type=click.IntRange(0), default=0, show_default=True,
              help="Refine the generator's samples first: latent-space MALA steps on "
                   "E(G(z)) + the latent's prior, as `ebgen generate --refine-steps` (in "
                   "onnxruntime on latent_potential.onnx, else with torch).")
@click.option("--refine-step-size", type=click.FloatRange(0, min_open=True),
              default=REFINE_STEP_SIZE,
              show_default=True, help="The MALA step size (as `ebgen generate`'s).")
@seed_option()
@device_option()
@json_option()
def eval_command(model, num_samples, path, anomaly, plots_dir, refine_steps, refine_step_size,
                 seed, device, as_json) -> None:
    """Measure a model: a checkpoint, a model directory or a bundled model name.

    Points models, for the generator's samples and for exact samples of exp(−E) (2-D, drawn
    on a grid): MMD² as a ratio to the data-vs-data floor (RBF kernels in standardised
    coordinates, global bandwidth 0.3 × the median pairwise distance, local bandwidth the
    median 10-NN distance; 1 = as close as fresh data), precision/recall beside fresh data's,
    and for built-in sets each mode's share over its weight, the shares within 1, 2, 3 and
    beyond 3σ of the modes beside the data's (radial profile) and VEEGAN modes/HQ; then
    KL(p_data ‖ p_E) on a grid (a KDE of the held-out points for --data files). Image
    models: mean energies of held-out data, samples and noise;
    28×28 digit models also get the bundled classifier's metrics (classes covered, KL of the
    class histogram to uniform, share of confident samples, Fréchet distance).

    \b
    Examples:
      ebgen eval runs/ring
      ebgen eval ring --plots plots/ring
      ebgen eval mnist --data ~/data/mnist --anomaly --json
      ebgen eval mnist --data ~/data/mnist --refine-steps 30
    """
    from ebgen.eval import evaluate, format_report

    if num_samples is not None and num_samples < 2:
        raise click.UsageError("--num-samples must be at least 2")
    report = evaluate(model, num_samples=num_samples, data_path=path, seed=seed,
                      device=device, anomaly=anomaly, plots_dir=plots_dir,
                      refine_steps=refine_steps, refine_step_size=refine_step_size)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
