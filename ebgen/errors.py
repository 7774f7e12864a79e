"""User-facing errors.

An `EbgenError` carries a one-line message meant for the person at the terminal: the CLI prints
it without a traceback and exits with code 2. Raise it for anything a user can fix (a wrong
path, a corrupt file, a bad option); let programming errors raise normally.
"""
from __future__ import annotations

#: Longest message `one_line` returns.
MAX_MESSAGE = 300


def one_line(err: BaseException) -> str:
    """An exception's message on one line for a user: its first non-empty line with runs of
    whitespace squeezed, cut at `MAX_MESSAGE` characters; the type's name if it has none."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = " ".join(lines[0].split()) if lines else type(err).__name__
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE - 1] + "…"


class EbgenError(Exception):
    """A problem the user can fix; its message is one line that says what was expected."""

    exit_code = 2


class DataError(EbgenError):
    """A data set is missing, malformed, or of the wrong shape."""


class CheckpointError(EbgenError):
    """A checkpoint or model directory is missing, incomplete, or of an unknown format."""
