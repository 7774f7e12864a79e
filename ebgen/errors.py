"""User-facing errors.

An `EbgenError` carries a one-line message meant for the person at the terminal: the CLI prints
it without a traceback and exits with code 2. Raise it for anything a user can fix (a wrong
path, a corrupt file, a bad option); let programming errors raise normally.
"""
from __future__ import annotations


class EbgenError(Exception):
    """A problem the user can fix; its message is one line that says what was expected."""

    exit_code = 2


class DataError(EbgenError):
    """A data set is missing, malformed, or of the wrong shape."""


class CheckpointError(EbgenError):
    """A checkpoint or model directory is missing, incomplete, or of an unknown format."""
