"""`ebgen models`: lists the bundled pretrained models (wraps `ebgen.bundled`)."""
from __future__ import annotations

import json

import click

from .options import json_option


@click.command("models")
@click.argument("name", required=False, metavar="[NAME]")
@json_option()
def models_command(name, as_json) -> None:
    """List the pretrained models bundled with ebgen: size, source data and key metrics.

    With NAME, show that model's card in full: where it lives, how it was trained (the
    command and its wall time) and everything `ebgen eval` measured on it. Any command that
    takes a MODEL takes these names.

    \b
    Examples:
      ebgen models
      ebgen models mnist --json
      ebgen generate --model ring -n 1000 --out ring.npy
    """
    from ebgen.bundled import bundled_names, format_cards, model_card

    if name:
        card = model_card(name)
        if as_json:
            click.echo(json.dumps(card, indent=2))
            return
        for key, value in card.items():
            if key == "metrics":
                value = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in value.items())
            click.echo(f"{key:<14} {value}")
        return
    cards = [model_card(n) for n in bundled_names()]
    if as_json:
        click.echo(json.dumps(cards, indent=2))
    elif not cards:
        click.echo("no bundled models installed")
    else:
        click.echo(format_cards(cards))
