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


def config_options(skip: tuple[str, ...] = ("seed", "device")):
    """One option per config field (model, data, train sections): `--z-dim` ↔ `z_dim`.

    Types come from the fields' annotations, choices and help text from their metadata
    (`ebgen.config.opt`), the default from the field itself. Every option defaults to None
    ("from the preset"); `none` sets an optional field to None. Fields in `skip` have shared
    options of their own; fitted fields (`option="-"`) have none.
    """
    import dataclasses
    import typing

    from ebgen.config import SECTIONS

    def decorate(f):
        for _, kind in reversed(SECTIONS):
            hints = typing.get_type_hints(kind)
            for fld in reversed(dataclasses.fields(kind)):
                if fld.name not in skip and fld.metadata.get("option") != "-":
                    f = _field_option(fld, hints[fld.name])(f)
        return f
    return decorate


def settings_options(kind: type):
    """One option per field of settings dataclass `kind` (`ebgen.config.opt` fields), each
    defaulting to the field's own default: `--chain-steps` ↔ `chain_steps`."""
    import dataclasses
    import typing

    def decorate(f):
        hints = typing.get_type_hints(kind)
        for fld in reversed(dataclasses.fields(kind)):
            f = _field_option(fld, hints[fld.name], preset=False)(f)
        return f
    return decorate


def _field_option(fld, hint, preset: bool = True):
    """The click option of one config field: defaulting to None ("from the preset"), or with
    `preset=False` to the field's default."""
    import dataclasses
    import typing

    meta = fld.metadata
    name = meta.get("option") or "--" + fld.name.replace("_", "-")
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    default = [] if fld.default is dataclasses.MISSING else fld.default
    shown = "none" if default is None else ("on" if default is True else
                                             "off" if default is False else default)
    text = f"{meta.get('help', '')} (default: {'from the preset, else ' if preset else ''}{shown})"
    default = None if preset else default
    if base is bool:
        flag = fld.name.replace("_", "-")
        return click.option(f"--{flag}/--no-{flag}", fld.name, default=default, help=text)
    if typing.get_origin(base) is list:
        return click.option(name, fld.name, type=typing.get_args(base)[0], multiple=True,
                            default=default, help=text)
    choices = tuple(meta.get("choices") or ())
    if choices:
        kind = click.Choice(choices + (("none",) if optional else ()))
    else:
        kind = {int: int, float: float}.get(base, str)
    metavar = None if choices else {int: "INT", float: "FLOAT"}.get(base, "TEXT")
    if name == "--data":
        metavar = "PATH"
    return click.option(name, fld.name, type=kind, default=default, metavar=metavar, help=text)


def config_overrides(fields: dict) -> dict:
    """The values of `config_options` as config overrides: tuples of repeatable options as
    lists (empty: not given), `none` as an explicit None (`ebgen.config.NONE`)."""
    from ebgen.config import NONE

    out = {}
    for key, value in fields.items():
        if isinstance(value, tuple):
            value = list(value) or None
        out[key] = NONE if value == "none" else value
    return out
