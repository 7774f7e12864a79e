"""The `ebgen` command: one click group, one module per verb.

Each command is a thin wrapper over one library function of the same name; heavy imports
(torch, onnxruntime) happen inside command bodies so `ebgen --help` is instant. Errors a user
can fix (`EbgenError`) print one line and exit with code 2, never a traceback.
"""
from __future__ import annotations

import sys

import click

from ebgen import __version__
from ebgen.errors import EbgenError

from .commands import COMMANDS


class UserError(click.ClickException):
    """A one-line error for the user, exit code 2."""

    exit_code = 2


#: Top-level modules an extra installs → (extra, what needs it).
EXTRAS = {
    **{name: ("train", "training, export and eval")
       for name in ("torch", "safetensors", "matplotlib", "onnx", "onnxscript")},
    "onnxruntime": ("cpu", "running models (or [gpu] on a CUDA machine)"),
    **{name: ("serve", "the HTTP service") for name in ("fastapi", "uvicorn", "prometheus_client",
                                                          "starlette")},
    **{name: ("torchserve", "--engine torchserve") for name in ("ts", "model_archiver", "yaml")},
}


class EbgenGroup(click.Group):
    """Turns EbgenError raised inside any command into a one-line error with exit code 2, and
    a missing optional dependency into the extra that installs it."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EbgenError as e:
            raise UserError(str(e)) from None
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if top not in EXTRAS:
                raise
            extra, purpose = EXTRAS[top]
            raise UserError(f"{top} is not installed: {purpose} needs it; "
                            f"pip install 'ebgen[{extra}]'") from None


@click.group(cls=EbgenGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.version_option(__version__, prog_name="ebgen")
def cli() -> None:
    """ebgen: generative models with a calibrated energy (Kim & Bengio, 2016).

    \b
    Train, export to ONNX, serve sample generation and energy scoring:
      ebgen train --preset toy2d --dataset 8gaussians --out runs/ring
      ebgen eval runs/ring --json
    """


for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ebgen")


if __name__ == "__main__":  # python -m ebgen.cli.main
    sys.exit(main())
