"""`ebgen train`: wraps `ebgen.train.train`."""
from __future__ import annotations

import os

import click

from ebgen.presets import PRESETS as _PRESETS

from .options import config_options, config_overrides, device_option, seed_option

PRESET_NAMES = tuple(_PRESETS)
#: What `--resume` may change about a run.
RESUMABLE = ("steps", "device", "sample_every", "checkpoint_every")


@click.command("train")
@click.option("--preset", default="toy2d", show_default=True, metavar="NAME",
              help=f"Starting config: {', '.join(PRESET_NAMES)}; its fields, then any option "
                   f"given, make the run's.")
@click.option("--config", "config_file", default=None, metavar="FILE",
              help="Start from a saved config.json (or a run directory holding one) instead of "
                   "a preset; options given override its fields.")
@config_options()
@seed_option(default=None)
@device_option(default=None)
@click.option("--out", default=None, metavar="DIR",
              help="Checkpoint directory. (default: runs/PRESET)")
@click.option("--resume", is_flag=True,
              help="Continue the checkpoint in --out (its saved config; --steps may extend it).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(preset, config_file, resume, out, quiet, **fields) -> None:
    """Train the energy model and the generator together.

    \b
    Examples:
      ebgen train --preset tiny --out runs/tiny
      ebgen train --preset toy2d --dataset 8gaussians --out runs/ring
      ebgen train --preset toy2d --data points.npy --out runs/mine
      ebgen train --preset mnist --data ~/data/mnist --steps 200 --out runs/mnist
      ebgen train --out runs/ring --resume --steps 10000
      ebgen train --config runs/ring/config.json --seed 1 --out runs/ring-s1
      torchrun --nproc_per_node 2 $(which ebgen) train --preset tiny --out runs/ddp
    """
    from ebgen.config import load_config, with_overrides
    from ebgen.presets import preset_config
    from ebgen.train import resume_config, train

    fields = config_overrides(fields)
    out = out or f"runs/{preset}"
    if resume:
        if config_file:
            raise click.UsageError("--resume continues the run's own config: drop --config")
        given = sorted(k for k, v in fields.items()
                       if v is not None and k not in RESUMABLE)
        if given:
            raise click.UsageError(f"--resume keeps the run's config; only --steps, --device, "
                                   f"--sample-every, --checkpoint-every may change (got "
                                   f"--{given[0].replace('_', '-')})")
        config = resume_config(out, **{k: fields[k] for k in RESUMABLE})
    elif config_file:
        config = with_overrides(load_config(config_file), **fields)
    else:
        config = preset_config(preset, **fields)
    result = train(config, out, resume=resume, progress=not quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0
        click.echo(f"step {result['step']}: checkpoint in {out}")
