"""Options shared by several commands, defined once (kebab-case, envvar, help with default)."""
from __future__ import annotations

import click


def seed_option(default: int | None = 0):
    """`--seed`: the random seed (every random command takes one)."""
    return click.option("--seed", type=int, default=default, envvar="EBGEN_SEED", metavar="INT",
                        show_envvar=True,
                        help=f"Random seed. (default: {default if default is not None else 'from preset'})")


def device_option(default: str | None = "auto"):
    """`--device`: auto (CUDA when present), cpu, cuda or cuda:N."""
    return click.option("--device", default=default, envvar="EBGEN_DEVICE", metavar="DEVICE",
                        show_envvar=True,
                        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N. "
                             f"(default: {default or 'from preset'})")


def json_option():
    """`--json`: print one JSON object instead of text."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object instead of text.")


def model_arguments():
    """MODEL as an optional argument (or $EBGEN_MODEL) or as `--model`, defaulting to the
    bundled default model.

    The command receives one `model` keyword (see `pick_model`).
    """
    def decorate(f):
        f = click.option("--model", "model_option", default=None, metavar="MODEL",
                         help="Same as the MODEL argument.")(f)
        return click.argument("model", required=False, metavar="[MODEL]",
                              envvar="EBGEN_MODEL")(f)
    return decorate


def pick_model(argument: str | None, option: str | None) -> str:
    """The MODEL given as argument or `--model` (not both), else the bundled default."""
    from ebgen.bundled import DEFAULT_MODEL

    if argument and option and argument != option:
        raise click.UsageError(f"two models given: {argument!r} and --model {option!r}")
    return argument or option or DEFAULT_MODEL
