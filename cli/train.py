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
@click.option("--auto-resume", is_flag=True,
              help="Continue the checkpoint in --out if there is one (the same command line: "
                   "options other than --steps, --device, --sample-every, --checkpoint-every "
                   "must match the run's), else start it. For torchrun --max-restarts and "
                   "preemptible jobs.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_command(preset, config_file, resume, auto_resume, out, quiet, **fields) -> None:
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
      torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29400 \
        --rdzv_id run1 --max-restarts 3 $(which ebgen) train --preset mnist --out /shared/run1 \
        --auto-resume
    """
    from pathlib import Path

    from ebgen.config import load_config, with_overrides
    from ebgen.names import CONFIG_FILE
    from ebgen.presets import preset_config
    from ebgen.train import resume_config, train

    fields = config_overrides(fields)
    out = out or f"runs/{preset}"
    if resume and auto_resume:
        raise click.UsageError("--auto-resume already resumes when there is a checkpoint: "
                               "drop --resume")
    if auto_resume and (Path(out) / CONFIG_FILE).is_file():
        _check_same_run(resume_config(out), preset, config_file, fields)
        resume = True
        fields = {k: v for k, v in fields.items() if k in RESUMABLE}
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


def _check_same_run(saved, preset, config_file, fields) -> None:
    """Refuse to auto-resume a run whose saved config disagrees with the options given."""
    import dataclasses

    from ebgen.config import NONE

    values = {f.name: getattr(section, f.name) for section in (saved.model, saved.data,
                                                               saved.train)
              for f in dataclasses.fields(section)}
    if not config_file and preset != saved.preset:
        raise click.UsageError(f"--auto-resume: the run in --out is a {saved.preset} run, "
                               f"not {preset}")
    given = {k: None if v is NONE else v for k, v in fields.items()
             if v is not None and k not in RESUMABLE}
    differ = sorted(k for k, v in given.items() if values.get(k) != v)
    if differ:
        name = differ[0]
        raise click.UsageError(f"--auto-resume: --{name.replace('_', '-')} {given[name]} "
                               f"differs from the run's {values.get(name)}; the same command "
                               f"line resumes a run")
