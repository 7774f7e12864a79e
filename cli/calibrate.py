"""`ebgen calibrate`: wraps `ebgen.calibrate` over files (decoded as `ebgen score` decodes them)."""
from __future__ import annotations

import json

import click

from .options import json_option


@click.command("calibrate")
@click.argument("model", metavar="MODEL")
@click.argument("inputs", nargs=-1, required=True, metavar="FILES_OR_DIRS...")
@click.option("--fpr", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.01, show_default=True,
              help="False-positive rate: the share of clean data `is_anomaly` flags.")
@click.option("--out", default=None, metavar="DIR",
              help="Write a calibrated copy of the model here (needed for a bundled model or "
                   "a checkpoint); default: calibrate the model directory in place.")
@json_option()
def calibrate_command(model, inputs, fpr, out, as_json) -> None:
    """Calibrate anomaly decisions on clean held-out data the model never trained on.

    Scores the inputs (PNG/JPEG, .npy arrays, JSON score requests, folders or globs, as
    `ebgen score` takes them), stores their energy quantiles, a fitted upper tail and the
    threshold at --fpr in MODEL/calibration.json (rebuilding its TorchServe archives), and
    from then on every `score` (CLI, HTTP, TorchServe, Python) also returns tail_probability
    (the share of clean data at least as anomalous; it keeps falling past the calibration
    set's extremes) and is_anomaly.

    \b
    Examples:
      ebgen calibrate models/tab heldout_clean.npy --fpr 0.01
      ebgen calibrate mnist ~/data/mnist_clean/ --out models/mnist-calibrated
      ebgen score models/tab new_points.npy --json
    """
    import numpy as np

    import ebgen
    from ebgen.runtime import InferenceModel

    from .score import read_score_inputs

    directory = ebgen.resolve_model_path(model)
    m = InferenceModel(directory, "cpu")
    x = np.concatenate([a for _, a in read_score_inputs(m, inputs)])
    calibration = ebgen.calibrate(model, x, fpr=fpr, out=out,
                                  source=" ".join(inputs)[:200])
    target = out or directory
    flagged = float(calibration.is_anomaly(m.energy(x)).mean())  # the same nets
    if as_json:
        click.echo(json.dumps({"model": str(target), "flagged": flagged,
                               **calibration.to_dict()}, indent=2))
        return
    click.echo(f"calibrated {target} on {calibration.num_samples} clean samples: "
               f"is_anomaly when energy > {calibration.threshold:.4g} "
               f"(fpr {calibration.fpr:g}; flags {100 * flagged:.2f} % of these); "
               f"tail above {calibration.tail_start:.4g} (top "
               f"{100 * calibration.tail_probability:.1f} %), scale "
               f"{calibration.tail_scale:.3g}")
