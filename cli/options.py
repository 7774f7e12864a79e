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
