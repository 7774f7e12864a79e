"""`ebgen eval`: wraps `ebgen.evaluate.evaluate`."""
from __future__ import annotations

import json

import click

from .options import device_option, json_option, seed_option


@click.command("eval")
@click.argument("checkpoint", metavar="CKPT_DIR")
@click.option("--num-samples", type=int, default=2500, show_default=True,
              help="Generator samples to evaluate.")
@click.option("--data", "path", default=None, metavar="PATH",
              help="Held-out data to use instead of the training run's. (default: the run's)")
@seed_option()
@device_option()
@json_option()
def eval_command(checkpoint, num_samples, path, seed, device, as_json) -> None:
    """Measure a trained model.

    2-D models: VEEGAN mode coverage (built-in sets) and KL(p_data ‖ p_E) of the energy
    normalised on a grid. Image models: mean energy of held-out data, samples and noise.

    \b
    Examples:
      ebgen eval runs/ring
      ebgen eval runs/mnist --json
    """
    from ebgen.evaluate import evaluate, format_report

    report = evaluate(checkpoint, num_samples=num_samples, data_path=path, seed=seed,
                      device=device)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
